"""Attribution graphs: edges against finite differences of the real model under frozen attention and norms.

The oracle runs the model's own HF modules (not interp's linear replacement): attention patterns are pinned to
the recorded ones (interp's pattern hook), each RMSNorm divides by its recorded scale (a forward hook), and each
MLP is a transcoder whose feature activations are pinned except the one perturbed source. The tiny Llama's MLPs
are replaced by the transcoders themselves, so the transcoders are exact (zero error).
"""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
from conftest import make_llama

import interp
from interp.features import SAEConfig, Transcoder
from interp.features.graph import AttributionGraph, attribution_graph


def _rms64(self: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    var = h.pow(2).mean(-1, keepdim=True)
    return self.weight * (h * torch.rsqrt(var + self.variance_epsilon))


def random_transcoder(layer: int, d: int, seed: int) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    tc = Transcoder(SAEConfig(d_sae=24, k=5, apply_b_dec_to_input=False), hook=f"hf:model.layers.{layer}."
                    "post_attention_layernorm", out_hook=f"mlp_out.{layer}", progress=False)
    tc.W_enc_ = torch.randn(d, 24, generator=g, dtype=torch.float64) / d**0.5
    tc.b_enc_ = 0.3 * torch.randn(24, generator=g, dtype=torch.float64)
    tc.W_dec_ = torch.randn(24, d, generator=g, dtype=torch.float64) / d**0.5
    tc.b_dec_ = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    tc.W_skip_ = 0.1 * torch.randn(d, d, generator=g, dtype=torch.float64)
    tc.input_scale_, tc.output_scale_ = 1.3, 0.8
    return tc


@pytest.fixture(scope="module")
def setup() -> tuple[Any, dict[int, Transcoder], torch.Tensor]:
    hf = make_llama().double()
    for mod in hf.modules():
        if type(mod).__name__ == "LlamaRMSNorm":
            mod.forward = types.MethodType(_rms64, mod)
    tcs = {L: random_transcoder(L, 64, 10 + L) for L in range(2)}
    for L, tc in tcs.items():  # the MLPs *are* the transcoders: zero error
        hf.model.layers[L].mlp.forward = (lambda t: (lambda x: t.forward(x)))(tc)
    model = interp.from_hf(hf, name="tiny-llama-tc")
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    return model, tcs, ids


def frozen_fd(model: Any, tcs: dict[int, Transcoder], ids: torch.Tensor, source: tuple[str, int, int, int],
              target: tuple[str, int, int, int], eps: float = 1e-4) -> float:
    """d target / d (source scaled by 1 + t) at t = 0, by central differences of the hooked real model."""
    hf = model.hf
    n_layers = len(hf.model.layers)
    rec = model.run(ids, capture=["resid_pre", "resid_mid", "pattern", f"resid_post.{n_layers - 1}"])
    acts = {k: v for k, v in rec.trace.activations.items()}

    def scale(x: torch.Tensor, mod: torch.nn.Module) -> torch.Tensor:
        return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)

    frozen_s = {}
    for L, blk in enumerate(hf.model.layers):
        frozen_s[id(blk.input_layernorm)] = scale(acts[f"blocks.{L}.hook_resid_pre"], blk.input_layernorm)
        frozen_s[id(blk.post_attention_layernorm)] = scale(acts[f"blocks.{L}.hook_resid_mid"],
                                                           blk.post_attention_layernorm)
    frozen_s[id(hf.model.norm)] = scale(acts[f"blocks.{n_layers - 1}.hook_resid_post"], hf.model.norm)
    clean_z = {}
    for L, tc in tcs.items():
        blk = hf.model.layers[L]
        x_in = acts[f"blocks.{L}.hook_resid_mid"] * frozen_s[id(blk.post_attention_layernorm)] * \
            blk.post_attention_layernorm.weight
        clean_z[L] = tc.encode(x_in)

    def value(t: float) -> float:
        handles = []
        seen: dict[int, torch.Tensor] = {}
        for mod in [*(m for b in hf.model.layers for m in (b.input_layernorm, b.post_attention_layernorm)),
                    hf.model.norm]:
            handles.append(mod.register_forward_hook(
                lambda m, inp, out: inp[0] * frozen_s[id(m)] * m.weight))
        for L, tc in tcs.items():
            def mlp_hook(m: Any, inp: Any, out: Any, L: int = L, tc: Transcoder = tc) -> torch.Tensor:
                x = inp[0]
                seen[L] = x
                z = clean_z[L].clone()
                if source[0] == "feature" and source[1] == L:
                    z[0, source[2], source[3]] *= 1 + t
                y = tc.decode(z) + tc.skip_out(x)
                if source[0] == "error" and source[1] == L:
                    y = y + 0.0  # zero error: scaling it changes nothing
                return y
            handles.append(hf.model.layers[L].mlp.register_forward_hook(mlp_hook))
        if source[0] == "embedding":
            handles.append(hf.model.embed_tokens.register_forward_hook(
                lambda m, inp, out: out.index_put((torch.tensor([0]), torch.tensor([source[2]])),
                                                  out[0, source[2]] * (1 + t))))
        def pinned(name: str) -> Any:
            return lambda a, s: acts[name]

        pats = {f"blocks.{L}.attn.hook_pattern": pinned(f"blocks.{L}.attn.hook_pattern") for L in range(n_layers)}
        try:
            with model.hooks(pats):
                logits = hf(input_ids=ids).logits
        finally:
            for h in handles:
                h.remove()
        if target[0] == "logit":
            lg = logits[0, -1]
            return float(lg[target[3]] - lg.mean())
        tc = tcs[target[1]]
        return float((seen[target[1]][0, target[2]].detach() * tc.input_scale_) @ tc.W_enc_[:, target[3]] + tc.b_enc_[target[3]])

    return (value(eps) - value(-eps)) / (2 * eps)


def test_edges_equal_frozen_finite_differences(setup: Any) -> None:
    model, tcs, ids = setup
    g = attribution_graph(model, ids, transcoders=tcs, node_threshold=1.0, edge_threshold=1.0,
                          dtype=torch.float64, progress=False, max_logits=3)
    err = [i for i, k in enumerate(g.kind) if k == "error"]
    assert float(g.value[err].abs().max()) < 1e-10  # exact transcoders: nothing left for the error nodes
    feats = [i for i, k in enumerate(g.kind) if k == "feature"]
    logits = [i for i, k in enumerate(g.kind) if k == "logit"]
    embs = [i for i, k in enumerate(g.kind) if k == "embedding"]
    l1 = [i for i in feats if int(g.layer[i]) == 1]
    l0 = [i for i in feats if int(g.layer[i]) == 0]
    assert l0 and l1 and logits
    gen = torch.Generator().manual_seed(0)
    pairs = []  # (source, target) node pairs: features -> layer-1 features and logits, embeddings -> both
    for tgt in [l1[int(torch.randint(len(l1), (1,), generator=gen))], logits[0]]:
        for src in [*(l0[int(j)] for j in torch.randperm(len(l0), generator=gen)[:3]), embs[2], embs[-1]]:
            if int(g.pos[src]) <= int(g.pos[tgt]):
                pairs.append((src, tgt))
    if l1:
        pairs.append((l1[0], logits[0]))
    checked = 0
    for src, tgt in pairs:
        spec = (g.kind[src], int(g.layer[src]), int(g.pos[src]), int(g.feature[src]))
        tspec = (g.kind[tgt], int(g.layer[tgt]), int(g.pos[tgt]), int(g.feature[tgt]))
        fd = frozen_fd(model, tcs, ids, spec, tspec)
        assert float(g.adjacency[tgt, src]) == pytest.approx(fd, abs=1e-4), (g.node_name(src), g.node_name(tgt))
        checked += abs(fd) > 1e-6
    assert checked >= 3  # the comparisons were not all trivially zero


def test_graph_result_surface_and_pruning(setup: Any, tmp_path: Any) -> None:
    model, tcs, ids = setup
    full = attribution_graph(model, ids, transcoders=tcs, node_threshold=1.0, edge_threshold=1.0, progress=False)
    pruned = attribution_graph(model, ids, transcoders=tcs, node_threshold=0.5, edge_threshold=0.8, progress=False)
    assert int(pruned.kept.sum()) < int(full.kept.sum())
    assert int((pruned.adjacency != 0).sum()) < int((full.adjacency != 0).sum())
    # the kept edges are a subset with the same weights
    nz = pruned.adjacency != 0
    assert torch.allclose(pruned.adjacency[nz], full.adjacency[nz])
    # a target's edges plus constant terms reproduce its logit: sum of edges from all sources = demeaned logit - bias
    back = AttributionGraph.load(pruned.save(tmp_path / "g"))
    assert torch.equal(back.adjacency, pruned.adjacency) and back.kind == pruned.kind
    frame = pruned.to_frame()
    assert len(frame) == int(nz.sum()) and set(frame.columns) >= {"source", "target", "weight"}
    fig = pruned.plot()
    assert any(getattr(t, "name", None) == "feature" for t in fig.data)
    # greedy: with a feature budget, only that many feature rows are computed
    few = attribution_graph(model, ids, transcoders=tcs, max_feature_nodes=4, batch_size=2, node_threshold=1.0,
                            edge_threshold=1.0, progress=False)
    feats = [i for i, k in enumerate(few.kind) if k == "feature"]
    with_rows = sum(1 for i in feats if bool((few.adjacency[i] != 0).any()))
    assert with_rows <= 4
