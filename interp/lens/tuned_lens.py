"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer before the logit lens.

Layer ``L``'s residual stream ``h`` is translated to ``h + h @ A_L + b_L`` and then decoded like the
logit lens (final norm, unembedding). ``A_L`` and ``b_L`` start at zero (the translator starts as the
identity, so training starts from the logit lens) and are trained to minimise
``KL(final || lens_L)``, the divergence from the model's own output distribution, on token rows
streamed from a :class:`~interp.trace.TraceStore` of ``blocks.*.hook_resid_post``. The last layer
needs no translator (its reading is the output).

Training reads one shard at a time (all layers of a few thousand token rows), so memory stays at a
shard whatever the corpus size. ``init="least_squares"`` first fits each translator in closed form
(one pass over the store: weighted ridge regression of the last layer's residual direction on layer
``L``'s residual), a cheap warm start that already beats the logit lens; the KL steps then refine it.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult
from interp.models import Inputs, Model
from interp.models.registry import interp_home
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.trace.store import TraceStore
from interp.trace.trace import ModelMismatchError, Trace

HOOK = "blocks.{}.hook_resid_post"
INITS = ("identity", "least_squares")


class TunedLens:
    """Per-layer affine translators trained to make each layer's logit-lens reading match the output.

    Args:
        steps: optimiser steps of the KL objective (0: keep the initialisation).
        batch_size: token rows per step.
        lr: Adam learning rate (linear warm-up over the first 10% of steps, then linear decay to 0).
        init: ``"identity"`` (as Belrose et al.) or ``"least_squares"`` (closed-form warm start).
        ridge: relative ridge penalty of the least-squares fit (times the mean diagonal of the Gram matrix).
        matmul_dtype: dtype of the unembedding matmul while training; softmax and KL stay float32 and
            readings after training use float32. ``None`` (default) picks :func:`fast_matmul_dtype` at
            :meth:`fit`: ``torch.bfloat16`` where it is faster (GPUs, CPUs with bf16 units: about 3x), else
            ``torch.float32`` (on an AVX2-only CPU a bf16 matmul is emulated and ~100x slower).
        seed: seeds the row shuffling; the same seed and store give the same lens.
        progress: show a tqdm bar with the loss.

    Attributes (after :meth:`fit`):
        weight_: ``[layer, d_model, d_model]`` the ``A_L`` (the translator is ``h + h @ A_L + b_L``).
        bias_: ``[layer, d_model]`` the ``b_L``; rows cover layers ``0 .. n_layers - 2``.
        history_: mean KL (nats per token, averaged over layers) at each step.
        n_tokens_: token rows seen by the KL steps; ``n_tokens_init_``: by the least-squares pass.
        matmul_dtype_: the unembedding-matmul dtype the KL steps used (set when ``steps > 0``).
        model_id_, fingerprint_: the model the lens was trained for.

    Example:
        >>> import interp
        >>> from interp.lens import TunedLens
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> from interp.trace import capture  # doctest: +SKIP
        >>> st = capture(m, open("data/corpus/english.txt").read().splitlines()[:200],
        ...              "blocks.*.hook_resid_post", "/tmp/corpus")  # doctest: +SKIP
        >>> lens = TunedLens(steps=50).fit(m, st)  # doctest: +SKIP
        >>> lens.apply(m, "The capital of France is").plot()  # doctest: +SKIP
        >>> lens.save("/tmp/my-lens"); TunedLens.load("/tmp/my-lens")  # doctest: +SKIP
    """

    def __init__(self, steps: int = 250, batch_size: int = 256, lr: float = 1e-3, init: str = "identity",
                 ridge: float = 1e-3, matmul_dtype: torch.dtype | None = None, seed: int = 0,
                 progress: bool = True) -> None:
        if init not in INITS:
            raise BadInputError(f"init must be one of {INITS}, got {init!r}")
        for name, v in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise BadInputError(f"{name} must be an int >= {0 if name == 'steps' else 1}, got {v!r}")
        if not lr > 0 or not ridge >= 0:
            raise BadInputError(f"lr must be > 0 and ridge >= 0, got lr={lr!r}, ridge={ridge!r}")
        self.steps, self.batch_size, self.lr, self.init, self.ridge = steps, batch_size, lr, init, ridge
        self.matmul_dtype, self.seed, self.progress = matmul_dtype, seed, progress

    # -- training ------------------------------------------------------------------------------
    def fit(self, model: Model, store: TraceStore) -> TunedLens:
        """Train the translators on the token rows of ``store`` (which ``model`` captured).

        Raises:
            ModelMismatchError: the store was captured from another model.
            KeyError: the store lacks some ``blocks.{L}.hook_resid_post``.
            ValueError: the model has no unembedding, or the store is incomplete or empty.
        """
        store.check_model(model)
        if model.weights.W_U is None:
            raise BadInputError(f"model {model.name!r} has no unembedding: no tuned lens")
        n, d = model.dims.n_layers, model.dims.d_model
        names = [HOOK.format(L) for L in range(n)]
        missing = [h for h in names if h not in store.hooks]
        if missing:
            raise KeyError(f"the tuned lens trains on every layer's residual stream; the store lacks {missing[:3]}"
                           f"{'...' if len(missing) > 3 else ''}: capture 'blocks.*.hook_resid_post'")
        if not store.complete or store.n_tokens == 0:
            raise BadInputError(f"the store at {store.path} is incomplete or empty: finish the capture first")
        self.model_id_, self.fingerprint_ = model.name, model.fingerprint
        self.weight_ = torch.zeros(n - 1, d, d)
        self.bias_ = torch.zeros(n - 1, d)
        self.n_tokens_init_ = 0
        if self.init == "least_squares":
            self._least_squares(model, store, names)
        self.history_: list[float] = []
        self.n_tokens_ = 0
        if self.steps:
            self._train_kl(model, store, names)
        return self

    def _least_squares(self, model: Model, store: TraceStore, names: list[str]) -> None:
        d = model.dims.d_model
        gram = torch.zeros(len(names) - 1, d + 1, d + 1, dtype=torch.float64)
        cross = torch.zeros(len(names) - 1, d + 1, d, dtype=torch.float64)
        for rows in tqdm(_shard_rows(store, names, seed=self.seed), total=len(store.shards()),
                         desc="tuned lens: least squares", disable=not self.progress):
            y = rows[-1].double()
            w = 1.0 / y.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)  # fit the direction (the norm rescales)
            for L in range(len(names) - 1):
                x = torch.cat([rows[L].double(), torch.ones_like(y[:, :1])], 1)
                xw = x * w
                gram[L] += xw.T @ x
                cross[L] += xw.T @ y
            self.n_tokens_init_ += y.shape[0]
        for L in range(len(names) - 1):
            lam = self.ridge * gram[L].diagonal().mean()
            m = torch.linalg.solve(gram[L] + lam * torch.eye(d + 1, dtype=gram.dtype), cross[L])
            self.weight_[L] = (m[:d] - torch.eye(d, dtype=m.dtype)).float()
            self.bias_[L] = m[d].float()

    def _train_kl(self, model: Model, store: TraceStore, names: list[str]) -> None:
        A = self.weight_.clone().requires_grad_(True)
        b = self.bias_.clone().requires_grad_(True)
        opt = torch.optim.Adam([A, b], lr=self.lr)
        warm = max(1, self.steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (self.steps - s) / max(1, self.steps - warm))))
        W_U = model.weights.W_U.detach().to(model.device)
        b_U = model.weights.b_U.detach().to(model.device) if model.weights.b_U is not None else None
        batches = _batches(store, names, self.batch_size, self.seed)
        dtype = self.matmul_dtype_ = self.matmul_dtype or fast_matmul_dtype(model.device)
        bar = tqdm(range(self.steps), desc="tuned lens: KL", disable=not self.progress)
        with _frozen(model):
            for _ in bar:
                rows = next(batches)
                with torch.no_grad():
                    target = _logp(model, rows[-1].float(), W_U, b_U, torch.float32)
                    p_target = target.exp()
                    neg_h = (p_target * target).sum(-1)
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for L in range(len(names) - 1):
                    h = rows[L].float()
                    logq = _logp(model, h + h @ A[L] + b[L], W_U, b_U, dtype, grad=True)
                    kl = (neg_h - (p_target * logq).sum(-1)).mean()
                    (kl / (len(names) - 1)).backward()  # one layer's graph at a time: memory of one layer
                    total += float(kl.detach())
                opt.step()
                sched.step()
                self.history_.append(total / (len(names) - 1))
                self.n_tokens_ += rows[-1].shape[0]
                bar.set_postfix(kl=f"{self.history_[-1]:.3f}")
        self.weight_, self.bias_ = A.detach(), b.detach()

    # -- use -----------------------------------------------------------------------------------
    def translate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """``h + h @ A_L + b_L`` for ``[..., d_model]`` activations of ``layer`` (the last layer is unchanged)."""
        self._check_fitted()
        n = self.weight_.shape[0] + 1
        if not -n <= layer < n:
            raise BadInputError(f"layer {layer} is out of range for a lens of {n} layers")
        layer %= n
        if layer == n - 1:
            return h
        x = h.float()
        return x + x @ self.weight_[layer].to(x.device) + self.bias_[layer].to(x.device)

    def apply(self, model: Model, trace_or_text: Trace | Inputs, target: str | int | None = None,
              top_k: int = 5) -> LogitLensResult:
        """The tuned-lens reading of every layer: a :class:`LogitLensResult` (``lens="tuned"``).

        Raises:
            ModelMismatchError: ``model`` is not the model the lens was trained for.
        """
        self._check_fitted()
        if model.fingerprint != self.fingerprint_:
            raise ModelMismatchError(f"this tuned lens was trained for {self.model_id_!r} (fingerprint "
                                     f"{self.fingerprint_}) but is applied to {model.name!r} ({model.fingerprint})")
        res = logit_lens(model, trace_or_text, ("hook_resid_post",), target=target, top_k=top_k,
                         transform=lambda name, h: self.translate(h, int(name.split(".")[1])))
        return res.with_lens("tuned")

    # -- storage -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> Path:
        """Write ``path/lens.safetensors`` (``weight``, ``bias`` in ``dtype``; float16 halves the file) and
        ``path/lens.json`` (config, provenance, training curve), each atomically."""
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(out / "lens.safetensors", {"weight": self.weight_.to(dtype), "bias": self.bias_.to(dtype)})
        meta = {"kind": "TunedLens", "hook": HOOK, "model_id": self.model_id_, "fingerprint": self.fingerprint_,
                "config": {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "init": self.init,
                           "ridge": self.ridge, "matmul_dtype": _dtype_name(self.matmul_dtype),
                           "seed": self.seed},
                "matmul_dtype_used": _dtype_name(getattr(self, "matmul_dtype_", None)),
                "n_tokens": self.n_tokens_, "n_tokens_init": self.n_tokens_init_, "history": self.history_}
        atomic_write_bytes(out / "lens.json", json.dumps(meta, indent=1).encode("utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> TunedLens:
        """Read a lens written by :meth:`save` (weights stored at lower precision are cast to ``dtype``)."""
        src = Path(path)
        if not (src / "lens.json").is_file() or not (src / "lens.safetensors").is_file():
            raise FileNotFoundError(f"no tuned lens in {str(src)!r} (expected lens.json and lens.safetensors)")
        meta = json.loads((src / "lens.json").read_text(encoding="utf-8"))
        if meta.get("kind") != "TunedLens":
            raise BadInputError(f"{src} does not hold a TunedLens (kind={meta.get('kind')!r})")
        cfg = dict(meta["config"])
        cfg["matmul_dtype"] = getattr(torch, cfg["matmul_dtype"]) if cfg.get("matmul_dtype") else None
        lens = cls(**cfg, progress=False)
        tensors = load_file(str(src / "lens.safetensors"))
        lens.weight_, lens.bias_ = tensors["weight"].to(dtype), tensors["bias"].to(dtype)
        lens.model_id_, lens.fingerprint_ = meta["model_id"], meta["fingerprint"]
        lens.n_tokens_, lens.n_tokens_init_, lens.history_ = meta["n_tokens"], meta["n_tokens_init"], meta["history"]
        return lens

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            raise RuntimeError("this TunedLens is not fitted: call .fit(model, store) or TunedLens.load(path)")

    def __repr__(self) -> str:
        if not hasattr(self, "weight_"):
            return f"TunedLens(steps={self.steps}, init={self.init!r}, unfitted)"
        return (f"TunedLens({self.weight_.shape[0] + 1} layers, model={self.model_id_!r}, "
                f"{self.n_tokens_init_ + self.n_tokens_} training rows)")


def shipped_lens_dirs() -> list[Path]:
    """Where :func:`find_tuned_lens` looks: ``$INTERP_HOME/lenses`` and the repository's ``data/lenses``."""
    return [interp_home() / "lenses", Path(__file__).resolve().parents[2] / "data" / "lenses"]


def find_tuned_lens(model: Model) -> TunedLens | None:
    """A saved lens trained for exactly this model (same weights fingerprint), or ``None``.

    Looks in each of :func:`shipped_lens_dirs` for a sub-directory named after the model
    (``data/lenses/smollm2-135m`` ships with interp).

    Example:
        >>> import interp
        >>> from interp.lens import find_tuned_lens
        >>> find_tuned_lens(interp.load_model("smollm2-135m"))  # doctest: +SKIP
        TunedLens(30 layers, model='smollm2-135m', ... training rows)
    """
    for root in shipped_lens_dirs():
        d = root / model.name.replace("/", "--")
        if (d / "lens.json").is_file():
            meta = json.loads((d / "lens.json").read_text(encoding="utf-8"))
            if meta.get("fingerprint") == model.fingerprint:
                return TunedLens.load(d)
    return None


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def fast_matmul_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """``torch.bfloat16`` if a bf16 matmul is faster than float32 on ``device``, else ``torch.float32``.

    On CUDA: bf16 where the GPU supports it. On a CPU it is measured (a few milliseconds): CPUs with
    AVX512-BF16 or AMX run bf16 about 3x faster, while on AVX2-only CPUs it is emulated and far slower.

    Example:
        >>> from interp.lens.tuned_lens import fast_matmul_dtype
        >>> fast_matmul_dtype("cpu") in (torch.float32, torch.bfloat16)
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type != "cpu":
        return torch.float32
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(64, 256, generator=g), torch.randn(256, 512, generator=g)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), w.to(dtype)
        x @ y  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        best[dtype] = min(times)
    return torch.bfloat16 if best[torch.bfloat16] < best[torch.float32] else torch.float32


def _logp(model: Model, h: torch.Tensor, W_U: torch.Tensor, b_U: torch.Tensor | None,
          dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    """Log-probabilities ``[rows, vocab]`` (float32) of residuals read through the final norm and unembedding."""
    z = model.apply_final_norm(h, grad=grad)
    logits = (z.to(dtype) @ W_U.to(dtype)).float()
    if b_U is not None:
        logits = logits + b_U.float()
    return logits.log_softmax(-1)


@contextmanager
def _frozen(model: Model) -> Iterator[None]:
    """No gradients into the model's own parameters while the lens trains (restored afterwards)."""
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _shard_rows(store: TraceStore, names: Sequence[str], seed: int, epoch: int = 0) -> Iterator[list[torch.Tensor]]:
    """Each shard's rows of every hook in ``names`` (aligned: row i is one token), shards and rows shuffled."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    infos = store.shards()
    for i in torch.randperm(len(infos), generator=g).tolist():
        tensors = store.read_shard(infos[i], list(names))
        perm = torch.randperm(tensors[names[0]].shape[0], generator=g)
        yield [tensors[n][perm] for n in names]


def _batches(store: TraceStore, names: Sequence[str], batch_size: int, seed: int) -> Iterator[list[torch.Tensor]]:
    """Endless aligned batches of ``batch_size`` rows, epoch after epoch (a new shuffle each epoch)."""
    carry: list[torch.Tensor] | None = None
    for epoch in itertools.count():
        for rows in _shard_rows(store, names, seed, epoch):
            if carry is not None:
                rows = [torch.cat([c, r]) for c, r in zip(carry, rows, strict=True)]
            k = rows[0].shape[0] // batch_size * batch_size
            for s in range(0, k, batch_size):
                yield [r[s:s + batch_size] for r in rows]
            carry = [r[k:] for r in rows]


__all__ = ["TunedLens", "find_tuned_lens", "shipped_lens_dirs"]
