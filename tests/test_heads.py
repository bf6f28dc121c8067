"""interp.heads on tiny Llama models: dense-SVD oracles, a planted channel, edits checked against HF weight edits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import interp
from interp.heads import (
    ChannelResult,
    CompositionResult,
    HeadSVD,
    channel,
    channel_activity,
    composition,
    edited_weights,
    head_svd,
    ov_component_edit,
)
from interp.models import Model

D_HEAD = 16


def plant_channel(model: Model, sender=(0, 1), receiver_kv=(1, 1), rank: int = 2, seed: int = 0) -> torch.Tensor:
    """Make sender's OV write only into a random ``rank``-dim subspace Q, and the receiver's keys read only Q.

    Edits the Hugging Face modules directly (o_proj columns of the sender head, k_proj rows of the
    receiver's key/value head); returns Q ``[d_model, rank]``.
    """
    g = torch.Generator().manual_seed(seed)
    hf = model.hf
    d_model = hf.config.hidden_size
    Q, _ = torch.linalg.qr(torch.randn(d_model, rank, generator=g))
    la, ha = sender
    lb, kv = receiver_kv
    with torch.no_grad():
        o = hf.model.layers[la].self_attn.o_proj.weight  # [d_model, heads*d_head]
        o[:, ha * D_HEAD:(ha + 1) * D_HEAD] = Q @ torch.randn(rank, D_HEAD, generator=g)
        k = hf.model.layers[lb].self_attn.k_proj.weight  # [kv*d_head, d_model]
        k[kv * D_HEAD:(kv + 1) * D_HEAD] = torch.randn(D_HEAD, rank, generator=g) @ Q.T
        hf.model.layers[lb].input_layernorm.weight.fill_(1.0)
    return Q


@pytest.fixture(scope="module")
def planted(tiny_llama: Model) -> tuple[Model, torch.Tensor]:
    m = interp.from_hf(copy.deepcopy(tiny_llama.hf), tokenizer=tiny_llama.tokenizer, name="tiny-planted")
    return m, plant_channel(m)


def test_head_svd_matches_dense(tiny_llama: Model, tmp_path: Path) -> None:
    w = tiny_llama.weights
    res = head_svd(tiny_llama, "ov", top_components=2, n_tokens=3, progress=False)
    dense = (w.ln1_w[:, None, :, None] * w.W_V).double() @ w.W_O.double()
    assert torch.allclose(res.S.double(), torch.linalg.svdvals(dense)[..., :D_HEAD], rtol=1e-4, atol=1e-5)
    # vocab tables: W_E @ u (input side), folded W_U (output side)
    u = res.U[1, 2, :, 0]
    scores = w.W_E @ u
    assert res.in_ids[1, 2, 0, 0].tolist() == scores.topk(3).indices.tolist()
    assert res.in_ids[1, 2, 0, 1].tolist() == scores.topk(3, largest=False).indices.tolist()
    out_scores = res.V[0, 3, :, 1] @ (w.ln_final_w[:, None] * w.W_U)
    assert torch.allclose(res.out_vals[0, 3, 1, 0], out_scores.topk(3).values, atol=1e-5)
    assert res.tokens(1, 2, 0, "in")[0][0] == tiny_llama.tokenizer.decode([int(res.in_ids[1, 2, 0, 0, 0])])
    qk = head_svd(tiny_llama, "qk", fold_norm=False, top_components=1, progress=False)
    assert torch.allclose(qk.S.double(), torch.linalg.svdvals(w.W_QK.double())[..., :D_HEAD], rtol=1e-4, atol=1e-5)
    assert res.eff_rank.shape == (2, 4) and (res.eff_rank <= D_HEAD + 1e-4).all()
    back = HeadSVD.load(res.save(tmp_path / "svd"))
    assert torch.equal(back.S, res.S) and back.id_to_str == res.id_to_str and back.circuit == "ov"
    assert set(res.to_frame().columns) == {"layer", "head", "component", "singular_value"}
    for kind in ("spectrum", "rank", "tokens"):
        assert res.plot(kind, layer=1, head=0).data
    with pytest.raises(ValueError, match="component=5"):
        res.tokens(0, 0, component=5)


def test_planted_channel_is_found(planted: tuple[Model, torch.Tensor]) -> None:
    m, _ = planted
    res = composition(m, kinds=("k", "q"), baseline_samples=50)
    top = res.top_pairs("k", 2)
    # receivers 2 and 3 share key/value head 1 (grouped-query attention)
    assert {(a, b) for a, b, _, _ in top} == {((0, 1), (1, 2)), ((0, 1), (1, 3))}
    assert top[0][3] > 5  # far above the random baseline
    ch = channel(m, (0, 1), (1, 2), "k", top_k=2, fold_norm=False)
    assert sorted(ch.components(2)) == [0, 1]
    assert torch.allclose(ch.overlap[:2], torch.ones(2), atol=1e-4)
    assert float(ch.contribution[2:].abs().max()) < 1e-5
    # per-component contributions split the composition score: squares sum to its square
    full = composition(m, kinds=("k",), fold_norm=False, baseline_samples=10).of("k")[0, 1, 1, 2]
    assert float(ch.contribution.pow(2).sum().sqrt()) == pytest.approx(float(full), rel=1e-4)
    assert ch.score == pytest.approx(float(full), rel=1e-4)


def test_channel_activity_by_hand(planted: tuple[Model, torch.Tensor]) -> None:
    m, _ = planted
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 22, 5]])
    act = channel_activity(m, ids, (0, 1), (1, 2), [0, 1], "k")
    run = m.run(ids, capture=["blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern"])
    w = m.weights
    V = torch.linalg.svd((w.ln1_w[0][:, None] * w.W_V[0, 1]).double() @ w.W_O[0, 1].double())[2].T[:, :2]
    out = run.trace["blocks.0.attn.hook_z"][0, :, 1] @ w.W_O[0, 1]
    coef = (out.double() @ V).abs()
    assert torch.allclose(act.coef[0].abs().double(), coef, atol=1e-4)
    pat = run.trace["blocks.1.attn.hook_pattern"][0, 2].double()
    assert torch.allclose(act.attended[0].double(), pat @ coef, atol=1e-4)
    q = 5
    assert torch.allclose(act.uniform[0, q].double(), coef[: q + 1].mean(0), atol=1e-4)
    assert act.ratio.shape == (2,)


def test_ov_edit_equals_editing_the_hf_weights(tiny_llama: Model) -> None:
    layer, head, comps = 1, 2, [0, 3]
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    w = tiny_llama.weights
    edit = ov_component_edit(tiny_llama, layer, head, comps, scale=[0.0, 0.5])
    got = tiny_llama.run(ids, interventions=[edit]).logits
    # oracle: dense SVD of the (norm-folded) OV, projection on the output side, written into o_proj
    ov = (w.ln1_w[layer][:, None] * w.W_V[layer, head]).double() @ w.W_O[layer, head].double()
    V = torch.linalg.svd(ov)[2].T
    P = torch.eye(V.shape[0], dtype=torch.float64) - V[:, [0]] @ V[:, [0]].T - 0.5 * V[:, [3]] @ V[:, [3]].T
    hf = copy.deepcopy(tiny_llama.hf)
    with torch.no_grad():
        o = hf.model.layers[layer].self_attn.o_proj.weight
        cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
        o[:, cols] = (w.W_O[layer, head].double() @ P).T.float()
        want = hf(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, tiny_llama.run(ids).logits, atol=1e-3)
    # the edited weight views carry the same W_O and their SVD lost / halved those components
    w2 = edited_weights(w, layer, head, comps, scale=[0.0, 0.5])
    assert torch.allclose(w2.W_O[layer, head].double(), w.W_O[layer, head].double() @ P, atol=1e-5)
    S = torch.linalg.svdvals(ov)[:D_HEAD]
    S2 = torch.linalg.svdvals((w.ln1_w[layer][:, None] * w.W_V[layer, head]).double() @ w2.W_O[layer, head].double())
    want_S = S.clone()
    want_S[0], want_S[3] = 0.0, 0.5 * S[3]
    assert torch.allclose(S2[:D_HEAD], want_S.sort(descending=True).values, atol=1e-4)


def test_composition_result_round_trip_and_plots(tiny_llama: Model, tmp_path: Path) -> None:
    res = composition(tiny_llama, baseline="gaussian", baseline_samples=20)
    assert res.scores.shape == (3, 2, 4, 2, 4) and res.of("v")[1, :, 0].isnan().all()
    back = CompositionResult.load(res.save(tmp_path / "c"))
    assert torch.equal(back.scores.nan_to_num(-1), res.scores.nan_to_num(-1)) and back.kinds == res.kinds
    df = res.to_frame()
    assert len(df) == 3 * 4 * 4 and (df.layer_b > df.layer_a).all()
    assert res.plot("q").data and res.plot("k", style="graph", n_edges=5).data
    ch = channel(tiny_llama, (0, 0), (1, 1), "v")
    back_ch = ChannelResult.load(ch.save(tmp_path / "ch"))
    assert torch.equal(back_ch.contribution, ch.contribution) and back_ch.receiver == (1, 1)
    assert ch.plot().data and len(ch.to_frame()) == D_HEAD


def test_errors(tiny_llama: Model) -> None:
    with pytest.raises(ValueError, match="circuit='xy'"):
        head_svd(tiny_llama, "xy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kinds="):
        composition(tiny_llama, kinds=("z",))
    with pytest.raises(ValueError, match="must come after"):
        channel(tiny_llama, (1, 0), (0, 1))
    with pytest.raises(ValueError, match=r"receiver=.*out of range"):
        channel(tiny_llama, (0, 0), (1, 7))
    with pytest.raises(ValueError, match="components="):
        ov_component_edit(tiny_llama, 0, 0, [99])
    with pytest.raises(ValueError, match="scale="):
        ov_component_edit(tiny_llama, 0, 0, [0, 1], scale=[1.0, 2.0, 3.0])


@pytest.mark.slow
def test_smollm2_heads(smollm2: Model) -> None:
    svd = head_svd(smollm2, "ov", top_components=1, n_tokens=5, progress=False)
    assert svd.S.shape == (30, 9, 64)
    w = smollm2.weights
    dense = (w.ln1_w[5][:, None] * w.W_V[5, 4]).double() @ w.W_O[5, 4].double()
    assert torch.allclose(svd.S[5, 4].double(), torch.linalg.svdvals(dense)[:64], rtol=1e-4)
    res = composition(smollm2, kinds=("k",), baseline_samples=50)
    (a, b, score, z) = res.top_pairs("k", 1)[0]
    assert b[0] > a[0] and z > 3
    ch = channel(smollm2, a, b, "k")
    assert ch.score == pytest.approx(score, rel=1e-3)
