"""``InductionScores``: every head's induction / previous-token / duplicate-token score on repeated random
tokens, the loss per position, and (optionally) copying and logit-attribution scores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interp.errors import BadInputError, unknown_name
from interp.plot import attention_pattern, heatmap, layer_curves
from interp.sites import HeadRef
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

HEAD_METRICS = ("induction", "prev_token", "duplicate", "logit_attribution", "copying", "copying_diag")
Metric = Literal["induction", "prev_token", "duplicate", "logit_attribution", "copying", "copying_diag"]


def _nanmean(t: torch.Tensor) -> float:
    return float(t.nanmean()) if t.numel() else math.nan


def top_heads(t: torch.Tensor, k: int) -> list[tuple[HeadRef, float]]:
    """The ``k`` largest cells of a ``[layer, head]`` score as ``(HeadRef, score)``, best first."""
    vals, idx = t.flatten().topk(min(k, t.numel()))
    H = t.shape[1]
    return [(HeadRef(int(i) // H, int(i) % H), round(float(v), 6)) for v, i in zip(vals, idx, strict=True)]


@dataclass(frozen=True, repr=False)
class InductionScores(Result):
    """Head scores on repeated random tokens (BOS? + ``half`` tokens + the same ``half`` tokens), or any inputs.

    Attributes:
        induction: ``[layer, head]`` attention from a token to the token after its earlier occurrence.
        prev_token: ``[layer, head]`` attention to the previous position.
        duplicate: ``[layer, head]`` attention to earlier occurrences of the same token.
        loss: ``[pos]`` mean cross-entropy of predicting the token at each position (NaN at 0 and where
            every sequence is padding).
        tokens: the first sequence's token strings (labels for ``patterns`` and ``loss``).
        half: tokens per repeat; offset: 1 when a BOS token comes first. For inputs that are not repeated
            tokens, the "repeats" are the first and second half of the (padded) sequence.
        patterns: ``[pattern_head, q_pos, k_pos]`` the first sequence's attention for the top induction heads.
        pattern_heads: their heads.
        logit_attribution: ``[layer, head]`` mean direct logit attribution to the correct next token on
            the second repeat (``None`` unless asked for).
        copying / copying_diag: ``[layer, head]`` OV copying scores (eigenvalue ratio / diagonal
            fraction; ``None`` unless asked for).
        model_name, n_seq, normalize: provenance.

    Views: ``"induction"`` (default), ``"prev_token"``, ``"duplicate"``, ``"logit_attribution"``, ``"copying"``,
    ``"copying_diag"`` (a layer x head grid of that score), ``"pattern"`` (``index=``: the attention of
    top induction head ``index`` on the first sequence) and ``"loss"`` (loss per position).

    Example:
        >>> import torch
        >>> z = torch.zeros(2, 3)
        >>> s = InductionScores(induction=torch.tensor([[0.0, 0.1, 0.0], [0.9, 0.0, 0.2]]), prev_token=z, duplicate=z,
        ...                     loss=torch.tensor([float("nan"), 4.0, 4.0, 4.0, 0.5, 0.5]), tokens=("a",) * 6,
        ...                     half=3, offset=0, patterns=torch.zeros(1, 6, 6), pattern_heads=("L1H0",))
        >>> s.top("induction", 2), round(s.icl_score, 2)
        ([(HeadRef(1, 0), 0.9), (HeadRef(1, 2), 0.2)], -3.5)
        >>> s
        InductionScores(induction[layer=2, head=3], prev_token[layer=2, head=3], duplicate[layer=2, head=3], loss_first=4, loss_second=0.5, icl_score=-3.5, top_induction_head='L1H0', top_induction=0.9)
        >>> s.plot("prev_token").layout.title.text
        'prev_token score per head'
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        **{m: ("layer", "head") for m in HEAD_METRICS}, "loss": ("pos",), "patterns": ("pattern_head", "q_pos", "k_pos"),
    }
    VIEWS: ClassVar[tuple[str, ...]] = (*HEAD_METRICS, "pattern", "loss")

    induction: torch.Tensor
    prev_token: torch.Tensor
    duplicate: torch.Tensor
    loss: torch.Tensor
    tokens: tuple[str, ...]
    half: int
    offset: int
    patterns: torch.Tensor
    pattern_heads: tuple[HeadRef, ...]
    logit_attribution: torch.Tensor | None = None
    copying: torch.Tensor | None = None
    copying_diag: torch.Tensor | None = None
    model_name: str = ""
    n_seq: int = 0
    normalize: str = "target_rows"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern_heads", tuple(HeadRef.parse(h) for h in self.pattern_heads))
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.induction.dim() != 2:
            raise BadInputError(f"bad induction of shape {tuple(self.induction.shape)}; valid: [layer, head]")
        for name in HEAD_METRICS[1:]:
            t = getattr(self, name)
            if t is not None and t.shape != self.induction.shape:
                raise BadInputError(f"bad {name} of shape {tuple(t.shape)}; valid: {tuple(self.induction.shape)}")
        n = self.loss.shape[0]
        if len(self.tokens) != n:
            raise BadInputError(f"bad tokens: {len(self.tokens)} tokens for a loss over {n} positions")
        if self.offset + 2 * self.half > n or self.half < 1:
            raise BadInputError(f"bad half={self.half}, offset={self.offset}: they do not fit {n} positions")
        if self.patterns.dim() != 3 or self.patterns.shape[0] != len(self.pattern_heads):
            raise BadInputError(f"bad patterns of shape {tuple(self.patterns.shape)}; valid: [k, q, k] with one "
                                f"entry per pattern head ({len(self.pattern_heads)})")

    # -- summaries -----------------------------------------------------------------------------
    @property
    def loss_first(self) -> float:
        """Mean loss on the first repeat (its second token on; the first is unpredictable)."""
        return _nanmean(self.loss[self.offset + 1: self.offset + self.half])

    @property
    def loss_second(self) -> float:
        """Mean loss on the second repeat (its second token on): low when induction works."""
        return _nanmean(self.loss[self.offset + self.half + 1: self.offset + 2 * self.half])

    @property
    def icl_score(self) -> float:
        """In-context-learning score: loss on late tokens (second repeat) minus early ones (first repeat)."""
        return self.loss_second - self.loss_first

    def metric(self, name: Metric | str) -> torch.Tensor:
        """One ``[layer, head]`` score by name.

        Raises:
            UnknownNameError: an unknown name; BadInputError: a score that was not computed.
        """
        if name not in HEAD_METRICS:
            raise unknown_name("metric", name, HEAD_METRICS)
        t: torch.Tensor | None = getattr(self, name)
        if t is None:
            raise BadInputError(f"bad metric {name!r}: it was not computed; pass attribution=True (logit_attribution) "
                                "or copying=True (copying, copying_diag) to induction_scores")
        return t

    def top(self, name: Metric | str = "induction", k: int = 5) -> list[tuple[HeadRef, float]]:
        """The ``k`` highest-scoring heads as ``(HeadRef, score)``, best first."""
        return top_heads(self.metric(name), k)

    def available(self) -> list[str]:
        """The head metrics this result holds (the optional ones only when computed)."""
        return [m for m in HEAD_METRICS if getattr(self, m) is not None]

    # -- the result surface --------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        toks = list(self.tokens)
        return {"pos": toks, "q_pos": toks, "k_pos": toks, "pattern_head": [str(h) for h in self.pattern_heads]}

    def headline(self) -> dict[str, Any]:
        head, score = self.top("induction", 1)[0]
        return {"loss_first": round(self.loss_first, 4), "loss_second": round(self.loss_second, 4),
                "icl_score": round(self.icl_score, 4), "top_induction_head": str(head), "top_induction": score}

    def to_frame(self) -> pd.DataFrame:
        """Long-form table of the head scores: columns ``metric, layer, head, value``."""
        names = self.available()
        return labelled_frame(torch.stack([getattr(self, m) for m in names]), ["metric", "layer", "head"],
                              {"metric": names})

    def to_dict(self) -> dict[str, Any]:
        """The labelled arrays, plus the losses, the ICL score and the top five heads of each score."""
        out = super().to_dict()
        out["attributes"].update(
            loss_first=self.loss_first, loss_second=self.loss_second, icl_score=self.icl_score,
            top={m: [{"head": str(h), "score": v} for h, v in self.top(m, 5)] for m in self.available()})
        return out

    # -- views ---------------------------------------------------------------------------------
    def _grid(self, name: str) -> Figure:
        t = self.metric(name)
        return heatmap(t, x_labels=[f"H{h}" for h in range(t.shape[1])], y_labels=[f"L{i}" for i in range(t.shape[0])],
                       x_title="head", y_title="layer", colorbar_title=name, title=f"{name} score per head")

    def _view_induction(self) -> Figure:
        return self._grid("induction")

    def _view_prev_token(self) -> Figure:
        return self._grid("prev_token")

    def _view_duplicate(self) -> Figure:
        return self._grid("duplicate")

    def _view_logit_attribution(self) -> Figure:
        return self._grid("logit_attribution")

    def _view_copying(self) -> Figure:
        return self._grid("copying")

    def _view_copying_diag(self) -> Figure:
        return self._grid("copying_diag")

    def _view_pattern(self, index: int = 0) -> Figure:
        if not 0 <= index < len(self.pattern_heads):
            raise BadInputError(f"bad index {index}; valid: 0..{len(self.pattern_heads) - 1} (the top heads kept)")
        return attention_pattern(self.patterns[index], list(self.tokens),
                                 title=f"{self.pattern_heads[index]} on the first sequence")

    def _view_loss(self) -> Figure:
        fig = layer_curves({"loss": self.loss}, x=list(range(len(self.tokens))), x_title="position",
                           y_title="loss (nats)",
                           title=f"per-token loss: first repeat {self.loss_first:.2f}, second {self.loss_second:.2f}")
        fig.add_vline(x=self.offset + self.half - 0.5, line_dash="dash")
        return fig


__all__ = ["HEAD_METRICS", "InductionScores", "Metric", "top_heads"]
