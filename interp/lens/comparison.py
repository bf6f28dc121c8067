"""Logit lens vs tuned lens on the same tokens: mean ``KL(final || layer)`` per layer for both."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult
from interp.lens.tuned_lens import HOOK, TunedLens, as_tuned_lens
from interp.models import Inputs, Model
from interp.plot import layer_curves
from interp.progress import progress as progress_bar
from interp.sites import Component, Site
from interp.trace.inputs import ensure_trace, token_batches
from interp.trace.results import Result, labelled_frame
from interp.trace.store import TraceStore
from interp.trace.trace import Trace

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class LensComparison(Result):
    """Mean KL to the model's output per layer, for the logit lens and a tuned lens, on the same tokens.

    Views: ``"kl"`` (the two KL-per-layer curves).

    Attributes:
        kl_logit: ``[layer]`` mean ``KL(final || logit lens)`` over all real tokens (nats).
        kl_tuned: ``[layer]`` the same through the tuned lens.
        n_tokens: tokens averaged over; ``model_id``: the model.

    Example:
        >>> import torch
        >>> from interp.lens import LensComparison
        >>> c = LensComparison(torch.tensor([3.0, 1.0, 0.0]), torch.tensor([1.0, 0.5, 0.0]), 100, "m")
        >>> c.tuned_better_before_last(), c
        (True, LensComparison(kl_logit[layer=3], kl_tuned[layer=3], n_tokens=100, kl_logit_mean=2, kl_tuned_mean=0.75, tuned_better_before_last=True))
        >>> c.to_frame().to_dict("records")[0]
        {'layer': 0, 'kl_logit': 3.0, 'kl_tuned': 1.0}
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"kl_logit": ("layer",), "kl_tuned": ("layer",)}
    VIEWS = ("kl",)

    kl_logit: torch.Tensor
    kl_tuned: torch.Tensor
    n_tokens: int
    model_id: str = ""

    def __post_init__(self) -> None:
        if self.kl_logit.shape != self.kl_tuned.shape or self.kl_logit.dim() != 1:
            raise BadInputError(f"kl_logit and kl_tuned must both be [layer], got {tuple(self.kl_logit.shape)} "
                                f"and {tuple(self.kl_tuned.shape)}")

    @classmethod
    def from_results(cls, logit: LogitLensResult, tuned: LogitLensResult) -> LensComparison:
        """Mean KL per layer over the real tokens of two readings of the same tokens."""
        if logit.kl_to_final.shape != tuned.kl_to_final.shape:
            raise BadInputError("the two readings must cover the same layers and tokens, got kl_to_final of shapes "
                                f"{tuple(logit.kl_to_final.shape)} and {tuple(tuned.kl_to_final.shape)}")
        read = logit.read_mask()
        n = int(read.sum())
        mean = [r.kl_to_final[:, read].double().sum(1).div(max(n, 1)).float() for r in (logit, tuned)]
        return cls(mean[0], mean[1], n, logit.model_id)

    @property
    def n_layers(self) -> int:
        return int(self.kl_logit.shape[0])

    def tuned_better_before_last(self) -> bool:
        """Whether the tuned lens is closer to the output than the logit lens at every layer but the last."""
        return bool((self.kl_tuned[:-1] < self.kl_logit[:-1]).all())

    def _view_kl(self) -> Figure:
        """The two KL-per-layer curves."""
        return layer_curves({"logit lens": self.kl_logit, "tuned lens": self.kl_tuned}, x=list(range(self.n_layers)),
                            y_title="mean KL(final || layer) (nats)",
                            title=f"logit vs tuned lens on {self.n_tokens} tokens")

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: ``layer, kl_logit, kl_tuned``."""
        df = labelled_frame(self.kl_logit, ["layer"], name="kl_logit")
        df["kl_tuned"] = self.kl_tuned.tolist()
        return df

    def headline(self) -> dict[str, Any]:
        before = slice(0, max(self.n_layers - 1, 1))
        return {"n_tokens": self.n_tokens, "kl_logit_mean": float(self.kl_logit[before].mean()),
                "kl_tuned_mean": float(self.kl_tuned[before].mean()),
                "tuned_better_before_last": self.tuned_better_before_last()}


def compare_lenses(model: Model, inputs: Inputs, *, lens: TunedLens | str | os.PathLike[str] = "auto",
                   batch_size: int = 8, max_tokens: int | None = 128, progress: bool | None = None) -> LensComparison:
    """Mean ``KL(final || layer)`` of the logit lens and of a tuned lens over every real token of ``inputs``.

    Args:
        model: the model (the lens must have been trained for it).
        inputs: texts (run here ``batch_size`` at a time, truncated to ``max_tokens``), token ids, a Trace, or a
            :class:`~interp.trace.TraceStore` (read ``batch_size`` sequences at a time; one without every layer's
            ``resid_post`` is run on its tokens).
        lens: a fitted :class:`TunedLens`, a directory saved by :meth:`TunedLens.save`, or ``"auto"`` (the lens
            saved for this model, see :func:`~interp.lens.find_tuned_lens`).
        batch_size: sequences per batch.
        max_tokens: truncate texts to this many tokens (``None``: no limit).
        progress: show a progress bar (``None``: follow :func:`interp.quiet`).

    Raises:
        BadInputError: no inputs, a bad ``batch_size``, or no lens saved for the model with ``lens="auto"``.
        ModelMismatchError: the lens, trace or store was made for another model.

    Example:
        >>> import interp
        >>> from interp.lens import compare_lenses
        >>> m = interp.load_model("smollm2-135m")
        >>> cmp = compare_lenses(m, ["The capital of France is Paris.", "Water boils at 100 degrees."], lens="auto")
        >>> cmp.n_tokens, cmp.tuned_better_before_last()
        (16, True)
        >>> cmp.plot().data[0].name
        'logit lens'
    """
    tuned = as_tuned_lens(model, lens)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise bad_value("batch_size", batch_size, "an int >= 1")
    parts: list[LensComparison] = []
    n_seqs = _n_seqs(inputs)
    total = None if n_seqs is None else -(-n_seqs // batch_size)
    for tr in progress_bar(_traces(model, inputs, batch_size, max_tokens), enabled=progress, total=total,
                           desc="compare lenses"):
        parts.append(LensComparison.from_results(logit_lens(model, tr, top_k=1), tuned.apply(model, tr, top_k=1)))
    count = sum(p.n_tokens for p in parts)
    w = [p.n_tokens / max(count, 1) for p in parts]
    kl_logit = torch.stack([p.kl_logit * x for p, x in zip(parts, w, strict=True)]).sum(0)
    kl_tuned = torch.stack([p.kl_tuned * x for p, x in zip(parts, w, strict=True)]).sum(0)
    return LensComparison(kl_logit, kl_tuned, count, model.name)


def _n_seqs(inputs: Inputs) -> int | None:
    """Number of sequences of ``inputs`` (``None`` where it cannot be told before reading them)."""
    if isinstance(inputs, str):
        return 1
    if isinstance(inputs, (Trace, TraceStore)):
        return inputs.n_seqs
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() == 2 else 1
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], torch.Tensor):
        return int(inputs[0].shape[0])
    return len(inputs) if isinstance(inputs, (list, tuple)) else None


def _traces(model: Model, inputs: Inputs, batch_size: int, max_tokens: int | None) -> Iterator[Trace]:
    """Batches of ``inputs`` as traces holding every layer's ``resid_post`` (or as token batches run later)."""
    names = [Site(Component.RESID_POST, L).name for L in range(model.dims.n_layers)]
    if isinstance(inputs, (list, tuple)) and not inputs:
        raise BadInputError("no inputs: got an empty list of texts")
    if isinstance(inputs, TraceStore) and all(n in inputs.hooks for n in names):
        inputs.check_model(model)
        for i in range(0, inputs.n_seqs, batch_size):
            yield inputs.trace(range(i, min(inputs.n_seqs, i + batch_size)), hooks=names)
    elif isinstance(inputs, Trace):
        inputs.check_model(model)
        for i in range(0, inputs.n_seqs, batch_size):
            yield ensure_trace(model, inputs.select(slice(i, i + batch_size)), HOOK)
    else:
        if isinstance(inputs, TraceStore):
            inputs.check_model(model)
        for ids, mask in token_batches(model, inputs, batch_size, max_tokens=max_tokens):
            n = int(mask.sum(1).max())
            yield ensure_trace(model, (ids[:, :n], mask[:, :n]), HOOK)


__all__ = ["LensComparison", "compare_lenses"]
