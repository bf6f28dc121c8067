"""Logit lens vs tuned lens on the same tokens: mean ``KL(final || layer)`` per layer for both."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult
from interp.lens.tuned_lens import TunedLens
from interp.models import Model
from interp.plot import layer_curves
from interp.trace.results import labelled_frame, read_result, write_result
from interp.trace.store import TraceStore


@dataclass(frozen=True)
class LensComparison:
    """Mean KL to the model's output per layer, for the logit lens and a tuned lens, on the same tokens.

    Attributes:
        kl_logit: ``[layer]`` mean ``KL(final || logit lens)`` over all real tokens (nats).
        kl_tuned: ``[layer]`` the same through the tuned lens.
        n_tokens: tokens averaged over; ``model_id``: the model.

    Example:
        >>> import torch
        >>> c = LensComparison(torch.tensor([3.0, 1.0, 0.0]), torch.tensor([1.0, 0.5, 0.0]), 100, "m")
        >>> c.tuned_better_before_last()
        True
    """

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
            raise BadInputError("the two readings must cover the same layers and tokens")
        n = int(logit.attention_mask.sum())
        mean = [r.kl_to_final.nan_to_num(0.0).double().sum((1, 2)).div(max(n, 1)).float() for r in (logit, tuned)]
        return cls(mean[0], mean[1], n, logit.model_id)

    @property
    def n_layers(self) -> int:
        return int(self.kl_logit.shape[0])

    def tuned_better_before_last(self) -> bool:
        """Whether the tuned lens is closer to the output than the logit lens at every layer but the last."""
        return bool((self.kl_tuned[:-1] < self.kl_logit[:-1]).all())

    def plot(self) -> Any:
        """The two KL-per-layer curves."""
        return layer_curves({"logit lens": self.kl_logit, "tuned lens": self.kl_tuned}, x=list(range(self.n_layers)),
                            y_title="mean KL(final || layer) (nats)",
                            title=f"logit vs tuned lens on {self.n_tokens} tokens")

    def to_dict(self) -> dict[str, Any]:
        labels = {"layer": list(range(self.n_layers))}
        return {"kl_logit": {"axes": ["layer"], "labels": labels, "values": self.kl_logit.tolist()},
                "kl_tuned": {"axes": ["layer"], "labels": labels, "values": self.kl_tuned.tolist()}}

    def to_frame(self) -> Any:
        """``pandas.DataFrame`` with columns ``layer, kl_logit, kl_tuned``."""
        df = labelled_frame(self.kl_logit, ["layer"], name="kl_logit")
        df["kl_tuned"] = self.kl_tuned.tolist()
        return df

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "LensComparison", {"kl_logit": self.kl_logit, "kl_tuned": self.kl_tuned},
                            {"n_tokens": self.n_tokens, "model_id": self.model_id})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LensComparison:
        t, meta = read_result(path, "LensComparison")
        return cls(t["kl_logit"], t["kl_tuned"], **meta)


def compare_lenses(model: Model, lens: TunedLens, data: Sequence[str] | TraceStore, batch_size: int = 8,
                   max_tokens: int = 128, progress: bool = True) -> LensComparison:
    """Mean ``KL(final || layer)`` of the logit lens and of ``lens`` over every real token of ``data``.

    Args:
        model: the model (the lens must have been trained for it).
        lens: a fitted :class:`TunedLens`.
        data: texts (run here in batches, truncated to ``max_tokens``) or a :class:`TraceStore` holding
            ``blocks.*.hook_resid_post`` (read a batch of sequences at a time).
        batch_size: sequences per batch.
        progress: show a tqdm bar.

    Example:
        >>> from interp.lens import TunedLens, compare_lenses
        >>> lens = TunedLens.load("data/lenses/smollm2-135m")  # doctest: +SKIP
        >>> compare_lenses(m, lens, ["The capital of France is Paris."]).plot()  # doctest: +SKIP
    """
    if isinstance(data, str) or (not isinstance(data, TraceStore) and not len(data)):
        raise BadInputError("data must be a non-empty list of texts or a TraceStore")
    n = len(data) if not isinstance(data, TraceStore) else data.n_seqs
    hooked = model
    parts: list[LensComparison] = []
    for i in tqdm(range(0, n, batch_size), desc="compare lenses", disable=not progress):
        if isinstance(data, TraceStore):
            tr = data.trace(range(i, min(n, i + batch_size)), hooks=[f"blocks.{L}.hook_resid_post"
                                                                       for L in range(model.dims.n_layers)])
        else:
            tr = hooked.run(list(data[i:i + batch_size]), capture="blocks.*.hook_resid_post",
                            max_tokens=max_tokens).trace
        parts.append(LensComparison.from_results(logit_lens(model, tr, top_k=1), lens.apply(model, tr, top_k=1)))
    count = sum(p.n_tokens for p in parts)
    w = [p.n_tokens / max(count, 1) for p in parts]
    return LensComparison(sum(p.kl_logit * x for p, x in zip(parts, w, strict=True)),
                          sum(p.kl_tuned * x for p, x in zip(parts, w, strict=True)), count, model.name)


__all__ = ["LensComparison", "compare_lenses"]
