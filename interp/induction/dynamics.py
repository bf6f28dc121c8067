"""``TrainingCurves``: how the toy model's induction circuit forms over training (the phase change).

Example:
    >>> from interp.induction import TrainingCurves
    >>> c = TrainingCurves.from_toy()  # the curves shipped with the toy model
    >>> c.phase_change_step, c.induction.shape
    (500, torch.Size([40, 2, 4]))
    >>> c.plot("loss").layout.title.text
    'loss over training'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.models.toy import ToyRun, load_curves
from interp.plot import layer_curves
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

SERIES = ("train_loss", "loss_first", "loss_second", "induction_max", "prev_token_max_l0")


@dataclass(frozen=True, repr=False)
class TrainingCurves(Result):
    """Measurements taken every few training steps.

    Attributes:
        steps: ``[step]`` training step of each measurement (the labels of the ``step`` axis).
        train_loss, loss_first, loss_second, induction_max, prev_token_max_l0: ``[step]`` (smoothed training
            loss; loss on the first / second repeat of unseen-length repeated random tokens; best layer-1
            induction score; best layer-0 previous-token score).
        induction, prev_token: ``[step, layer, head]`` every head's scores.
        phase_change_step: first step with an induction score above the run's threshold (or ``None``).

    Views: ``"scores"`` (best induction and previous-token scores; default), ``"loss"`` (training and repeat
    losses) and ``"heads"`` (every head's induction score).

    Example:
        >>> z = torch.zeros(2)
        >>> c = TrainingCurves(steps=torch.tensor([50, 100]), train_loss=z, loss_first=z, loss_second=z,
        ...                    induction_max=torch.tensor([0.0, 0.7]), prev_token_max_l0=z,
        ...                    induction=torch.zeros(2, 2, 4), prev_token=torch.zeros(2, 2, 4), phase_change_step=100)
        >>> len(c.to_frame()), c
        (10, TrainingCurves(induction_max[step=2], train_loss[step=2], loss_first[step=2], phase_change_step=100, final_induction_max=0.7, final_loss_second=0))
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        "induction_max": ("step",), "train_loss": ("step",), "loss_first": ("step",), "loss_second": ("step",),
        "prev_token_max_l0": ("step",), "induction": ("step", "layer", "head"), "prev_token": ("step", "layer", "head"),
    }
    VIEWS: ClassVar[tuple[str, ...]] = ("scores", "loss", "heads")

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
                raise BadInputError(f"bad {name} of shape {tuple(getattr(self, name).shape)}; valid: ({n},)")
        for name in ("induction", "prev_token"):
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[0] != n:
                raise BadInputError(f"bad {name} of shape {tuple(t.shape)}; valid: [{n}, layer, head]")

    @classmethod
    def from_history(cls, history: Mapping[str, Any], phase_change_step: int | None = None) -> TrainingCurves:
        """From :attr:`interp.models.toy.ToyRun.history`."""
        missing = [k for k in ("step", *SERIES, "induction", "prev_token") if k not in history]
        if missing:
            raise BadInputError(f"bad training history: no {', '.join(missing)}; valid: a ToyRun.history")
        f = {k: torch.tensor(history[k], dtype=torch.float32) for k in (*SERIES, "induction", "prev_token")}
        return cls(steps=torch.tensor(history["step"]), phase_change_step=phase_change_step, **f)

    @classmethod
    def from_run(cls, run: ToyRun) -> TrainingCurves:
        """The curves of a :class:`~interp.models.toy.ToyRun` (just trained or loaded)."""
        return cls.from_history(run.history, run.phase_change_step)

    @classmethod
    def from_toy(cls, path: str | os.PathLike[str] | None = None) -> TrainingCurves:
        """The curves saved beside a toy model (default: the shipped ``data/toy_induction``)."""
        c = load_curves(path)
        return cls.from_history(c["history"], c.get("phase_change_step"))

    # -- the result surface --------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        return {"step": self.steps.tolist()}

    def headline(self) -> dict[str, Any]:
        last = len(self.steps) - 1
        return {"phase_change_step": self.phase_change_step,
                "final_induction_max": round(float(self.induction_max[last]), 4) if last >= 0 else None,
                "final_loss_second": round(float(self.loss_second[last]), 4) if last >= 0 else None}

    def to_frame(self) -> pd.DataFrame:
        """Long-form table: columns ``series, step, value``."""
        return labelled_frame(torch.stack([getattr(self, s) for s in SERIES]), ["series", "step"],
                              {"series": list(SERIES), "step": self.steps.tolist()})

    def _finish(self, fig: Figure) -> Figure:
        if self.phase_change_step is not None:
            fig.add_vline(x=self.phase_change_step, line_dash="dash")
        return fig

    def _view_scores(self) -> Figure:
        series = {"induction (best layer-1 head)": self.induction_max,
                  "previous token (best layer-0 head)": self.prev_token_max_l0}
        return self._finish(layer_curves(series, x=self.steps.tolist(), x_title="training step", y_title="score",
                                         title="induction circuit forming"))

    def _view_loss(self) -> Figure:
        series = {"training loss": self.train_loss, "first repeat": self.loss_first,
                  "second repeat (in context)": self.loss_second}
        return self._finish(layer_curves(series, x=self.steps.tolist(), x_title="training step",
                                         y_title="loss (nats)", title="loss over training"))

    def _view_heads(self) -> Figure:
        L, H = self.induction.shape[1:]
        series = {f"L{la}H{h}": self.induction[:, la, h] for la in range(L) for h in range(H)}
        return self._finish(layer_curves(series, x=self.steps.tolist(), x_title="training step",
                                         y_title="induction score", title="induction score per head over training"))


__all__ = ["SERIES", "TrainingCurves"]
