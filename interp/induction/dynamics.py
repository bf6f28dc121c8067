"""``TrainingCurves``: how the toy model's induction circuit forms over training (the phase change).

Example:
    >>> from interp.induction import TrainingCurves
    >>> c = TrainingCurves.from_toy()  # the curves shipped with the toy model  # doctest: +SKIP
    >>> c.phase_change_step  # doctest: +SKIP
    500
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.models.toy import load_curves
from interp.plot import layer_curves
from interp.trace.results import labelled_frame, read_result, write_result

SERIES = ("train_loss", "loss_first", "loss_second", "induction_max", "prev_token_max_l0")


@dataclass(frozen=True)
class TrainingCurves:
    """Measurements taken every few training steps.

    Attributes:
        steps: ``[n]`` training step of each measurement.
        train_loss, loss_first, loss_second, induction_max, prev_token_max_l0: ``[n]`` (smoothed training
            loss; loss on the first / second repeat of unseen-length repeated random tokens; best layer-1
            induction score; best layer-0 previous-token score).
        induction, prev_token: ``[n, layer, head]`` every head's scores.
        phase_change_step: first step with an induction score above the run's threshold (or ``None``).

    Example:
        >>> z = torch.zeros(2)
        >>> c = TrainingCurves(steps=torch.tensor([50, 100]), train_loss=z, loss_first=z, loss_second=z,
        ...                    induction_max=torch.tensor([0.0, 0.7]), prev_token_max_l0=z,
        ...                    induction=torch.zeros(2, 2, 4), prev_token=torch.zeros(2, 2, 4), phase_change_step=100)
        >>> len(c.to_frame())
        10
    """

    steps: torch.Tensor
    train_loss: torch.Tensor
    loss_first: torch.Tensor
    loss_second: torch.Tensor
    induction_max: torch.Tensor
    prev_token_max_l0: torch.Tensor
    induction: torch.Tensor
    prev_token: torch.Tensor
    phase_change_step: int | None = None

    def __post_init__(self) -> None:
        n = self.steps.shape[0]
        for name in SERIES:
            if getattr(self, name).shape != (n,):
                raise BadInputError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected ({n},)")
        for name in ("induction", "prev_token"):
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[0] != n:
                raise BadInputError(f"{name} must be [{n}, layer, head], got {tuple(t.shape)}")

    @classmethod
    def from_history(cls, history: dict[str, Any], phase_change_step: int | None = None) -> TrainingCurves:
        """From :attr:`interp.models.toy.ToyRun.history`."""
        f = {k: torch.tensor(history[k], dtype=torch.float32) for k in (*SERIES, "induction", "prev_token")}
        return cls(steps=torch.tensor(history["step"]), phase_change_step=phase_change_step, **f)

    @classmethod
    def from_toy(cls, path: str | os.PathLike[str] | None = None) -> TrainingCurves:
        """The curves saved beside a toy model (default: the shipped ``data/toy_induction``)."""
        c = load_curves(path)
        return cls.from_history(c["history"], c.get("phase_change_step"))

    def to_frame(self) -> Any:
        """Long-form ``DataFrame``: columns ``series, step, value``."""
        return labelled_frame(torch.stack([getattr(self, s) for s in SERIES]), ["series", "step"],
                              {"series": list(SERIES), "step": self.steps.tolist()})

    def plot(self, kind: str = "scores") -> Any:
        """``"scores"``: best induction and previous-token scores; ``"loss"``: losses; ``"heads"``: every
        head's induction score over training."""
        x = self.steps.tolist()
        if kind == "scores":
            series = {"induction (best layer-1 head)": self.induction_max,
                      "previous token (best layer-0 head)": self.prev_token_max_l0}
            fig = layer_curves(series, x=x, x_title="training step", y_title="score", title="induction circuit forming")
        elif kind == "loss":
            series = {"training loss": self.train_loss, "first repeat": self.loss_first,
                      "second repeat (in context)": self.loss_second}
            fig = layer_curves(series, x=x, x_title="training step", y_title="loss (nats)", title="loss over training")
        elif kind == "heads":
            L, H = self.induction.shape[1:]
            series = {f"L{la}H{h}": self.induction[:, la, h] for la in range(L) for h in range(H)}
            fig = layer_curves(series, x=x, x_title="training step", y_title="induction score",
                               title="induction score per head over training")
        else:
            raise BadInputError(f"unknown kind {kind!r}; use 'scores', 'loss' or 'heads'")
        if self.phase_change_step is not None:
            fig.add_vline(x=self.phase_change_step, line_dash="dash")
        return fig

    def save(self, path: str | os.PathLike[str]) -> Path:
        tensors = {k: getattr(self, k) for k in ("steps", *SERIES, "induction", "prev_token")}
        return write_result(path, "TrainingCurves", tensors, {"phase_change_step": self.phase_change_step})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingCurves:
        t, m = read_result(path, "TrainingCurves")
        return cls(**t, phase_change_step=m["phase_change_step"])
