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


def frozen_scales(model: Any, ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """The clean run's activations (resid_pre/mid, patterns, last resid_post) and every RMSNorm's recorded
    ``1 / rms`` scale, by ``id`` of the norm module: what the frozen finite-difference oracles pin."""
    hf = model.hf
    n_layers = len(hf.model.layers)
    rec = model.run(ids, capture=["resid_pre", "resid_mid", "pattern", f"resid_post.{n_layers - 1}"])
    acts = dict(rec.trace.activations)

    def scale(x: torch.Tensor, mod: torch.nn.Module) -> torch.Tensor:
        return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)

    frozen_s = {}
    for L, blk in enumerate(hf.model.layers):
        frozen_s[id(blk.input_layernorm)] = scale(acts[f"blocks.{L}.hook_resid_pre"], blk.input_layernorm)
        frozen_s[id(blk.post_attention_layernorm)] = scale(acts[f"blocks.{L}.hook_resid_mid"],
                                                           blk.post_attention_layernorm)
    frozen_s[id(hf.model.norm)] = scale(acts[f"blocks.{n_layers - 1}.hook_resid_post"], hf.model.norm)
    return acts, frozen_s


def frozen_fd(model: Any, tcs: dict[int, Transcoder], ids: torch.Tensor, source: tuple[str, int, int, int],
              target: tuple[str, int, int, int], eps: float = 1e-4) -> float:
    """d target / d (source scaled by 1 + t) at t = 0, by central differences of the hooked real model."""
    hf = model.hf
    n_layers = len(hf.model.layers)
    acts, frozen_s = frozen_scales(model, ids)
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
            return float((lg[target[3]] - lg.mean()).detach())
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
    A = g.adjacency(dense=True)
    for src, tgt in pairs:
        spec = (g.kind[src], int(g.layer[src]), int(g.pos[src]), int(g.feature[src]))
        tspec = (g.kind[tgt], int(g.layer[tgt]), int(g.pos[tgt]), int(g.feature[tgt]))
        fd = frozen_fd(model, tcs, ids, spec, tspec)
        assert float(A[tgt, src]) == pytest.approx(fd, abs=1e-4), (g.node_name(src), g.node_name(tgt))
        checked += abs(fd) > 1e-6
    assert checked >= 3  # the comparisons were not all trivially zero


def test_graph_result_surface_and_pruning(setup: Any, tmp_path: Any) -> None:
    model, tcs, ids = setup
    full = attribution_graph(model, ids, transcoders=tcs, node_threshold=1.0, edge_threshold=1.0, progress=False)
    pruned = attribution_graph(model, ids, transcoders=tcs, node_threshold=0.8, edge_threshold=0.9, progress=False)
    assert int(pruned.kept.sum()) < int(full.kept.sum())
    A_full, A_pruned = full.adjacency(dense=True), pruned.adjacency(dense=True)
    assert int((A_pruned != 0).sum()) < int((A_full != 0).sum())
    # the kept edges are a subset with the same weights
    nz = A_pruned != 0
    assert torch.allclose(A_pruned[nz], A_full[nz])
    # a target's edges plus constant terms reproduce its logit: sum of edges from all sources = demeaned logit - bias
    back = AttributionGraph.load(pruned.save(tmp_path / "g"))
    assert torch.equal(back.edge_weight, pruned.edge_weight) and back.kind == pruned.kind
    frame = pruned.to_frame()
    assert len(frame) == int(nz.sum()) and set(frame.columns) >= {"source", "target", "weight"}
    fig = pruned.plot()
    assert any(getattr(t, "name", None) == "feature" for t in fig.data)
    # greedy: with a feature budget, only that many feature rows are computed
    few = attribution_graph(model, ids, transcoders=tcs, max_feature_nodes=4, batch_size=2, node_threshold=1.0,
                            edge_threshold=1.0, progress=False)
    feats = [i for i, k in enumerate(few.kind) if k == "feature"]
    with_rows = len(set(few.edge_target.tolist()) & set(feats))
    assert with_rows <= 4


def dense_reference_pruning(full: AttributionGraph, node_threshold: float, edge_threshold: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """circuit-tracer 0.5.0's ``prune_graph`` (``circuit_tracer/graph.py``) written out on the dense ``N x N``
    adjacency of the unpruned graph, influence by a matrix inverse (``w B (I - B)^-1``, not a power series): nodes by
    cumulative influence over all nodes, edges by the influence recomputed on the node-pruned matrix, then dangling
    feature / error nodes dropped until nothing changes."""
    A = full.adjacency(dense=True).double()
    N = A.shape[0]
    w = torch.zeros(N, dtype=torch.float64)
    logits = [i for i, k in enumerate(full.kind) if k == "logit"]
    w[logits] = full.value[logits].double() / full.value[logits].double().sum()

    def normalize(M: torch.Tensor) -> torch.Tensor:
        return M.abs() / M.abs().sum(1, keepdim=True).clamp_min(1e-10)

    def influence(B: torch.Tensor) -> torch.Tensor:
        return w @ B @ torch.linalg.inv(torch.eye(N, dtype=torch.float64) - B)

    def find_threshold(scores: torch.Tensor, threshold: float) -> torch.Tensor:
        s = scores.sort(descending=True).values
        cum = s.cumsum(0) / s.sum()
        return s[min(int(torch.searchsorted(cum, torch.tensor([threshold], dtype=cum.dtype))[0]), len(s) - 1)]

    node_influence = influence(normalize(A))
    keep = node_influence >= find_threshold(node_influence, node_threshold)
    keep |= torch.tensor([k in ("embedding", "logit") for k in full.kind])
    P = A.clone()
    P[~keep] = 0
    P[:, ~keep] = 0
    Bp = normalize(P)
    scores = Bp * (influence(Bp) + w)[:, None]
    E = (scores >= find_threshold(scores.flatten(), edge_threshold)) & (A != 0)
    fe = torch.tensor([k in ("feature", "error") for k in full.kind])
    feat = torch.tensor([k == "feature" for k in full.kind])
    while True:
        old = keep.clone()
        keep[fe] &= E[:, fe].any(0)
        keep[feat] &= E[feat].any(1)
        if torch.equal(keep, old):
            break
        E[~keep] = False
        E[:, ~keep] = False
    return node_influence, keep, A * E


@pytest.mark.parametrize("max_feature_nodes", [None, 6])
def test_row_block_pruning_equals_the_dense_computation(setup: Any, max_feature_nodes: int | None) -> None:
    """The graph keeps only computed rows and prunes blockwise; the dense N x N computation of the same definition
    (from the unpruned graph's edges) gives the same influence, kept nodes and kept edges."""
    model, tcs, ids = setup
    kw: dict[str, Any] = {"transcoders": tcs, "max_feature_nodes": max_feature_nodes, "batch_size": 4,
                          "dtype": torch.float64, "progress": False, "max_logits": 3}
    full = attribution_graph(model, ids, node_threshold=1.0, edge_threshold=1.0, **kw)
    pruned = attribution_graph(model, ids, node_threshold=0.85, edge_threshold=0.9, **kw)
    influence, keep, A = dense_reference_pruning(full, 0.85, 0.9)
    assert torch.allclose(pruned.influence.double(), influence, rtol=1e-5, atol=1e-7)
    assert torch.equal(pruned.kept, keep) and int(keep.sum()) < len(keep)
    assert any(k == "feature" and bool(keep[i]) for i, k in enumerate(full.kind))  # not only tokens and logits
    got = pruned.adjacency(dense=True).double()
    assert torch.equal(got != 0, A != 0) and 0 < int((A != 0).sum()) < int((full.adjacency(dense=True) != 0).sum())
    assert torch.allclose(got, A.float().double())


def test_clamping_matches_the_graph_on_the_exact_model(setup: Any) -> None:
    """Exact transcoders, attention and norms frozen, a small clamp: every downstream feature's and logit's measured
    change equals the graph's total effect along its edges; with attention and norms live the two still correlate."""
    from interp.features import validate_graph

    model, tcs, ids = setup
    g = attribution_graph(model, ids, transcoders=tcs, node_threshold=1.0, edge_threshold=1.0, dtype=torch.float64,
                          progress=False, max_logits=3)
    src = [i for i, k in enumerate(g.kind) if k == "feature" and int(g.layer[i]) == 0][:6]
    v = validate_graph(model, ids, graph=g, transcoders=tcs, sources=src, scale=1e-3, freeze=True,
                       dtype=torch.float64)
    pred, meas = v.pairs()
    assert len(pred) > 20 and float(pred.abs().max()) > 1e-5
    assert torch.allclose(meas.double(), pred.double(), rtol=1e-4, atol=1e-8)
    assert v.pearson > 0.9999
    live = validate_graph(model, ids, graph=g, transcoders=tcs, sources=src, scale=-1.0, dtype=torch.float64)
    assert live.pearson > 0.5 and not live.frozen
    assert live.plot() is not None and len(live.to_frame()) > 0


def test_schema_1_files_with_a_dense_adjacency_load(setup: Any, tmp_path: Any) -> None:
    """interp 0.2's first graphs saved a dense adjacency; they load as the kept-edge list."""
    import json

    from safetensors.torch import load_file, save_file

    model, tcs, ids = setup
    g = attribution_graph(model, ids, transcoders=tcs, node_threshold=0.7, progress=False)
    d = g.save(tmp_path / "g")
    t = load_file(str(d / "result.safetensors"))
    A = torch.zeros(len(g.kind), len(g.kind))
    A[t.pop("edge_target"), t.pop("edge_source")] = t.pop("edge_weight")
    save_file({**t, "adjacency": A}, str(d / "result.safetensors"))
    head = json.loads((d / "result.json").read_text())
    head["schema_version"] = 1
    (d / "result.json").write_text(json.dumps(head))
    back = AttributionGraph.load(d)
    assert torch.equal(back.adjacency(dense=True), g.adjacency(dense=True)) and len(back.edge_weight) > 0


def test_families_the_graph_cannot_follow_are_refused(setup: Any, tiny_neox_parallel: Any) -> None:
    """GPT-NeoX's parallel attention + MLP is not the sequential pre-norm block the linear model follows: a clear
    error naming the family, not a graph of the wrong model."""
    from interp.errors import BadInputError

    with pytest.raises(BadInputError, match="gpt_neox"):
        attribution_graph(tiny_neox_parallel, torch.tensor([1, 2, 3]), transcoders=setup[1])
