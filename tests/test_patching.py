"""Activation patching: the batched, start-at-layer sweep equals one full forward per patch."""

from __future__ import annotations

import pytest
import torch

from interp.hooks import Patch, run_with_hooks
from interp.patching import Ablation, Noise, PatchingResult, activation_patching, prepare
from interp.patching.activation import HEADS, STREAM

CLEAN = torch.tensor([[5, 17, 33, 9, 41, 22, 60]])
CORRUPT = torch.tensor([[5, 17, 71, 9, 41, 80, 60]])


def _metric(logits: torch.Tensor, ans: int, wrong: int) -> float:
    return float((logits[:, -1, ans] - logits[:, -1, wrong]).mean())


def loop_sweep(model, target_ids, source_ids, component, ans=3, wrong=4, per_position=False, window=1):
    """The oracle: one full forward per patched cell, through interp.hooks.Patch."""
    n_layers, n_heads = model.dims.n_layers, model.dims.n_heads
    n_pos = target_ids.shape[1]
    comp = STREAM.get(component) or HEADS[component]
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
    if component == "resid_mid" and "resid_mid" not in [s.component.value[5:] for s in m.sites() if s.layer == 0]:
        pytest.skip("no hook_resid_mid under parallel residual")
    for direction, target, source in (("denoising", CORRUPT, CLEAN), ("noising", CLEAN, CORRUPT)):
        s = prepare(m, CLEAN, CORRUPT, answer=3, wrong=4)
        res = activation_patching(s, component, direction=direction, progress=False)
        ref = loop_sweep(m, target, source, component)
        assert res.values.shape == ref.shape == (m.dims.n_layers, CLEAN.shape[1])
        assert (res.values - ref).abs().max() <= 1e-4
        assert (ref - ref[0, 0]).abs().max() > 1e-2  # the sweep is not trivially constant


@pytest.mark.parametrize("component", ["z", "q", "k", "v", "pattern"])
def test_head_sweep_equals_loop_gqa(tiny_llama, component, pack):
    """Per query head, also for k/v on grouped-query attention (2 query heads share each KV head)."""
    assert tiny_llama.dims.n_kv_heads < tiny_llama.dims.n_heads
    s = prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4)
    res = activation_patching(s, component, progress=False)
    ref = loop_sweep(tiny_llama, CORRUPT, CLEAN, component)
    assert res.axes == ("layer", "head") and res.values.shape == ref.shape
    assert (res.values - ref).abs().max() <= 1e-4
    if component in ("k", "v"):  # two heads of one KV group give different effects
        assert (res.values[:, 0] - res.values[:, 1]).abs().max() > 1e-3


def test_head_per_position_and_window(tiny_gpt2, pack):
    s = prepare(tiny_gpt2, CLEAN, CORRUPT, answer=3, wrong=4)
    res = activation_patching(s, "z", per_position=True, progress=False)
    ref = loop_sweep(tiny_gpt2, CORRUPT, CLEAN, "z", per_position=True)
    assert res.axes == ("layer", "head", "pos") and (res.values - ref).abs().max() <= 1e-4
    res = activation_patching(s, "mlp_out", window=2, progress=False)
    ref = loop_sweep(tiny_gpt2, CORRUPT, CLEAN, "mlp_out", window=2)
    assert (res.values - ref).abs().max() <= 1e-4


def test_chunking_matches(tiny_llama, monkeypatch):
    from interp.patching import batched

    s = prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4)
    a = activation_patching(s, "resid_pre", progress=False)
    b = activation_patching(s, "resid_pre", progress=False, memory_budget=1)  # one run per forward
    assert torch.allclose(a.values, b.values, atol=1e-5)
    monkeypatch.setattr(batched, "PACK_TOKENS", 6)  # packed forwards split within and across start layers
    c = activation_patching(s, "z", per_position=True, progress=False)
    monkeypatch.setattr(batched, "PACK", False)
    assert torch.allclose(c.values, activation_patching(s, "z", per_position=True, progress=False).values, atol=1e-5)


def test_metrics_and_normalisation(tiny_llama):
    ids2 = torch.cat([CLEAN, CLEAN.flip(1)]), torch.cat([CORRUPT, CORRUPT.flip(1)])
    for metric in ("logit_diff", "prob", "logprob", "kl"):
        s = prepare(tiny_llama, ids2[0], ids2[1], answer=[3, 7], wrong=4, metric=metric)
        res = activation_patching(s, "resid_pre", progress=False)
        logits = run_with_hooks(tiny_llama, ids2[1]).logits[:, -1]
        clean = run_with_hooks(tiny_llama, ids2[0]).logits[:, -1]
        lp = torch.log_softmax(logits, -1)
        want = {"logit_diff": (logits[0, 3] - logits[0, 4] + logits[1, 7] - logits[1, 4]) / 2,
                "prob": (lp[0, 3].exp() + lp[1, 7].exp()) / 2, "logprob": (lp[0, 3] + lp[1, 7]) / 2,
                "kl": (torch.softmax(clean, -1) * (torch.log_softmax(clean, -1) - lp)).sum(-1).mean()}[metric]
        assert abs(s.corrupted_value - float(want)) < 1e-5
        # patching every position of resid_pre 0 with the clean stream gives the clean run
        full = activation_patching(s, "resid_pre", positions=[0, 2, 5], layers=[0], progress=False)
        assert full.values.shape == (1, 3)
        assert torch.allclose(res.normalized[0, [0, 3, 6]], torch.zeros(3), atol=1e-5)  # tokens equal in both pairs
    # a user metric sees the full logits
    s = prepare(tiny_llama, CLEAN, CORRUPT, metric=lambda lg: lg[0, -1, 3] - lg[0, -1, 4])
    res = activation_patching(s, "resid_pre", progress=False)
    assert (res.values - loop_sweep(tiny_llama, CORRUPT, CLEAN, "resid_pre")).abs().max() <= 1e-4


def test_noise_corruption_is_seeded_and_averaged(tiny_llama, pack):
    s1 = prepare(tiny_llama, CLEAN, noise=Noise(subject=[1, 2], n_samples=3, seed=1), answer=3, wrong=4)
    s2 = prepare(tiny_llama, CLEAN, noise=Noise(subject=[1, 2], n_samples=3, seed=1), answer=3, wrong=4)
    assert s1.corrupted_value == s2.corrupted_value != s1.clean_value
    res = activation_patching(s1, "resid_pre", progress=False)
    # restoring the clean stream at the subject tokens of layer 0 undoes the whole corruption
    assert abs(float(res.values[0, 1]) - float(res.values[0, 2])) > 0  # (each alone does not)
    both = activation_patching(s1, "resid_pre", layers=[0], positions=[1], progress=False)
    assert both.values.shape == (1, 1)
    # the corrupted value is the mean over 3 noisy runs of the metric
    g = torch.Generator().manual_seed(1)
    std = float(tiny_llama.weights.W_E.std())
    eps = torch.randn(3, 2, 64, generator=g) * 3 * std
    vals = []
    for i in range(3):
        from interp.hooks import Lambda
        e = torch.zeros(1, 7, 64)
        e[0, [1, 2]] = eps[i]
        lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Lambda("hook_embed", fn=lambda a, s, e=e: a + e)]).logits
        vals.append(_metric(lg, 3, 4))
    assert abs(s1.corrupted_value - sum(vals) / 3) < 1e-4


def test_mean_ablation_from_reference(tiny_llama):
    ref_ids = torch.randint(3, 90, (4, 7), generator=torch.Generator().manual_seed(0))
    ref = run_with_hooks(tiny_llama, ref_ids, capture="blocks.*.hook_resid_pre").activations
    s = prepare(tiny_llama, CLEAN, ablation=Ablation("mean", ref), answer=3, wrong=4)
    with pytest.raises(ValueError, match="noising"):
        activation_patching(s, "resid_pre", progress=False)
    res = activation_patching(s, "resid_pre", direction="noising", layers=[1], progress=False)
    mean = ref["blocks.1.hook_resid_pre"].mean(0, keepdim=True)
    for p in (0, 4):
        lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Patch("blocks.1.hook_resid_pre", source=mean,
                                                                    positions=[p])]).logits
        assert abs(float(res.values[0, p]) - _metric(lg, 3, 4)) < 1e-4
    assert not res.can_normalize
    # resid_post is read from the reference's resid_pre of the next layer (one stream, two names)
    post = activation_patching(s, "resid_post", direction="noising", layers=[0], progress=False)
    assert torch.allclose(post.values[0], res.values[0], atol=1e-5)
    ref_post = run_with_hooks(tiny_llama, ref_ids, capture="blocks.*.hook_resid_post").activations
    s2 = prepare(tiny_llama, CLEAN, ablation=Ablation("mean", ref_post), answer=3, wrong=4)
    pre = activation_patching(s2, "resid_pre", direction="noising", layers=[1], progress=False)
    assert torch.allclose(pre.values, res.values, atol=1e-5)
    # resample ablation from a Trace: a seeded random reference sequence
    tr = tiny_llama.run(ref_ids, capture="blocks.*.hook_resid_pre").trace
    s3 = prepare(tiny_llama, CLEAN, ablation=Ablation("resample", tr, seed=3), answer=3, wrong=4)
    res3 = activation_patching(s3, "resid_pre", direction="noising", layers=[1], positions=[4], progress=False)
    pick = torch.randint(0, 4, (1,), generator=torch.Generator().manual_seed(3))
    src = ref["blocks.1.hook_resid_pre"][pick]
    lg = run_with_hooks(tiny_llama, CLEAN, interventions=[Patch("blocks.1.hook_resid_pre", source=src, positions=[4])]).logits
    assert abs(float(res3.values[0, 0]) - _metric(lg, 3, 4)) < 1e-4


def test_clear_errors(tiny_llama):
    with pytest.raises(ValueError, match="different token counts"):
        prepare(tiny_llama, "w1 w2 w3", "w1 w2", answer=3, wrong=4)
    with pytest.raises(ValueError, match="exactly one corruption"):
        prepare(tiny_llama, "w1 w2 w3", answer=3)
    with pytest.raises(ValueError, match="unknown component"):
        activation_patching(prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4), "resid")
    with pytest.raises(ValueError, match="needs wrong="):
        prepare(tiny_llama, CLEAN, CORRUPT, answer=3)
    with pytest.raises(ValueError, match="direction"):
        activation_patching(prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4), direction="up")


def test_result_roundtrip_and_plot(tiny_llama, tmp_path):
    s = prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4)
    res = activation_patching(s, "z", per_position=True, progress=False)
    back = PatchingResult.load(res.save(tmp_path / "r"))
    assert torch.equal(back.values, res.values) and back.axes == res.axes and back.coords == res.coords
    df = res.to_frame()
    assert len(df) == res.values.numel() and {"layer", "head", "pos", "value", "normalized"} <= set(df.columns)
    assert res.plot().data[0].z.shape == (8, 7)
    assert activation_patching(s, "resid_pre", progress=False).plot().data[0].z.shape == (2, 7)


def test_padded_prompt_pairs_equal_loop(tiny_llama):
    """Two pairs of different lengths (right padding): each pair's metric is read at its own last token."""
    clean, corr = ["w1 w2 w3 w4", "w5 w6 w7 w8 w9 w10"], ["w1 w12 w3 w4", "w5 w6 w17 w8 w9 w10"]
    s = prepare(tiny_llama, clean, corr, answer=["w20", "w21"], wrong="w22")
    res = activation_patching(s, "attn_out", progress=False)
    ids, mask = tiny_llama.tokenize(clean)
    xids, _ = tiny_llama.tokenize(corr)
    src = run_with_hooks(tiny_llama, ids, mask, capture="blocks.*.hook_attn_out").activations
    a, w, last = s.metric.answer, s.metric.wrong, mask.sum(1) - 1
    for L in range(2):
        for p in range(ids.shape[1]):
            name = f"blocks.{L}.hook_attn_out"
            lg = run_with_hooks(tiny_llama, xids, mask, interventions=[Patch(name, source=src[name], positions=[p])]).logits
            want = torch.stack([lg[i, last[i], a[i]] - lg[i, last[i], w[i]] for i in range(2)]).mean()
            assert abs(float(want) - float(res.values[L, p])) < 1e-4


def test_noop_cells_are_not_run(tiny_llama, monkeypatch):
    """A cell that writes the target run's own values is the target run: it is not run, and its value is exact."""
    from interp.patching import batched

    ran: list = []
    for name in ("_run_group", "_run_packed"):
        real = getattr(batched, name)
        monkeypatch.setattr(batched, name, lambda setup, cells, *a, real=real, **kw: ran.extend(cells) or real(setup, cells, *a, **kw))
    s = prepare(tiny_llama, CLEAN, CORRUPT, answer=3, wrong=4)
    res = activation_patching(s, "resid_pre", progress=False)
    run = {(start, e.pos) for start, edits in ran for e in edits}
    assert {p for L, p in run if L == 0} == {2, 5}  # embeddings differ only at the swapped tokens
    assert {p for _, p in run} == {2, 3, 4, 5, 6}  # positions 0, 1 precede every change
    assert (res.values[:, :2] == s.corrupted_value).all() and (res.values[0, [0, 1, 3, 4, 6]] == s.corrupted_value).all()
    ran.clear()
    monkeypatch.setattr(batched, "SKIP_NOOPS", False)
    full = activation_patching(s, "resid_pre", progress=False)
    assert len(ran) == res.values.numel() and (full.values - res.values).abs().max() <= 1e-5


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "k"])
def test_prompt_pairs_equal_loop(tiny_llama, component, pack):
    """Two unpadded prompt pairs per run: each packed token attends only to its own sequence's keys."""
    clean, corrupt = torch.cat([CLEAN, CLEAN.flip(1)]), torch.cat([CORRUPT, CORRUPT.flip(1)])
    s = prepare(tiny_llama, clean, corrupt, answer=3, wrong=4)
    res = activation_patching(s, component, progress=False)
    ref = loop_sweep(tiny_llama, corrupt, clean, component)
    assert (res.values - ref).abs().max() <= 1e-4 and (ref - ref.flatten()[0]).abs().max() > 1e-2


def test_noise_sweep_equals_loop(tiny_llama, pack):
    """Noised target runs (3 samples): the target's cached keys/values carry the same noise."""
    s = prepare(tiny_llama, CLEAN, noise=Noise(subject=[1, 2], n_samples=3, seed=1), answer=3, wrong=4)
    res = activation_patching(s, "resid_pre", progress=False)
    names = [f"blocks.{L}.hook_resid_pre" for L in range(2)]
    src = run_with_hooks(tiny_llama, s.input_ids, capture=names).activations
    for L, name in enumerate(names):
        for p in range(7):
            ivs = [*s.corrupt_interventions, Patch(name, source=src[name], positions=[p])]
            want = _metric(run_with_hooks(tiny_llama, s.corrupt_ids, interventions=ivs).logits, 3, 4)
            assert abs(want - float(res.values[L, p])) <= 1e-4
