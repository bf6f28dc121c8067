"""How good is an SAE: explained variance, L0, dead features, and the model's loss with the SAE spliced in.

The spliced loss replaces the hook's activation by the SAE's reconstruction with an
:class:`interp.hooks.Splice` (and zeroes it with an :class:`interp.hooks.Ablate` for the baseline).

Example:
    >>> import torch
    >>> from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae
    >>> x = torch.randn(2048, 16)
    >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=1024), progress=False).fit(x)
    >>> ev = evaluate_sae(None, x, sae=sae)  # rows of activations: no model needed
    >>> ev.l0 <= 4, 0 < ev.explained_variance < 1
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch.nn import functional as F  # noqa: N812

from interp.errors import BadInputError, bad_value
from interp.features.points import canonical_hook
from interp.features.sae import SparseAutoencoder
from interp.features.train import as_source
from interp.hooks import Ablate, Splice, run_with_hooks
from interp.models import Inputs, Model
from interp.plot import layer_curves
from interp.progress import progress as progress_bar
from interp.sites import SiteSpec
from interp.trace import Trace, TraceStore
from interp.trace.inputs import ensure_trace, token_batches
from interp.trace.results import Result, nan_to_none

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

_CE_FIELDS = ("ce_clean", "ce_spliced", "ce_zero")


@dataclass(frozen=True, repr=False)
class SAEEvaluation(Result):
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

    Views: ``frequency`` (feature firing frequencies, sorted, log scale).

    Example:
        >>> import torch
        >>> SAEEvaluation(0.9, 3.5, 0.25, 100, torch.tensor([0.5, 0.0, 0.2, 0.1]), hook="blocks.3.hook_resid_post")
        SAEEvaluation(feature_frequency[feature=4], explained_variance=0.9, l0=3.5, dead_fraction=0.25)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"feature_frequency": ("feature",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("frequency",)

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

    def metrics(self) -> dict[str, float]:
        """The scalar figures as a dict (for tables and JSON)."""
        return {"explained_variance": self.explained_variance, "l0": self.l0, "dead_fraction": self.dead_fraction,
                "n_tokens": self.n_tokens, "ce_clean": self.ce_clean, "ce_spliced": self.ce_spliced,
                "ce_zero": self.ce_zero, "ce_recovered": self.ce_recovered}

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"explained_variance": self.explained_variance, "l0": self.l0,
                               "dead_fraction": self.dead_fraction}
        if not math.isnan(self.ce_recovered):
            out["ce_recovered"] = self.ce_recovered
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["attributes"] = {k: nan_to_none(v) for k, v in d["attributes"].items()}
        d["attributes"]["ce_recovered"] = nan_to_none(self.ce_recovered)
        return d

    def _to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, fields = super()._to_saved()
        return tensors, {k: nan_to_none(v) for k, v in fields.items()}

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> SAEEvaluation:
        fields = {k: (math.nan if k in _CE_FIELDS and v is None else v) for k, v in fields.items()}
        return super()._from_saved(tensors, fields)

    def _view_frequency(self) -> Figure:
        """Feature firing frequencies, sorted, on a log scale (dead features sit at the floor)."""
        f = self.feature_frequency.sort(descending=True).values.clamp_min(1.0 / max(self.n_tokens, 1))
        fig = layer_curves({"frequency": f}, x_title="feature (sorted)", y_title="firing frequency",
                           title=f"SAE feature frequencies ({self.hook}): EV {self.explained_variance:.3f}, "
                                 f"L0 {self.l0:.1f}, dead {self.dead_fraction:.1%}")
        fig.update_yaxes(type="log")
        return fig


class SplicedLoss(NamedTuple):
    """Next-token cross-entropy (nats) clean, with an SAE spliced in, and with the hook zeroed."""

    clean: float
    spliced: float
    zero: float

    @property
    def recovered(self) -> float:
        """``(zero - spliced) / (zero - clean)``: 1 = the SAE loses nothing, 0 = as bad as zeroing."""
        den = self.zero - self.clean
        return (self.zero - self.spliced) / den if den else math.nan


def _ce_sum(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[float, int]:
    """Sum of next-token cross-entropies over positions whose next token is real, and their count."""
    valid = (attention_mask[:, :-1] * attention_mask[:, 1:]).bool()
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return float(ce[valid].double().sum()), int(valid.sum())


def _check_inputs_model(model: Model, inputs: object) -> None:
    if isinstance(inputs, (Trace, TraceStore)):
        inputs.check_model(model)


def spliced_ce(model: Model, inputs: Inputs, *, sae: SparseAutoencoder, hook: SiteSpec | None = None,
               batch_size: int = 8, max_tokens: int | None = None, progress: bool | None = None) -> SplicedLoss:
    """The model's next-token cross-entropy on ``inputs``: clean, with ``sae`` spliced in at its hook
    (:class:`interp.hooks.Splice`), and with the hook zeroed (:class:`interp.hooks.Ablate`).

    Args:
        model: the model the SAE reads.
        inputs: texts, token ids, ``(ids, mask)``, a Trace or a TraceStore (its token ids).
        sae: a fitted SAE.
        hook: where to splice it (any :mod:`interp.sites` spelling; default: the SAE's hook).
        batch_size: sequences per forward; ``max_tokens``: truncate texts.
        progress: a bar over the batches (``None``: the library switch).

    Returns:
        :class:`SplicedLoss` ``(clean, spliced, zero)``, means over every real next token.

    Example:
        >>> import interp
        >>> from interp.features import load_saes, spliced_ce
        >>> m = interp.load_model("smollm2-135m")
        >>> loss = spliced_ce(m, "The capital of France is Paris.", sae=load_saes()["blocks.4.hook_resid_post"])
        >>> loss.clean < loss.spliced < loss.zero
        True
    """
    name = canonical_hook(hook or sae.hook or _no_hook(), model)
    _check_inputs_model(model, inputs)
    totals = [0.0, 0.0, 0.0]
    count = 0
    edits: list[list[Any]] = [[], [Splice(name, sae=sae)], [Ablate(name)]]
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = token_batches(model, inputs, batch_size,
                                                                          max_tokens=max_tokens)
    with torch.no_grad():
        for ids, mask in progress_bar(batches, enabled=progress, desc="spliced CE", unit="batch"):
            for i, ivs in enumerate(edits):
                logits = run_with_hooks(model, ids, mask, interventions=ivs).logits
                assert logits is not None
                s, n = _ce_sum(logits, ids, mask)
                totals[i] += s
            count += n
    if count == 0:
        raise BadInputError("no next tokens to predict: every sequence of inputs has a single token")
    return SplicedLoss(*(t / count for t in totals))


def _no_hook() -> str:
    raise BadInputError("the SAE names no hook; pass hook= (e.g. hook='resid_post.4')")


def _rows(model: Model | None, inputs: Inputs | torch.Tensor, hook: str | None, max_tokens: int | None
          ) -> tuple[TraceStore | torch.Tensor, str]:
    """Activation rows of ``hook``: from rows, a trace or store holding it, or a run of the model."""
    if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
        return as_source(inputs, hook)
    if isinstance(inputs, (Trace, TraceStore)):
        if model is not None:
            inputs.check_model(model)
        held = inputs.hooks if isinstance(inputs, TraceStore) else inputs.names
        if hook is None or hook in held:
            return as_source(inputs, hook)
    if model is None:
        raise BadInputError("evaluate_sae needs a model to run these inputs (or a Trace / TraceStore holding "
                            f"the SAE's hook {hook or '?'}, or a [n, d_in] float tensor of activation rows)")
    if hook is None:
        _no_hook()
    assert hook is not None
    return as_source(ensure_trace(model, inputs, hook, max_tokens=max_tokens), hook)


def evaluate_sae(model: Model | None, inputs: Inputs | torch.Tensor, *, sae: SparseAutoencoder,
                 hook: SiteSpec | None = None, ce_inputs: Inputs | None = None, max_rows: int | None = None,
                 max_tokens: int | None = None, batch_size: int = 4096, ce_batch_size: int = 8,
                 progress: bool | None = None) -> SAEEvaluation:
    """Reconstruction and sparsity of ``sae`` on held-out activations, and the model's loss with it spliced in.

    Args:
        model: the model the SAE reads; ``None`` when ``inputs`` already hold the activations (rows, or a
            Trace / TraceStore holding the hook), and then no loss is measured.
        inputs: a :class:`~interp.trace.TraceStore` or :class:`~interp.trace.Trace` holding the hook (read as it
            is), texts or token ids (the model runs and captures the hook), or a ``[n, d_in]`` float tensor of
            activation rows.
        sae: a fitted SAE.
        hook: the hook to read (any :mod:`interp.sites` spelling; default: the SAE's).
        ce_inputs: with a model, the texts or token ids to measure the spliced loss on (default: the tokens of
            ``inputs``; rows have none, so then no loss is measured).
        max_rows: evaluate at most this many rows (in store order).
        max_tokens: truncate texts to this many tokens.
        batch_size: rows per encoder call; ``ce_batch_size``: sequences per forward of the spliced loss.
        progress: a bar over the spliced-loss batches (``None``: the library switch).

    Example:
        >>> import interp
        >>> from interp.features import evaluate_sae, load_saes
        >>> m = interp.load_model("smollm2-135m")
        >>> ev = evaluate_sae(m, ["The capital of France is Paris.", "Once upon a time there was a fox."],
        ...                   sae=load_saes()["blocks.4.hook_resid_post"])
        >>> ev.explained_variance > 0.5, ev.l0 <= 32, ev.ce_clean < ev.ce_spliced < ev.ce_zero
        (True, True, True)
    """
    name = canonical_hook(hook or sae.hook, model) if (hook or sae.hook) else None
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise bad_value("max_rows", max_rows, "an int >= 1 or None")
    source, name = _rows(model, inputs, name, max_tokens)
    rows: Iterator[torch.Tensor] = (source.iter_tokens(name, batch_size=batch_size, dtype=torch.float32)
                                    if isinstance(source, TraceStore) else iter(source.float().split(batch_size)))
    n, err, s, s2, active = 0, 0.0, None, 0.0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.long)
    with torch.no_grad():
        for x in rows:
            if max_rows is not None and n >= max_rows:
                break
            if max_rows is not None:
                x = x[: max_rows - n]
            z = sae.encode(x)
            x_hat = sae.decode(z)
            on = z > 0
            fired += on.sum(0).cpu()
            active += float(on.sum())
            err += float((x - x_hat).double().pow(2).sum())
            s = x.double().sum(0) if s is None else s + x.double().sum(0)
            s2 += float(x.double().pow(2).sum())
            n += x.shape[0]
    if n == 0 or s is None:
        raise BadInputError("no rows to evaluate")
    total_var = s2 - float(s.pow(2).sum()) / n
    ce: tuple[float, ...] = (math.nan,) * 3
    if model is not None:
        ce_src = ce_inputs if ce_inputs is not None else (
            None if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() else inputs)
        if ce_src is not None:
            ce = tuple(spliced_ce(model, ce_src, sae=sae, hook=name, batch_size=ce_batch_size, max_tokens=max_tokens,
                                  progress=progress))
    return SAEEvaluation(explained_variance=1.0 - err / max(total_var, 1e-30), l0=active / n,
                         dead_fraction=float((fired == 0).float().mean()), n_tokens=n,
                         feature_frequency=fired.float() / n, ce_clean=ce[0], ce_spliced=ce[1], ce_zero=ce[2],
                         hook=name)


__all__ = ["SAEEvaluation", "SplicedLoss", "evaluate_sae", "spliced_ce"]
