"""``InductionScores``: every head's induction / previous-token / duplicate-token score on repeated random
tokens, the loss per position, and (optionally) copying and logit-attribution scores."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.errors import BadInputError
from interp.plot import attention_pattern, heatmap, layer_curves
from interp.trace.results import labelled_frame, read_result, write_result

HEAD_METRICS = ("induction", "prev_token", "duplicate", "logit_attribution", "copying", "copying_diag")
Metric = Literal["induction", "prev_token", "duplicate", "logit_attribution", "copying", "copying_diag"]


@dataclass(frozen=True)
class InductionScores:
    """Head scores on repeated random tokens (BOS? + ``half`` tokens + the same ``half`` tokens).

    Attributes:
        induction: ``[layer, head]`` attention from a token to the token after its earlier occurrence.
        prev_token: ``[layer, head]`` attention to the previous position.
        duplicate: ``[layer, head]`` attention to earlier occurrences of the same token.
        loss: ``[pos]`` mean cross-entropy of predicting the token at each position (NaN at 0).
        tokens: the first sequence's token strings (labels for ``patterns``).
        half: tokens per repeat; offset: 1 when a BOS token comes first.
        patterns: ``[k, q_pos, k_pos]`` the first sequence's attention for the top ``k`` induction heads.
        pattern_heads: their ``(layer, head)``.
        logit_attribution: ``[layer, head]`` mean direct logit attribution to the correct next token on
            the second repeat (``None`` unless asked for).
        copying / copying_diag: ``[layer, head]`` OV copying scores (eigenvalue ratio / diagonal
            fraction; ``None`` unless asked for).
        model_name, n_seq, normalize: provenance.

    Example:
        >>> import torch
        >>> z = torch.zeros(2, 3)
        >>> s = InductionScores(induction=torch.tensor([[0.0, 0.1, 0.0], [0.9, 0.0, 0.2]]), prev_token=z, duplicate=z,
        ...                     loss=torch.tensor([float("nan"), 4.0, 4.0, 4.0, 0.5, 0.5]), tokens=("a",) * 6,
        ...                     half=3, offset=0, patterns=torch.zeros(1, 6, 6), pattern_heads=((1, 0),))
        >>> s.top("induction", 2), round(s.icl_score, 2)
        ([((1, 0), 0.9), ((1, 2), 0.2)], -3.5)
    """

    induction: torch.Tensor
    prev_token: torch.Tensor
    duplicate: torch.Tensor
    loss: torch.Tensor
    tokens: tuple[str, ...]
    half: int
    offset: int
    patterns: torch.Tensor
    pattern_heads: tuple[tuple[int, int], ...]
    logit_attribution: torch.Tensor | None = None
    copying: torch.Tensor | None = None
    copying_diag: torch.Tensor | None = None
    model_name: str = ""
    n_seq: int = 0
    normalize: str = "target_rows"

    def __post_init__(self) -> None:
        if self.induction.dim() != 2:
            raise BadInputError(f"induction must be [layer, head], got shape {tuple(self.induction.shape)}")
        for name in HEAD_METRICS[1:]:
            t = getattr(self, name)
            if t is not None and t.shape != self.induction.shape:
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {tuple(self.induction.shape)}")
        n = self.loss.shape[0]
        if len(self.tokens) != n:
            raise BadInputError(f"{len(self.tokens)} tokens for a loss over {n} positions")
        if self.offset + 2 * self.half > n or self.half < 1:
            raise BadInputError(f"half={self.half}, offset={self.offset} do not fit {n} positions")
        if self.patterns.dim() != 3 or self.patterns.shape[0] != len(self.pattern_heads):
            raise BadInputError(f"patterns must be [k, q, k] with one entry per pattern head, got "
                             f"{tuple(self.patterns.shape)} for {len(self.pattern_heads)} heads")

    # -- summaries -----------------------------------------------------------------------------
    @property
    def loss_first(self) -> float:
        """Mean loss on the first repeat (its second token on; the first is unpredictable)."""
        return float(self.loss[self.offset + 1: self.offset + self.half].mean())

    @property
    def loss_second(self) -> float:
        """Mean loss on the second repeat (its second token on): low when induction works."""
        return float(self.loss[self.offset + self.half + 1: self.offset + 2 * self.half].mean())

    @property
    def icl_score(self) -> float:
        """In-context-learning score: loss on late tokens (second repeat) minus early ones (first repeat)."""
        return self.loss_second - self.loss_first

    def metric(self, name: Metric) -> torch.Tensor:
        """One ``[layer, head]`` score by name (raises if it was not computed)."""
        if name not in HEAD_METRICS:
            raise BadInputError(f"unknown metric {name!r}; valid: {list(HEAD_METRICS)}")
        t = getattr(self, name)
        if t is None:
            raise BadInputError(f"{name} was not computed; pass attribution=True / copying=True to induction_scores")
        return t

    def top(self, name: Metric = "induction", k: int = 5) -> list[tuple[tuple[int, int], float]]:
        """The ``k`` highest-scoring heads as ``((layer, head), score)``."""
        t = self.metric(name)
        vals, idx = t.flatten().topk(min(k, t.numel()))
        H = t.shape[1]
        return [((int(i) // H, int(i) % H), round(float(v), 6)) for v, i in zip(vals, idx, strict=True)]

    def available(self) -> list[str]:
        return [m for m in HEAD_METRICS if getattr(self, m) is not None]

    # -- tables and plots ----------------------------------------------------------------------
    def to_frame(self) -> Any:
        """Long-form ``DataFrame``: columns ``metric, layer, head, value``."""
        names = self.available()
        return labelled_frame(torch.stack([getattr(self, m) for m in names]), ["metric", "layer", "head"],
                              {"metric": names})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: losses, ICL score and the top heads per metric."""
        return {"model": self.model_name, "n_seq": self.n_seq, "half": self.half, "normalize": self.normalize,
                "loss_first": self.loss_first, "loss_second": self.loss_second, "icl_score": self.icl_score,
                "top": {m: [{"layer": lh[0], "head": lh[1], "score": v} for lh, v in self.top(m, 5)]  # type: ignore[arg-type]
                        for m in self.available()}}

    def plot(self, kind: str = "induction", index: int = 0) -> Any:
        """A Plotly figure.

        Args:
            kind: a head metric (``"induction"``, ``"prev_token"``, ``"duplicate"``, ``"logit_attribution"``,
                ``"copying"``, ``"copying_diag"``) for its layer x head grid; ``"pattern"`` for the attention
                of top induction head ``index`` on the first sequence; ``"loss"`` for the loss per position.
        """
        if kind == "pattern":
            if not 0 <= index < len(self.pattern_heads):
                raise BadInputError(f"index {index} out of range: {len(self.pattern_heads)} top heads kept")
            layer, head = self.pattern_heads[index]
            return attention_pattern(self.patterns[index], list(self.tokens),
                                     title=f"L{layer}H{head} on repeated random tokens")
        if kind == "loss":
            x = list(range(len(self.tokens)))
            fig = layer_curves({"loss": self.loss}, x=x, x_title="position", y_title="loss (nats)",
                               title=f"per-token loss: first repeat {self.loss_first:.2f}, second {self.loss_second:.2f}")
            fig.add_vline(x=self.offset + self.half - 0.5, line_dash="dash")
            return fig
        t = self.metric(kind)  # type: ignore[arg-type]
        return heatmap(t, x_labels=[f"H{h}" for h in range(t.shape[1])], y_labels=[f"L{i}" for i in range(t.shape[0])],
                       x_title="head", y_title="layer", colorbar_title=kind, title=f"{kind} score per head")

    # -- storage -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as ``result.safetensors`` + ``result.json``."""
        tensors = {m: getattr(self, m) for m in HEAD_METRICS}
        tensors |= {"loss": self.loss, "patterns": self.patterns}
        meta = {"tokens": list(self.tokens), "half": self.half, "offset": self.offset,
                "pattern_heads": [list(lh) for lh in self.pattern_heads], "model_name": self.model_name,
                "n_seq": self.n_seq, "normalize": self.normalize}
        return write_result(path, "InductionScores", {k: v.contiguous() if v is not None else None
                                                      for k, v in tensors.items()}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InductionScores:
        """Load what :meth:`save` wrote."""
        t, meta = read_result(path, "InductionScores")
        return cls(**{m: t.get(m) for m in HEAD_METRICS}, loss=t["loss"], patterns=t["patterns"],  # type: ignore[arg-type]
                   tokens=tuple(meta["tokens"]), half=meta["half"], offset=meta["offset"],
                   pattern_heads=tuple(tuple(lh) for lh in meta["pattern_heads"]), model_name=meta["model_name"],
                   n_seq=meta["n_seq"], normalize=meta["normalize"])

