"""The SAE training loop: shuffled token rows in, a fitted :class:`SparseAutoencoder` out.

Following Gao et al. (2024): tied initialisation (``W_enc = W_dec^T``, unit decoder rows), ``b_dec``
at the data mean, inputs scaled to mean norm ``sqrt(d_in)``, loss = fraction of variance unexplained
(``||x - x_hat||^2 / ||x - mean||^2`` per batch) + for TopK the AuxK loss (the ``aux_k`` most active
*dead* features reconstruct the residual error) or for ReLU the L1 penalty; Adam with linear
warm-up; after every step the decoder gradient's component along each row is removed and the
rows are renormalised. TopK's gradients are computed by hand and sparsely (:mod:`interp.features.topk`), so
a step costs one dense ``[batch, d_in] x [d_in, d_sae]`` product and sparse work.

Checkpoints hold the weights, Adam's moments, the dead-feature counters, the position in the
shuffled stream and the history, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, unknown_name
from interp.features.points import canonical_hook
from interp.features.sae import WEIGHTS, SAEConfig, SparseAutoencoder
from interp.features.topk import _topk_backward
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


def _init_generator(sae: SparseAutoencoder) -> torch.Generator:
    return torch.Generator().manual_seed(sae.config.seed * 1_000_003 + zlib.crc32(sae.hook.encode()))


def initial_directions(sae: SparseAutoencoder, d_out: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The unit decoder rows ``sae`` starts training from (``[d_sae, d_out]``; drawn from its seed and hook): how far
    the trained rows moved from them says how much training shaped them.

    Example:
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2), hook="resid_post.0")
        >>> bool(initial_directions(sae, 4).norm(dim=-1).allclose(torch.ones(8)))
        True
    """
    W = torch.randn(sae.config.d_sae, d_out, generator=generator or _init_generator(sae))
    return W / W.norm(dim=-1, keepdim=True)


def _init(sae: SparseAutoencoder, first: torch.Tensor, first_out: torch.Tensor | None = None
          ) -> dict[str, torch.Tensor]:
    """Tied initialisation. The directions are drawn from a seed mixed with the hook name: SAEs at different
    hooks must not start from the same random directions, or feature flow would match feature i to feature i.
    A transcoder (``first_out``: its target rows) gets its own output scale and ``b_dec`` at the target's mean."""
    cfg = sae.config
    d = first.shape[1]
    g = _init_generator(sae)

    def scale_of(rows: torch.Tensor) -> float:
        return math.sqrt(rows.shape[1]) / float(rows.norm(dim=-1).mean().clamp_min(1e-12)) if cfg.normalize_input \
            else 1.0

    sae.input_scale_ = scale_of(first)
    d_out = d if first_out is None else first_out.shape[1]
    W_dec = initial_directions(sae, d_out, g)
    if first_out is None:
        W_enc = W_dec.T.contiguous().clone()
        b_dec = (first * sae.input_scale_).mean(0) if cfg.apply_b_dec_to_input else torch.zeros(d)
        return {"W_enc": W_enc, "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec, "b_dec": b_dec}
    out_scale = scale_of(first_out)
    sae.output_scale_ = out_scale  # type: ignore[attr-defined]
    W_enc = torch.randn(d, cfg.d_sae, generator=g) / math.sqrt(d)
    p = {"W_enc": W_enc, "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec, "b_dec": (first_out * out_scale).mean(0)}
    if getattr(sae, "skip", False):
        p["W_skip"] = torch.zeros(d, d_out)
    return p


class Fitter:
    """One dictionary's training state (weights, Adam, dead-feature counters, history): :meth:`step` takes one
    batch of input rows (and, for a transcoder, target rows) in the model's units. :func:`train_sae` drives one;
    :func:`interp.features.stream.train_on_model` drives several from one forward of the model.

    The encoder is kept transposed (``[d_sae, d_in]``, like the decoder) so that its gradient, a sparse product
    over the active features, is contiguous; Adam runs fused."""

    def __init__(self, sae: SparseAutoencoder, first: torch.Tensor, first_out: torch.Tensor | None = None,
                 checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False) -> None:
        cfg = sae.config
        self.sae, self.cfg = sae, cfg
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0}
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        adam: dict[str, torch.Tensor] = {}
        if resume and self.ckpt is not None and (self.ckpt / CKPT_META).is_file():
            params, adam, self.since_fired, self.state, self.history = _read_checkpoint(sae, self.ckpt)
        else:
            params = _init(sae, first, first_out)
        # internal layout: W_enc transposed
        self.p = {n: (t.T.contiguous() if n == "W_enc" else t.contiguous()) for n, t in params.items()}
        self.order = [n for n in (*WEIGHTS, "W_skip") if n in self.p]
        for t in self.p.values():
            t.requires_grad_(True)
        self.opt = torch.optim.Adam([self.p[n] for n in self.order], lr=cfg.lr, fused=True)
        if adam:
            for n in self.order:
                tr = (lambda t: t.T.contiguous()) if n == "W_enc" else (lambda t: t)
                self.opt.state[self.p[n]] = {"step": adam[f"step.{n}"], "exp_avg": tr(adam[f"exp_avg.{n}"]),
                                             "exp_avg_sq": tr(adam[f"exp_avg_sq.{n}"])}
        self.transcoder = first_out is not None
        self.bufs: dict[str, torch.Tensor] = {}
        self.reuse_buffers = True  # False: allocate the step's large buffers afresh (the benchmark's comparison)

    @property
    def done(self) -> bool:
        return bool(self.state["step"] >= max(1, self.cfg.n_tokens // self.cfg.batch_size))

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None, *, epoch: int = 0, batch: int = 0
             ) -> dict[str, float]:
        """One Adam step on rows ``x`` (targets ``y`` for a transcoder), in the model's units."""
        cfg, st = self.cfg, self.state
        lr = cfg.lr * min(1.0, (st["step"] + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        xs = x.float() * self.sae.input_scale_
        ys = None if y is None else y.float() * float(getattr(self.sae, "output_scale_", 1.0))
        stats = _step(self.p, self.opt, xs, cfg, self.since_fired, ys, self.bufs if self.reuse_buffers else None)
        st.update(step=st["step"] + 1, epoch=epoch, batch=batch)
        stats.update(step=st["step"], tokens=st["step"] * x.shape[0], lr=lr)
        for k in HISTORY_KEYS:
            self.history[k].append(float(stats[k]))
        if self.ckpt is not None and (st["step"] % cfg.checkpoint_every == 0 or self.done):
            self.checkpoint()
        return stats

    def params_standard(self) -> dict[str, torch.Tensor]:
        """The weights in the saved layout (``W_enc [d_in, d_sae]``)."""
        return {n: (t.detach().T.contiguous() if n == "W_enc" else t.detach().clone()) for n, t in self.p.items()}

    def checkpoint(self) -> None:
        assert self.ckpt is not None
        _write_checkpoint(self.sae, self.ckpt, self, self.since_fired, self.state, self.history)

    def finish(self) -> SparseAutoencoder:
        for n, t in self.params_standard().items():
            setattr(self.sae, n + "_", t)
        self.sae.history_ = self.history
        return self.sae


def train_sae(sae: SparseAutoencoder, data: TraceStore | Trace | torch.Tensor | os.PathLike[str],
              hook: SiteSpec | None, *, checkpoint_dir: str | os.PathLike[str] | None,
              resume: bool) -> SparseAutoencoder:
    """Fit ``sae`` (see the module docstring); called by :meth:`SparseAutoencoder.fit`."""
    cfg = sae.config
    source, hook = as_source(data, hook)
    sae.hook = sae.hook or hook
    if not sae.model_id and isinstance(source, TraceStore):
        sae.model_id = source.manifest.trace.model_id
    first = None
    if not (resume and checkpoint_dir is not None and (Path(checkpoint_dir) / CKPT_META).is_file()):
        first = next(iter_rows(source, hook, cfg.batch_size, cfg.seed), None)
        if first is None:
            raise BadInputError(f"fewer token rows than batch_size={cfg.batch_size}: lower batch_size or add data")
    fit = Fitter(sae, first if first is not None else torch.zeros(0), checkpoint_dir=checkpoint_dir, resume=resume)
    total = max(1, cfg.n_tokens // cfg.batch_size)
    bar = progress(total=total, initial=fit.state["step"], desc=f"SAE {hook or 'rows'}", enabled=sae.progress,
                   unit="step")
    stream = _stream(source, hook, cfg, fit.state["epoch"], fit.state["batch"])
    try:
        while not fit.done:
            epoch, i, rows = next(stream)
            stats = fit.step(rows, epoch=epoch, batch=i + 1)
            bar.update(1)
            if fit.state["step"] % 10 == 0 or fit.done:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", L0=f"{stats['l0']:.1f}", EV=f"{stats['ev']:.3f}",
                                dead=f"{stats['dead_fraction']:.2f}")
    finally:
        bar.close()
    return fit.finish()


def _step(p: dict[str, torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor, cfg: SAEConfig,
          since_fired: torch.Tensor, y: torch.Tensor | None = None, bufs: dict[str, torch.Tensor] | None = None
          ) -> dict[str, float]:
    """One step on internal-layout parameters (``p["W_enc"]`` is ``[d_sae, d_in]``); ``bufs``: the pre-activation and
    gradient storage, reused from step to step."""
    if cfg.activation == "topk":
        stats, fired = _topk_backward(p, x, cfg, since_fired, y, bufs)
    else:
        stats, fired = _relu_grads(p, x, cfg, y)
    with torch.no_grad():
        W, g = p["W_dec"], p["W_dec"].grad
        if g is not None:  # keep the update tangent to the unit sphere of each row
            g.addcmul_(torch.linalg.vecdot(g, W).unsqueeze(-1), W, value=-1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        p["W_dec"].div_(torch.linalg.vector_norm(p["W_dec"], dim=-1, keepdim=True).clamp_min_(1e-12))
    since_fired += x.shape[0]
    since_fired[fired] = 0
    stats["dead_fraction"] = float((since_fired >= cfg.dead_after).float().mean())
    return stats


def _relu_grads(p: dict[str, torch.Tensor], x: torch.Tensor, cfg: SAEConfig, y: torch.Tensor | None = None
                ) -> tuple[dict[str, float], torch.Tensor]:
    """ReLU + L1: autograd (every feature can be active, so the products are dense anyway)."""
    t = x if y is None else y
    u = x - p["b_dec"] if (cfg.apply_b_dec_to_input and y is None) else x
    z = torch.relu(u @ p["W_enc"].T + p["b_enc"])
    out = z @ p["W_dec"] + p["b_dec"]
    if "W_skip" in p:
        out = out + x @ p["W_skip"]
    err = t - out
    total_var = (t - t.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    fvu = err.pow(2).sum(-1).mean() / total_var
    loss = fvu + cfg.l1_coeff * (z * p["W_dec"].norm(dim=-1)).sum(-1).mean()
    loss.backward()
    active = z.detach() > 0
    f = float(fvu.detach())
    return ({"loss": float(loss.detach()), "fvu": f, "aux": 0.0, "l0": float(active.sum(-1).float().mean()),
             "ev": 1.0 - f}, active.any(0))


def _write_checkpoint(sae: SparseAutoencoder, ckpt: Path, fit: Fitter, since_fired: torch.Tensor,
                      state: dict[str, Any], history: dict[str, list[float]]) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = fit.params_standard()
    for n in fit.order:
        st = fit.opt.state.get(fit.p[n], {})
        if st:
            tr = (lambda t: t.T.contiguous()) if n == "W_enc" else (lambda t: t.contiguous())
            tensors[f"exp_avg.{n}"] = tr(st["exp_avg"])
            tensors[f"exp_avg_sq.{n}"] = tr(st["exp_avg_sq"])
            tensors[f"step.{n}"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(())
    tensors["since_fired"] = since_fired.clone()
    atomic_save_tensors(ckpt / CKPT_WEIGHTS, tensors)
    meta = {"config": asdict(sae.config), "hook": sae.hook, "model_id": sae.model_id, "input_scale": sae.input_scale_,
            "output_scale": getattr(sae, "output_scale_", None), "state": state, "history": history}
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
    if meta.get("output_scale") is not None:
        sae.output_scale_ = float(meta["output_scale"])  # type: ignore[attr-defined]
    params = {n: t[n].clone() for n in (*WEIGHTS, "W_skip") if n in t}
    adam = {k: v.clone() for k, v in t.items() if k.startswith(("exp_avg", "step."))}
    return params, adam, t["since_fired"].clone(), dict(meta["state"]), meta["history"]


__all__ = ["Fitter", "as_source", "initial_directions", "iter_rows", "train_sae"]
