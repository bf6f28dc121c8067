"""``SparseAutoencoder``: a TopK or ReLU + L1 sparse autoencoder over one hook point's activations.

The SAE maps an activation ``x [..., d_in]`` to sparse feature activations ``z [..., d_sae]`` and back::

    u = x * input_scale - b_dec                  (when apply_b_dec_to_input)
    z = TopK(ReLU(u @ W_enc + b_enc))            ("topk": the k largest pre-activations survive)
    z = ReLU(u @ W_enc + b_enc)                  ("relu": trained with an L1 penalty)
    x_hat = (z @ W_dec + b_dec) / input_scale

``input_scale`` (a scalar fixed before training, Gao et al. 2024 / SAELens' "expected average
norm") makes the mean input norm ``sqrt(d_in)``; it is applied inside, so :meth:`encode` and
:meth:`decode` work in the model's own activation units. Decoder rows have unit norm.

An SAE is a fitted estimator (scikit-learn style): ``SparseAutoencoder(config).fit(inputs)`` returns it, and
the learned state ends in ``_``. It is a dictionary for :mod:`interp.hooks`: ``FeatureEdit(site, sae=sae,
feature=f, ...)`` and ``Splice(site, sae=sae)`` go into ``model.run(interventions=...)``.

Saved as ``sae.safetensors`` (W_enc, b_enc, W_dec, b_dec) and ``sae.json`` (class, schema version, interp
version, config, hook, model, input scale, training history). :meth:`SparseAutoencoder.load` also reads the
files of interp 0.1 and SAELens' layout (``cfg.json`` + ``sae_weights.safetensors``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError, bad_value, unknown_name
from interp.features.points import canonical_hook
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.version import __version__

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

    from interp.trace import Trace, TraceStore

log = logging.getLogger(__name__)
Activation = Literal["topk", "relu"]
WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")
SCHEMA_VERSION = 1  # of sae.json; interp 0.1's files (``"format": "interp-sae/1"``, no class) are version 0


@dataclass(frozen=True)
class SAEConfig:
    """Shape and training settings of a sparse autoencoder.

    Attributes:
        d_sae: number of features.
        activation: ``"topk"`` (Gao et al. 2024) or ``"relu"`` (trained with an L1 penalty).
        k: active features per token for ``"topk"``.
        l1_coeff: L1 coefficient for ``"relu"`` (on ``z`` times decoder norms, which are 1).
        lr: Adam learning rate (after warm-up). Short runs want it high: a 4,096-feature SmolLM2 SAE after 1M
            tokens at 5e-4 still has decoder rows at cosine ~0.6 with their random start (its features then
            match no other SAE's); at 5e-3 ~0.2 (``data/features/build_dicts.py``).
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


@dataclass(repr=False)
class SparseAutoencoder:
    """A sparse autoencoder; ``fit`` it on a :class:`~interp.trace.TraceStore` hook, a
    :class:`~interp.trace.Trace` or a tensor of rows.

    Args:
        config: shape and training settings.
        hook: the hook point it reads, in any :mod:`interp.sites` spelling (stored as the full name; ``fit`` on a
            store or trace sets it).
        model_id: the model whose activations it reads (``fit`` on a store sets it).
        progress: show a progress bar while fitting (``None``: the library switch, :func:`interp.quiet`).

    Learned state (after :meth:`fit` or :meth:`load`) ends in ``_``: ``W_enc_ [d_in, d_sae]``,
    ``b_enc_ [d_sae]``, ``W_dec_ [d_sae, d_in]`` (unit rows), ``b_dec_ [d_in]``, ``input_scale_``,
    ``history_`` (training curves: step, tokens, loss, fvu, aux, l0, ev, dead_fraction, lr), ``source_``.

    Views of :meth:`plot`: ``training`` (explained variance, L0 and dead fraction over training tokens).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> x = torch.randn(4096, 16)
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=1024), progress=False).fit(x)
        >>> sae.encode(x[:3]).shape, int((sae.encode(x[:3]) > 0).sum(-1).max()) <= 4
        (torch.Size([3, 32]), True)
        >>> sae
        SparseAutoencoder(16->32, topk k=4, hook='')
    """

    VIEWS: ClassVar[tuple[str, ...]] = ("training",)

    config: SAEConfig = field(default_factory=SAEConfig)
    hook: str = ""
    model_id: str = ""
    progress: bool | None = None
    W_enc_: torch.Tensor | None = field(default=None, repr=False)
    b_enc_: torch.Tensor | None = field(default=None, repr=False)
    W_dec_: torch.Tensor | None = field(default=None, repr=False)
    b_dec_: torch.Tensor | None = field(default=None, repr=False)
    input_scale_: float = 1.0
    history_: dict[str, list[float]] = field(default_factory=dict, repr=False)
    source_: str = "interp"

    def __post_init__(self) -> None:
        if not isinstance(self.config, SAEConfig):
            raise TypeError(f"config must be an SAEConfig, got {type(self.config).__name__}")
        if self.hook:
            self.hook = canonical_hook(self.hook)

    # -- shape ---------------------------------------------------------------------------------
    def _fitted(self) -> None:
        if self.W_enc_ is None:
            raise BadInputError("this SparseAutoencoder is not fitted yet: call fit() or load()")

    @property
    def fitted(self) -> bool:
        """Whether the SAE has weights (from :meth:`fit` or :meth:`load`)."""
        return self.W_enc_ is not None

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
        W_enc = self.W_enc_.to(x.device)
        u = x.to(W_enc.dtype) * self.input_scale_
        if self.config.apply_b_dec_to_input:
            u = u - self.b_dec_.to(x.device)
        return u @ W_enc + self.b_enc_.to(x.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` → ``[..., d_sae]`` sparse feature activations."""
        return activate(self.pre_activations(x), self.config)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[..., d_sae]`` → ``[..., d_in]`` reconstruction, in the model's units."""
        self._fitted()
        assert self.W_dec_ is not None and self.b_dec_ is not None
        W_dec = self.W_dec_.to(z.device)
        return (z.to(W_dec.dtype) @ W_dec + self.b_dec_.to(z.device)) / self.input_scale_

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` in the dtype of ``x``."""
        return self.decode(self.encode(x)).to(x.dtype)

    def direction(self, feature: int) -> torch.Tensor:
        """``[d_in]``: what one unit of ``feature``'s activation adds to the reconstruction, in the model's
        activation units (``W_dec[feature] / input_scale``). :class:`interp.hooks.FeatureEdit` moves an
        activation along it.

        Example:
            >>> import torch
            >>> from interp.features import SAEConfig, SparseAutoencoder
            >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, batch_size=64, n_tokens=128), progress=False)
            >>> sae = sae.fit(3 * torch.randn(256, 4))
            >>> z = torch.zeros(8); z[5] = 2.0
            >>> bool(torch.allclose(sae.decode(z) - sae.decode(torch.zeros(8)), 2.0 * sae.direction(5)))
            True
        """
        self._fitted()
        assert self.W_dec_ is not None
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < self.d_sae:
            raise bad_value("feature", feature, f"an int in 0..{self.d_sae - 1} (this SAE has {self.d_sae} features)")
        return self.W_dec_[feature] / self.input_scale_

    # -- training ------------------------------------------------------------------------------
    def fit(self, inputs: TraceStore | Trace | torch.Tensor | os.PathLike[str], *, hook: str | None = None,
            checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False) -> SparseAutoencoder:
        """Train on token rows; returns ``self``.

        Args:
            inputs: a :class:`~interp.trace.TraceStore` (or its path as a ``pathlib.Path``) or a
                :class:`~interp.trace.Trace` (its real tokens' rows) holding ``hook``, or a ``[n, d_in]`` float
                tensor of rows.
            hook: the hook to read, any :mod:`interp.sites` spelling (default: the SAE's own, else the only hook
                the store or trace holds).
            checkpoint_dir: write a checkpoint (weights, Adam state, counters, history) every
                ``config.checkpoint_every`` steps and at the end.
            resume: continue from the checkpoint in ``checkpoint_dir``.

        Rows are streamed shuffled (seeded); see :mod:`interp.features.train` for the loop.
        """
        from interp.features.train import train_sae

        return train_sae(self, inputs, hook or self.hook or None, checkpoint_dir=checkpoint_dir, resume=resume)

    # -- storage -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The weights by name (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``)."""
        self._fitted()
        return {n: getattr(self, n + "_").detach().cpu().contiguous() for n in WEIGHTS}

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Path:
        """Write ``path/sae.safetensors`` and ``path/sae.json`` (class, schema and interp version, config, hook,
        model, scale, history); returns ``path``.

        ``dtype`` stores the weights in another precision (e.g. ``torch.float16`` to halve the file);
        :meth:`load` always returns float32.
        """
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise BadInputError(f"cannot save an SAE to {str(out)!r}: it is a file, and an SAE is a directory")
        out.mkdir(parents=True, exist_ok=True)
        w = self.state_tensors()
        atomic_save_tensors(out / "sae.safetensors", {n: t.to(dtype) if dtype is not None else t for n, t in w.items()})
        meta = {"class": type(self).__name__, "module": "interp.features", "schema_version": SCHEMA_VERSION,
                "interp_version": __version__, "config": asdict(self.config), "hook": self.hook,
                "model_id": self.model_id, "input_scale": self.input_scale_, "history": self.history_,
                "source": self.source_}
        atomic_write_bytes(out / "sae.json", json.dumps(meta, indent=1).encode("utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Read an SAE saved by :meth:`save` (this interp's or 0.1's files), or by SAELens (``cfg.json`` +
        ``sae_weights.safetensors``).

        Raises:
            BadInputError: ``path`` holds neither layout, or an SAELens architecture interp cannot run (only
                standard/ReLU and TopK).
            SchemaVersionError: a file written by a newer interp.
            CorruptStoreError: a damaged file.

        Example:
            >>> import torch, tempfile
            >>> from interp.features import SAEConfig, SparseAutoencoder
            >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, batch_size=64, n_tokens=128), progress=False)
            >>> sae = sae.fit(torch.randn(256, 4))
            >>> back = SparseAutoencoder.load(sae.save(tempfile.mkdtemp()))
            >>> bool(torch.equal(back.W_dec_, sae.W_dec_)), back.config == sae.config
            (True, True)
        """
        src = Path(path)
        if (src / "sae.json").is_file() and (src / "sae.safetensors").is_file():
            return _load_interp(cls, src, device)
        if (src / "cfg.json").is_file() and (src / "sae_weights.safetensors").is_file():
            from interp.features.saelens import load_saelens

            return load_saelens(cls, src, device)
        raise BadInputError(f"no SAE in {str(src)!r}: expected sae.json + sae.safetensors (interp) or "
                            "cfg.json + sae_weights.safetensors (SAELens)")

    # -- the result surface ------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The training history: one row per step (step, tokens, loss, fvu, aux, l0, ev, dead_fraction, lr)."""
        import pandas as pd

        return pd.DataFrame(self.history_)

    def plot(self, view: str | None = None, **options: Any) -> Figure:
        """A Plotly figure of one view (``None``: the first of ``VIEWS``): ``training``."""
        view = self.VIEWS[0] if view is None else view
        if view not in self.VIEWS:
            raise unknown_name("view", view, self.VIEWS, hint="(views of SparseAutoencoder)")
        return self._view_training(**options)

    def _view_training(self) -> Figure:
        """Training curves: explained variance, L0 (over k, or over 100 for ReLU) and dead fraction."""
        from interp.plot import layer_curves

        if not self.history_.get("tokens"):
            raise BadInputError("this SAE has no training history (it was loaded from SAELens or not fitted here)")
        h = self.history_
        cfg = self.config
        div = cfg.k if cfg.activation == "topk" else 100
        return layer_curves({"explained variance": h["ev"], "dead fraction": h["dead_fraction"],
                             "L0 / k" if cfg.activation == "topk" else "L0 / 100": [v / div for v in h["l0"]]},
                            x=h["tokens"], x_title="training tokens", y_title="value",
                            title=f"SAE training ({self.hook or 'rows'}, {cfg.activation}, {cfg.d_sae} features)")

    def headline(self) -> dict[str, Any]:
        """The last training step's explained variance, L0 and dead fraction (empty without a history)."""
        h = self.history_
        if not h.get("ev"):
            return {}
        return {"train_ev": h["ev"][-1], "train_l0": h["l0"][-1], "dead_fraction": h["dead_fraction"][-1]}

    def summary(self) -> str:
        """A few lines: shape, kind, hook, model and the last training figures."""
        lines = [repr(self), f"  model: {self.model_id or '?'}; source: {self.source_}; "
                 f"input scale {self.input_scale_:.4g}"]
        lines += [f"  {k}: {v:.4g}" for k, v in self.headline().items()]
        lines.append(f"  views: {', '.join(self.VIEWS)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        shape = f"{self.d_in}->{self.d_sae}" if self.W_enc_ is not None else f"?->{self.config.d_sae} (not fitted)"
        act = f"topk k={self.config.k}" if self.config.activation == "topk" else f"relu l1={self.config.l1_coeff}"
        return f"SparseAutoencoder({shape}, {act}, hook={self.hook!r})"


def _load_interp(cls: type[SparseAutoencoder], src: Path, device: str | torch.device) -> SparseAutoencoder:
    """An SAE from interp's own files: schema 1 (class + versions) or interp 0.1's (schema 0)."""
    try:
        meta = json.loads((src / "sae.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(f"{src / 'sae.json'} is not valid JSON ({e}); save the SAE again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CorruptStoreError(f"{src / 'sae.json'} does not hold an SAE (no config)")
    name = meta.get("class", "SparseAutoencoder")
    if name != "SparseAutoencoder":
        raise BadInputError(f"{src} holds a {name}, not a SparseAutoencoder")
    version = meta.get("schema_version", 0)
    if not isinstance(version, int) or version < 0:
        raise CorruptStoreError(f"{src / 'sae.json'} has a bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{src} holds a SparseAutoencoder of schema version {version}, written by interp "
                                 f"{meta.get('interp_version')}; this interp ({__version__}) reads up to version "
                                 f"{SCHEMA_VERSION}: upgrade interp to load it")
    known = {f.name for f in dataclasses.fields(SAEConfig)}
    unknown = sorted(set(meta["config"]) - known)
    if unknown:
        log.debug("ignoring unknown SAE config keys in %s: %s", src, ", ".join(unknown))
    try:
        w = load_file(str(src / "sae.safetensors"), device=str(device))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CorruptStoreError(f"{src / 'sae.safetensors'} cannot be read ({e}); save the SAE again") from None
    missing = [n for n in WEIGHTS if n not in w]
    if missing:
        raise CorruptStoreError(f"{src / 'sae.safetensors'} lacks {missing}; it holds {sorted(w)}")
    sae = cls(SAEConfig(**{k: v for k, v in meta["config"].items() if k in known}), hook=meta.get("hook", ""),
              model_id=meta.get("model_id", ""), input_scale_=float(meta.get("input_scale", 1.0)),
              history_=meta.get("history", {}), source_=meta.get("source", "interp"))
    for n in WEIGHTS:
        setattr(sae, n + "_", w[n].float())
    return sae


SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "features"


def load_saes(path: str | os.PathLike[str] | None = None) -> dict[str, SparseAutoencoder]:
    """Every SAE under ``path`` (one sub-directory each), keyed by the canonical name of its hook; default: the
    SAEs shipped for SmolLM2-135M in ``data/features/smollm2-135m`` (built by ``data/features/build.py``).

    Raises:
        BadInputError: no directory at ``path``, no SAEs in it, or two SAEs reading the same hook.

    Example:
        >>> from interp.features import load_saes
        >>> sorted(load_saes())
        ['blocks.3.hook_resid_post', 'blocks.4.hook_attn_out', 'blocks.4.hook_mlp_out', 'blocks.4.hook_resid_post']
    """
    root = Path(path) if path is not None else SHIPPED_DIR / "smollm2-135m"
    if not root.is_dir():
        raise BadInputError(f"no SAE directory at {str(root)!r}")
    out: dict[str, SparseAutoencoder] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "sae.json").is_file() or (d / "cfg.json").is_file():
            sae = SparseAutoencoder.load(d)
            key = sae.hook or canonical_hook(d.name)
            if key in out:
                raise BadInputError(f"two SAEs in {root} read the same hook {key!r}")
            out[key] = sae
    if not out:
        raise BadInputError(f"no SAEs under {str(root)!r} (expected one sub-directory per SAE)")
    return out


def activate(pre: torch.Tensor, config: SAEConfig) -> torch.Tensor:
    """The SAE nonlinearity on pre-activations: ReLU, then for TopK only the ``k`` largest survive."""
    if config.activation == "relu":
        return torch.relu(pre)
    vals, idx = pre.topk(config.k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))


__all__ = ["SCHEMA_VERSION", "SHIPPED_DIR", "SAEConfig", "SparseAutoencoder", "activate", "load_saes"]
