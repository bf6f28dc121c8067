"""The SAE training loop: shuffled token rows in, a fitted :class:`SparseAutoencoder` out.

Following Gao et al. (2024): tied initialisation (``W_enc = W_dec^T``, unit decoder rows), ``b_dec``
at the data mean, inputs scaled to mean norm ``sqrt(d_in)``, loss = fraction of variance unexplained
(``||x - x_hat||^2 / ||x - mean||^2`` per batch) + for TopK the AuxK loss (the ``aux_k`` most active
*dead* features reconstruct the residual error) or for ReLU the L1 penalty; Adam with linear
warm-up; after every step the decoder gradient's component along each row is removed and the
rows are renormalised. TopK decodes sparsely (``embedding_bag`` over the ``k`` active rows), so a
step costs about two dense ``[batch, d_in] x [d_in, d_sae]`` products.

Checkpoints hold the weights, Adam's moments, the dead-feature counters, the position in the
shuffled stream and the history, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch.nn import functional as F  # noqa: N812

from interp.errors import BadInputError, unknown_name
from interp.features.points import canonical_hook
from interp.features.sae import WEIGHTS, SAEConfig, SparseAutoencoder
from interp.progress import progress
from interp.sites import SiteSpec
from interp.trace import Trace, TraceStore
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes

HISTORY_KEYS = ("step", "tokens", "loss", "fvu", "aux", "l0", "ev", "dead_fraction", "lr")
CKPT_WEIGHTS, CKPT_META = "checkpoint.safetensors", "checkpoint.json"
RESUMABLE = ("n_tokens", "checkpoint_every")  # settings a resumed run may change (e.g. to train longer)


def as_source(data: TraceStore | Trace | torch.Tensor | os.PathLike[str], hook: SiteSpec | None
              ) -> tuple[TraceStore | torch.Tensor, str]:
    """Token rows to train or evaluate on: ``(store, hook)`` for a store (or a store path given as a
    ``pathlib.Path``), ``(rows, hook)`` for an in-memory :class:`~interp.trace.Trace` (its real tokens' rows) or a
    ``[n, d]`` float tensor of rows (``hook`` as given, or ``""``). Hooks in any :mod:`interp.sites` spelling."""
    if isinstance(data, str):
        raise BadInputError(f"a str is read as a text, not a store path ({data[:60]!r}); pass TraceStore(path), "
                            "a Trace or a [n, d_in] tensor of rows")
    if isinstance(data, os.PathLike):
        data = TraceStore(data)
    name = canonical_hook(hook) if hook else None
    if isinstance(data, TraceStore):
        if name is None:
            if len(data.hooks) != 1:
                raise BadInputError(f"pass hook=: the store holds several hooks: {', '.join(data.hooks)}")
            name = data.hooks[0]
        if name not in data.hooks:
            raise unknown_name("hook", name, data.hooks, hint="(the hooks this store holds)")
        return data, name
    if isinstance(data, Trace):
        if name is None:
            if len(data.activations) != 1:
                raise BadInputError(f"pass hook=: the trace holds several hooks: {', '.join(data.activations)}")
            name = next(iter(data.activations))
        if name not in data.activations:
            raise unknown_name("hook", name, list(data.activations), hint="(the hooks this trace holds)")
        act = data.activations[name]
        if act.dim() != 3:
            raise BadInputError(f"{name} is not a [batch, pos, d] activation (shape {tuple(act.shape)})")
        return act[data.attention_mask.bool().to(act.device)].float().cpu(), name
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or not data.is_floating_point():
            raise BadInputError(f"rows must be a float tensor [n_tokens, d_in], got {data.dtype} {tuple(data.shape)}")
        return data, name or ""
    raise TypeError(f"inputs must be a TraceStore, a store path, a Trace or a [n, d] tensor, got {type(data).__name__}")


def iter_rows(source: TraceStore | torch.Tensor, hook: str, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """One shuffled pass over the rows in full batches (float32)."""
    if isinstance(source, TraceStore):
        yield from source.iter_tokens(hook, batch_size=batch_size, shuffle=True, seed=seed, dtype=torch.float32,
                                      drop_last=True)
        return
    perm = torch.randperm(source.shape[0], generator=torch.Generator().manual_seed(seed))
    for i in range(0, source.shape[0] - batch_size + 1, batch_size):
        yield source[perm[i:i + batch_size]].float()


def _stream(source: TraceStore | torch.Tensor, hook: str, cfg: SAEConfig, epoch: int, skip: int
            ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(epoch, batch index in the epoch, rows)`` forever, one reshuffled pass after another."""
    while True:
        n = 0
        for i, rows in enumerate(iter_rows(source, hook, cfg.batch_size, cfg.seed + epoch)):
            n += 1
            if i >= skip:
                yield epoch, i, rows
        if n == 0:
            raise BadInputError(f"fewer token rows than batch_size={cfg.batch_size}: lower batch_size or add data")
        epoch, skip = epoch + 1, 0


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]``: ``[B, k]``, ``[B, k]``, ``[d_sae, d]`` → ``[B, d]``."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")


def _init(sae: SparseAutoencoder, first: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tied initialisation. The directions are drawn from a seed mixed with the hook name: SAEs at different
    hooks must not start from the same random directions, or feature flow would match feature i to feature i."""
    cfg = sae.config
    d = first.shape[1]
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + zlib.crc32(sae.hook.encode()))
    scale = math.sqrt(d) / float(first.norm(dim=-1).mean().clamp_min(1e-12)) if cfg.normalize_input else 1.0
    sae.input_scale_ = scale
    W_dec = torch.randn(cfg.d_sae, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    return {"W_enc": W_dec.T.contiguous().clone(), "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec,
            "b_dec": (first * scale).mean(0) if cfg.apply_b_dec_to_input else torch.zeros(d)}


def train_sae(sae: SparseAutoencoder, data: TraceStore | Trace | torch.Tensor | os.PathLike[str],
              hook: SiteSpec | None, *, checkpoint_dir: str | os.PathLike[str] | None,
              resume: bool) -> SparseAutoencoder:
    """Fit ``sae`` (see the module docstring); called by :meth:`SparseAutoencoder.fit`."""
    cfg = sae.config
    source, hook = as_source(data, hook)
    sae.hook = sae.hook or hook
    if not sae.model_id and isinstance(source, TraceStore):
        sae.model_id = source.manifest.trace.model_id
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    params: dict[str, torch.Tensor]
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0}
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    adam: dict[str, torch.Tensor] = {}
    if resume and ckpt is not None and (ckpt / CKPT_META).is_file():
        params, adam, since_fired, state, history = _read_checkpoint(sae, ckpt)
    else:
        first = next(iter_rows(source, hook, cfg.batch_size, cfg.seed), None)
        if first is None:
            raise BadInputError(f"fewer token rows than batch_size={cfg.batch_size}: lower batch_size or add data")
        params = _init(sae, first)
    for p in params.values():
        p.requires_grad_(True)
    order = list(WEIGHTS)
    opt = torch.optim.Adam([params[n] for n in order], lr=cfg.lr)
    if adam:
        for n in order:
            opt.state[params[n]] = {"step": adam[f"step.{n}"], "exp_avg": adam[f"exp_avg.{n}"],
                                    "exp_avg_sq": adam[f"exp_avg_sq.{n}"]}
    total = max(1, cfg.n_tokens // cfg.batch_size)
    bar = progress(total=total, initial=state["step"], desc=f"SAE {hook or 'rows'}", enabled=sae.progress,
                   unit="step")
    stream = _stream(source, hook, cfg, state["epoch"], state["batch"])
    try:
        while state["step"] < total:
            epoch, i, rows = next(stream)
            lr = cfg.lr * min(1.0, (state["step"] + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            stats = _step(params, opt, rows * sae.input_scale_, cfg, since_fired)
            state.update(step=state["step"] + 1, epoch=epoch, batch=i + 1)
            stats.update(step=state["step"], tokens=state["step"] * cfg.batch_size, lr=lr)
            for k in HISTORY_KEYS:
                history[k].append(float(stats[k]))
            bar.update(1)
            if state["step"] % 10 == 0 or state["step"] == total:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", L0=f"{stats['l0']:.1f}", EV=f"{stats['ev']:.3f}",
                                dead=f"{stats['dead_fraction']:.2f}")
            if ckpt is not None and (state["step"] % cfg.checkpoint_every == 0 or state["step"] == total):
                _write_checkpoint(sae, ckpt, params, opt, order, since_fired, state, history)
    finally:
        bar.close()
    for n in order:
        setattr(sae, n + "_", params[n].detach().clone())
    sae.history_ = history
    return sae


def _step(p: dict[str, torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor, cfg: SAEConfig,
          since_fired: torch.Tensor) -> dict[str, float]:
    if cfg.activation == "topk":
        stats, fired = _topk_grads(p, x, cfg, since_fired)
    else:
        stats, fired = _relu_grads(p, x, cfg)
    with torch.no_grad():
        W, g = p["W_dec"], p["W_dec"].grad
        if g is not None:  # keep the update tangent to the unit sphere of each row
            g -= (g * W).sum(-1, keepdim=True) * W
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        p["W_dec"] /= p["W_dec"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    since_fired += x.shape[0]
    since_fired[fired] = 0
    stats["dead_fraction"] = float((since_fired >= cfg.dead_after).float().mean())
    return stats


def _relu_grads(p: dict[str, torch.Tensor], x: torch.Tensor, cfg: SAEConfig) -> tuple[dict[str, float], torch.Tensor]:
    """ReLU + L1: autograd (every feature can be active, so the products are dense anyway)."""
    u = x - p["b_dec"] if cfg.apply_b_dec_to_input else x
    z = torch.relu(u @ p["W_enc"] + p["b_enc"])
    err = x - (z @ p["W_dec"] + p["b_dec"])
    total_var = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    fvu = err.pow(2).sum(-1).mean() / total_var
    loss = fvu + cfg.l1_coeff * (z * p["W_dec"].norm(dim=-1)).sum(-1).mean()
    loss.backward()
    active = z.detach() > 0
    f = float(fvu.detach())
    return ({"loss": float(loss.detach()), "fvu": f, "aux": 0.0, "l0": float(active.sum(-1).float().mean()),
             "ev": 1.0 - f}, active.any(0))


def _sorted_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` values and indices per row, ordered by feature index (as CSR rows need)."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    idx, order = idx.sort(dim=-1)
    return vals.gather(-1, order), idx


@torch.no_grad()
def _topk_grads(p: dict[str, torch.Tensor], x: torch.Tensor, cfg: SAEConfig, since_fired: torch.Tensor
                ) -> tuple[dict[str, float], torch.Tensor]:
    """TopK with AuxK, gradients by hand: only ``k`` (and ``aux_k``) features per row carry gradient, so
    only the encoder's forward product is dense; the rest are sparse products over the active features."""
    W_enc, b_enc, W_dec, b_dec = p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"]
    B = x.shape[0]
    u = x - b_dec if cfg.apply_b_dec_to_input else x
    pre = torch.addmm(b_enc, u, W_enc)
    vals, idx = _sorted_topk(pre, cfg.k)
    a = vals.clamp_min(0)
    err = sparse_decode(idx, a, W_dec) + b_dec - x  # x_hat - x
    total_var = float((x - x.mean(0)).pow(2).sum()) / B
    fvu = float(err.pow(2).sum()) / B / max(total_var, 1e-12)
    g_enc_t = torch.zeros_like(W_dec)  # gradient of W_enc, transposed: [d_sae, d_in]
    g_dec = torch.zeros_like(W_dec)
    g_benc = torch.zeros_like(b_enc)

    def back(ix: torch.Tensor, v: torch.Tensor, act: torch.Tensor, g_out: torch.Tensor) -> None:
        """Accumulate gradients of ``sum_j act_j W_dec[ix_j]`` (act = ReLU(v), ``ix`` sorted per row) given
        ``d loss / d out``, with sparse products: SDDMM for ``d act``, SpMM for the weight gradients."""
        n, kk = ix.shape
        flat = ix.reshape(-1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(torch.arange(0, n * kk + 1, kk), flat, torch.ones(n * kk, dtype=g_out.dtype),
                                              (n, W_dec.shape[0]), check_invariants=False)
        g_act = torch.sparse.sampled_addmm(pattern, g_out, W_dec.T, beta=0.0).values().view(n, kk)
        rows = torch.arange(n).repeat_interleave(kk)
        at = torch.stack([flat, rows])
        g_dec.add_(torch.sparse.mm(torch.sparse_coo_tensor(at, act.reshape(-1), (W_dec.shape[0], n),
                                                              check_invariants=False), g_out))
        g_pre = g_act * (v > 0)
        g_enc_t.add_(torch.sparse.mm(torch.sparse_coo_tensor(at, g_pre.reshape(-1), (W_dec.shape[0], n),
                                                                  check_invariants=False), u))
        g_benc.index_add_(0, flat, g_pre.reshape(-1))

    back(idx, vals, a, err * (2.0 / (B * max(total_var, 1e-12))))
    g_bdec = err.sum(0) * (2.0 / (B * max(total_var, 1e-12)))
    aux = 0.0
    dead = since_fired >= cfg.dead_after
    n_dead = int(dead.sum())
    if cfg.aux_k and n_dead and cfg.aux_coeff:
        dvals, didx = _sorted_topk(pre.masked_fill(~dead, float("-inf")), min(cfg.aux_k, n_dead))
        da = dvals.clamp_min(0)
        e = -err  # the residual the dead features should explain
        e_var = float((e - e.mean(0)).pow(2).sum()) / B
        if e_var > 0:
            r = sparse_decode(didx, da, W_dec) - e
            aux = float(r.pow(2).sum()) / B / e_var
            back(didx, dvals, da, r * (cfg.aux_coeff * 2.0 / (B * e_var)))
    if cfg.apply_b_dec_to_input:
        g_bdec -= W_enc @ g_benc  # pre = (x - b_dec) W_enc + b_enc
    W_enc.grad, b_enc.grad, W_dec.grad, b_dec.grad = g_enc_t.T, g_benc, g_dec, g_bdec
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
    fired[idx[a > 0]] = True
    return ({"loss": fvu + cfg.aux_coeff * aux, "fvu": fvu, "aux": aux, "l0": float((a > 0).sum(-1).float().mean()),
             "ev": 1.0 - fvu}, fired)


def _write_checkpoint(sae: SparseAutoencoder, ckpt: Path, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                      order: list[str], since_fired: torch.Tensor, state: dict[str, Any],
                      history: dict[str, list[float]]) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {n: params[n].detach().contiguous() for n in order}
    for n in order:
        st = opt.state.get(params[n], {})
        if st:
            tensors[f"exp_avg.{n}"] = st["exp_avg"].contiguous()
            tensors[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].contiguous()
            tensors[f"step.{n}"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(())
    tensors["since_fired"] = since_fired.clone()
    atomic_save_tensors(ckpt / CKPT_WEIGHTS, tensors)
    meta = {"config": asdict(sae.config), "hook": sae.hook, "model_id": sae.model_id, "input_scale": sae.input_scale_,
            "state": state, "history": history}
    atomic_write_bytes(ckpt / CKPT_META, json.dumps(meta).encode("utf-8"))


def _read_checkpoint(sae: SparseAutoencoder, ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                                  torch.Tensor, dict[str, Any], dict[str, list[float]]]:
    meta = json.loads((ckpt / CKPT_META).read_text(encoding="utf-8"))
    now = asdict(sae.config)
    diff = {k: (v, now.get(k)) for k, v in meta["config"].items() if k not in RESUMABLE and now.get(k) != v}
    if diff:
        raise BadInputError(f"checkpoint in {ckpt} was made with another config (checkpoint, now): {diff}")
    t = load_file(str(ckpt / CKPT_WEIGHTS))
    sae.input_scale_ = float(meta["input_scale"])
    params = {n: t[n].clone() for n in WEIGHTS}
    adam = {k: v.clone() for k, v in t.items() if k.startswith(("exp_avg", "step."))}
    return params, adam, t["since_fired"].clone(), dict(meta["state"]), meta["history"]


__all__ = ["as_source", "iter_rows", "sparse_decode", "train_sae"]
