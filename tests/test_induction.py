"""Induction-head scores, copying, logit attribution, ablation and detection.

Oracles: TransformerLens' own detection-pattern functions (a peer), hand computations on planted
patterns and weights, the exact logit decomposition of an attention-only model, and the planted truth of
the shipped toy model (trained to grow a previous-token head in layer 0 and induction heads in layer 1).
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.induction import InductionScores, detection_patterns, induction_scores, pattern_scores, repeated_tokens
from interp.induction.ablation import AblationResult, ablate_heads
from interp.induction.data import repeated_tokens_from_vocab
from interp.induction.detect import classify_heads
from interp.induction.ov import copying_from_weights, logit_attribution_from

head_detector = pytest.importorskip("transformer_lens.head_detector")


@pytest.fixture(scope="module")
def toy() -> interp.Model:
    return interp.load_model("toy-induction")


@pytest.fixture(scope="module")
def toy_scores(toy: interp.Model) -> InductionScores:
    # half = 26 is longer than any span the toy model saw in training (6..20)
    return induction_scores(toy, n_seq=16, half=26, attribution=True, copying=True)


def test_detection_patterns_match_transformer_lens() -> None:
    ids = torch.tensor([[0, 5, 6, 5, 7, 5, 6, 8, 6]])
    got = detection_patterns(ids)
    for kind, fn in (("induction", head_detector.get_induction_head_detection_pattern),
                     ("prev_token", head_detector.get_previous_token_head_detection_pattern),
                     ("duplicate", head_detector.get_duplicate_token_head_detection_pattern)):
        assert torch.equal(got[kind][0].float(), fn(ids[0]).float()), kind


@pytest.mark.parametrize("exclude_bos", [False, True])
def test_pattern_scores_match_transformer_lens_on_random_patterns(exclude_bos: bool) -> None:
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


def test_repeated_tokens_layout_and_bad_input(toy: interp.Model) -> None:
    x = repeated_tokens(toy, n_seq=3, half=10, seed=2)
    assert x.shape == (3, 21) and bool((x[:, 0] == 0).all()) and torch.equal(x[:, 1:11], x[:, 11:])
    assert bool((x[:, 1:] != 0).all())
    with pytest.raises(ValueError, match="exceed the model's context"):
        repeated_tokens(toy, half=40)
    with pytest.raises(ValueError, match="half"):
        repeated_tokens_from_vocab(10, 1, 1)
    with pytest.raises(ValueError, match="integer tensor"):
        induction_scores(toy, tokens=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="top_k"):
        induction_scores(toy, n_seq=1, half=4, top_k=0)


def test_toy_detector_finds_the_planted_circuit(toy: interp.Model, toy_scores: InductionScores) -> None:
    roles = classify_heads(toy, toy_scores, induction_threshold=0.4, prev_token_threshold=0.3)
    assert roles.induction_heads and all(h[0] == 1 for h, _ in roles.induction_heads)
    assert roles.prev_token_heads and roles.prev_token_heads[0][0][0] == 0
    top = roles.induction_heads[0][0]
    assert roles.feeders[top] and roles.feeders[top][0][0][0] == 0
    # induction works in context: the repeat is far easier than the first pass, on an unseen length
    assert toy_scores.loss_second < 1.0 < 3.0 < toy_scores.loss_first
    assert toy_scores.icl_score < -2.5
    # layer-1 heads copy (positive OV eigenvalues) and push up the correct token on the repeat
    assert float(toy_scores.copying[1].max()) > 0.9 and float(toy_scores.copying_diag[1].max()) > 0.9
    assert float(toy_scores.logit_attribution[1].max()) > 1.0 > float(toy_scores.logit_attribution[0].abs().max())
    with pytest.raises(ValueError, match="threshold"):
        classify_heads(None, toy_scores, induction_threshold=1.5)


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
        r = ablate_heads(toy, heads, n_seq=8, half=26, method=method, control_pool=pool)
        assert r.repeat_loss_ablated > r.repeat_loss_clean + 0.5, (method, r.to_dict())
        assert r.icl_score_ablated > r.icl_score_clean
        assert r.control_heads and all(h[0] == 0 for h in r.control_heads)
    all_l1 = ablate_heads(toy, [(1, h) for h in range(4)], n_seq=8, half=26, control=False)
    assert all_l1.repeat_loss_ablated > 3.0 and all_l1.loss_control is None
    with pytest.raises(ValueError, match="not a \\(layer, head\\)"):
        ablate_heads(toy, [(2, 0)])
    with pytest.raises(ValueError, match="method"):
        ablate_heads(toy, [(1, 0)], method="resample")  # type: ignore[arg-type]


def test_results_save_load_frame_plot(tmp_path, toy: interp.Model, toy_scores: InductionScores) -> None:
    back = InductionScores.load(toy_scores.save(tmp_path / "s"))
    assert torch.equal(back.induction, toy_scores.induction) and back.pattern_heads == toy_scores.pattern_heads
    assert torch.equal(back.copying, toy_scores.copying) and back.tokens == toy_scores.tokens
    df = toy_scores.to_frame()
    assert set(df["metric"]) == set(toy_scores.available()) and len(df) == 6 * 8
    for kind in ("induction", "prev_token", "logit_attribution", "pattern", "loss"):
        assert toy_scores.plot(kind).data
    with pytest.raises(ValueError, match="unknown metric"):
        toy_scores.plot("nonsense")
    r = ablate_heads(toy, [(1, 0)], n_seq=4, half=10)
    r2 = AblationResult.load(r.save(tmp_path / "a"))
    assert r2.to_dict() == r.to_dict() and r.plot().data and len(r.to_frame()) == 3 * 21


@pytest.mark.slow
def test_smollm2_has_induction_heads_with_causal_role(smollm2: interp.Model) -> None:
    s = induction_scores(smollm2, n_seq=4, half=32)
    top = s.top("induction", 4)
    assert top[0][1] > 0.5 and s.loss_second < s.loss_first - 3
    r = ablate_heads(smollm2, [h for h, _ in top], n_seq=4, half=32, method="zero",
                     control_pool=[h for h, v in s.top("induction", 270) if v < 0.05])
    assert r.repeat_loss_ablated > r.repeat_loss_clean + 0.3
    assert r.repeat_loss_control is not None and r.repeat_loss_ablated > r.repeat_loss_control


def test_k_composition_pairs_match_the_all_pairs_scores(toy: interp.Model) -> None:
    from interp.induction.detect import k_composition
    from interp.models.circuits import composition_scores

    pairs = [((0, a), (1, b)) for a in range(4) for b in range(4)]
    full = composition_scores(toy.weights, "k", fold_norm=True)
    got = k_composition(toy.weights, pairs)
    want = torch.stack([full[a[0], a[1], b[0], b[1]] for a, b in pairs])
    assert torch.allclose(got, want, atol=1e-5)
