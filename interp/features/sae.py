"""``SparseAutoencoder``: a TopK or ReLU + L1 sparse autoencoder over one hook point's activations.

The SAE maps an activation ``x [..., d_in]`` to sparse feature activations ``z [..., d_sae]`` and back::

    u = x * input_scale - b_dec                  (when apply_b_dec_to_input)
    z = TopK(ReLU(u @ W_enc + b_enc))            ("topk": the k largest pre-activations survive)
    z = ReLU(u @ W_enc + b_enc)                  ("relu": trained with an L1 penalty)
    x_hat = (z @ W_dec + b_dec) / input_scale

``input_scale`` (a scalar fixed before training, Gao et al. 2024 / SAELens' "expected average
norm") makes the mean input norm ``sqrt(d_in)``; it is applied inside, so :meth:`encode` and
:meth:`decode` work in the model's own activation units. Decoder rows have unit norm.

Saved as ``sae.safetensors`` (W_enc, b_enc, W_dec, b_dec) and ``sae.json`` (config, training
history). :meth:`SparseAutoencoder.load` also reads SAELens' layout (``cfg.json`` +
``sae_weights.safetensors``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes

Activation = Literal["topk", "relu"]
WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass(frozen=True)
class SAEConfig:
    """Shape and training settings of a sparse autoencoder.

    Attributes:
        d_sae: number of features.
        activation: ``"topk"`` (Gao et al. 2024) or ``"relu"`` (trained with an L1 penalty).
        k: active features per token for ``"topk"``.
        l1_coeff: L1 coefficient for ``"relu"`` (on ``z`` times decoder norms, which are 1).
        lr: Adam learning rate (after warm-up).
        warmup_steps: linear learning-rate warm-up.
        batch_size: token rows per step.
        n_tokens: training rows in all (the store is streamed again, reshuffled, when it runs out).
        dead_after: a feature that has not fired for this many rows is dead (tracked, fed to AuxK).
        aux_k: dead features used by the auxiliary loss (TopK only; 0 switches it off).
        aux_coeff: weight of the auxiliary loss (Gao et al. use 1/32).
        apply_b_dec_to_input: subtract ``b_dec`` before encoding.
        normalize_input: fit ``input_scale`` so that the mean input norm is ``sqrt(d_in)``.
        seed: initialisation and shuffling seed.
        checkpoint_every: steps between checkpoints (with ``checkpoint_dir`` in ``fit``).
    """

    d_sae: int = 2048
    activation: Activation = "topk"
    k: int = 32
    l1_coeff: float = 3e-3
    lr: float = 1e-3
    warmup_steps: int = 50
    batch_size: int = 1024
    n_tokens: int = 200_000
    dead_after: int = 100_000
    aux_k: int = 256
    aux_coeff: float = 1 / 32
    apply_b_dec_to_input: bool = True
    normalize_input: bool = True
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.activation not in ("topk", "relu"):
            raise BadInputError(f"activation must be 'topk' or 'relu', got {self.activation!r}")
        for name in ("d_sae", "k", "batch_size", "n_tokens", "dead_after", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BadInputError(f"{name} must be an int >= 1, got {v!r}")
        if self.activation == "topk" and self.k > self.d_sae:
            raise BadInputError(f"k={self.k} is larger than d_sae={self.d_sae}")
        for name in ("l1_coeff", "lr", "aux_coeff"):
            if not float(getattr(self, name)) >= 0:
                raise BadInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.warmup_steps < 0 or self.aux_k < 0:
            raise BadInputError(f"warmup_steps and aux_k must be >= 0, got {self.warmup_steps}, {self.aux_k}")


@dataclass
class SparseAutoencoder:
    """A sparse autoencoder; ``fit`` it on a :class:`~interp.trace.TraceStore` hook or a tensor of rows.

    Learned state (after :meth:`fit` or :meth:`load`) ends in ``_``: ``W_enc_ [d_in, d_sae]``,
    ``b_enc_ [d_sae]``, ``W_dec_ [d_sae, d_in]`` (unit rows), ``b_dec_ [d_in]``, ``input_scale_``,
    ``history_`` (training curves: step, tokens, loss, mse, aux, l0, ev, dead_fraction, lr).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> x = torch.randn(4096, 16)
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=1024), progress=False).fit(x)
        >>> sae.encode(x[:3]).shape, int((sae.encode(x[:3]) > 0).sum(-1).max()) <= 4
        (torch.Size([3, 32]), True)
    """

    config: SAEConfig = field(default_factory=SAEConfig)
    hook: str = ""
    model_id: str = ""
    progress: bool = True
    W_enc_: torch.Tensor | None = field(default=None, repr=False)
    b_enc_: torch.Tensor | None = field(default=None, repr=False)
    W_dec_: torch.Tensor | None = field(default=None, repr=False)
    b_dec_: torch.Tensor | None = field(default=None, repr=False)
    input_scale_: float = 1.0
    history_: dict[str, list[float]] = field(default_factory=dict, repr=False)
    source_: str = "interp"

    # -- shape ---------------------------------------------------------------------------------
    def _fitted(self) -> None:
        if self.W_enc_ is None:
            raise RuntimeError("this SparseAutoencoder is not fitted yet: call fit() or load()")

    @property
    def d_in(self) -> int:
        self._fitted()
        assert self.W_enc_ is not None
        return int(self.W_enc_.shape[0])

    @property
    def d_sae(self) -> int:
        self._fitted()
        assert self.W_enc_ is not None
        return int(self.W_enc_.shape[1])

    # -- forward -------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` → ``[..., d_sae]`` encoder pre-activations (before ReLU / TopK)."""
        self._fitted()
        assert self.W_enc_ is not None and self.b_enc_ is not None and self.b_dec_ is not None
        if x.shape[-1] != self.W_enc_.shape[0]:
            raise BadInputError(f"activation has d={x.shape[-1]} but this SAE reads d_in={self.W_enc_.shape[0]} "
                             f"(hook {self.hook or '?'})")
        u = x.to(self.W_enc_.dtype) * self.input_scale_
        if self.config.apply_b_dec_to_input:
            u = u - self.b_dec_
        return u @ self.W_enc_ + self.b_enc_

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` → ``[..., d_sae]`` sparse feature activations."""
        return activate(self.pre_activations(x), self.config)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[..., d_sae]`` → ``[..., d_in]`` reconstruction, in the model's units."""
        self._fitted()
        assert self.W_dec_ is not None and self.b_dec_ is not None
        return (z.to(self.W_dec_.dtype) @ self.W_dec_ + self.b_dec_) / self.input_scale_

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` in the dtype of ``x``."""
        return self.decode(self.encode(x)).to(x.dtype)

    def direction(self, feature: int) -> torch.Tensor:
        """The unit decoder direction of one feature ``[d_in]`` (in the model's activation space)."""
        self._fitted()
        assert self.W_dec_ is not None
        if not 0 <= int(feature) < self.d_sae:
            raise IndexError(f"feature {feature} out of range: this SAE has {self.d_sae} features")
        row = self.W_dec_[int(feature)]
        return row / row.norm().clamp_min(1e-12)

    # -- training ------------------------------------------------------------------------------
    def fit(self, data: Any, hook: str | None = None, *, checkpoint_dir: str | os.PathLike[str] | None = None,
            resume: bool = False) -> SparseAutoencoder:
        """Train on token rows: a :class:`~interp.trace.TraceStore` or a :class:`~interp.trace.Trace` (with
        ``hook``), or a ``[n, d_in]`` tensor.

        Rows are streamed shuffled (seeded); see :mod:`interp.features.train` for the loop.
        With ``checkpoint_dir`` a checkpoint (weights, Adam state, counters, history) is written every
        ``config.checkpoint_every`` steps and at the end; ``resume=True`` continues from it.
        Returns ``self``.
        """
        from interp.features.train import train_sae

        return train_sae(self, data, hook, checkpoint_dir=checkpoint_dir, resume=resume)

    # -- storage -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._fitted()
        return {n: getattr(self, n + "_").detach().contiguous() for n in WEIGHTS}

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Path:
        """Write ``path/sae.safetensors`` and ``path/sae.json`` (config, hook, model, scale, history).

        ``dtype`` stores the weights in another precision (e.g. ``torch.float16`` to halve the file);
        :meth:`load` always returns float32.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        w = self.state_tensors()
        atomic_save_tensors(out / "sae.safetensors", {n: t.to(dtype) if dtype is not None else t for n, t in w.items()})
        meta = {"format": "interp-sae/1", "config": asdict(self.config), "hook": self.hook, "model_id": self.model_id,
                "input_scale": self.input_scale_, "history": self.history_, "source": self.source_}
        atomic_write_bytes(out / "sae.json", json.dumps(meta, indent=1).encode("utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Read an SAE saved by :meth:`save`, or by SAELens (``cfg.json`` + ``sae_weights.safetensors``).

        Raises:
            FileNotFoundError: ``path`` holds neither layout.
            ValueError: an SAELens architecture interp cannot run (only standard/ReLU and TopK).
        """
        src = Path(path)
        if (src / "sae.json").is_file() and (src / "sae.safetensors").is_file():
            meta = json.loads((src / "sae.json").read_text(encoding="utf-8"))
            w = load_file(str(src / "sae.safetensors"), device=str(device))
            sae = cls(SAEConfig(**meta["config"]), hook=meta.get("hook", ""), model_id=meta.get("model_id", ""),
                      input_scale_=float(meta.get("input_scale", 1.0)), history_=meta.get("history", {}),
                      source_=meta.get("source", "interp"))
            for n in WEIGHTS:
                setattr(sae, n + "_", w[n].float())
            return sae
        if (src / "cfg.json").is_file() and (src / "sae_weights.safetensors").is_file():
            from interp.features.saelens import load_saelens

            return load_saelens(cls, src, device)
        raise FileNotFoundError(f"no SAE in {str(src)!r}: expected sae.json + sae.safetensors (interp) or "
                                "cfg.json + sae_weights.safetensors (SAELens)")

    def to_frame(self) -> Any:
        """The training history as a ``pandas.DataFrame``: one row per step (tokens, loss, fvu, aux, l0, ev,
        dead_fraction, lr)."""
        import pandas as pd

        return pd.DataFrame(self.history_)

    def plot(self) -> Any:
        """Training curves: explained variance, L0 and dead fraction over training tokens."""
        from interp.plot import layer_curves

        if not self.history_.get("tokens"):
            raise BadInputError("no training history (an SAE loaded from SAELens, or not fitted here)")
        h = self.history_
        return layer_curves({"explained variance": h["ev"], "dead fraction": h["dead_fraction"],
                             "L0 / k" if self.config.activation == "topk" else "L0 / 100":
                                 [v / (self.config.k if self.config.activation == "topk" else 100) for v in h["l0"]]},
                            x=h["tokens"], x_title="training tokens", y_title="value",
                            title=f"SAE training ({self.hook or 'rows'}, {self.config.activation}, "
                                  f"{self.config.d_sae} features)")

    def __repr__(self) -> str:
        shape = f"{self.d_in}->{self.d_sae}" if self.W_enc_ is not None else f"?->{self.config.d_sae} (not fitted)"
        act = f"topk k={self.config.k}" if self.config.activation == "topk" else f"relu l1={self.config.l1_coeff}"
        return f"SparseAutoencoder({shape}, {act}, hook={self.hook!r})"



SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "features"


def load_saes(path: str | os.PathLike[str] | None = None) -> dict[str, SparseAutoencoder]:
    """Every SAE under ``path`` (one sub-directory each), keyed by hook; default: the SAEs shipped for
    SmolLM2-135M in ``data/features/smollm2-135m`` (built by ``data/features/build.py``).

    Example:
        >>> from interp.features import load_saes
        >>> sorted(load_saes())[:2]  # doctest: +SKIP
        ['blocks.3.hook_resid_post', 'blocks.4.hook_attn_out']
    """
    root = Path(path) if path is not None else SHIPPED_DIR / "smollm2-135m"
    if not root.is_dir():
        raise FileNotFoundError(f"no SAE directory at {str(root)!r}")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "sae.json").is_file() or (d / "cfg.json").is_file():
            sae = SparseAutoencoder.load(d)
            key = sae.hook or d.name
            if key in out:
                raise BadInputError(f"two SAEs in {root} read the same hook {key!r}")
            out[key] = sae
    if not out:
        raise FileNotFoundError(f"no SAEs under {str(root)!r} (expected one sub-directory per SAE)")
    return out


def activate(pre: torch.Tensor, config: SAEConfig) -> torch.Tensor:
    """The SAE nonlinearity on pre-activations: ReLU, then for TopK only the ``k`` largest survive."""
    if config.activation == "relu":
        return torch.relu(pre)
    vals, idx = pre.topk(config.k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))


__all__ = ["SHIPPED_DIR", "SAEConfig", "SparseAutoencoder", "activate", "load_saes"]
