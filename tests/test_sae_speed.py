"""The fast TopK training step (sparse CSR gradients, transposed encoder, fused Adam) against dense autograd.

Speed itself is measured by benchmarks/sae.py (no timed assertions here); these tests make sure the fast
path computes the same gradients and updates as the loss written densely and differentiated by autograd.
"""

from __future__ import annotations

import pytest
import torch

from interp.features import SAEConfig, SparseAutoencoder
from interp.features.topk import _topk_backward
from interp.features.train import Fitter


def dense_loss(q: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor | None, k: int, dead: torch.Tensor,
               aux_k: int, aux_coeff: float, b_dec_in: bool) -> torch.Tensor:
    t = x if y is None else y
    u = x - q["b_dec"] if b_dec_in else x
    pre = u @ q["W_enc"].T + q["b_enc"]
    v, i = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    out = z @ q["W_dec"] + q["b_dec"]
    if "W_skip" in q:
        out = out + x @ q["W_skip"]
    err = t - out
    fvu = err.pow(2).sum() / (t - t.mean(0)).pow(2).sum()
    dv, di = pre.masked_fill(~dead, float("-inf")).topk(aux_k, dim=-1)
    e = err.detach()
    r = e - torch.zeros_like(pre).scatter(-1, di, torch.relu(dv)) @ q["W_dec"]
    return fvu + aux_coeff * r.pow(2).sum() / (e - e.mean(0)).pow(2).sum()


@pytest.mark.parametrize("transcoder", [False, True])
def test_fast_backward_matches_autograd(transcoder: bool) -> None:
    g = torch.Generator().manual_seed(0)
    B, d, d_out, S, k = 48, 12, 10, 300, 7  # S large enough that patterns repeat across rows
    d_out = d_out if transcoder else d
    cfg = SAEConfig(d_sae=S, k=k, aux_k=9, aux_coeff=0.5, dead_after=1, apply_b_dec_to_input=not transcoder)
    p = {"W_enc": torch.randn(S, d, generator=g), "b_enc": 0.1 * torch.randn(S, generator=g),
         "W_dec": torch.randn(S, d_out, generator=g), "b_dec": torch.randn(d_out, generator=g)}
    if transcoder:
        p["W_skip"] = 0.1 * torch.randn(d, d_out, generator=g)
    x = torch.randn(B, d, generator=g)
    y = torch.randn(B, d_out, generator=g) if transcoder else None
    since = torch.zeros(S, dtype=torch.long)
    since[::4] = 5
    stats, fired = _topk_backward(p, x, cfg, since, y)
    q = {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}
    loss = dense_loss(q, x, y, k, since >= 1, 9, 0.5, not transcoder)
    loss.backward()
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-4)
    for n in p:
        assert p[n].grad is not None and p[n].grad.shape == p[n].shape, n
        assert torch.allclose(p[n].grad, q[n].grad, atol=1e-5, rtol=1e-4), n
    # the features that fired are exactly the positive top-k ones
    pre = (x - p["b_dec"] if not transcoder else x) @ p["W_enc"].T + p["b_enc"]
    v, i = pre.topk(k, dim=-1)
    expect = torch.zeros(S, dtype=torch.bool)
    expect[i[v > 0]] = True
    assert torch.equal(fired, expect)


def test_fitter_step_equals_adam_on_the_dense_loss() -> None:
    """One step of the fast fitter = torch Adam (unfused) on the dense loss, plus the decoder-row projection."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 16, generator=g) * 3 + 1
    cfg = SAEConfig(d_sae=200, k=5, batch_size=256, n_tokens=512, lr=1e-2, warmup_steps=0, dead_after=10**9)
    sae = SparseAutoencoder(cfg, progress=False)
    fit = Fitter(sae, x)
    start = fit.params_standard()
    fit.step(x)
    got = fit.params_standard()
    q = {n: t.clone().requires_grad_(True) for n, t in start.items()}
    xs = x * sae.input_scale_
    qq = dict(q, W_enc=q["W_enc"].T)
    loss = dense_loss(qq, xs, None, 5, torch.zeros(200, dtype=torch.bool), 1, 0.0, True)
    loss.backward()
    with torch.no_grad():
        gW = q["W_dec"].grad
        gW -= (gW * q["W_dec"]).sum(-1, keepdim=True) * q["W_dec"]
    opt = torch.optim.Adam(list(q.values()), lr=1e-2, foreach=False)
    opt.step()
    with torch.no_grad():
        q["W_dec"] /= q["W_dec"].norm(dim=-1, keepdim=True)
    for n in start:
        assert torch.allclose(got[n], q[n].detach(), atol=1e-5), n


def test_large_dictionary_step_and_resume_match(tmp_path: object) -> None:
    """16k features, k = 64 (the benchmark's large size) on a small batch: a run checkpointed and resumed ends
    where an uninterrupted one does, and the decoder keeps unit rows."""
    from pathlib import Path

    g = torch.Generator().manual_seed(5)
    x = torch.randn(512, 24, generator=g)
    cfg = SAEConfig(d_sae=16384, k=64, batch_size=128, n_tokens=512, dead_after=200, aux_k=32, checkpoint_every=2)
    full = SparseAutoencoder(cfg, progress=False).fit(x)
    ck = Path(str(tmp_path)) / "ck"
    part = SparseAutoencoder(SAEConfig(**{**cfg.__dict__, "n_tokens": 256}), progress=False).fit(x, checkpoint_dir=ck)
    assert part.history_["step"][-1] == 2
    resumed = SparseAutoencoder(cfg, progress=False).fit(x, checkpoint_dir=ck, resume=True)
    for n in ("W_enc_", "W_dec_", "b_enc_", "b_dec_"):
        assert torch.allclose(getattr(resumed, n), getattr(full, n), atol=1e-6), n
    assert torch.allclose(full.W_dec_.norm(dim=-1), torch.ones(16384), atol=1e-5)
    assert max(full.history_["aux"]) > 0  # dead features were fed to AuxK
