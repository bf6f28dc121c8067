"""Attribution patching vs exact patching (linear regime), GradDrop and the AtP* q/k fix by hand."""

from __future__ import annotations

import torch

from interp.hooks import Patch, run_with_hooks
from interp.patching import Ablation, activation_patching, attribution_patching, prepare
from interp.sites import HeadRef

CLEAN = torch.tensor([[5, 17, 33, 9, 41, 22, 60]])
CORRUPT = torch.tensor([[5, 17, 71, 9, 41, 80, 60]])


def _ld(logits):
    return logits[:, -1, 3] - logits[:, -1, 4]


def test_attribution_is_exact_for_small_patches(tiny_llama64):
    """With source = clean + tiny noise, patching is linear: AtP must match exact patching."""
    m = tiny_llama64
    comps = ("hook_resid_pre", "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern",
             "hook_mlp_out")
    names = [s.name for s in m.sites() if s.component.value in comps]
    acts = run_with_hooks(m, CLEAN, capture=names).activations
    g = torch.Generator().manual_seed(0)
    ref = {k: (v + 1e-3 * torch.randn(v.shape, generator=g, dtype=v.dtype)).expand(2, *v.shape[1:]) for k, v in acts.items()}
    for L in range(m.dims.n_layers - 1):  # the stream is one tensor: resid_post L is resid_pre L+1
        ref[f"blocks.{L}.hook_resid_post"] = ref[f"blocks.{L + 1}.hook_resid_pre"]
    s = prepare(m, CLEAN, corrupt=Ablation("mean", ref), answer=3, wrong=4)
    for comp in ("resid_pre", "mlp_out", "z", "q", "k", "v", "pattern"):
        ex = activation_patching(m, s, component=comp, direction="noising", progress=False)
        at = attribution_patching(m, s, component=comp, direction="noising", exact=ex, progress=False)
        effect = (ex.values - s.clean_value).abs().max()
        assert effect > 1e-4
        assert (at.values - ex.values).abs().max() < 0.05 * effect, comp
        assert at.correlation() > 0.99


def test_grad_drop_by_hand(tiny_llama64):
    """At the last layer's resid_pre, dropping layer n-1 leaves only the direct path (= the gradient at
    resid_post); dropping any earlier layer changes nothing."""
    m = tiny_llama64
    n = m.dims.n_layers
    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    gd = attribution_patching(m, s, grad_drop=True, progress=False)
    plain = attribution_patching(m, s, progress=False)
    last = f"blocks.{n - 1}.hook_resid_pre"
    out = run_with_hooks(m, CORRUPT, capture=[last], grads=[last, f"blocks.{n - 1}.hook_resid_post"],
                         metric=lambda lg: _ld(lg).sum())
    clean = run_with_hooks(m, CLEAN, capture=[last]).activations[last]
    delta = clean - out.activations[last]
    full = (delta * out.grads[last]).sum(-1)[0]
    direct = (delta * out.grads[f"blocks.{n - 1}.hook_resid_post"]).sum(-1)[0]
    assert torch.allclose(plain.values[n - 1] - s.corrupted_value, full.float(), atol=1e-4)
    want = ((n - 1) * full.abs() + direct.abs()) / n
    assert torch.allclose(gd.values[n - 1], want.float(), atol=1e-4)
    assert gd.meta["magnitude"] and (gd.values >= 0).all()


def test_qk_fix_recomputes_the_pattern(tiny_llama64):
    """AtP* for a query head = (pattern with patched q - pattern) . d metric / d pattern, by hand."""
    m = tiny_llama64
    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = attribution_patching(m, s, component="q", qk_fix=True, progress=False)
    src = run_with_hooks(m, CLEAN, capture="blocks.*.attn.hook_q").activations
    for L in range(m.dims.n_layers):
        pat = f"blocks.{L}.attn.hook_pattern"
        base = run_with_hooks(m, CORRUPT, capture=[pat], grads=[pat], metric=lambda lg: _ld(lg).sum())
        for h in range(m.dims.n_heads):
            q = f"blocks.{L}.attn.hook_q"
            new = run_with_hooks(m, CORRUPT, capture=[pat], interventions=[Patch(q, source=src[q], heads=[h])])
            want = ((new.activations[pat] - base.activations[pat]) * base.grads[pat]).sum() + s.corrupted_value
            assert abs(float(res.values[L, h]) - float(want)) < 1e-4


def test_subsets_and_padded_positions_by_hand(tiny_llama64):
    """layers / positions (negative, per sequence in a padded batch) / heads ("L1H2") select cells of the full
    estimate, which is ``(source - target) . gradient`` summed over the selected tokens, computed by hand."""
    m = tiny_llama64
    clean = torch.tensor([[5, 17, 33, 9, 41, 22, 60], [7, 8, 9, 10, 11, 0, 0]])
    corrupt = torch.tensor([[5, 17, 71, 9, 41, 80, 60], [7, 30, 9, 40, 11, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0, 0]])
    s = prepare(m, (clean, mask), corrupt=(corrupt, mask), answer=3, wrong=4)
    last = mask.sum(1) - 1

    def metric(lg):
        return (lg[[0, 1], last, 3] - lg[[0, 1], last, 4]).mean()

    names = [f"blocks.{L}.hook_resid_pre" for L in range(2)] + [f"blocks.{L}.attn.hook_z" for L in range(2)]
    tgt = run_with_hooks(m, corrupt, mask, capture=names, grads=names, metric=metric)
    src = run_with_hooks(m, clean, mask, capture=names).activations
    res = attribution_patching(m, s, layers=[-1], positions=[-1, 1], progress=False)
    assert res.coords == {"layer": (1,), "pos": (-1, 1)} and res.labels()["pos"] == ["-1: 60", "1: 17"]
    name = "blocks.1.hook_resid_pre"
    prod = ((src[name] - tgt.activations[name]) * tgt.grads[name]).sum(-1)  # [seq, pos]
    want = [prod[0, 6] + prod[1, 4], prod[0, 1] + prod[1, 1]]
    for j in range(2):
        assert abs(float(res.values[0, j]) - s.corrupted_value - float(want[j])) < 1e-6
    heads = attribution_patching(m, s, component="z", heads="L1H2,L0H0", positions=-1, progress=False)
    assert heads.coords == {"layer": (0, 1), "head": (0, 2)} and torch.isnan(heads.values).tolist() == [
        [False, True], [True, False]]
    for L, h, j in ((0, 0, 0), (1, 2, 1)):
        name = f"blocks.{L}.attn.hook_z"
        prod = ((src[name] - tgt.activations[name]) * tgt.grads[name]).sum(-1)  # [seq, pos, head]
        want = prod[0, 6, h] + prod[1, 4, h]
        assert abs(float(heads.values[L, j]) - s.corrupted_value - float(want)) < 1e-6
    assert [c for c, _ in heads.top(2)] in ([HeadRef(0, 0), HeadRef(1, 2)], [HeadRef(1, 2), HeadRef(0, 0)])
