"""How good is an SAE: explained variance, L0, dead features, and the model's loss with the SAE spliced in.

Example:
    >>> import torch
    >>> from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae
    >>> x = torch.randn(2048, 16)
    >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=1024), progress=False).fit(x)
    >>> ev = evaluate_sae(sae, x)
    >>> ev.l0 <= 4, 0 < ev.explained_variance < 1
    (True, True)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812

from interp.errors import BadInputError
from interp.features.sae import SparseAutoencoder
from interp.features.train import as_source
from interp.hooks import Ablate, Lambda, run_with_hooks
from interp.models import Model
from interp.plot import layer_curves
from interp.trace import TraceStore
from interp.trace.results import labelled_frame, read_result, write_result


@dataclass(frozen=True)
class SAEEvaluation:
    """Reconstruction and sparsity of an SAE on held-out rows, and (optionally) the spliced loss.

    Attributes:
        explained_variance: ``1 - sum ||x - x_hat||^2 / sum ||x - mean||^2`` over the rows.
        l0: mean number of active features per row.
        dead_fraction: fraction of features that never fired on these rows.
        n_tokens: rows evaluated.
        feature_frequency: ``[feature]`` fraction of rows on which each feature fired.
        ce_clean: the model's next-token cross-entropy (nats) on the text, or NaN when not measured.
        ce_spliced: the same with the hook's activation replaced by the SAE reconstruction.
        ce_zero: the same with the hook's activation zeroed (the baseline for ``ce_recovered``).
        hook: the hook point.
    """

    explained_variance: float
    l0: float
    dead_fraction: float
    n_tokens: int
    feature_frequency: torch.Tensor
    ce_clean: float = math.nan
    ce_spliced: float = math.nan
    ce_zero: float = math.nan
    hook: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.feature_frequency.dim() != 1:
            raise BadInputError(f"feature_frequency must be [feature], got {tuple(self.feature_frequency.shape)}")

    @property
    def ce_recovered(self) -> float:
        """``(ce_zero - ce_spliced) / (ce_zero - ce_clean)``: 1 = the SAE loses nothing, 0 = as bad as zeroing."""
        den = self.ce_zero - self.ce_clean
        return (self.ce_zero - self.ce_spliced) / den if den and not math.isnan(den) else math.nan

    def summary(self) -> dict[str, float]:
        """The scalar figures as a dict (for tables and JSON)."""
        return {"explained_variance": self.explained_variance, "l0": self.l0, "dead_fraction": self.dead_fraction,
                "n_tokens": self.n_tokens, "ce_clean": self.ce_clean, "ce_spliced": self.ce_spliced,
                "ce_zero": self.ce_zero, "ce_recovered": self.ce_recovered}

    def to_frame(self) -> Any:
        """One row per feature: its firing frequency."""
        return labelled_frame(self.feature_frequency, ["feature"], name="frequency")

    def plot(self) -> Any:
        """Feature firing frequencies, sorted, on a log scale (dead features sit at the floor)."""
        f = self.feature_frequency.sort(descending=True).values.clamp_min(1.0 / max(self.n_tokens, 1))
        fig = layer_curves({"frequency": f}, x_title="feature (sorted)", y_title="firing frequency",
                           title=f"SAE feature frequencies ({self.hook}): EV {self.explained_variance:.3f}, "
                                 f"L0 {self.l0:.1f}, dead {self.dead_fraction:.1%}")
        fig.update_yaxes(type="log")
        return fig

    def save(self, path: str | os.PathLike[str]) -> Path:
        meta = {k: v for k, v in asdict(self).items() if k != "feature_frequency"}
        return write_result(path, "SAEEvaluation", {"feature_frequency": self.feature_frequency},
                            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in meta.items()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SAEEvaluation:
        tensors, meta = read_result(path, "SAEEvaluation")
        meta = {k: (math.nan if v is None else v) for k, v in meta.items()}
        return cls(feature_frequency=tensors["feature_frequency"], **meta)


def next_token_ce(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over positions whose next token is real."""
    valid = (attention_mask[:, :-1] * attention_mask[:, 1:]).bool()
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return float(ce[valid].mean())


def spliced_ce(model: Model, sae: SparseAutoencoder, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None, hook: str | None = None) -> tuple[float, float, float]:
    """``(clean, spliced, zero-ablated)`` next-token cross-entropy, splicing ``sae`` in at its hook."""
    hook = hook or sae.hook
    if not hook:
        raise BadInputError("the SAE names no hook; pass hook=")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    with torch.no_grad():
        clean = run_with_hooks(model, input_ids, mask).logits
        splice = Lambda(hook, fn=lambda act, site: sae.reconstruct(act))
        spliced = run_with_hooks(model, input_ids, mask, interventions=[splice]).logits
        zero = run_with_hooks(model, input_ids, mask, interventions=[Ablate(hook)]).logits
    assert clean is not None and spliced is not None and zero is not None
    return tuple(next_token_ce(x, input_ids, mask) for x in (clean, spliced, zero))  # type: ignore[return-value]


def evaluate_sae(sae: SparseAutoencoder, data: Any, hook: str | None = None, *, max_tokens: int | None = None,
                 batch_size: int = 4096, model: Model | None = None,
                 ce_inputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> SAEEvaluation:
    """Evaluate on held-out rows (a store hook or a ``[n, d_in]`` tensor), and the spliced loss.

    Args:
        sae: a fitted SAE.
        data: a :class:`~interp.trace.TraceStore` (or path) holding ``hook``, or a tensor of rows.
        hook: the store's hook (default: the SAE's).
        max_tokens: stop after this many rows (in store order).
        batch_size: rows per encoder call.
        model: with ``ce_inputs`` ``(input_ids, attention_mask)``, also measure the cross-entropy of
            ``model`` with the SAE spliced in at ``hook`` (through :mod:`interp.hooks`).
    """
    source, hook = as_source(data, hook or (sae.hook if isinstance(data, (TraceStore, str, os.PathLike)) else None))
    rows = (source.iter_tokens(hook, batch_size=batch_size, dtype=torch.float32) if isinstance(source, TraceStore)
            else source.float().split(batch_size))
    n, err, s, s2, active = 0, 0.0, None, 0.0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.long)
    with torch.no_grad():
        for x in rows:
            if max_tokens is not None and n >= max_tokens:
                break
            if max_tokens is not None:
                x = x[: max_tokens - n]
            z = sae.encode(x)
            x_hat = sae.decode(z)
            on = z > 0
            fired += on.sum(0)
            active += float(on.sum())
            err += float((x - x_hat).double().pow(2).sum())
            s = x.double().sum(0) if s is None else s + x.double().sum(0)
            s2 += float(x.double().pow(2).sum())
            n += x.shape[0]
    if n == 0 or s is None:
        raise BadInputError("no rows to evaluate")
    total_var = s2 - float(s.pow(2).sum()) / n
    ce = (math.nan,) * 3
    if model is not None:
        if ce_inputs is None:
            raise BadInputError("pass ce_inputs=(input_ids, attention_mask) with model= to measure the spliced loss")
        ce = spliced_ce(model, sae, ce_inputs[0], ce_inputs[1], hook=hook or sae.hook)
    return SAEEvaluation(explained_variance=1.0 - err / max(total_var, 1e-30), l0=active / n,
                         dead_fraction=float((fired == 0).float().mean()), n_tokens=n,
                         feature_frequency=fired.float() / n, ce_clean=ce[0], ce_spliced=ce[1], ce_zero=ce[2],
                         hook=hook or sae.hook)


__all__ = ["SAEEvaluation", "evaluate_sae", "next_token_ce", "spliced_ce"]
