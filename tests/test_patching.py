"""Activation patching: the batched, start-at-layer sweep equals one full forward per patch; the vocabulary
(components, layers, heads as "L5H1", positions negative from each sequence's end) and its errors; the
v0.1 files load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.hooks import Lambda, Patch, run_with_hooks
from interp.patching import Ablation, Noise, PatchingResult, activation_patching, attribution_patching, prepare
from interp.sites import Component, HeadRef

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"
STREAM = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}

CLEAN = torch.tensor([[5, 17, 33, 9, 41, 22, 60]])
CORRUPT = torch.tensor([[5, 17, 71, 9, 41, 80, 60]])


def _metric(logits: torch.Tensor, ans: int, wrong: int) -> float:
    return float((logits[:, -1, ans] - logits[:, -1, wrong]).mean())


def loop_sweep(model, target_ids, source_ids, component, ans=3, wrong=4, per_position=False, window=1):
    """The oracle: one full forward per patched cell, through interp.hooks.Patch."""
    n_layers, n_heads = model.dims.n_layers, model.dims.n_heads
    n_pos = target_ids.shape[1]
    comp = Component.parse(component)
    names = [f"blocks.{L}.{comp.value}" for L in range(n_layers)]
    src = run_with_hooks(model, source_ids, capture=names).activations
    out = []
    for L in range(n_layers):
        if component in STREAM:
            lo, hi = max(0, L - window // 2), min(n_layers, L + (window + 1) // 2)
            row = []
            for p in range(n_pos):
                ivs = [Patch(names[k], source=src[names[k]], positions=[p]) for k in range(lo, hi)]
                row.append(_metric(run_with_hooks(model, target_ids, interventions=ivs).logits, ans, wrong))
            out.append(row)
        else:
            row = []
            for h in range(n_heads):
                cells = [Patch(names[L], source=src[names[L]], heads=[h], positions=None if not per_position else [p])
                         for p in (range(n_pos) if per_position else [None])]
                row.append([_metric(run_with_hooks(model, target_ids, interventions=[iv]).logits, ans, wrong)
                            for iv in cells])
            out.append(row)
    t = torch.tensor(out)
    return t if per_position or component in STREAM else t.squeeze(-1)


@pytest.fixture(params=[True, False], ids=["packed", "full-length"])
def pack(request, monkeypatch):
    """Both ways of running cells: packed changed positions over the target's cached keys/values, and
    full-length rows."""
    from interp.patching import batched

    monkeypatch.setattr(batched, "PACK", request.param)
    return request.param


@pytest.mark.parametrize("component", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"])
def test_stream_sweep_equals_loop(any_decoder, component, pack):
    m = any_decoder
    if component == "resid_mid" and not any(s.component is Component.RESID_MID for s in m.sites()):
        # parallel residual: there is no resid_mid; the sweep says so instead of failing inside the run
        with pytest.raises(BadInputError, match="resid_mid"):
            activation_patching(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4, component=component, progress=False)
        return
    for direction, target, source in (("denoising", CORRUPT, CLEAN), ("noising", CLEAN, CORRUPT)):
        s = prepare(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
        res = activation_patching(m, s, component=component, direction=direction, progress=False)
        ref = loop_sweep(m, target, source, component)
        assert res.values.shape == ref.shape == (m.dims.n_layers, CLEAN.shape[1])
        assert (res.values - ref).abs().max() <= 1e-4
        assert (ref - ref[0, 0]).abs().max() > 1e-2  # the sweep is not trivially constant


@pytest.mark.parametrize("component", ["z", "q", "k", "v", "pattern"])
def test_head_sweep_equals_loop_gqa(tiny_llama, component, pack):
    """Per query head, also for k/v on grouped-query attention (2 query heads share each KV head)."""
    assert tiny_llama.dims.n_kv_heads < tiny_llama.dims.n_heads
    res = activation_patching(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4, component=component,
                              progress=False)
    ref = loop_sweep(tiny_llama, CORRUPT, CLEAN, component)
    assert res.axes == ("layer", "head") and res.values.shape == ref.shape
    assert (res.values - ref).abs().max() <= 1e-4
    if component in ("k", "v"):  # two heads of one KV group give different effects
        assert (res.values[:, 0] - res.values[:, 1]).abs().max() > 1e-3


def test_head_per_position_and_window(tiny_gpt2, pack):
    s = prepare(tiny_gpt2, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = activation_patching(tiny_gpt2, s, component="z", per_position=True, progress=False)
    ref = loop_sweep(tiny_gpt2, CORRUPT, CLEAN, "z", per_position=True)
    assert res.axes == ("layer", "head", "pos") and (res.values - ref).abs().max() <= 1e-4
    res = activation_patching(tiny_gpt2, s, component="mlp_out", window=2, progress=False)
    ref = loop_sweep(tiny_gpt2, CORRUPT, CLEAN, "mlp_out", window=2)
    assert (res.values - ref).abs().max() <= 1e-4


def test_chunking_matches(tiny_llama, monkeypatch):
    from interp.patching import batched

    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    a = activation_patching(tiny_llama, s, progress=False)
    b = activation_patching(tiny_llama, s, progress=False, memory_budget=1)  # one run per forward
    assert torch.allclose(a.values, b.values, atol=1e-5)
    monkeypatch.setattr(batched, "PACK_TOKENS", 6)  # packed forwards split within and across start layers
    c = activation_patching(tiny_llama, s, component="z", per_position=True, progress=False)
    monkeypatch.setattr(batched, "PACK", False)
    d = activation_patching(tiny_llama, s, component="z", per_position=True, progress=False)
    assert torch.allclose(c.values, d.values, atol=1e-5)


def _by_hand(lg: torch.Tensor, clean: torch.Tensor, metric: str, answers: list[int], wrong: int) -> float:
    """The metric of last-token logits ``[2, vocab]`` of two prompts, written out term by term."""
    lp = torch.log_softmax(lg, -1)
    if metric == "logit_diff":
        return float((lg[0, answers[0]] - lg[0, wrong] + lg[1, answers[1]] - lg[1, wrong]) / 2)
    if metric == "prob":
        return float((lp[0, answers[0]].exp() + lp[1, answers[1]].exp()) / 2)
    if metric == "logprob":
        return float((lp[0, answers[0]] + lp[1, answers[1]]) / 2)
    cp = torch.log_softmax(clean, -1)
    return float(sum((cp[i].exp() * (cp[i] - lp[i])).sum() for i in range(2)) / 2)


def test_metrics_and_normalisation(tiny_llama):
    """Every built-in metric: the baselines, the patched cells and their normalisation equal the metric
    computed by hand from one full forward per patch."""
    clean_ids, corrupt_ids = torch.cat([CLEAN, CLEAN.flip(1)]), torch.cat([CORRUPT, CORRUPT.flip(1)])
    clean_last = run_with_hooks(tiny_llama, clean_ids).logits[:, -1]
    corrupt_last = run_with_hooks(tiny_llama, corrupt_ids).logits[:, -1]
    src = run_with_hooks(tiny_llama, clean_ids, capture="resid_pre.0").activations["blocks.0.hook_resid_pre"]
    for metric in ("logit_diff", "prob", "logprob", "kl"):
        s = prepare(tiny_llama, clean_ids, corrupt=corrupt_ids, answer=[3, 7], wrong=4, metric=metric)
        clean_v = _by_hand(clean_last, clean_last, metric, [3, 7], 4)
        corrupt_v = _by_hand(corrupt_last, clean_last, metric, [3, 7], 4)
        assert abs(s.clean_value - clean_v) < 1e-5 and abs(s.corrupted_value - corrupt_v) < 1e-5
        res = activation_patching(tiny_llama, s, component="resid_pre", positions=[0, 2, 5, -1], layers=[0],
                                  progress=False)
        assert res.coords == {"layer": (0,), "pos": (0, 2, 5, 6)}
        for j, p in enumerate((0, 2, 5, 6)):
            lg = run_with_hooks(tiny_llama, corrupt_ids, interventions=[
                Patch("blocks.0.hook_resid_pre", source=src, positions=[p])]).logits[:, -1]
            want = _by_hand(lg, clean_last, metric, [3, 7], 4)
            assert abs(float(res.values[0, j]) - want) < 1e-4, (metric, p)
            assert abs(float(res.normalized[0, j]) - (want - corrupt_v) / (clean_v - corrupt_v)) < 1e-3, (metric, p)
        # positions whose token is the same in both prompts of both pairs (0, 3, 6) change nothing at layer 0
        full = activation_patching(tiny_llama, s, component="resid_pre", layers=[0], progress=False)
        assert torch.allclose(full.normalized[0, [0, 3, 6]], torch.zeros(3), atol=1e-5)
        assert (full.normalized[0, [1, 2, 4, 5]].abs() > 1e-3).all()  # a swapped token in one of the pairs
    # a user metric sees the full logits
    res = activation_patching(tiny_llama, CLEAN, corrupt=CORRUPT, metric=lambda lg: lg[0, -1, 3] - lg[0, -1, 4],
                              progress=False)
    assert (res.values - loop_sweep(tiny_llama, CORRUPT, CLEAN, "resid_pre")).abs().max() <= 1e-4


def test_noise_corruption_is_seeded_and_averaged(tiny_llama, pack):
    """Noise on the subject tokens: seeded, one run per sample, and every value the mean over the samples of
    the metric, computed by hand from the noised embeddings."""
    noise = Noise(subject=[1, -5], n_samples=3, seed=1)  # positions 1 and 2 of the 7 tokens
    s1 = prepare(tiny_llama, CLEAN, corrupt=noise, answer=3, wrong=4)
    s2 = prepare(tiny_llama, CLEAN, corrupt=noise, answer=3, wrong=4)
    s3 = prepare(tiny_llama, CLEAN, corrupt=Noise(subject=[1, 2], n_samples=3, seed=2), answer=3, wrong=4)
    assert s1.corrupted_value == s2.corrupted_value != s3.corrupted_value
    res = activation_patching(tiny_llama, s1, component="resid_pre", layers=[0], progress=False)
    # the noise by hand: N(0, (3 * std(W_E))^2) at the subject tokens, drawn from the seeded generator
    g = torch.Generator().manual_seed(1)
    std = float(tiny_llama.weights.W_E.std())
    eps = torch.randn(3, 2, 64, generator=g) * 3 * std
    clean_embed = run_with_hooks(tiny_llama, CLEAN, capture="embed").activations["hook_embed"]

    def noisy_mean(restore: list[int]) -> float:
        vals = []
        for i in range(3):
            e = torch.zeros(1, 7, 64)
            e[0, [1, 2]] = eps[i]
            e[0, restore] = 0.0  # the clean embedding at the restored positions
            lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Lambda("embed", fn=lambda a, s, e=e: a + e)]).logits
            vals.append(_metric(lg, 3, 4))
        return sum(vals) / 3

    assert abs(s1.corrupted_value - noisy_mean([])) < 1e-4
    assert abs(s1.clean_value - _metric(run_with_hooks(tiny_llama, CLEAN).logits, 3, 4)) < 1e-5
    for p in range(7):  # layer 0's resid_pre is the embedding: restoring one token removes its noise only
        assert abs(float(res.values[0, p]) - noisy_mean([p])) < 1e-4, p
    assert abs(float(res.values[0, 1]) - float(res.values[0, 2])) > 1e-3
    assert abs(noisy_mean([1, 2]) - s1.clean_value) < 1e-4  # restoring both subject tokens undoes it all
    assert torch.equal(s1.noised_embed[:, [0, 3, 4, 5, 6]], clean_embed.expand(3, -1, -1)[:, [0, 3, 4, 5, 6]])
    one = activation_patching(tiny_llama, s1, layers=[0], positions=[-6], progress=False)  # -6 = position 1
    assert one.coords["pos"] == (1,) and abs(float(one.values[0, 0]) - float(res.values[0, 1])) < 1e-6


def test_mean_ablation_from_reference(tiny_llama):
    ref_ids = torch.randint(3, 90, (4, 7), generator=torch.Generator().manual_seed(0))
    ref = run_with_hooks(tiny_llama, ref_ids, capture="blocks.*.hook_resid_pre").activations
    s = prepare(tiny_llama, CLEAN, corrupt=Ablation("mean", ref), answer=3, wrong=4)
    with pytest.raises(BadInputError, match="noising"):
        activation_patching(tiny_llama, s, progress=False)
    res = activation_patching(tiny_llama, s, direction="noising", layers=[1], progress=False)
    mean = ref["blocks.1.hook_resid_pre"].mean(0, keepdim=True)
    for p in (0, 4):
        lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Patch("blocks.1.hook_resid_pre", source=mean,
                                                                    positions=[p])]).logits
        assert abs(float(res.values[0, p]) - _metric(lg, 3, 4)) < 1e-4
    assert not res.can_normalize
    # resid_post is read from the reference's resid_pre of the next layer (one stream, two names)
    post = activation_patching(tiny_llama, s, component="resid_post", direction="noising", layers=[0], progress=False)
    assert torch.allclose(post.values[0], res.values[0], atol=1e-5)
    ref_post = run_with_hooks(tiny_llama, ref_ids, capture="blocks.*.hook_resid_post").activations
    s2 = prepare(tiny_llama, CLEAN, corrupt=Ablation("mean", ref_post), answer=3, wrong=4)
    pre = activation_patching(tiny_llama, s2, direction="noising", layers=[1], progress=False)
    assert torch.allclose(pre.values, res.values, atol=1e-5)
    # resample ablation from a Trace: a seeded random reference sequence
    tr = tiny_llama.run(ref_ids, capture="blocks.*.hook_resid_pre").trace
    s3 = prepare(tiny_llama, CLEAN, corrupt=Ablation("resample", tr, seed=3), answer=3, wrong=4)
    res3 = activation_patching(tiny_llama, s3, direction="noising", layers=[1], positions=[4], progress=False)
    pick = torch.randint(0, 4, (1,), generator=torch.Generator().manual_seed(3))
    src = ref["blocks.1.hook_resid_pre"][pick]
    lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Patch("blocks.1.hook_resid_pre", source=src, positions=[4])]).logits
    assert abs(float(res3.values[0, 0]) - _metric(lg, 3, 4)) < 1e-4


def test_clear_errors(tiny_llama, tiny_gpt2):
    with pytest.raises(BadInputError, match="different token counts"):
        prepare(tiny_llama, "w1 w2 w3", corrupt="w1 w2", answer=3, wrong=4)
    with pytest.raises(BadInputError, match="needs corrupt="):
        activation_patching(tiny_llama, "w1 w2 w3", answer=3, wrong=4)
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    with pytest.raises(UnknownNameError, match=r"unknown component 'resid'.*Valid: resid_pre, resid_mid"):
        activation_patching(tiny_llama, s, component="resid")
    with pytest.raises(UnknownNameError, match=r"unknown component 'mlp_pre'.*Valid: resid_pre"):
        activation_patching(tiny_llama, s, component="mlp_pre")  # a hook point, but not one that is swept
    with pytest.raises(BadInputError, match="needs wrong="):
        prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3)
    with pytest.raises(BadInputError, match="bad direction 'up'"):
        activation_patching(tiny_llama, s, direction="up")
    with pytest.raises(BadInputError, match=r"bad layer 2; valid: 0\.\.1"):
        activation_patching(tiny_llama, s, layers=[0, 2])
    with pytest.raises(BadInputError, match="bad layer -3"):
        activation_patching(tiny_llama, s, layers=-3)
    with pytest.raises(BadInputError, match="position 7 is outside sequence 0, which has 7 real tokens"):
        activation_patching(tiny_llama, s, positions=[7])
    with pytest.raises(BadInputError, match="position -8 is outside sequence 0"):
        activation_patching(tiny_llama, s, positions=-8)
    with pytest.raises(BadInputError, match="head L1H4 is out of range"):
        activation_patching(tiny_llama, s, component="z", heads="L1H4")
    with pytest.raises(BadInputError, match=r"bad heads 4; valid: head indices 0\.\.3"):
        activation_patching(tiny_llama, s, component="z", heads=[0, 4])
    with pytest.raises(BadInputError, match="bad head 'H1'"):
        activation_patching(tiny_llama, s, component="z", heads=["H1"])
    with pytest.raises(BadInputError, match="heads= applies to z, q, k, v and pattern, not 'resid_pre'"):
        activation_patching(tiny_llama, s, heads=[0])
    with pytest.raises(BadInputError, match="bad window 0"):
        activation_patching(tiny_llama, s, component="mlp_out", window=0)
    with pytest.raises(BadInputError, match="answer given with a prepared PatchingSetup"):
        activation_patching(tiny_llama, s, answer=3)
    with pytest.raises(ModelMismatchError, match="prepared with 'tiny-llama'"):
        activation_patching(tiny_gpt2, s)
    with pytest.raises(BadInputError, match="bad n_samples 0"):
        Noise(subject=[1], n_samples=0)
    with pytest.raises(UnknownNameError, match=r"unknown metric 'logitdiff'\. Did you mean logit_diff"):
        prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4, metric="logitdiff")
    with pytest.raises(BadInputError, match=r"must return a scalar tensor, got a tensor of shape \(2,\)"):
        prepare(tiny_llama, CLEAN, corrupt=CORRUPT, metric=lambda lg: lg[0, -1, :2])


def test_heads_as_headrefs_and_ints(tiny_llama, pack):
    """``heads="L1H2,L0H1"`` runs exactly those cells (NaN elsewhere); ints select head indices at every layer."""
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    ref = loop_sweep(tiny_llama, CORRUPT, CLEAN, "z")
    some = activation_patching(tiny_llama, s, component="z", heads="L1H2,L0H1", progress=False)
    assert some.coords == {"layer": (0, 1), "head": (1, 2)}
    assert torch.isnan(some.values).tolist() == [[False, True], [True, False]]
    assert abs(float(some.values[0, 0]) - float(ref[0, 1])) <= 1e-4 and abs(float(some.values[1, 1]) - float(ref[1, 2])) <= 1e-4
    same = activation_patching(tiny_llama, s, component="z", heads=[(1, 2), HeadRef(0, 1)], progress=False)
    assert torch.equal(same.values.isnan(), some.values.isnan())
    assert torch.allclose(same.values.nan_to_num(), some.values.nan_to_num())
    ints = activation_patching(tiny_llama, s, component="z", heads=[3, 1], layers=[-1], progress=False)
    assert ints.coords == {"layer": (1,), "head": (3, 1)} and (ints.values - ref[1:, [3, 1]]).abs().max() <= 1e-4
    top = some.top(2)
    assert [c for c, _ in top] == sorted([HeadRef(0, 1), HeadRef(1, 2)], key=lambda h: -abs(float(
        ref[h.layer, h.head]) - s.corrupted_value))
    per = activation_patching(tiny_llama, s, component="z", heads="L1H2", per_position=True, positions=[-1, 2],
                              progress=False)
    cell, _ = per.top(1)[0]
    assert isinstance(cell, dict) and cell["head"] == HeadRef(1, 2) and cell["pos"] in (6, 2)


def test_positions_for_heads_patch_together(tiny_llama):
    """Without per_position, a head cell patches every selected position at once (one forward by hand)."""
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = activation_patching(tiny_llama, s, component="z", positions=[2, -2], progress=False)
    src = run_with_hooks(tiny_llama, CLEAN, capture="z").activations
    for L in range(2):
        for h in range(4):
            name = f"blocks.{L}.attn.hook_z"
            lg = run_with_hooks(tiny_llama, CORRUPT, interventions=[
                Patch(name, source=src[name], heads=[h], positions=[2, 5])]).logits
            assert abs(float(res.values[L, h]) - _metric(lg, 3, 4)) <= 1e-4
    assert res.meta["positions"] == [2, 5]


def test_negative_positions_in_padded_batches(tiny_llama):
    """Prompts of 4 and 6 words: -1 is each prompt's own last token (index 3 in one row, 5 in the other)."""
    clean, corr = ["w1 w2 w3 w4", "w5 w6 w7 w8 w9 w10"], ["w1 w12 w3 w4", "w5 w6 w17 w8 w9 w10"]
    s = prepare(tiny_llama, clean, corrupt=corr, answer=["w20", "w21"], wrong="w22")
    ids, mask = tiny_llama.encode(clean)
    xids, _ = tiny_llama.encode(corr)
    a, w = s.metric.answer, s.metric.wrong
    for comp, name in (("attn_out", "blocks.{L}.hook_attn_out"), ("resid_pre", "blocks.{L}.hook_resid_pre")):
        res = activation_patching(tiny_llama, s, component=comp, positions=[-1, -3, 1], progress=False)
        assert res.coords["pos"] == (-1, -3, 1) and res.labels()["pos"] == ["-1: w4", "-3: w2", "1: w2"]
        for L in range(2):
            site = name.format(L=L)
            src = run_with_hooks(tiny_llama, ids, mask, capture=[site]).activations[site]
            for j, p in enumerate((-1, -3, 1)):
                lg = run_with_hooks(tiny_llama, xids, mask, interventions=[Patch(site, source=src, positions=p)]).logits
                want = torch.stack([lg[i, int(mask[i].sum()) - 1, a[i]] - lg[i, int(mask[i].sum()) - 1, w[i]]
                                    for i in range(2)]).mean()
                assert abs(float(want) - float(res.values[L, j])) < 1e-4, (comp, L, p)
    with pytest.raises(BadInputError, match="position 4 is outside sequence 0, which has 4 real tokens"):
        activation_patching(tiny_llama, s, positions=[4])
    tail = activation_patching(tiny_llama, s, positions=slice(-2, None), progress=False)
    assert tail.coords["pos"] == (-2, -1)
    with pytest.raises(BadInputError, match="select 4 positions in sequence 0 but 6"):
        activation_patching(tiny_llama, s, positions=slice(None))


def test_result_roundtrip_and_plot(tiny_llama, tmp_path):
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = activation_patching(tiny_llama, s, component="z", per_position=True, progress=False)
    back = PatchingResult.load(res.save(tmp_path / "r"))
    assert torch.equal(back.values, res.values) and back.axes == res.axes and back.coords == res.coords
    assert back.to_dict() == res.to_dict() and repr(back) == repr(res)
    df = res.to_frame()
    assert len(df) == res.values.numel() and {"layer", "head", "pos", "value", "normalized"} <= set(df.columns)
    assert res.plot().data[0].z.shape == (8, 7) and res.plot("heatmap", normalized=False).data[0].z.shape == (8, 7)
    stream = activation_patching(tiny_llama, s, progress=False)
    assert stream.plot().data[0].z.shape == (2, 7) and stream.plot("paths", k=3).data
    with pytest.raises(UnknownNameError, match="Valid: heatmap, paths"):
        stream.plot("lines")
    assert repr(stream).startswith("PatchingResult(values[layer=2, pos=7], method='exact'") and "tensor(" not in repr(stream)
    json.dumps(stream.to_dict(), allow_nan=False)


def test_v01_fixtures_load(tiny_llama):
    """The files interp 0.1 saved load, with the values it recorded (fixtures/v0.1/expected.json), and this
    interp reproduces them from the same tiny Llama and prompts."""
    expected = json.loads((FIXTURES / "expected.json").read_text())["fixtures"]
    for key in ("PatchingResult", "PatchingResult_attribution"):
        e = expected[key]
        res = PatchingResult.load(FIXTURES / e["dir"])
        for expr, want in e["tensors"].items():
            t = eval(expr, {"obj": res}).double()
            assert list(t.shape) == want["shape"] and int(t.isnan().sum()) == want["nan_count"], (key, expr)
            assert round(float(t[~t.isnan()].sum()), 4) == want["sum"], (key, expr)
            assert [round(float(x), 6) for x in t[~t.isnan()][:4]] == want["first"], (key, expr)
        for expr, want in e["values"].items():
            got = eval(expr, {"obj": res})
            got = json.loads(json.dumps(got, default=list))
            assert got == want, (key, expr, got, want)
    res = PatchingResult.load(FIXTURES / "PatchingResult")
    flat = int((res.values - res.corrupted_value).abs().argmax())
    assert res.top(1)[0][0] == {"layer": flat // 7, "pos": flat % 7} and res.labels()["pos"][2] == "2: w33"
    s = prepare(tiny_llama, "w5 w17 w33 w9 w41 w22 w60", corrupt="w5 w17 w71 w9 w41 w80 w60", answer="w3", wrong="w4")
    assert math.isclose(s.clean_value, res.clean_value, abs_tol=1e-5)
    assert (activation_patching(tiny_llama, s, progress=False).values - res.values).abs().max() <= 1e-4
    atp = PatchingResult.load(FIXTURES / "PatchingResult_attribution")
    exact = activation_patching(tiny_llama, s, component="z", progress=False)
    now = attribution_patching(tiny_llama, s, component="z", qk_fix=True, exact=exact)
    assert (now.values - atp.values).abs().max() <= 1e-4 and (now.exact - atp.exact).abs().max() <= 1e-4


def test_noop_cells_are_not_run(tiny_llama, monkeypatch):
    """A cell that writes the target run's own values is the target run: it is not run, and its value is exact."""
    from interp.patching import batched

    ran: list = []
    for name in ("_run_group", "_run_packed"):
        real = getattr(batched, name)
        monkeypatch.setattr(batched, name, lambda setup, cells, *a, real=real, **kw: ran.extend(cells) or real(setup, cells, *a, **kw))
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = activation_patching(tiny_llama, s, progress=False)
    run = {(start, e.pos) for start, edits in ran for e in edits}
    assert {p for L, p in run if L == 0} == {2, 5}  # embeddings differ only at the swapped tokens
    assert {p for _, p in run} == {2, 3, 4, 5, 6}  # positions 0, 1 precede every change
    assert (res.values[:, :2] == s.corrupted_value).all() and (res.values[0, [0, 1, 3, 4, 6]] == s.corrupted_value).all()
    ran.clear()
    monkeypatch.setattr(batched, "SKIP_NOOPS", False)
    full = activation_patching(tiny_llama, s, progress=False)
    assert len(ran) == res.values.numel() and (full.values - res.values).abs().max() <= 1e-5


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "k"])
def test_prompt_pairs_equal_loop(tiny_llama, component, pack):
    """Two unpadded prompt pairs per run: each packed token attends only to its own sequence's keys."""
    clean, corrupt = torch.cat([CLEAN, CLEAN.flip(1)]), torch.cat([CORRUPT, CORRUPT.flip(1)])
    res = activation_patching(tiny_llama, clean, corrupt=corrupt, answer=3, wrong=4, component=component,
                              progress=False)
    ref = loop_sweep(tiny_llama, corrupt, clean, component)
    assert (res.values - ref).abs().max() <= 1e-4 and (ref - ref.flatten()[0]).abs().max() > 1e-2


def test_noise_sweep_equals_loop(tiny_llama, pack):
    """Noised target runs (3 samples): the target's cached keys/values carry the same noise."""
    s = prepare(tiny_llama, CLEAN, corrupt=Noise(subject=[1, 2], n_samples=3, seed=1), answer=3, wrong=4)
    res = activation_patching(tiny_llama, s, progress=False)
    names = [f"blocks.{L}.hook_resid_pre" for L in range(2)]
    src = run_with_hooks(tiny_llama, s.input_ids, capture=names).activations
    for L, name in enumerate(names):
        for p in range(7):
            ivs = [*s.interventions_for("corrupted"), Patch(name, source=src[name], positions=[p])]
            want = _metric(run_with_hooks(tiny_llama, s.corrupt_ids, interventions=ivs).logits, 3, 4)
            assert abs(want - float(res.values[L, p])) <= 1e-4


def test_inputs_in_any_spelling(tiny_llama, tiny_gpt2):
    """Texts, token ids, (ids, mask) and Traces of the model give the same sweep; a Trace of another model is
    refused."""
    clean, corrupt = "w1 w2 w3 w4 w5", "w1 w9 w3 w4 w5"
    ids, mask = tiny_llama.encode(clean)
    xids, _ = tiny_llama.encode(corrupt)
    want = activation_patching(tiny_llama, clean, corrupt=corrupt, answer="w6", wrong="w7", progress=False)
    tr, xtr = (tiny_llama.run(t).trace for t in (clean, corrupt))
    for inputs, corr in ((ids, xids), ((ids, mask), (xids, mask)), (tr, xtr), ([clean], [corrupt])):
        got = activation_patching(tiny_llama, inputs, corrupt=corr, answer="w6", wrong="w7", progress=False)
        assert torch.equal(got.values, want.values) and got.tokens == want.tokens == ("w1", "w2", "w3", "w4", "w5")
    with pytest.raises(ModelMismatchError):
        activation_patching(tiny_gpt2, tiny_gpt2.run(ids).trace, corrupt=xtr, answer=6, wrong=7, progress=False)
