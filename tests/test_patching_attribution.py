"""Attribution patching vs exact patching (linear regime), GradDrop and the AtP* q/k fix by hand."""

from __future__ import annotations

import torch

from interp.hooks import Patch, run_with_hooks
from interp.patching import Ablation, activation_patching, attribution_patching, prepare

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
    s = prepare(m, CLEAN, ablation=Ablation("mean", ref), answer=3, wrong=4)
    for comp in ("resid_pre", "mlp_out", "z", "q", "k", "v", "pattern"):
        ex = activation_patching(s, comp, direction="noising", progress=False)
        at = attribution_patching(s, comp, direction="noising", exact=ex, progress=False)
        effect = (ex.values - s.clean_value).abs().max()
        assert effect > 1e-4
        assert (at.values - ex.values).abs().max() < 0.05 * effect, comp
        assert at.correlation() > 0.99


def test_grad_drop_by_hand(tiny_llama64):
    """At the last layer's resid_pre, dropping layer n-1 leaves only the direct path (= the gradient at
    resid_post); dropping any earlier layer changes nothing."""
    m = tiny_llama64
    n = m.dims.n_layers
    s = prepare(m, CLEAN, CORRUPT, answer=3, wrong=4)
    gd = attribution_patching(s, "resid_pre", grad_drop=True, progress=False)
    plain = attribution_patching(s, "resid_pre", progress=False)
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
    s = prepare(m, CLEAN, CORRUPT, answer=3, wrong=4)
    res = attribution_patching(s, "q", qk_fix=True, progress=False)
    src = run_with_hooks(m, CLEAN, capture="blocks.*.attn.hook_q").activations
    for L in range(m.dims.n_layers):
        pat = f"blocks.{L}.attn.hook_pattern"
        base = run_with_hooks(m, CORRUPT, capture=[pat], grads=[pat], metric=lambda lg: _ld(lg).sum())
        for h in range(m.dims.n_heads):
            q = f"blocks.{L}.attn.hook_q"
            new = run_with_hooks(m, CORRUPT, capture=[pat], interventions=[Patch(q, source=src[q], heads=[h])])
            want = ((new.activations[pat] - base.activations[pat]) * base.grads[pat]).sum() + s.corrupted_value
            assert abs(float(res.values[L, h]) - float(want)) < 1e-4
