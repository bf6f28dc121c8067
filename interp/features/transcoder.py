"""``Transcoder``: a sparse dictionary that reads one hook and writes another (Dunefsky et al. 2024).

A per-layer transcoder replaces an MLP: it reads the MLP's input (the normalised residual stream, ``mlp_in``)
and predicts the MLP's output (``hook_mlp_out``) through sparse features::

    z = TopK(ReLU((x * input_scale) @ W_enc + b_enc))
    y_hat = ((z @ W_dec + b_dec) + (x * input_scale) @ W_skip) / output_scale      (W_skip: optional)

It trains with the same code as :class:`~interp.features.SparseAutoencoder` (:func:`interp.features.train_on_model`
from the model on the fly, or :meth:`Transcoder.fit_pairs` on rows), evaluates with :func:`evaluate_transcoder`
(explained variance of the MLP output, L0, dead share, the model's loss with the transcoder in place of the MLP)
and saves as interp files (``sae.json`` with class ``Transcoder``) or in SAELens' layout
(:meth:`save_saelens`: ``cfg.json`` with ``hook_name`` the input and ``hook_name_out`` the output, and
``W_skip`` in the weights, the layout of SAELens' ``transcoder`` architecture).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError
from interp.features.sae import WEIGHTS, SAEConfig, SparseAutoencoder
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.version import __version__

if TYPE_CHECKING:
    from interp.models import Model
    from interp.trace.inputs import Inputs

NORM_NAMES = ("post_attention_layernorm", "ln_2", "ln2", "post_attention_norm", "ffn_norm")


def mlp_in_hook(model: Model, *, layer: int) -> str:
    """The hook name of block ``layer``'s MLP input (the output of its pre-MLP norm), as an ``hf:`` site.

    Example:
        >>> import interp
        >>> mlp_in_hook(interp.load_model("smollm2-135m"), layer=4)
        'hf:model.layers.4.post_attention_layernorm'
    """
    n = model.dims.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise BadInputError(f"layer must be an int in -{n}..{n - 1}, got {layer!r}")
    layer %= n
    base = f"{model.adapter.layers}.{layer}"
    block = model.module(base)
    for name in NORM_NAMES:
        if hasattr(block, name):
            return f"hf:{base}.{name}"
    raise BadInputError(f"no pre-MLP norm found in {base} (looked for {', '.join(NORM_NAMES)}); pass the MLP input's "
                        "hook yourself")


@dataclass(repr=False)
class Transcoder(SparseAutoencoder):
    """A sparse dictionary from ``hook`` (the MLP input) to ``out_hook`` (the MLP output); ``skip`` adds a learned
    linear skip connection. :meth:`forward` predicts the output; :meth:`encode` / :meth:`decode` work in the
    model's units (decode gives the feature part of the output, without the skip).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, Transcoder
        >>> x = torch.randn(2048, 8); y = torch.relu(x @ torch.randn(8, 6))
        >>> tc = Transcoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=4096), progress=False).fit_pairs(x, y)
        >>> tc.forward(x[:3]).shape
        torch.Size([3, 6])
    """

    out_hook: str = ""
    skip: bool = False
    output_scale_: float = 1.0
    W_skip_: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.config, SAEConfig) and self.config.apply_b_dec_to_input:
            self.config = dataclasses.replace(self.config, apply_b_dec_to_input=False)
        super().__post_init__()

    @property
    def d_out(self) -> int:
        self._fitted()
        assert self.W_dec_ is not None
        return int(self.W_dec_.shape[1])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[..., d_sae]`` → ``[..., d_out]``: the features' part of the predicted output, in the model's units."""
        self._fitted()
        assert self.W_dec_ is not None and self.b_dec_ is not None
        W_dec = self.W_dec_.to(z.device)
        return (z.to(W_dec.dtype) @ W_dec + self.b_dec_.to(z.device)) / self.output_scale_

    def skip_out(self, x: torch.Tensor) -> torch.Tensor:
        """The skip connection's part of the output (zeros without one)."""
        self._fitted()
        if self.W_skip_ is None:
            assert self.W_dec_ is not None
            return torch.zeros(*x.shape[:-1], self.d_out, dtype=self.W_dec_.dtype, device=x.device)
        W = self.W_skip_.to(x.device)
        return (x.to(W.dtype) * self.input_scale_) @ W / self.output_scale_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in]`` MLP input → ``[..., d_out]`` predicted MLP output, in the dtype of ``x``."""
        return (self.decode(self.encode(x)) + self.skip_out(x)).to(x.dtype)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted output (:meth:`forward`)."""
        return self.forward(x)

    def direction(self, feature: int) -> torch.Tensor:
        """``[d_out]``: what one unit of ``feature`` adds to the predicted output."""
        return super().direction(feature) * self.input_scale_ / self.output_scale_

    def fit_pairs(self, x: torch.Tensor, y: torch.Tensor) -> Transcoder:
        """Train on paired rows ``x [n, d_in]`` → ``y [n, d_out]`` (shuffled each pass); returns ``self``."""
        from interp.features.train import Fitter

        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise BadInputError(f"x and y must be [n, d] with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
        cfg = self.config
        if x.shape[0] < cfg.batch_size:
            raise BadInputError(f"fewer rows ({x.shape[0]}) than batch_size={cfg.batch_size}")
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(x.shape[0], generator=g)
        fit = Fitter(self, x[perm[:cfg.batch_size]].float(), y[perm[:cfg.batch_size]].float())
        epoch = 0
        while not fit.done:
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0] - cfg.batch_size + 1, cfg.batch_size):
                if fit.done:
                    break
                sel = perm[i:i + cfg.batch_size]
                fit.step(x[sel], y[sel], epoch=epoch, batch=i // cfg.batch_size + 1)
            epoch += 1
        return fit.finish()  # type: ignore[return-value]

    # -- storage -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        w = super().state_tensors()
        if self.W_skip_ is not None:
            w["W_skip"] = self.W_skip_.detach().cpu().contiguous()
        return w

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Path:
        """Write ``path/sae.safetensors`` (with ``W_skip`` when there is one) and ``path/sae.json`` (class
        ``Transcoder``, both hooks and scales); returns ``path``."""
        out = super().save(path, dtype)
        meta = json.loads((out / "sae.json").read_text(encoding="utf-8"))
        meta.update(out_hook=self.out_hook, skip=self.W_skip_ is not None, output_scale=self.output_scale_)
        atomic_write_bytes(out / "sae.json", json.dumps(meta, indent=1).encode("utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Transcoder:
        """Read a transcoder written by :meth:`save` or :meth:`save_saelens`."""
        src = Path(path)
        if (src / "cfg.json").is_file() and not (src / "sae.json").is_file():
            return _load_saelens_transcoder(src, device)
        try:
            meta = json.loads((src / "sae.json").read_text(encoding="utf-8"))
            w = load_file(str(src / "sae.safetensors"), device=str(device))
        except FileNotFoundError:
            raise BadInputError(f"no transcoder in {str(src)!r}: expected sae.json + sae.safetensors") from None
        except Exception as e:
            raise CorruptStoreError(f"{src} cannot be read as a transcoder ({e})") from None
        if meta.get("class") != "Transcoder":
            raise BadInputError(f"{src} holds a {meta.get('class')}, not a Transcoder")
        known = {f.name for f in dataclasses.fields(SAEConfig)}
        tc = cls(SAEConfig(**{k: v for k, v in meta["config"].items() if k in known}), hook=meta.get("hook", ""),
                 model_id=meta.get("model_id", ""), input_scale_=float(meta.get("input_scale", 1.0)),
                 history_=meta.get("history", {}), source_=meta.get("source", "interp"),
                 out_hook=meta.get("out_hook", ""), skip=bool(meta.get("skip")),
                 output_scale_=float(meta.get("output_scale", 1.0)))
        for n in WEIGHTS:
            setattr(tc, n + "_", w[n].float())
        tc.W_skip_ = w["W_skip"].float() if "W_skip" in w else None
        return tc

    def save_saelens(self, path: str | os.PathLike[str]) -> Path:
        """SAELens' transcoder layout: weights with the scales folded in (SAELens applies none), ``W_skip``
        when present, ``cfg.json`` with ``architecture`` ``"transcoder"`` (``"skip_transcoder"`` with a skip),
        ``d_in``, ``d_out``, ``d_sae``, ``hook_name``, ``hook_name_out``, and the TopK ``k`` as ``topk_k``.

        SAELens 6 has no TopK transcoder: it loads this directory as its (ReLU) ``SkipTranscoder`` with the same
        weights and pre-activations; the TopK step is interp's (``topk_k``, a key SAELens ignores)."""
        self._fitted()
        assert self.W_enc_ is not None and self.b_enc_ is not None and self.W_dec_ is not None
        assert self.b_dec_ is not None
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        s_in, s_out = self.input_scale_, self.output_scale_
        w = {"W_enc": (self.W_enc_ * s_in).contiguous(), "b_enc": self.b_enc_.clone(),
             "W_dec": (self.W_dec_ / s_out).contiguous(), "b_dec": (self.b_dec_ / s_out).contiguous()}
        if self.W_skip_ is not None:
            w["W_skip"] = (self.W_skip_ * s_in / s_out).T.contiguous()  # SAELens: x @ W_skip.T
        atomic_save_tensors(out / "sae_weights.safetensors", w)
        cfg = {"architecture": "skip_transcoder" if self.W_skip_ is not None else "transcoder",
               "d_in": self.d_in, "d_out": self.d_out, "d_sae": self.d_sae, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": False, "normalize_activations": "none", "topk_k": self.config.k,
               "hook_name": self.hook, "hook_name_out": self.out_hook,
               "metadata": {"hook_name": self.hook, "hook_name_out": self.out_hook, "model_name": self.model_id,
                            "interp_version": __version__}}
        atomic_write_bytes(out / "cfg.json", json.dumps(cfg, indent=1).encode("utf-8"))
        return out

    def __repr__(self) -> str:
        shape = f"{self.d_in}->{self.d_sae}->{self.d_out}" if self.W_enc_ is not None else f"?->{self.config.d_sae}"
        return f"Transcoder({shape}, topk k={self.config.k}, {self.hook!r} -> {self.out_hook!r}" + \
            (", skip)" if self.skip or self.W_skip_ is not None else ")")


def _load_saelens_transcoder(src: Path, device: str | torch.device) -> Transcoder:
    try:
        cfg = json.loads((src / "cfg.json").read_text(encoding="utf-8"))
        w = load_file(str(src / "sae_weights.safetensors"), device=str(device))
    except Exception as e:
        raise CorruptStoreError(f"{src} cannot be read as an SAELens transcoder ({e})") from None
    meta = cfg.get("metadata") or {}
    k = cfg.get("topk_k") or cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if k is None:
        raise BadInputError(f"{src}: only TopK transcoders are read (no k in cfg.json)")
    d_sae = int(w["W_enc"].shape[1])
    tc = Transcoder(SAEConfig(d_sae=d_sae, k=int(k), apply_b_dec_to_input=False, normalize_input=False),
                    hook=cfg.get("hook_name") or meta.get("hook_name", ""),
                    out_hook=cfg.get("hook_name_out") or meta.get("hook_name_out", ""),
                    model_id=meta.get("model_name", ""), source_="saelens", skip="W_skip" in w)
    tc.W_enc_, tc.b_enc_, tc.W_dec_, tc.b_dec_ = (w[n].float() for n in WEIGHTS)
    tc.W_skip_ = w["W_skip"].float().T.contiguous() if "W_skip" in w else None
    return tc


def transcoder_ce(model: Model, inputs: Inputs, *, transcoder: Transcoder, batch_size: int = 8,
                  max_tokens: int | None = None) -> tuple[float, float, float]:
    """Next-token cross-entropy ``(clean, spliced, zero)``: as it is, with the block's MLP output replaced by the
    transcoder's prediction from the MLP input, and with the MLP output zeroed. Means over every real next token.
    """
    from interp.features.evaluate import _ce_sum
    from interp.trace.inputs import token_batches

    seen: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, site: Any) -> None:
        seen["x"] = act
        return None

    totals, count = [0.0, 0.0, 0.0], 0
    modes = ("clean", "spliced", "zero")
    with torch.no_grad():
        for ids, mask in token_batches(model, inputs, batch_size, max_tokens=max_tokens):
            for i, mode in enumerate(modes):
                fns: dict[str, Any] = {transcoder.hook: keep}
                if mode == "spliced":
                    fns[transcoder.out_hook] = lambda act, site: transcoder.forward(seen["x"]).to(act.dtype)
                elif mode == "zero":
                    fns[transcoder.out_hook] = lambda act, site: torch.zeros_like(act)
                with model.hooks(fns):
                    logits = model.hf(input_ids=ids, attention_mask=mask).logits
                s, n = _ce_sum(logits, ids, mask)
                totals[i] += s
            count += n
    if count == 0:
        raise BadInputError("no next tokens to predict")
    return totals[0] / count, totals[1] / count, totals[2] / count


@dataclass
class TranscoderEvaluation:
    """Explained variance of the MLP output, L0, dead share (never fired on these rows) and the spliced loss."""

    explained_variance: float
    l0: float
    dead_fraction: float
    n_tokens: int
    ce_clean: float = math.nan
    ce_spliced: float = math.nan
    ce_zero: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_transcoder(transcoder: Transcoder, x: torch.Tensor, y: torch.Tensor, *, model: Model | None = None,
                        ce_inputs: Inputs | None = None, max_tokens: int | None = None) -> TranscoderEvaluation:
    """How well ``transcoder`` predicts ``y`` (MLP output rows) from ``x`` (MLP input rows); with ``model`` and
    ``ce_inputs`` also the next-token loss with it in place of the MLP (:func:`transcoder_ce`)."""
    with torch.no_grad():
        z = transcoder.encode(x.float())
        y_hat = transcoder.decode(z) + transcoder.skip_out(x)
        yf = y.float()
        ev = 1.0 - float((yf - y_hat).double().pow(2).sum() / (yf - yf.mean(0)).double().pow(2).sum().clamp_min(1e-30))
        on = z > 0
    ce = (math.nan,) * 3
    if model is not None and ce_inputs is not None:
        ce = transcoder_ce(model, ce_inputs, transcoder=transcoder, max_tokens=max_tokens)
    return TranscoderEvaluation(ev, float(on.sum(-1).float().mean()), float((~on.any(0)).float().mean()),
                                int(x.shape[0]), *ce)


__all__ = ["Transcoder", "TranscoderEvaluation", "evaluate_transcoder", "mlp_in_hook", "transcoder_ce"]
