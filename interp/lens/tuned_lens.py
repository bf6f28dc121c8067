"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer before the logit lens.

Layer ``L``'s residual stream ``h`` is translated to ``h + h @ A_L + b_L`` and then decoded like the
logit lens (final norm, unembedding). ``A_L`` and ``b_L`` start at zero (the translator starts as the
identity, so training starts from the logit lens) and are trained to minimise
``KL(final || lens_L)``, the divergence from the model's own output distribution, on the token rows of
every layer's ``resid_post``. The last layer needs no translator (its reading is the output).

Training on a :class:`~interp.trace.TraceStore` reads one shard at a time (all layers of a few thousand
token rows), so memory stays at a shard whatever the corpus size; other inputs (texts, ids, a Trace) are
run (or read) once and held in memory. ``init="least_squares"`` first fits each translator in closed form
(one pass: weighted ridge regression of the last layer's residual direction on layer ``L``'s residual), a
cheap warm start that already beats the logit lens; the KL steps then refine it.

A saved lens is ``lens.safetensors`` (``weight``, ``bias``) + ``lens.json`` (class, schema version, interp
version, model, config, training curve); lenses saved by interp 0.1 (schema 0) load too.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError, ModelMismatchError, SchemaVersionError, bad_value
from interp.lens.logit_lens import for_decoder, lens_reading
from interp.lens.result import LogitLensResult
from interp.models import EncoderDecoder, Inputs, Model
from interp.models.encdec_view import DecoderView
from interp.models.registry import interp_home
from interp.progress import progress as progress_bar
from interp.sites import Component, Positions, Site
from interp.trace.inputs import ensure_trace
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.trace.store import TraceStore
from interp.version import __version__

log = logging.getLogger(__name__)
HOOK = "resid_post"
INITS = ("identity", "least_squares")
Timer = Callable[[torch.dtype], float]
"""``dtype -> seconds`` of a representative matmul in that dtype (see :func:`fast_matmul_dtype`)."""


class TunedLens:
    """Per-layer affine translators trained to make each layer's logit-lens reading match the output.

    A scikit-learn-style estimator: configure it, :meth:`fit` it (returns the lens), then :meth:`apply` it.

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
        seed: seeds the row shuffling; the same seed and data give the same lens.
        progress: show a progress bar with the loss (``None``: follow :func:`interp.quiet` / ``INTERP_PROGRESS``).

    Attributes (after :meth:`fit` or :meth:`load`):
        weight_: ``[layer, d_model, d_model]`` the ``A_L`` (the translator is ``h + h @ A_L + b_L``).
        bias_: ``[layer, d_model]`` the ``b_L``; rows cover layers ``0 .. n_layers - 2``.
        history_: mean KL (nats per token, averaged over layers) at each step.
        n_tokens_: token rows seen by the KL steps; ``n_tokens_init_``: by the least-squares pass.
        matmul_dtype_: the unembedding-matmul dtype the KL steps used (``None`` without KL steps).
        model_id_, fingerprint_: the model the lens was trained for.

    Example:
        >>> import tempfile, interp
        >>> from interp.lens import TunedLens
        >>> m = interp.load_model("smollm2-135m")
        >>> texts = ["The capital of France is Paris.", "One, two, three, four, five."]
        >>> lens = TunedLens(steps=2, batch_size=8, init="least_squares", progress=False).fit(m, texts)
        >>> lens
        TunedLens(30 layers, model='smollm2-135m', 33 training rows)
        >>> res = lens.apply(m, "The capital of France is", target=" Paris")
        >>> res.lens, res.top_tokens(layer=-1)[0]
        ('tuned', ' Paris')
        >>> TunedLens.load(lens.save(tempfile.mkdtemp())).history_ == lens.history_
        True
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    def __init__(self, *, steps: int = 250, batch_size: int = 256, lr: float = 1e-3, init: str = "identity",
                 ridge: float = 1e-3, matmul_dtype: torch.dtype | None = None, seed: int = 0,
                 progress: bool | None = None) -> None:
        if init not in INITS:
            raise bad_value("init", init, " or ".join(repr(i) for i in INITS))
        for name, v, low in (("steps", steps, 0), ("batch_size", batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(name, v, f"an int >= {low}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise bad_value("lr", lr, "a number > 0")
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise bad_value("ridge", ridge, "a number >= 0")
        if matmul_dtype is not None and not isinstance(matmul_dtype, torch.dtype):
            raise bad_value("matmul_dtype", matmul_dtype, "a torch dtype (torch.float32, torch.bfloat16) or None")
        self.steps, self.batch_size, self.lr, self.init, self.ridge = steps, batch_size, float(lr), init, float(ridge)
        self.matmul_dtype, self.seed, self.progress = matmul_dtype, seed, progress

    # -- training ------------------------------------------------------------------------------
    def fit(self, model: Model | EncoderDecoder | DecoderView, inputs: Inputs, *, decoder_inputs: Any = None
            ) -> TunedLens:
        """Train the translators on the real token rows of ``inputs``.

        Args:
            model: the model whose residual streams are read (it is not changed); an encoder–decoder: its
                decoder's layers (as :func:`~interp.lens.logit_lens` reads them).
            inputs: a :class:`~interp.trace.TraceStore` holding every layer's ``resid_post`` (streamed shard by
                shard), or any other inputs (texts, ids, a Trace, a store without those hooks), which are run
                or read once and held in memory. An encoder–decoder's: the sources (with ``decoder_inputs``) or a
                decoder trace.
            decoder_inputs: encoder–decoders only: the decoder's input, as :func:`~interp.lens.logit_lens` takes it.

        Returns:
            This lens, fitted.

        Raises:
            ModelMismatchError: the trace or store was made by another model.
            BadInputError: the model has no unembedding, or the store is incomplete or empty.
        """
        model, inputs, _ = for_decoder(model, inputs, decoder_inputs, HOOK)
        if model.weights.W_U is None:
            raise BadInputError(f"model {model.name!r} has no unembedding: no tuned lens")
        n, d = model.dims.n_layers, model.dims.d_model
        rows = _Rows(model, inputs)
        self.model_id_, self.fingerprint_ = model.name, model.fingerprint
        self.weight_ = torch.zeros(n - 1, d, d)
        self.bias_ = torch.zeros(n - 1, d)
        self.n_tokens_init_ = 0
        if self.init == "least_squares":
            self._least_squares(model, rows)
        self.history_: list[float] = []
        self.n_tokens_ = 0
        self.matmul_dtype_: torch.dtype | None = None
        if self.steps:
            self._train_kl(model, rows)
        return self

    def _least_squares(self, model: Model, source: _Rows) -> None:
        d, n = model.dims.d_model, model.dims.n_layers
        gram = torch.zeros(n - 1, d + 1, d + 1, dtype=torch.float64)
        cross = torch.zeros(n - 1, d + 1, d, dtype=torch.float64)
        for rows in progress_bar(source.chunks(self.seed), enabled=self.progress, total=source.n_chunks,
                                 desc="tuned lens: least squares"):
            y = rows[-1].double()
            w = 1.0 / y.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)  # fit the direction (the norm rescales)
            for L in range(n - 1):
                x = torch.cat([rows[L].double(), torch.ones_like(y[:, :1])], 1)
                xw = x * w
                gram[L] += xw.T @ x
                cross[L] += xw.T @ y
            self.n_tokens_init_ += y.shape[0]
        for L in range(n - 1):
            lam = self.ridge * gram[L].diagonal().mean()
            m = torch.linalg.solve(gram[L] + lam * torch.eye(d + 1, dtype=gram.dtype), cross[L])
            self.weight_[L] = (m[:d] - torch.eye(d, dtype=m.dtype)).float()
            self.bias_[L] = m[d].float()

    def _train_kl(self, model: Model, source: _Rows) -> None:
        n = model.dims.n_layers
        A = self.weight_.clone().requires_grad_(True)
        b = self.bias_.clone().requires_grad_(True)
        opt = torch.optim.Adam([A, b], lr=self.lr)
        warm = max(1, self.steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (self.steps - s) / max(1, self.steps - warm))))
        if model.weights.W_U is None:
            raise BadInputError(f"model {model.name!r} has no unembedding: no tuned lens")
        W_U = model.weights.W_U.detach().to(model.device)
        b_U = model.weights.b_U.detach().to(model.device) if model.weights.b_U is not None else None
        batches = source.batches(self.batch_size, self.seed)
        dtype = self.matmul_dtype_ = self.matmul_dtype or fast_matmul_dtype(model.device)
        bar = progress_bar(range(self.steps), enabled=self.progress, desc="tuned lens: KL")
        with _frozen(model):
            for _ in bar:
                rows = next(batches)
                with torch.no_grad():
                    target = _logp(model, rows[-1].float(), W_U, b_U, torch.float32)
                    p_target = target.exp()
                    neg_h = (p_target * target).sum(-1)
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for L in range(n - 1):
                    h = rows[L].float().to(model.device)
                    logq = _logp(model, h + h @ A[L] + b[L], W_U, b_U, dtype, grad=True)
                    kl = (neg_h - (p_target * logq).sum(-1)).mean()
                    (kl / (n - 1)).backward()  # one layer's graph at a time: memory of one layer
                    total += float(kl.detach())
                opt.step()
                sched.step()
                self.history_.append(total / (n - 1))
                self.n_tokens_ += rows[-1].shape[0]
                bar.set_postfix(kl=f"{self.history_[-1]:.3f}")
        self.weight_, self.bias_ = A.detach(), b.detach()

    # -- use -----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Layers of the model the lens was trained for."""
        self._check_fitted()
        return int(self.weight_.shape[0]) + 1

    def translate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """``h + h @ A_L + b_L`` for ``[..., d_model]`` activations of ``layer`` (negative: from the end; the last
        layer is unchanged)."""
        self._check_fitted()
        n = self.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise bad_value("layer", layer, f"{-n}..{n - 1} (a lens of {n} layers)")
        layer %= n
        if layer == n - 1:
            return h
        x = h.float()
        return x + x @ self.weight_[layer].to(x.device) + self.bias_[layer].to(x.device)

    def apply(self, model: Model | EncoderDecoder | DecoderView, inputs: Inputs, *, decoder_inputs: Any = None,
              target: str | int | None = None, top_k: int = 5, positions: Positions = None) -> LogitLensResult:
        """The tuned-lens reading of every layer's ``resid_post``: a :class:`LogitLensResult` (``lens="tuned"``).

        Takes the inputs and options of :func:`~interp.lens.logit_lens` (an encoder–decoder's decoder too).

        Raises:
            ModelMismatchError: ``model`` is not the model the lens was trained for.
        """
        self._check_fitted()
        model, inputs, _ = for_decoder(model, inputs, decoder_inputs, HOOK)
        if model.fingerprint != self.fingerprint_:
            raise ModelMismatchError(f"this tuned lens was trained for {self.model_id_!r} (fingerprint "
                                     f"{self.fingerprint_}) but is applied to {model.name!r} ({model.fingerprint})")
        return lens_reading(model, inputs, hooks=HOOK, target=target, top_k=top_k, positions=positions,
                            translate=lambda layer, h: self.translate(h, layer), lens="tuned")

    # -- storage -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``path/lens.safetensors`` (``weight``, ``bias`` in ``dtype``; float16 halves the file) and
        ``path/lens.json`` (class, schema and interp version, model, config, training curve), each atomically."""
        self._check_fitted()
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise BadInputError(f"cannot save a tuned lens to {str(out)!r}: it is a file, and a lens is a directory")
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(out / "lens.safetensors", {"weight": self.weight_.to(dtype), "bias": self.bias_.to(dtype)})
        atomic_write_bytes(out / "lens.json", json.dumps(self.metadata(), indent=1).encode("utf-8"))
        return out

    def metadata(self) -> dict[str, Any]:
        """What ``lens.json`` holds: class, schema and interp version, hook, model, config, training record."""
        self._check_fitted()
        return {"class": "TunedLens", "schema_version": self.SCHEMA_VERSION, "interp_version": __version__,
                "hook": HOOK, "model_id": self.model_id_, "fingerprint": self.fingerprint_,
                "config": {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "init": self.init,
                           "ridge": self.ridge, "matmul_dtype": _dtype_name(self.matmul_dtype), "seed": self.seed},
                "matmul_dtype_used": _dtype_name(getattr(self, "matmul_dtype_", None)),
                "n_tokens": self.n_tokens_, "n_tokens_init": self.n_tokens_init_, "history": self.history_}

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> TunedLens:
        """Read a lens written by :meth:`save`, by this interp or an older one (weights stored at lower precision
        are cast to ``dtype``).

        Raises:
            BadInputError: ``path`` holds no tuned lens.
            CorruptStoreError: its files cannot be read.
            SchemaVersionError: it was written by a newer interp.
        """
        src = Path(path)
        meta = read_lens_meta(src)
        cfg = {k: v for k, v in meta.get("config", {}).items() if k in _CONFIG}  # unknown keys are dropped
        cfg["matmul_dtype"] = _parse_dtype(cfg.get("matmul_dtype"))
        lens = cls(**cfg, progress=False)
        try:
            tensors = load_file(str(src / "lens.safetensors"))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise CorruptStoreError(f"{src / 'lens.safetensors'} cannot be read ({e}); save the lens again") from None
        if "weight" not in tensors or "bias" not in tensors:
            raise CorruptStoreError(f"{src / 'lens.safetensors'} lacks 'weight' or 'bias'; save the lens again")
        lens.weight_, lens.bias_ = tensors["weight"].to(dtype), tensors["bias"].to(dtype)
        lens.model_id_, lens.fingerprint_ = meta["model_id"], meta["fingerprint"]
        lens.n_tokens_, lens.n_tokens_init_ = meta.get("n_tokens", 0), meta.get("n_tokens_init", 0)
        lens.history_ = list(meta.get("history", []))
        lens.matmul_dtype_ = _parse_dtype(meta.get("matmul_dtype_used"))
        return lens

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            raise BadInputError("this TunedLens is not fitted: call .fit(model, inputs) or TunedLens.load(path)")

    def __repr__(self) -> str:
        if not hasattr(self, "weight_"):
            return f"TunedLens(steps={self.steps}, init={self.init!r}, unfitted)"
        return (f"TunedLens({self.weight_.shape[0] + 1} layers, model={self.model_id_!r}, "
                f"{self.n_tokens_init_ + self.n_tokens_} training rows)")


_CONFIG = ("steps", "batch_size", "lr", "init", "ridge", "matmul_dtype", "seed")


def _upgrade_v0(meta: dict[str, Any]) -> None:
    """interp 0.1 (schema 0): ``{"kind": "TunedLens", "hook": "blocks.{}.hook_resid_post", ...}``; its first lenses
    did not record ``matmul_dtype_used``, which is the configured dtype when one was set and KL steps ran."""
    meta.pop("kind", None)
    meta["class"] = "TunedLens"
    meta["hook"] = HOOK
    cfg = meta.get("config", {})
    if meta.get("matmul_dtype_used") is None and cfg.get("matmul_dtype") and cfg.get("steps"):
        meta["matmul_dtype_used"] = cfg["matmul_dtype"]


UPGRADES: dict[int, Callable[[dict[str, Any]], None]] = {0: _upgrade_v0}


def read_lens_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``lens.json`` of a saved tuned lens, upgraded to the current schema.

    Raises:
        BadInputError: ``path`` holds no tuned lens. CorruptStoreError: its JSON is damaged.
        SchemaVersionError: it was written by a newer interp.
    """
    src = Path(path)
    if not (src / "lens.json").is_file() or not (src / "lens.safetensors").is_file():
        raise BadInputError(f"no tuned lens in {str(src)!r} (expected lens.json and lens.safetensors)")
    try:
        meta = json.loads((src / "lens.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(f"{src / 'lens.json'} is not valid JSON ({e}); save the lens again") from None
    if not isinstance(meta, dict):
        raise CorruptStoreError(f"{src / 'lens.json'} does not hold a tuned lens")
    if "class" in meta:
        version = meta.get("schema_version")
    elif meta.get("kind") == "TunedLens":
        version = 0
    else:
        raise BadInputError(f"{src} does not hold a TunedLens (it holds {meta.get('class') or meta.get('kind')!r})")
    if meta.get("class", "TunedLens") != "TunedLens":
        raise BadInputError(f"{src} holds a {meta['class']}, not a TunedLens")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CorruptStoreError(f"{src / 'lens.json'} has a bad schema_version {version!r}")
    if version > TunedLens.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{src} holds a TunedLens of schema version {version}, written by interp {meta.get('interp_version')}; "
            f"this interp ({__version__}) reads up to version {TunedLens.SCHEMA_VERSION}: upgrade interp to load it")
    for v in range(version, TunedLens.SCHEMA_VERSION):
        UPGRADES[v](meta)
    for key in ("model_id", "fingerprint"):
        if key not in meta:
            raise CorruptStoreError(f"{src / 'lens.json'} has no {key!r}; save the lens again")
    return meta


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
        >>> find_tuned_lens(interp.load_model("smollm2-135m"))
        TunedLens(30 layers, model='smollm2-135m', 213323 training rows)
    """
    for root in shipped_lens_dirs():
        d = root / model.name.replace("/", "--")
        if (d / "lens.json").is_file():
            try:
                meta = read_lens_meta(d)
            except (BadInputError, CorruptStoreError, SchemaVersionError) as e:
                log.warning("skipping the tuned lens in %s: %s", d, e)
                continue
            if meta.get("fingerprint") == model.fingerprint:
                return TunedLens.load(d)
    return None


def as_tuned_lens(model: Model, lens: TunedLens | str | os.PathLike[str]) -> TunedLens:
    """``lens`` itself, the lens saved in a directory, or with ``"auto"`` the one :func:`find_tuned_lens` finds.

    Raises:
        BadInputError: ``"auto"`` and no lens is saved for this model, or a path without a lens.
    """
    if isinstance(lens, TunedLens):
        return lens
    if isinstance(lens, str) and lens == "auto":
        found = find_tuned_lens(model)
        if found is None:
            raise BadInputError(f"no tuned lens is saved for {model.name!r} (fingerprint {model.fingerprint}) in "
                                f"{', '.join(str(p) for p in shipped_lens_dirs())}: train one (interp.lens.TunedLens) "
                                "or pass a directory saved by TunedLens.save")
        return found
    if isinstance(lens, (str, os.PathLike)):
        return TunedLens.load(lens)
    raise bad_value("lens", lens, "a TunedLens, a directory saved by TunedLens.save, or 'auto'")


# -- the matmul dtype ------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _parse_dtype(name: Any) -> torch.dtype | None:
    if name is None:
        return None
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise CorruptStoreError(f"a saved tuned lens names an unknown dtype {name!r}")
    return dtype


def time_matmul(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best of ``repeats`` timings (seconds) of a ``[64, 256] @ [256, 512]`` CPU matmul in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 256, generator=g).to(dtype), torch.randn(256, 512, generator=g).to(dtype)
    x @ y  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x @ y
        times.append(time.perf_counter() - t0)
    return min(times)


@cache
def _measured_cpu_dtype() -> torch.dtype:
    return _faster(time_matmul)


BF16_MARGIN = 0.7
"""bf16 is chosen only when it takes less than this fraction of float32's time: with bf16 units it takes about
a third, so a margin costs nothing there, while a timing disturbed by a busy machine cannot pick the emulated
(~100x slower) bf16 of an AVX2-only CPU."""


def _faster(timer: Timer) -> torch.dtype:
    f32 = timer(torch.float32)
    bf16 = timer(torch.bfloat16)
    f32 = min(f32, timer(torch.float32))  # twice, around the bf16 timing: a slow spell cannot favour bf16 alone
    return torch.bfloat16 if bf16 < BF16_MARGIN * f32 else torch.float32


def fast_matmul_dtype(device: torch.device | str = "cpu", *, timer: Timer | None = None) -> torch.dtype:
    """``torch.bfloat16`` if a bf16 matmul is faster than float32 on ``device``, else ``torch.float32``.

    On CUDA: bf16 where the GPU supports it. On a CPU the two are timed by ``timer`` (default
    :func:`time_matmul`, measured once per process: a few milliseconds) and bf16 is chosen when it takes under
    :data:`BF16_MARGIN` of float32's time: CPUs with AVX512-BF16 or AMX run bf16 about 3x faster, while on
    AVX2-only CPUs it is emulated and far slower. Other devices: float32.

    Example:
        >>> import torch
        >>> from interp.lens.tuned_lens import fast_matmul_dtype
        >>> fast_matmul_dtype("cpu") in (torch.float32, torch.bfloat16)
        True
        >>> fast_matmul_dtype("cpu", timer={torch.bfloat16: 1.0, torch.float32: 3.0}.__getitem__)
        torch.bfloat16
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type != "cpu":
        return torch.float32
    return _measured_cpu_dtype() if timer is None else _faster(timer)


# -- training internals ----------------------------------------------------------------------------
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


class _Rows:
    """The aligned token rows of every layer's ``resid_post`` (row ``i`` of each layer is one token), in chunks:
    a store's shards, or one chunk held in memory for other inputs."""

    def __init__(self, model: Model, inputs: Inputs) -> None:
        n = model.dims.n_layers
        self.names = [Site(Component.RESID_POST, L).name for L in range(n)]
        self.store: TraceStore | None = None
        self.rows: list[torch.Tensor] = []
        if isinstance(inputs, TraceStore) and all(h in inputs.hooks for h in self.names):
            inputs.check_model(model)
            if not inputs.complete or inputs.n_tokens == 0:
                raise BadInputError(f"the store at {inputs.path} is incomplete or empty: finish the capture first")
            self.store = inputs
            self.n_chunks = len(inputs.shards())
        else:
            trace = ensure_trace(model, inputs, HOOK)
            real = trace.attention_mask.bool().cpu()
            if not real.any():
                raise BadInputError("the inputs have no real tokens to train a tuned lens on")
            self.rows = [trace[h].cpu()[real] for h in self.names]
            self.n_chunks = 1

    def chunks(self, seed: int, epoch: int = 0) -> Iterator[list[torch.Tensor]]:
        """Each chunk's rows of every layer, chunks and rows shuffled (seeded)."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if self.store is None:
            perm = torch.randperm(self.rows[0].shape[0], generator=g)
            yield [r[perm] for r in self.rows]
            return
        infos = self.store.shards()
        for i in torch.randperm(len(infos), generator=g).tolist():
            tensors = self.store.read_shard(infos[i], list(self.names))
            perm = torch.randperm(tensors[self.names[0]].shape[0], generator=g)
            yield [tensors[n][perm] for n in self.names]

    def batches(self, batch_size: int, seed: int) -> Iterator[list[torch.Tensor]]:
        """Endless aligned batches of ``batch_size`` rows, epoch after epoch (a new shuffle each epoch)."""
        carry: Sequence[torch.Tensor] | None = None
        for epoch in itertools.count():
            for rows in self.chunks(seed, epoch):
                if carry is not None:
                    rows = [torch.cat([c, r]) for c, r in zip(carry, rows, strict=True)]
                k = rows[0].shape[0] // batch_size * batch_size
                if k == 0:  # fewer rows than a batch so far: carry them into the next chunk or epoch
                    carry = rows
                    continue
                for s in range(0, k, batch_size):
                    yield [r[s:s + batch_size] for r in rows]
                carry = [r[k:] for r in rows]


__all__ = ["TunedLens", "as_tuned_lens", "fast_matmul_dtype", "find_tuned_lens", "read_lens_meta", "shipped_lens_dirs",
           "time_matmul"]
