"""interp.heads on tiny Llama models: dense-SVD oracles, a planted channel, edits checked against HF weight edits,
the one vocabulary (heads as "L5H1", positions in padded batches, bad values) and the files interp 0.1 saved."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import torch

import interp
from interp.errors import BadInputError, UnknownNameError
from interp.heads import (
    ChannelActivity,
    ChannelResult,
    CompositionResult,
    HeadSVD,
    channel,
    channel_activity,
    composition,
    edited_weights,
    head_svd,
    ov_component_edit,
    ov_component_maps,
)
from interp.hooks import Transform
from interp.models import Model
from interp.sites import HeadRef

D_HEAD = 16
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


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


def edited_hf_logits(model: Model, layer: int, head: int, P: torch.Tensor, ids: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """The oracle of an OV edit: logits of a copy of the HF model whose o_proj columns of ``head`` are ``W_O @ P``."""
    w = model.weights
    hf = copy.deepcopy(model.hf)
    with torch.no_grad():
        o = hf.model.layers[layer].self_attn.o_proj.weight
        o[:, head * D_HEAD:(head + 1) * D_HEAD] = (w.W_O[layer, head].double() @ P).T.float()
        return hf(ids, attention_mask=mask).logits


def dense_ov_V(model: Model, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense OV circuit (norm folded) and its right singular vectors, the slow way."""
    w = model.weights
    ov = (w.ln1_w[layer][:, None] * w.W_V[layer, head]).double() @ w.W_O[layer, head].double()
    return ov, torch.linalg.svd(ov)[2].T


# -- head_svd -----------------------------------------------------------------------------------
def test_head_svd_matches_dense(tiny_llama: Model, tmp_path: Path) -> None:
    w = tiny_llama.weights
    res = head_svd(tiny_llama, circuit="ov", top_components=2, n_tokens=3, progress=False)
    dense = (w.ln1_w[:, None, :, None] * w.W_V).double() @ w.W_O.double()
    assert res.S.shape == (2, 4, D_HEAD) and res.heads == [HeadRef(la, h) for la in range(2) for h in range(4)]
    assert torch.allclose(res.S.double(), torch.linalg.svdvals(dense)[..., :D_HEAD], rtol=1e-4, atol=1e-5)
    # vocab tables: W_E @ u (input side), folded W_U (output side)
    u = res.U[1, 2, :, 0]
    scores = w.W_E @ u
    assert res.in_ids[1, 2, 0, 0].tolist() == scores.topk(3).indices.tolist()
    assert res.in_ids[1, 2, 0, 1].tolist() == scores.topk(3, largest=False).indices.tolist()
    out_scores = res.V[0, 3, :, 1] @ (w.ln_final_w[:, None] * w.W_U)
    assert torch.allclose(res.out_vals[0, 3, 1, 0], out_scores.topk(3).values, atol=1e-5)
    want_tok = tiny_llama.tokenizer.decode([int(res.in_ids[1, 2, 0, 0, 0])])
    assert res.tokens("L1H2", 0, "in")[0][0] == want_tok == res.tokens((1, 2), 0, "in")[0][0]
    assert res.tokens(HeadRef(1, 2), 0, "in", "bottom")[0][0] == tiny_llama.tokenizer.decode(
        [int(res.in_ids[1, 2, 0, 1, 0])])
    qk = head_svd(tiny_llama, circuit="qk", fold_norm=False, top_components=1, progress=False)
    assert torch.allclose(qk.S.double(), torch.linalg.svdvals(w.W_QK.double())[..., :D_HEAD], rtol=1e-4, atol=1e-5)
    assert res.eff_rank.shape == (2, 4) and (res.eff_rank <= D_HEAD + 1e-4).all()
    p = res.S[1, 2] / res.S[1, 2].sum()
    assert float(res.eff_rank[1, 2]) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)
    assert torch.equal(res.spectrum("L1H2"), res.S[1, 2])
    back = HeadSVD.load(res.save(tmp_path / "svd"))
    assert torch.equal(back.S, res.S) and back.id_to_str == res.id_to_str and back.circuit == "ov"
    assert torch.equal(back.out_ids, res.out_ids) and back.tokens("L0H3") == res.tokens("L0H3")
    df = res.to_frame()
    assert list(df.columns) == ["layer", "head", "component", "singular_value"] and len(df) == 2 * 4 * D_HEAD
    assert df.iloc[-1].singular_value == pytest.approx(float(res.S[1, 3, -1]))
    for view in (None, "rank", "spectrum", "tokens"):
        assert isinstance(res.plot(view), go.Figure)
    assert res.plot("tokens", head="L1H0", component=1, side="in").layout.title.text == "L1H0 OV component 1 (in)"
    assert [t.name for t in res.plot("spectrum", head="L1H0").data] == ["L1H0", "L1H1", "L1H2", "L1H3"]
    d = res.to_dict()
    assert d["arrays"]["S"]["axes"] == ["layer", "head", "component"] and "id_to_str" not in d["attributes"]
    assert d["attributes"]["tokens"]["L1H2"]["in"][0][0][0][0] == want_tok
    assert repr(res).startswith("HeadSVD(S[layer=2, head=4, component=16]") and "tensor(" not in repr(res)


def test_head_svd_of_some_heads(tiny_llama: Model) -> None:
    full = head_svd(tiny_llama, top_components=2, n_tokens=3, progress=False)
    some = head_svd(tiny_llama, heads="L1H2,L0H3", top_components=2, n_tokens=3, progress=False)
    assert some.heads == [HeadRef(0, 3), HeadRef(1, 2)]
    for la, h in ((0, 3), (1, 2)):
        assert torch.allclose(some.S[la, h], full.S[la, h], atol=1e-6)
        assert torch.equal(some.out_ids[la, h], full.out_ids[la, h])
        got, want = some.tokens((la, h)), full.tokens((la, h))
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5)
    assert some.S[0, 0].isnan().all() and some.eff_rank[1, 0].isnan() and (some.in_ids[0, 0] == -1).all()
    # every spelling of the same heads
    for spelling in ([(1, 2), (0, 3)], ["L1H2", HeadRef(0, 3)], [(0, 3), "L1H2", "L0H3"]):
        assert head_svd(tiny_llama, heads=spelling, top_components=0, progress=False).heads == some.heads
    assert len(some.to_frame()) == 2 * D_HEAD
    assert isinstance(some.plot("rank"), go.Figure) and isinstance(some.plot("spectrum"), go.Figure)
    with pytest.raises(BadInputError, match="L1H0 was not analysed"):
        some.tokens("L1H0")
    assert set(some.to_dict()["attributes"]["tokens"]) == {"L0H3", "L1H2"}


# -- composition and channels ------------------------------------------------------------------------
def test_planted_channel_is_found(planted: tuple[Model, torch.Tensor]) -> None:
    m, _ = planted
    res = composition(m, kinds=("k", "q"), baseline_samples=50)
    top = res.top_pairs("k", 2)
    # receivers 2 and 3 share key/value head 1 (grouped-query attention)
    assert {(a, b) for a, b, _, _ in top} == {((0, 1), (1, 2)), ((0, 1), (1, 3))}
    assert all(isinstance(a, HeadRef) and isinstance(b, HeadRef) for a, b, _, _ in top)
    assert top[0][3] > 5  # far above the random baseline
    assert res.score(str(top[0][0]), str(top[0][1]), "k") == top[0][2]
    ch = channel(m, sender="L0H1", receiver="L1H2", kind="k", top_k=2, fold_norm=False)
    assert ch.sender == HeadRef(0, 1) and ch.receiver == HeadRef(1, 2) and ch.kind == "k"
    assert sorted(ch.components(2)) == [0, 1]
    assert torch.allclose(ch.overlap[:2], torch.ones(2), atol=1e-4)
    assert float(ch.contribution[2:].abs().max()) < 1e-5
    # per-component contributions split the composition score: squares sum to its square
    full = composition(m, kinds="k", fold_norm=False, baseline_samples=10).of("k")[0, 1, 1, 2]
    assert float(ch.contribution.pow(2).sum().sqrt()) == pytest.approx(float(full), rel=1e-4)
    assert ch.score == pytest.approx(float(full), rel=1e-4)
    # the same channel however its heads are spelled
    again = channel(m, sender=(0, 1), receiver=HeadRef(1, 2), kind="k", top_k=2, fold_norm=False)
    assert torch.equal(again.contribution, ch.contribution)


def _by_hand(m: Model, ids: torch.Tensor, mask: torch.Tensor, comps: list[int]) -> tuple[torch.Tensor, ...]:
    """coef [batch, pos, comp], the receiver's pattern and the causal prefix lengths, from a plain capture."""
    run = m.run((ids, mask), capture=["blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern"])
    _, V = dense_ov_V(m, 0, 1)
    out = run.trace["blocks.0.attn.hook_z"][:, :, 1] @ m.weights.W_O[0, 1]
    coef = (out.double() @ V[:, comps]) * mask[..., None]
    return coef, run.trace["blocks.1.attn.hook_pattern"][:, 2].double()


def test_channel_activity_by_hand(planted: tuple[Model, torch.Tensor]) -> None:
    m, _ = planted
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 22, 5]])
    act = channel_activity(m, ids, sender="L0H1", receiver="L1H2", components=[0, 1], kind="k")
    coef, pat = _by_hand(m, ids, torch.ones_like(ids), [0, 1])
    assert torch.allclose(act.coef[0].abs().double(), coef[0].abs(), atol=1e-4)
    assert torch.allclose(act.attended[0].double(), pat[0] @ coef[0].abs(), atol=1e-4)
    q = 5
    assert torch.allclose(act.uniform[0, q].double(), coef[0, : q + 1].abs().mean(0), atol=1e-4)
    want_ratio = (pat[0] @ coef[0].abs()).sum(0) / torch.stack([coef[0, : i + 1].abs().mean(0) for i in range(8)]).sum(0)
    assert torch.allclose(act.ratio.double(), want_ratio, rtol=1e-4)
    assert act.ratio.shape == (2,) and act.components == (0, 1) and act.sender == HeadRef(0, 1)
    # the default components are the 3 the receiver reads most
    default = channel_activity(m, ids, sender="L0H1", receiver="L1H2")
    assert list(default.components) == channel(m, sender="L0H1", receiver="L1H2").components(3)
    # a trace that already holds the hooks is read as it is
    tr = m.run(ids, capture=["z.0", "pattern.1"]).trace
    assert torch.equal(channel_activity(m, tr, sender="L0H1", receiver="L1H2", components=[0, 1]).attended,
                       act.attended)


def test_channel_activity_positions_in_a_padded_batch(planted: tuple[Model, torch.Tensor]) -> None:
    """positions=-1 counts each sequence's last real token only (a different padded index per row)."""
    m, _ = planted
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 22, 5], [7, 11, 7, 11, 0, 0, 0, 0]])
    mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4])
    act = channel_activity(m, (ids, mask), sender="L0H1", receiver="L1H2", components=[0, 1], positions=-1)
    assert act.counted.int().tolist() == [[0] * 7 + [1], [0, 0, 0, 1, 0, 0, 0, 0]]
    coef, pat = _by_hand(m, ids, mask, [0, 1])
    att = [pat[0, 7] @ coef[0].abs(), pat[1, 3, :4] @ coef[1, :4].abs()]
    uni = [coef[0].abs().mean(0), coef[1, :4].abs().mean(0)]
    assert torch.allclose(act.ratio.double(), (att[0] + att[1]) / (uni[0] + uni[1]), rtol=1e-4)
    assert act.tokens[1] == ("w3", "w7", "w3", "w7") and (act.coef[1, 4:] == 0).all()
    # the second sequence alone gives the same numbers at its real tokens
    alone = channel_activity(m, ids[1:, :4], sender="L0H1", receiver="L1H2", components=[0, 1], positions=-1)
    assert torch.allclose(alone.attended[0], act.attended[1, :4], atol=1e-5)
    df = act.to_frame()
    assert len(df) == (8 + 4) * 2 and df.counted.sum() == 2 * 2
    assert set(df.columns) == {"batch", "pos", "token", "component", "coef", "attended", "uniform", "counted"}
    with pytest.raises(BadInputError, match="sequence 1"):
        channel_activity(m, (ids, mask), sender="L0H1", receiver="L1H2", components=[0], positions=6)


def test_results_round_trip_and_plot(tiny_llama: Model, tmp_path: Path) -> None:
    res = composition(tiny_llama, baseline="gaussian", baseline_samples=20)
    assert res.scores.shape == (3, 2, 4, 2, 4) and res.of("v")[1, :, 0].isnan().all()
    back = CompositionResult.load(res.save(tmp_path / "c"))
    assert torch.equal(back.scores.nan_to_num(-1), res.scores.nan_to_num(-1)) and back.kinds == res.kinds
    df = res.to_frame()
    assert len(df) == 3 * 4 * 4 and (df.layer_b > df.layer_a).all()
    assert df.z.iloc[0] == pytest.approx((df.score.iloc[0] - res.baseline_mean[0]) / res.baseline_std[0])
    assert isinstance(res.plot(), go.Figure) and isinstance(res.plot("heatmap", kind="q"), go.Figure)
    graph = res.plot("graph", kind="v", n_edges=5)
    assert graph.layout.width is None and graph.layout.title.text == "Top 5 V-composition pairs"
    assert res.plot().layout.title.text.startswith("K-composition")  # "k" by default
    with pytest.raises(UnknownNameError, match="heatmap, graph"):
        res.plot("k")  # views are not kinds
    assert res.to_dict()["arrays"]["scores"]["labels"] == {"kind": ["q", "k", "v"]}
    assert "top_k=" in repr(res) and "tensor(" not in repr(res)
    ch = channel(tiny_llama, sender="L0H0", receiver="L1H1", kind="v")
    back_ch = ChannelResult.load(ch.save(tmp_path / "ch"))
    assert torch.equal(back_ch.contribution, ch.contribution) and back_ch.receiver == HeadRef(1, 1)
    assert back_ch.kind == "v" and json.loads((tmp_path / "ch" / "result.json").read_text())["fields"]["kind"] == "v"
    assert isinstance(ch.plot(), go.Figure) and len(ch.to_frame()) == D_HEAD
    assert "L0H0→L1H1 (v)" in repr(ch)
    act = channel_activity(tiny_llama, ["w1 w2 w3 w1 w2", "w4 w5"], sender="L0H0", receiver="L1H1", kind="q")
    back_act = ChannelActivity.load(act.save(tmp_path / "act"))
    assert torch.equal(back_act.attended, act.attended) and back_act.tokens == act.tokens
    assert back_act.receiver == HeadRef(1, 1) and back_act.components == act.components
    assert torch.equal(act.attended, act.coef.abs())  # "q": the signal at the query itself
    for view in (None, "ratio", "positions"):
        assert isinstance(act.plot(view), go.Figure)
    assert len(act.plot("positions", seq=1).data[0].y) == 2
    d = act.to_dict()
    assert d["arrays"]["ratio"]["labels"] == {"component": list(act.components)}
    json.dumps(d, allow_nan=False)


# -- edits ----------------------------------------------------------------------------------------
def test_ov_edit_equals_editing_the_hf_weights(tiny_llama: Model) -> None:
    layer, head, comps = 1, 2, [0, 3]
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    w = tiny_llama.weights
    edit = ov_component_edit(tiny_llama, head="L1H2", components=comps, scale=[0.0, 0.5])
    assert isinstance(edit, Transform) and edit.site.name == "blocks.1.attn.hook_z" and edit.heads == (HeadRef(1, 2),)
    got = tiny_llama.run(ids, interventions=[edit]).logits
    # oracle: dense SVD of the (norm-folded) OV, projection on the output side, written into o_proj
    ov, V = dense_ov_V(tiny_llama, layer, head)
    P = torch.eye(V.shape[0], dtype=torch.float64) - V[:, [0]] @ V[:, [0]].T - 0.5 * V[:, [3]] @ V[:, [3]].T
    want = edited_hf_logits(tiny_llama, layer, head, P, ids)
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, tiny_llama.run(ids).logits, atol=1e-3)
    same = ov_component_edit(tiny_llama, head=(1, 2), components=comps, scale=[0.0, 0.5])
    assert torch.equal(same.matrix, edit.matrix)
    Pm, M = ov_component_maps(tiny_llama, head="L1H2", components=comps, scale=[0.0, 0.5])
    assert torch.equal(M, edit.matrix) and torch.allclose(Pm.double(), P, atol=1e-5)
    # the edited weight views carry the same W_O and their SVD lost / halved those components
    w2 = edited_weights(tiny_llama, head="L1H2", components=comps, scale=[0.0, 0.5])
    assert torch.allclose(w2.W_O[layer, head].double(), w.W_O[layer, head].double() @ P, atol=1e-5)
    assert torch.equal(w2.W_O[0], w.W_O[0]) and torch.equal(w2.W_O[1, 1], w.W_O[1, 1])
    S = torch.linalg.svdvals(ov)[:D_HEAD]
    S2 = torch.linalg.svdvals((w.ln1_w[layer][:, None] * w.W_V[layer, head]).double() @ w2.W_O[layer, head].double())
    want_S = S.clone()
    want_S[0], want_S[3] = 0.0, 0.5 * S[3]
    assert torch.allclose(S2[:D_HEAD], want_S.sort(descending=True).values, atol=1e-4)
    # edits chain: editing the edited views of another head leaves this one as it was
    w3 = edited_weights(w2, head="L0H1", components=[1])
    assert torch.equal(w3.W_O[layer, head], w2.W_O[layer, head]) and not torch.equal(w3.W_O[0, 1], w.W_O[0, 1])


def test_ov_edit_at_the_last_real_token_of_a_padded_batch(tiny_llama: Model) -> None:
    """positions=-1 edits each sequence's last real token. The head is in the last layer, so an edit at one
    position changes the logits at that position only: there they equal the fully edited model's, elsewhere the
    clean model's."""
    layer, head = 1, 3
    ids = torch.tensor([[4, 8, 15, 16, 23, 42], [7, 9, 11, 0, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    edit = ov_component_edit(tiny_llama, head=f"L{layer}H{head}", components=[0, 1, 2], positions=-1)
    got = tiny_llama.run((ids, mask), interventions=[edit]).logits
    _, V = dense_ov_V(tiny_llama, layer, head)
    P = torch.eye(V.shape[0], dtype=torch.float64) - V[:, :3] @ V[:, :3].T
    edited = edited_hf_logits(tiny_llama, layer, head, P, ids, mask)
    clean = tiny_llama.run((ids, mask)).logits
    for row, last in ((0, 5), (1, 2)):
        assert torch.allclose(got[row, last], edited[row, last], atol=1e-4)
        assert not torch.allclose(got[row, last], clean[row, last], atol=1e-3)
        assert torch.allclose(got[row, :last], clean[row, :last], atol=1e-5)


# -- the vocabulary and bad values ------------------------------------------------------------------
def test_bad_values_raise_bad_input_naming_the_value(tiny_llama: Model) -> None:
    m = tiny_llama
    cases: list[tuple[Any, str]] = [
        (lambda: head_svd(m, circuit="xy"), "'xy'"),  # type: ignore[arg-type]
        (lambda: head_svd(m, heads="L2H0"), "L2H0 is out of range"),
        (lambda: head_svd(m, heads="L0H9x"), "'L0H9x'"),
        (lambda: head_svd(m, top_components=99), "top_components 99"),
        (lambda: head_svd(m, n_tokens=0), "n_tokens 0"),
        (lambda: head_svd(m, top_components=1, progress=False).tokens("L0H0", component=5), "component 5"),
        (lambda: head_svd(m, top_components=1, progress=False).tokens("L0H0", side="up"), "side 'up'"),
        (lambda: composition(m, kinds=("z",)), "'z'"),  # type: ignore[arg-type]
        (lambda: composition(m, kinds="k", baseline="uniform"), "'uniform'"),  # type: ignore[arg-type]
        (lambda: composition(m, kinds="k", baseline_samples=20).of("q"), "kind 'q'"),
        (lambda: composition(m, kinds="k", baseline_samples=20).score("L0H0", "L5H0"), "receiver='L5H0'"),
        (lambda: channel(m, sender="L1H0", receiver="L0H1"), "later layer"),
        (lambda: channel(m, sender="L0H0", receiver=(1, 7)), r"receiver=\(1, 7\).*out of range"),
        (lambda: channel(m, sender="L0H0", receiver="L1H1", kind="x"), "'x'"),  # type: ignore[arg-type]
        (lambda: channel(m, sender="L0H0", receiver="L1H1", top_k=0), "top_k 0"),
        (lambda: channel_activity(m, "w1 w2", sender="L0H0", receiver="L1H1", components=[99]), r"\[99\]"),
        (lambda: channel_activity(m, "w1 w2", sender="L0H0", receiver="L1H1", components=[0], positions=5),
         "position"),
        (lambda: ov_component_edit(m, head="L0H0", components=[99]), r"\[99\]"),
        (lambda: ov_component_edit(m, head="L0H0", components=[0, 1], scale=[1.0, 2.0, 3.0]), r"scale \[1.0"),
        (lambda: ov_component_edit(m, head="L0H4", components=[0]), "L0H4 is out of range"),
        (lambda: ov_component_edit(m, head="H0", components=[0]), "'H0'"),
        (lambda: edited_weights(m, head=(3, 0), components=[0]), "L3H0 is out of range"),
    ]
    for fn, match in cases:
        with pytest.raises(BadInputError, match=match):
            fn()
    with pytest.raises(TypeError):
        ov_component_edit(m, 0, 0, [0])  # type: ignore[misc]  # the head is one keyword, never two ints


# -- files saved by interp 0.1 ------------------------------------------------------------------------
def _summary(t: torch.Tensor) -> dict[str, Any]:
    """As the v0.1 fixture generator summarises a tensor (tests/fixtures/v0.1/make_fixtures.py: summarize)."""
    t = t.detach().cpu()
    if t.is_floating_point():
        d = t.double()
        nan = torch.isnan(d)
        finite = d[~nan].flatten()
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sum": round(float(finite.sum()), 4),
                "nan_count": int(nan.sum()), "first": [round(float(x), 6) for x in finite[:4].tolist()]}
    flat = t.flatten().long()
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sum": int(flat.sum()),
            "nan_count": 0, "first": [int(x) for x in flat[:4].tolist()]}


def _normal(v: Any) -> Any:
    """JSON-normal form (tuples -> lists, NaN -> "NaN"), as the fixture generator stores values."""
    def fix(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "NaN"
        if isinstance(x, (list, tuple)):
            return [fix(y) for y in x]
        return x
    return json.loads(json.dumps(fix(v)))


# v0.1 expressions that are spelled differently now: tokens() takes a head, not (layer, head)
RENAMED = {"obj.tokens(1, 2, component=0, side='out')": "obj.tokens('L1H2', component=0, side='out')"}


@pytest.mark.parametrize("name", ["HeadSVD", "CompositionResult", "ChannelResult"])
def test_v01_files_load(name: str, tmp_path: Path) -> None:
    path = FIXTURES / name
    want = json.loads((path / "expected.json").read_text())
    cls = {"HeadSVD": HeadSVD, "CompositionResult": CompositionResult, "ChannelResult": ChannelResult}[name]
    for obj in (cls.load(path), interp.load_result(path)):
        assert type(obj) is cls
        ns = {"obj": obj, "torch": torch}
        for expr, summary in want["tensors"].items():
            assert _summary(eval(expr, ns)) == summary, expr
        for expr, value in want["values"].items():
            assert _normal(eval(RENAMED.get(expr, expr), ns)) == value, expr
    # ChannelResult's kind was saved as "channel_kind" (v0.1's header used "kind"): now it is "kind" again
    again = cls.load(obj.save(tmp_path / "again"))
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(obj.to_dict(), sort_keys=True)
    if name == "ChannelResult":
        saved = json.loads((tmp_path / "again" / "result.json").read_text())
        assert saved["fields"]["kind"] == "k" and "channel_kind" not in saved["fields"]
        assert obj.sender == HeadRef(0, 1) and obj.receiver == HeadRef(1, 2)


def test_v02_channel_activity_file_loads(tiny_llama: Model) -> None:
    """ChannelActivity came with interp 0.2 (tests/fixtures/v0.2, written by the same call on the same tiny Llama)."""
    path = FIXTURES.parent / "v0.2" / "ChannelActivity"
    saved = ChannelActivity.load(path)
    ids = torch.tensor([[5, 9, 14, 20, 33, 7], [8, 12, 40, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    now = channel_activity(tiny_llama, (ids, mask), sender="L0H1", receiver="L1H2", kind="k", positions=-1)
    assert type(interp.load_result(path)) is ChannelActivity
    assert saved.components == now.components and saved.tokens == now.tokens and saved.sender == HeadRef(0, 1)
    for name in ("coef", "attended", "uniform", "ratio"):
        assert torch.allclose(getattr(saved, name), getattr(now, name), atol=1e-5), name
    assert torch.equal(saved.counted, now.counted)


# -- SmolLM2 ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_heads(smollm2: Model) -> None:
    svd = head_svd(smollm2, circuit="ov", top_components=1, n_tokens=5, progress=False)
    assert svd.S.shape == (30, 9, 64)
    w = smollm2.weights
    dense = (w.ln1_w[5][:, None] * w.W_V[5, 4]).double() @ w.W_O[5, 4].double()
    assert torch.allclose(svd.S[5, 4].double(), torch.linalg.svdvals(dense)[:64], rtol=1e-4)
    res = composition(smollm2, kinds="k", baseline_samples=50)
    (a, b, score, z) = res.top_pairs("k", 1)[0]
    assert b.layer > a.layer and z > 3
    ch = channel(smollm2, sender=a, receiver=b, kind="k")
    assert ch.score == pytest.approx(score, rel=1e-3)
    graph = res.plot("graph", kind="k", n_edges=20)
    assert graph.layout.width is None  # takes its column's width: never cut at the right edge
    assert res.plot("heatmap").layout.width <= 1000
