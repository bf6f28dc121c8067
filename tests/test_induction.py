"""Induction-head scores, copying, logit attribution, ablation and detection.

Oracles: TransformerLens' own detection-pattern functions (a peer), hand computations on planted
patterns and weights, the exact logit decomposition of an attention-only model, the planted truth of
the shipped toy model (trained to grow a previous-token head in layer 0 and induction heads in layer 1),
per-sequence runs without padding (for padded batches) and the files interp 0.1 saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _v01
import pytest
import torch

import interp
from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.induction import (
    AblationResult,
    HeadRoles,
    InductionScores,
    TrainingCurves,
    ablate_heads,
    classify_heads,
    detection_patterns,
    induction_scores,
    pattern_scores,
    repeated_tokens,
)
from interp.induction.data import repeated_tokens_from_vocab
from interp.induction.ov import copying_from_weights, logit_attribution_from
from interp.sites import HeadRef

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


@pytest.fixture(scope="module")
def toy() -> interp.Model:
    return interp.load_model("toy-induction")


@pytest.fixture(scope="module")
def toy_scores(toy: interp.Model) -> InductionScores:
    # half = 26 is longer than any span the toy model saw in training (6..20)
    return induction_scores(toy, n_seq=16, half=26, attribution=True, copying=True, progress=False)


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch ``(ids, mask)`` of token-id rows (padding id 0)."""
    n = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    return ids, mask


def test_detection_patterns_match_transformer_lens() -> None:
    from transformer_lens import head_detector

    ids = torch.tensor([[0, 5, 6, 5, 7, 5, 6, 8, 6]])
    got = detection_patterns(ids)
    for kind, fn in (("induction", head_detector.get_induction_head_detection_pattern),
                     ("prev_token", head_detector.get_previous_token_head_detection_pattern),
                     ("duplicate", head_detector.get_duplicate_token_head_detection_pattern)):
        assert torch.equal(got[kind][0].float(), fn(ids[0]).float()), kind


@pytest.mark.parametrize("exclude_bos", [False, True])
def test_pattern_scores_match_transformer_lens_on_random_patterns(exclude_bos: bool) -> None:
    from transformer_lens import head_detector

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 6, (3, 12), generator=g)
    A = torch.randn(3, 2, 12, 12, generator=g).masked_fill(~torch.ones(12, 12, dtype=torch.bool).tril(), -1e9).softmax(-1)
    dets = detection_patterns(ids)
    got = pattern_scores(A, dets, normalize="all_rows", exclude_bos=exclude_bos)
    for kind, fn in (("induction", head_detector.get_induction_head_detection_pattern),
                     ("duplicate", head_detector.get_duplicate_token_head_detection_pattern)):
        for b in range(3):
            for h in range(2):
                want = head_detector.compute_head_attention_similarity_score(
                    A[b, h], fn(ids[b]), exclude_bos=exclude_bos, exclude_current_token=False, error_measure="mul")
                assert got[kind][b, h].item() == pytest.approx(want, abs=1e-6)


def test_target_rows_score_is_the_olsson_induction_score() -> None:
    """A planted perfect induction pattern scores 1; uniform attention scores the mean of 1/(q+1)."""
    half = 5
    ids = repeated_tokens_from_vocab(50, 1, half, bos_id=0, seed=1)
    n = ids.shape[1]
    A = torch.zeros(1, 2, n, n)
    A[0, :, 0, 0] = 1
    for q in range(1, n):
        A[0, 0, q, q - half + 1 if q > half else 0] = 1.0
        A[0, 1, q, : q + 1] = 1.0 / (q + 1)
    s = pattern_scores(A, detection_patterns(ids))["induction"][0]
    assert s[0].item() == pytest.approx(1.0)
    assert s[1].item() == pytest.approx(sum(1 / (q + 1) for q in range(half + 1, n)) / half)


def test_padding_rows_have_no_detection_cells_and_do_not_count() -> None:
    """A padded copy of a sequence scores exactly as the sequence alone, under both normalisations."""
    ids, mask = padded([[0, 5, 6, 5, 6], [0, 5, 6, 5, 6, 5, 5, 5]])
    short = ids[:1, :5]
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 8, 8, generator=g).masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), -1e9).softmax(-1)
    dets = detection_patterns(ids, mask)
    assert not dets["duplicate"][0, 5:].any() and not dets["prev_token"][0, 5:].any()
    A_short = A[:1, :, :5, :5] / A[:1, :, :5, :5].sum(-1, keepdim=True)  # causal: rows < 5 never see keys >= 5
    assert torch.allclose(A_short, A[:1, :, :5, :5])
    for normalize in ("target_rows", "all_rows"):
        got = pattern_scores(A, dets, normalize=normalize, mask=mask)  # type: ignore[arg-type]
        want = pattern_scores(A_short, detection_patterns(short), normalize=normalize)  # type: ignore[arg-type]
        for kind in want:
            assert torch.allclose(got[kind][0], want[kind][0], atol=1e-7), (normalize, kind)
    with pytest.raises(BadInputError, match="mask"):
        detection_patterns(ids, mask[:, :3])


def test_repeated_tokens_layout_and_bad_input(toy: interp.Model) -> None:
    x = repeated_tokens(toy, n_seq=3, half=10, seed=2)
    assert x.shape == (3, 21) and bool((x[:, 0] == 0).all()) and torch.equal(x[:, 1:11], x[:, 11:])
    assert bool((x[:, 1:] != 0).all())
    with pytest.raises(BadInputError, match=r"half=40.*exceed the model's context"):
        repeated_tokens(toy, half=40)
    with pytest.raises(BadInputError, match="half=1"):
        repeated_tokens_from_vocab(10, 1, 1)
    with pytest.raises(BadInputError, match=r"bad token ids of dtype torch\.float32"):
        induction_scores(toy, torch.zeros(2, 3))
    with pytest.raises(BadInputError, match=r"bad token id 64; valid: ids in 0\.\.63"):
        induction_scores(toy, torch.tensor([[0, 5, 64, 5]]))
    with pytest.raises(BadInputError, match="top_k 0"):
        induction_scores(toy, n_seq=1, half=4, top_k=0)
    with pytest.raises(BadInputError, match="n_seq=4"):
        induction_scores(toy, torch.tensor([[0, 5, 6, 5, 6]]), n_seq=4)
    with pytest.raises(BadInputError, match="normalize 'rows'"):
        induction_scores(toy, n_seq=1, half=4, normalize="rows")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="no tokenizer"):
        induction_scores(toy, "a text")


def test_toy_detector_finds_the_planted_circuit(toy: interp.Model, toy_scores: InductionScores) -> None:
    roles = classify_heads(toy, scores=toy_scores, induction_threshold=0.4, prev_token_threshold=0.3)
    assert roles.induction_heads and all(h[0] == 1 for h, _ in roles.induction_heads)
    assert all(isinstance(h, HeadRef) for h, _ in roles.induction_heads + roles.prev_token_heads)
    assert roles.prev_token_heads and roles.prev_token_heads[0][0][0] == 0
    top = roles.induction_heads[0][0]
    assert roles.feeders[top] and roles.feeders[top][0][0][0] == 0
    assert roles.feeders[(top.layer, top.head)] == roles.feeders[top]  # a (layer, head) pair looks up too
    # induction works in context: the repeat is far easier than the first pass, on an unseen length
    assert toy_scores.loss_second < 1.0 < 3.0 < toy_scores.loss_first
    assert toy_scores.icl_score < -2.5
    # layer-1 heads copy (positive OV eigenvalues) and push up the correct token on the repeat
    assert toy_scores.copying is not None and toy_scores.copying_diag is not None
    assert toy_scores.logit_attribution is not None
    assert float(toy_scores.copying[1].max()) > 0.9 and float(toy_scores.copying_diag[1].max()) > 0.9
    assert float(toy_scores.logit_attribution[1].max()) > 1.0 > float(toy_scores.logit_attribution[0].abs().max())
    with pytest.raises(BadInputError, match=r"induction_threshold 1\.5"):
        classify_heads(None, scores=toy_scores, induction_threshold=1.5)


def test_logit_attribution_decomposes_the_logit(toy: interp.Model) -> None:
    """Attention-only, bias-free model: logit(correct) = embedding term + sum of head terms, exactly."""
    ids = repeated_tokens(toy, n_seq=2, half=8, seed=5)
    L = toy.dims.n_layers
    out = interp.hooks.run_with_hooks(toy, ids, capture=[f"blocks.{L - 1}.hook_resid_post", "blocks.*.attn.hook_z",
                                                         "hook_embed"])
    dla = logit_attribution_from(toy, out.activations, ids)  # [b, pos, L, H]
    x = out.activations[f"blocks.{L - 1}.hook_resid_post"]
    eps = toy.config.rms_norm_eps
    scale = (x.pow(2).mean(-1) + eps).sqrt()  # the RMSNorm scale, by hand
    W_U = toy.hf.lm_head.weight * toy.hf.model.norm.weight  # [vocab, d]
    u = W_U[ids[:, 1:]]  # [b, pos-1, d]
    embed_term = (out.activations["hook_embed"][:, :-1] * u).sum(-1) / scale[:, :-1]
    assert out.logits is not None
    want = out.logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    got = embed_term + dla[:, 1:].sum((-1, -2))
    assert torch.allclose(got, want, atol=2e-4), (got - want).abs().max()


def test_copying_score_on_planted_weights() -> None:
    g = torch.Generator().manual_seed(0)
    E = torch.randn(40, 8, generator=g)
    I8 = torch.eye(8)
    # head 0 copies (OV = identity on a 4-dim subspace, unembed = embed^T); head 1 anti-copies
    V = torch.stack([I8[:, :4], -I8[:, :4]])[None]
    W_O = torch.stack([I8[:4], I8[:4]])[None]
    out = copying_from_weights(E, V, W_O, E.T, "rms")
    assert out["eigen"][0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert out["eigen"][0, 1].item() == pytest.approx(-1.0, abs=1e-5)
    assert out["diagonal"][0, 1].item() < 0.2 < out["diagonal"][0, 0].item()


def test_ablating_induction_heads_raises_the_repeat_loss(toy: interp.Model, toy_scores: InductionScores) -> None:
    heads = [h for h, _ in toy_scores.top("induction", 2)]
    pool = [(0, h) for h in range(4)]
    for method in ("zero", "mean"):
        r = ablate_heads(toy, heads=heads, n_seq=8, half=26, method=method, control_pool=pool)  # type: ignore[arg-type]
        assert r.repeat_loss_ablated > r.repeat_loss_clean + 0.5, (method, r.to_dict())
        assert r.icl_score_ablated > r.icl_score_clean
        assert r.control_heads and all(h[0] == 0 for h in r.control_heads)
    all_l1 = ablate_heads(toy, heads=[(1, h) for h in range(4)], n_seq=8, half=26, control=False)
    assert all_l1.repeat_loss_ablated > 3.0 and all_l1.loss_control is None
    with pytest.raises(BadInputError, match="head L2H0 is out of range"):
        ablate_heads(toy, heads=[(2, 0)])
    with pytest.raises(BadInputError, match="method 'resample'"):
        ablate_heads(toy, heads=[(1, 0)], method="resample")  # type: ignore[arg-type]


def test_heads_in_every_spelling(toy: interp.Model) -> None:
    """"L1H0,L1H3", [(1, 0), "L1H3"] and HeadRefs are the same heads; malformed ones name the bad value."""
    runs = [ablate_heads(toy, heads=spec, n_seq=2, half=8, control=False)
            for spec in ("L1H0,L1H3", [(1, 0), "L1H3"], [HeadRef(1, 0), HeadRef(1, 3)], ["L1H0", "L1H3", "L1H0"])]
    for r in runs:
        assert r.heads == (HeadRef(1, 0), HeadRef(1, 3))
        assert torch.equal(r.loss_ablated.nan_to_num(), runs[0].loss_ablated.nan_to_num())
    one = ablate_heads(toy, heads="L1H2", n_seq=2, half=8, control=False)
    assert one.heads == (HeadRef(1, 2),)
    for bad, named in (("L1X2", "L1X2"), ("L9H0", "L9H0"), ((1, 7), "L1H7"), ([], "no heads")):
        with pytest.raises(BadInputError, match=named):
            ablate_heads(toy, heads=bad, n_seq=2, half=8)  # type: ignore[arg-type]


def test_negative_positions_in_a_padded_batch_match_each_sequence_alone(toy: interp.Model) -> None:
    """positions=-2 ablates each sequence's second-to-last real token: in a padded batch, only the loss of
    each sequence's last real token changes, and every loss equals that of the sequence run alone."""
    rows = [[0, 5, 9, 7, 12, 5, 9, 7, 12], [0, 3, 8, 3, 8, 3]]
    ids, mask = padded(rows)
    heads = "L1H0,L1H1,L1H2,L1H3"
    batch = ablate_heads(toy, (ids, mask), heads=heads, positions=-2, control=False)
    assert batch.positions == "-2"
    changed = ((batch.loss_ablated - batch.loss_clean).abs() > 1e-6).nonzero().flatten().tolist()
    assert changed == [len(rows[1]) - 1, len(rows[0]) - 1]
    alone = [ablate_heads(toy, torch.tensor([r]), heads=heads, positions=-2, control=False) for r in rows]
    for name in ("loss_clean", "loss_ablated"):
        per_seq = torch.full((2, ids.shape[1]), float("nan"))
        for i, r in enumerate(alone):
            per_seq[i, : len(rows[i])] = getattr(r, name)
        want = per_seq.nanmean(0)
        got = getattr(batch, name)
        assert torch.allclose(got.nan_to_num(-1.0), want.nan_to_num(-1.0), atol=1e-5), name
    # a position outside a sequence's real tokens is an error naming it
    with pytest.raises(BadInputError):
        ablate_heads(toy, (ids, mask), heads=heads, positions=7, control=False)


def test_scores_on_a_padded_batch_are_the_mean_of_each_sequence_alone(toy: interp.Model) -> None:
    rows = [[0, 5, 9, 7, 12, 5, 9, 7, 12], [0, 3, 8, 3, 8, 3], [0, 4, 4, 11, 4, 11, 6]]
    ids, mask = padded(rows)
    for normalize in ("target_rows", "all_rows"):
        batch = induction_scores(toy, (ids, mask), normalize=normalize, attribution=True, progress=False)  # type: ignore[arg-type]
        alone = [induction_scores(toy, torch.tensor([r]), normalize=normalize, progress=False)  # type: ignore[arg-type]
                 for r in rows]
        for kind in ("induction", "prev_token", "duplicate"):
            want = torch.stack([getattr(a, kind) for a in alone]).mean(0)
            assert torch.allclose(getattr(batch, kind), want, atol=1e-6), (normalize, kind)
        per_seq = torch.full((3, ids.shape[1]), float("nan"))
        for i, a in enumerate(alone):
            per_seq[i, : len(rows[i])] = a.loss
        assert torch.allclose(batch.loss.nan_to_num(-1.0), per_seq.nanmean(0).nan_to_num(-1.0), atol=1e-5)


def test_inputs_as_texts_traces_and_from_another_model(toy: interp.Model, tiny_llama: interp.Model) -> None:
    ids = repeated_tokens(toy, n_seq=2, half=8, seed=1)
    by_ids = induction_scores(toy, ids, progress=False)
    by_trace = induction_scores(toy, toy.run(ids).trace, progress=False)
    assert torch.equal(by_ids.induction, by_trace.induction) and by_ids.tokens == by_trace.tokens
    with pytest.raises(ModelMismatchError):
        induction_scores(toy, tiny_llama.run(["w1 w2 w3 w1 w2 w3"]).trace)
    texts = ["w5 w17 w33 w9 w5 w17 w33 w9", "w8 w12 w8 w12"]
    s = induction_scores(tiny_llama, texts, progress=False)
    alone = [induction_scores(tiny_llama, [t], progress=False) for t in texts]
    want = torch.stack([a.induction for a in alone]).mean(0)
    assert torch.allclose(s.induction, want, atol=1e-6) and s.n_seq == 2


def test_results_surface_save_load_frame_plot(tmp_path: Path, toy: interp.Model, toy_scores: InductionScores) -> None:
    back = InductionScores.load(toy_scores.save(tmp_path / "s"))
    assert torch.equal(back.induction, toy_scores.induction) and back.pattern_heads == toy_scores.pattern_heads
    assert isinstance(back.pattern_heads[0], HeadRef)
    assert back.copying is not None and toy_scores.copying is not None
    assert torch.equal(back.copying, toy_scores.copying) and back.tokens == toy_scores.tokens
    assert type(interp.load_result(tmp_path / "s")) is InductionScores
    df = toy_scores.to_frame()
    assert set(df["metric"]) == set(toy_scores.available()) and len(df) == 6 * 8
    for view in (None, *InductionScores.VIEWS):
        assert toy_scores.plot(view).data
    assert toy_scores.plot("pattern", index=1).layout.title.text.startswith(str(toy_scores.pattern_heads[1]))
    with pytest.raises(UnknownNameError, match="unknown view 'nonsense'"):
        toy_scores.plot("nonsense")
    with pytest.raises(UnknownNameError, match="unknown metric 'nonsense'"):
        toy_scores.top("nonsense")
    d = toy_scores.to_dict()
    assert d["arrays"]["induction"]["axes"] == ["layer", "head"] and d["attributes"]["top"]["induction"][0]["head"]
    assert "tensor(" not in repr(toy_scores) and "top_induction_head=" in repr(toy_scores)

    r = ablate_heads(toy, heads="L1H0", n_seq=4, half=10)
    r2 = AblationResult.load(r.save(tmp_path / "a"))
    assert r2.to_dict() == r.to_dict() and r2.heads == (HeadRef(1, 0),)
    assert r.plot().data and r.plot("loss").data and len(r.to_frame()) == 3 * 21
    assert "repeat_loss_ablated=" in repr(r) and "tensor(" not in repr(r)

    roles = classify_heads(toy, scores=toy_scores, prev_token_threshold=0.3)
    roles2 = HeadRoles.load(roles.save(tmp_path / "r"))
    assert roles2.feeders == roles.feeders and roles2.induction_heads == roles.induction_heads
    assert all(isinstance(h, HeadRef) for h in roles2.feeders)
    assert roles.plot("feeders").data and set(roles.to_frame()["role"]) == {"induction", "prev_token"}
    assert roles.to_dict()["attributes"]["induction_heads"][0]["fed_by"][0]["head"].startswith("L0H")
    with pytest.raises(BadInputError, match="feeders"):
        classify_heads(None, scores=toy_scores).plot()


@pytest.mark.slow
def test_smollm2_has_induction_heads_with_causal_role(smollm2: interp.Model) -> None:
    s = induction_scores(smollm2, n_seq=4, half=32, progress=False)
    top = s.top("induction", 4)
    assert top[0][1] > 0.5 and s.loss_second < s.loss_first - 3
    r = ablate_heads(smollm2, heads=[h for h, _ in top], n_seq=4, half=32, method="zero",
                     control_pool=[h for h, v in s.top("induction", 270) if v < 0.05])
    assert r.repeat_loss_ablated > r.repeat_loss_clean + 0.3
    assert r.repeat_loss_control is not None and r.repeat_loss_ablated > r.repeat_loss_control


def test_k_composition_pairs_match_the_all_pairs_scores(toy: interp.Model) -> None:
    from interp.induction.detect import k_composition
    from interp.models.circuits import composition_scores

    pairs = [((0, a), (1, b)) for a in range(4) for b in range(4)]
    full = composition_scores(toy.weights, "k", fold_norm=True)
    got = k_composition(toy.weights, pairs)  # type: ignore[arg-type]
    want = torch.stack([full[a[0], a[1], b[0], b[1]] for a, b in pairs])
    assert torch.allclose(got, want, atol=1e-5)
    spelled = k_composition(toy.weights, [(f"L0H{a}", f"L1H{b}") for a in range(4) for b in range(4)])
    assert torch.equal(spelled, got)


# -- interp 0.1's saved files ----------------------------------------------------------------------


def same_summary(got: dict[str, Any], want: dict[str, Any], rel: float) -> bool:
    if got["shape"] != want["shape"] or got["dtype"] != want["dtype"] or got["nan_count"] != want["nan_count"]:
        return False
    if rel == 0.0:
        return bool(got["sum"] == want["sum"] and got["first"] == want["first"])
    def close(a: float, b: float) -> bool:
        return abs(a - b) <= rel * max(1.0, abs(b))
    return close(got["sum"], want["sum"]) and all(close(a, b) for a, b in zip(got["first"], want["first"], strict=True))


@pytest.mark.parametrize("name", ["InductionScores", "AblationResult", "TrainingCurves", "ToyRun"])
def test_v01_fixture_loads_with_its_values(name: str) -> None:
    """Files saved by interp 0.1 load, and every checked value equals what 0.1 read before saving."""
    path = FIXTURES / name
    entry = json.loads((path / "expected.json").read_text())
    ns: dict[str, Any] = {"interp": interp, "torch": torch, "path": path}
    exec(entry["load"], ns)
    with torch.no_grad():
        for expr, want in entry["tensors"].items():
            got = _v01.summarize(eval(expr, ns))
            assert same_summary(got, want, entry.get("rel", 0.0)), (expr, got, want)
        for expr, want in entry["values"].items():
            assert _v01.normalize(eval(expr, ns)) == want, expr
    if name != "ToyRun":
        obj = ns["obj"]
        assert type(obj).__name__ == name and isinstance(obj, interp.Result)
        assert obj.to_dict()["schema_version"] == 1 and obj.plot().data


def test_the_new_api_reproduces_the_v01_numbers(toy: interp.Model) -> None:
    """The calls that made the 0.1 fixtures, in the new spelling, give the same numbers."""
    s = induction_scores(toy, n_seq=4, half=12, seed=0, attribution=True, copying=True, top_k=2, progress=False)
    old = InductionScores.load(FIXTURES / "InductionScores")
    for name in ("induction", "prev_token", "duplicate", "loss", "patterns", "logit_attribution", "copying",
                 "copying_diag"):
        a, b = getattr(s, name), getattr(old, name)
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True), name
    assert s.pattern_heads == old.pattern_heads and s.tokens == old.tokens
    r = ablate_heads(toy, heads="L1H0,L1H1", n_seq=4, half=12, method="zero", seed=0)
    old_r = AblationResult.load(FIXTURES / "AblationResult")
    assert r.control_heads == old_r.control_heads
    for name in ("loss_clean", "loss_ablated", "loss_control"):
        assert torch.allclose(getattr(r, name), getattr(old_r, name), atol=1e-6, equal_nan=True), name
    assert torch.equal(TrainingCurves.from_toy().induction, TrainingCurves.load(FIXTURES / "TrainingCurves").induction)
