"""Cross-layer transcoders: a planted cross-layer sparse map, files, on-the-fly training, and attribution-graph edges
against finite differences of a tiny model whose MLPs *are* the cross-layer transcoder."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import randomize
from test_attribution_graph import _rms64, frozen_scales
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp.features import CrossLayerTranscoder, SAEConfig, Transcoder, attribution_graph, evaluate_transcoder
from interp.features.transcoder import mlp_in_hook


def planted(n: int, seed: int = 0, n_layers: int = 3, d_in: int = 16, d_out: int = 12, n_feat: int = 24
            ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
    """Residual-like inputs (``x_{i+1} = 0.6 x_i + 0.8 noise``) and sparse ReLU features ``f_i = ReLU(x_i E_i / 4 -
    0.6)`` that write to their own and every later output: ``y_j = sum_{i <= j} f_i D[i, j]``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.Generator().manual_seed(99)
    E = [torch.randn(d_in, n_feat, generator=w) for _ in range(n_layers)]
    D = {(i, j): torch.randn(n_feat, d_out, generator=w) / 2 for i in range(n_layers) for j in range(i, n_layers)}
    xs = [torch.randn(n, d_in, generator=g)]
    for _ in range(n_layers - 1):
        xs.append(0.6 * xs[-1] + 0.8 * torch.randn(n, d_in, generator=g))
    fs = [torch.relu(x @ e / 4 - 0.6) for x, e in zip(xs, E, strict=True)]
    ys = [sum((fs[i] @ D[i, j] for i in range(j + 1)), torch.zeros(n, d_out)) for j in range(n_layers)]
    return xs, ys, E, D


@pytest.mark.slow
def test_clt_recovers_a_planted_cross_layer_map_better_than_per_layer_transcoders() -> None:
    xs, ys, E, D = planted(14_000)
    tr, te = slice(0, 12_000), slice(12_000, None)
    cfg = SAEConfig(d_sae=48, k=8, batch_size=512, n_tokens=100_000, lr=3e-3, dead_after=20_000)
    clt = CrossLayerTranscoder(cfg, layers=(0, 1, 2), skip=True, progress=False).fit_pairs(
        [x[tr] for x in xs], [y[tr] for y in ys])
    ev_clt = clt.explained_variance([x[te] for x in xs], [y[te] for y in ys])
    # the same budget of features and the same step, one transcoder per layer
    ev_tc = [evaluate_transcoder(Transcoder(cfg, skip=True, progress=False).fit_pairs(xs[j][tr], ys[j][tr]),
                                 xs[j][te], ys[j][te]).explained_variance for j in range(3)]
    # hand EV of the CLT's prediction
    pred = clt.forward([x[te] for x in xs])
    hand = [1 - float((y[te] - p).pow(2).sum() / (y[te] - y[te].mean(0)).pow(2).sum()) for y, p in zip(ys, pred,
                                                                                                       strict=True)]
    assert ev_clt == pytest.approx(hand, abs=1e-5)
    assert ev_clt[0] > 0.7 and sum(ev_clt) / 3 > sum(ev_tc) / 3 + 0.12
    assert ev_clt[2] > ev_tc[2] + 0.2  # the last layer, where earlier layers' features write most
    # the planted cross-layer writes are found: a layer-0 feature matched by its encoder also carries the planted
    # decoder into layer 2 (cosine), far above the same cosine with the planted features shuffled (chance)
    nrm = torch.nn.functional.normalize
    cos_e = nrm(E[0], dim=0).T @ nrm(clt.W_enc_[0], dim=0)  # type: ignore[index]
    match = cos_e.argmax(1)
    cos_d = (nrm(clt.decoder(0, 2)[match], dim=1) * nrm(D[0, 2], dim=1)).sum(1)
    shuffled = (nrm(clt.decoder(0, 2)[match], dim=1) * nrm(D[0, 2][torch.arange(24).roll(5)], dim=1)).sum(1)
    assert float(cos_e.max(1).values.median()) > 0.7
    assert float(cos_d.median()) > 0.4 and float(cos_d.median()) > float(shuffled.abs().median()) + 0.25


def test_clt_save_load_and_fit_on_the_fly(tiny_llama: Any, tmp_path: Path) -> None:
    ids = torch.randint(3, 128, (48, 16), generator=torch.Generator().manual_seed(1))
    cfg = SAEConfig(d_sae=32, k=4, batch_size=128, n_tokens=128 * 10, lr=3e-3)
    clt = CrossLayerTranscoder(cfg, layers=(0, 1), skip=True, progress=False).fit_model(tiny_llama, ids,
                                                                                          buffer_batches=3)
    assert clt.hooks == (mlp_in_hook(tiny_llama, layer=0), mlp_in_hook(tiny_llama, layer=1))
    assert len(clt.history_["ev"]) == 10 and clt.history_["ev"][-1] > clt.history_["ev"][0]
    back = CrossLayerTranscoder.load(clt.save(tmp_path / "clt"))
    xs = [torch.randn(5, 64), torch.randn(5, 64)]
    for a, b in zip(back.forward(xs), clt.forward(xs), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # the output of layer 1 is layer 0's and layer 1's writes plus bias and skip, by hand from the weights
    z0, z1 = clt.encode(xs[0], layer=0), clt.encode(xs[1], layer=1)
    assert int((z0 > 0).sum(-1).max()) <= 4
    s_in, s_out = clt.input_scale_, clt.output_scale_
    d = 64
    hand = (z0 @ clt.W_dec_[0][:, d:] + z1 @ clt.W_dec_[1] + clt.b_dec_[1]  # type: ignore[index]
            + (xs[1] * float(s_in[1])) @ clt.W_skip_[1]) / float(s_out[1])  # type: ignore[index]
    assert torch.allclose(clt.forward(xs)[1], hand, atol=1e-5)


# -- attribution graph through a CLT: edges == finite differences of the real model --------------------------------
def random_clt(n_layers: int, d: int, seed: int) -> CrossLayerTranscoder:
    g = torch.Generator().manual_seed(seed)
    S = 20
    clt = CrossLayerTranscoder(SAEConfig(d_sae=S, k=5), layers=tuple(range(n_layers)), skip=True, progress=False)
    clt.W_enc_ = [torch.randn(d, S, generator=g, dtype=torch.float64) / d**0.5 for _ in range(n_layers)]
    clt.b_enc_ = [0.3 * torch.randn(S, generator=g, dtype=torch.float64) for _ in range(n_layers)]
    clt.W_dec_ = [torch.randn(S, (n_layers - i) * d, generator=g, dtype=torch.float64) / d**0.5
                  for i in range(n_layers)]
    clt.b_dec_ = 0.1 * torch.randn(n_layers, d, generator=g, dtype=torch.float64)
    clt.W_skip_ = 0.1 * torch.randn(n_layers, d, d, generator=g, dtype=torch.float64)
    clt.input_scale_ = torch.tensor([1.3, 0.9, 1.1][:n_layers], dtype=torch.float64)
    clt.output_scale_ = torch.tensor([0.8, 1.2, 1.0][:n_layers], dtype=torch.float64)
    return clt


@pytest.fixture(scope="module")
def clt_model() -> tuple[Any, CrossLayerTranscoder, torch.Tensor]:
    cfg = LlamaConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=32, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    hf = randomize(LlamaForCausalLM(cfg), 3).double()
    for mod in hf.modules():
        if type(mod).__name__ == "LlamaRMSNorm":
            mod.forward = types.MethodType(_rms64, mod)
    clt = random_clt(3, 64, 7)
    zs: dict[int, torch.Tensor] = {}

    def mlp(L: int) -> Any:
        def fwd(x: torch.Tensor) -> torch.Tensor:  # the MLPs *are* the CLT: zero error
            zs[L] = clt.encode(x, layer=L)
            return clt.decode([zs[i] for i in range(L + 1)], layer=L, x=x)
        return fwd

    for L in range(3):
        hf.model.layers[L].mlp.forward = mlp(L)
    model = interp.from_hf(hf, name="tiny-llama-clt")
    return model, clt, torch.tensor([[5, 17, 42, 9, 77, 3]])


def clt_frozen_fd(model: Any, clt: CrossLayerTranscoder, ids: torch.Tensor, source: tuple[str, int, int, int],
                  target: tuple[str, int, int, int], eps: float = 1e-4) -> float:
    """d target / d (source scaled by 1 + t) at t = 0 by central differences of the hooked real model: attention
    patterns pinned, every RMSNorm dividing by its recorded scale, every CLT feature pinned to its recorded
    activation except the perturbed one (its change reaches every later MLP output it writes to)."""
    hf = model.hf
    n_layers = len(hf.model.layers)
    acts, frozen_s = frozen_scales(model, ids)
    clean_z = {}
    for L, blk in enumerate(hf.model.layers):
        x_in = acts[f"blocks.{L}.hook_resid_mid"] * frozen_s[id(blk.post_attention_layernorm)] * \
            blk.post_attention_layernorm.weight
        clean_z[L] = clt.encode(x_in, layer=L)

    def value(t: float) -> float:
        handles = []
        seen: dict[int, torch.Tensor] = {}
        for mod in [*(m for b in hf.model.layers for m in (b.input_layernorm, b.post_attention_layernorm)),
                    hf.model.norm]:
            handles.append(mod.register_forward_hook(lambda m, inp, out: inp[0] * frozen_s[id(m)] * m.weight))
        zs = {L: z.clone() for L, z in clean_z.items()}
        if source[0] == "feature":
            zs[source[1]][0, source[2], source[3]] *= 1 + t
        for L in range(n_layers):
            def mlp_hook(m: Any, inp: Any, out: Any, L: int = L) -> torch.Tensor:
                seen[L] = inp[0]
                return clt.decode([zs[i] for i in range(L + 1)], layer=L, x=inp[0])
            handles.append(hf.model.layers[L].mlp.register_forward_hook(mlp_hook))
        if source[0] == "embedding":
            handles.append(hf.model.embed_tokens.register_forward_hook(
                lambda m, inp, out: out.index_put((torch.tensor([0]), torch.tensor([source[2]])),
                                                  out[0, source[2]] * (1 + t))))
        pats = {f"blocks.{L}.attn.hook_pattern": (lambda a, s, n=f"blocks.{L}.attn.hook_pattern": acts[n])
                for L in range(n_layers)}
        try:
            with torch.no_grad(), model.hooks(pats):
                logits = hf(input_ids=ids).logits
        finally:
            for h in handles:
                h.remove()
        if target[0] == "logit":
            lg = logits[0, -1]
            return float(lg[target[3]] - lg.mean())
        return float(clt.pre_activations(seen[target[1]][0, target[2]], layer=target[1])[target[3]])

    return (value(eps) - value(-eps)) / (2 * eps)


def test_clt_graph_edges_equal_frozen_finite_differences(clt_model: Any) -> None:
    model, clt, ids = clt_model
    g = attribution_graph(model, ids, transcoders=clt, node_threshold=1.0, edge_threshold=1.0, dtype=torch.float64,
                          progress=False, max_logits=3)
    err = [i for i, k in enumerate(g.kind) if k == "error"]
    assert float(g.value[err].abs().max()) < 1e-10  # the CLT is the model's MLPs: nothing left for error nodes
    A = g.adjacency(dense=True)
    by_layer = {L: [i for i, k in enumerate(g.kind) if k == "feature" and int(g.layer[i]) == L] for L in range(3)}
    logits = [i for i, k in enumerate(g.kind) if k == "logit"]
    emb = [i for i, k in enumerate(g.kind) if k == "embedding"]
    gen = torch.Generator().manual_seed(0)

    def some(nodes: list[int], n: int) -> list[int]:
        return [nodes[int(j)] for j in torch.randperm(len(nodes), generator=gen)[:n]]

    pairs = []
    for tgt in [*some(by_layer[2], 2), *some(by_layer[1], 1), logits[0]]:
        for src in [*some(by_layer[0], 4), *some(by_layer[1], 2), emb[1], emb[-1]]:
            if int(g.pos[src]) <= int(g.pos[tgt]) and int(g.layer[src]) < int(g.layer[tgt]):
                pairs.append((src, tgt))
    checked = 0
    for src, tgt in pairs:
        spec = (g.kind[src], int(g.layer[src]), int(g.pos[src]), int(g.feature[src]))
        tspec = (g.kind[tgt], int(g.layer[tgt]), int(g.pos[tgt]), int(g.feature[tgt]))
        fd = clt_frozen_fd(model, clt, ids, spec, tspec)
        assert float(A[tgt, src]) == pytest.approx(fd, abs=1e-4), (g.node_name(src), g.node_name(tgt))
        checked += abs(fd) > 1e-6
    assert checked >= 6
    # a layer-0 feature at the last position reaches the logits directly through its writes to layers 1 and 2
    # (no feature in between): the edge is nonzero although per-layer transcoders would route it only via layer 0
    last0 = [i for i in by_layer[0] if int(g.pos[i]) == ids.shape[1] - 1]
    assert any(abs(float(A[logits[0], i])) > 1e-6 for i in last0)


def test_clt_clamping_matches_the_graph_with_frozen_attention(clt_model: Any) -> None:
    """Clamping a layer-0 feature of the CLT model changes later features and logits (through its writes to every
    later layer) by exactly the graph's total effect when attention and norms are frozen."""
    from interp.features import validate_graph

    model, clt, ids = clt_model
    g = attribution_graph(model, ids, transcoders=clt, node_threshold=1.0, edge_threshold=1.0, dtype=torch.float64,
                          progress=False, max_logits=3)
    src = [i for i, k in enumerate(g.kind) if k == "feature" and int(g.layer[i]) == 0][:4]
    v = validate_graph(model, ids, graph=g, transcoders=clt, sources=src, scale=1e-3, freeze=True,
                       dtype=torch.float64)
    pred, meas = v.pairs()
    assert len(pred) > 20 and float(pred.abs().max()) > 1e-5
    assert torch.allclose(meas.double(), pred.double(), rtol=1e-4, atol=1e-8)
