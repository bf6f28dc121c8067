"""Results of causal abstraction: interchange intervention accuracy (IIA) per alignment and per sweep cell, a
learned subspace, and interchange intervention training curves.

Example:
    >>> import torch
    >>> from interp.causal import IIAResult
    >>> res = IIAResult(iia=torch.tensor([0.9, 0.5]), lower=torch.tensor([0.8, 0.4]), upper=torch.tensor([0.95, 0.6]),
    ...                 correct=torch.ones(2, 10, dtype=torch.bool), alignments=("WX: mlp_out.0@1", "WX: mlp_out.0@0"),
    ...                 variables=("WX",), task="hierarchical_equality", n=10, changed=0.5, base_accuracy=1.0)
    >>> res
    IIAResult(iia[alignment=2], lower[alignment=2], upper[alignment=2], best=0.9, n=10, base_accuracy=1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import Project, SubspacePatch
from interp.plot import bar_top_tokens, heatmap, layer_curves
from interp.sites import Positions
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from interp.causal.alignment import AlignedSite


def wilson(correct: torch.Tensor, confidence: float = 0.95) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rate, lower, upper)`` over the last axis of a boolean tensor: the Wilson score interval.

    Example:
        >>> r, lo, hi = wilson(torch.tensor([True] * 9 + [False]))
        >>> round(float(r), 2), round(float(lo), 3), round(float(hi), 3)
        (0.9, 0.596, 0.982)
    """
    if not 0 < confidence < 1:
        raise bad_value("confidence", confidence, "a number between 0 and 1")
    n = correct.shape[-1]
    if n == 0:
        nan = torch.full(correct.shape[:-1], float("nan"))
        return nan, nan, nan
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + confidence / 2)))
    p = correct.double().mean(-1)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p.float(), (center - half).clamp(0, 1).float(), (center + half).clamp(0, 1).float()


def _with_error_bars(fig: Figure, values: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> Figure:
    v, lo, hi = values.numpy(), lower.numpy(), upper.numpy()
    fig.data[0].error_x = {"type": "data", "symmetric": False, "array": (hi - v).tolist(),
                           "arrayminus": (v - lo).tolist()}
    return fig


@dataclass(frozen=True, repr=False)
class IIAResult(Result):
    """Interchange intervention accuracy of one or more alignments on base/source pairs.

    IIA is the share of pairs on which the network, with the aligned sites of every interchanged variable
    taken from that variable's source run, gives the high-level model's counterfactual answer. ``lower`` and
    ``upper`` bound it (Wilson score interval at ``confidence``). An intervention that does nothing scores
    ``1 - changed``.

    Tensors: ``iia``, ``lower``, ``upper`` ``[alignment]``; ``correct`` ``[alignment, example]`` (saved, left out
    of ``to_dict``). View: ``"bars"`` (IIA per alignment with its interval).
    """

    AXES = {"iia": ("alignment",), "lower": ("alignment",), "upper": ("alignment",),
            "correct": ("alignment", "example")}
    VIEWS = ("bars",)
    JSON_SKIP = ("correct",)

    iia: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    correct: torch.Tensor
    alignments: tuple[str, ...]
    variables: tuple[str, ...]
    task: str
    n: int
    changed: float
    base_accuracy: float
    confidence: float = 0.95

    def labels(self) -> dict[str, list[Any]]:
        return {"alignment": list(self.alignments)}

    def headline(self) -> dict[str, Any]:
        return {"best": round(float(self.iia.max()), 4), "n": self.n, "base_accuracy": round(self.base_accuracy, 4)}

    def _view_bars(self) -> Figure:
        fig = bar_top_tokens(list(self.alignments), self.iia, x_title="IIA", signed=False,
                             title=f"IIA of {', '.join(self.variables)} on {self.task} (n={self.n}; null "
                                   f"intervention {1 - self.changed:.2f})")
        return _with_error_bars(fig, self.iia, self.lower, self.upper)


@dataclass(frozen=True, repr=False)
class IIATable(Result):
    """IIA of one variable interchanged at one component, per layer, position and subspace size.

    Size ``0`` is the whole activation; other sizes are subspaces learned by ``method`` (``"das"``,
    ``"lowrank"``, ``"boundless"``) on a training split and scored on held-out pairs.

    Tensors: ``iia``, ``lower``, ``upper`` ``[layer, pos, size]``; ``correct`` ``[layer, pos, size, example]``.
    Views: ``"heatmap"`` (layer × position at ``size=`` index, default the last), ``"dims"`` (IIA against
    subspace size at ``layer=``/``pos=`` indices, default the best cell) and ``"layers"`` (IIA by layer, one
    line per position).
    """

    AXES = {"iia": ("layer", "pos", "size"), "lower": ("layer", "pos", "size"), "upper": ("layer", "pos", "size"),
            "correct": ("layer", "pos", "size", "example")}
    VIEWS = ("heatmap", "dims", "layers")
    JSON_SKIP = ("correct",)

    iia: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    correct: torch.Tensor
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    position_labels: tuple[str, ...]
    sizes: tuple[int, ...]
    component: str
    variable: str
    method: str
    task: str
    n: int
    changed: float
    base_accuracy: float

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(self.layers), "pos": list(self.position_labels),
                "size": ["full" if s == 0 else s for s in self.sizes]}

    def best(self) -> tuple[int, int, int]:
        """Indices ``(layer, pos, size)`` of the highest IIA (the smallest size among ties)."""
        flat = int(torch.nan_to_num(self.iia, nan=-1.0).flatten().argmax())
        i, rest = divmod(flat, self.iia.shape[1] * self.iia.shape[2])
        j, k = divmod(rest, self.iia.shape[2])
        return i, j, k

    def headline(self) -> dict[str, Any]:
        i, j, k = self.best()
        return {"best": round(float(self.iia[i, j, k]), 4),
                "at": f"{self.component}.{self.layers[i]}@{self.position_labels[j]}"
                      + ("" if self.sizes[k] == 0 else f"/{self.sizes[k]}d"), "n": self.n}

    def _size_index(self, size: int | None) -> int:
        if size is None:
            return len(self.sizes) - 1
        if not -len(self.sizes) <= size < len(self.sizes):
            raise bad_value("size index", size, f"0..{len(self.sizes) - 1} (sizes {list(self.sizes)})")
        return size % len(self.sizes)

    def _view_heatmap(self, size: int | None = None) -> Figure:
        k = self._size_index(size)
        what = "whole activation" if self.sizes[k] == 0 else f"{self.sizes[k]}-dim {self.method} subspace"
        return heatmap(self.iia[:, :, k], x_labels=list(self.position_labels), y_labels=[str(L) for L in self.layers],
                       signed=False, zmin=0.0, zmax=1.0, colorbar_title="IIA", x_title="position", y_title="layer",
                       rows_top_down=False,
                       title=f"IIA of {self.variable}: {self.component} interchanged ({what}; n={self.n})")

    def _view_dims(self, layer: int | None = None, pos: int | None = None) -> Figure:
        bi, bj, _ = self.best()
        i = bi if layer is None else layer
        j = bj if pos is None else pos
        x = np.array([max(s, 0) for s in self.sizes], dtype=float)
        name = f"{self.component}.{self.layers[i]}@{self.position_labels[j]}"
        return layer_curves({name: self.iia[i, j]}, lower={name: self.lower[i, j]}, upper={name: self.upper[i, j]},
                            x=x, x_labels=["full" if s == 0 else str(s) for s in self.sizes],
                            x_title="subspace dimension", y_title="IIA",
                            title=f"IIA of {self.variable} against subspace size ({self.method})")

    def _view_layers(self, size: int | None = None) -> Figure:
        k = self._size_index(size)
        series = {f"pos {lab}": self.iia[:, j, k] for j, lab in enumerate(self.position_labels)}
        return layer_curves(series, x_labels=[str(L) for L in self.layers], y_title="IIA",
                            title=f"IIA of {self.variable} by layer ({self.component})")


@dataclass(frozen=True, repr=False)
class SubspaceResult(Result):
    """A learned subspace that carries a variable (distributed alignment search), with its training curve.

    ``basis`` ``[k, d]`` has orthonormal rows spanning the subspace at ``hook`` (``positions``, ``heads``).
    Use it as an intervention (:meth:`intervention`: interchange it from another run; :meth:`removal`: project
    it out), as an aligned site (:meth:`site`) or as probe directions (:meth:`coordinates`).

    Tensors: ``basis`` ``[dim, d]``; ``curve_loss``, ``curve_iia`` ``[eval]`` (training loss and IIA on the
    training batches at ``curve_steps``). Views: ``"curve"`` (loss and IIA over training), ``"basis"`` (the
    basis vectors).
    """

    AXES = {"basis": ("dim", "d"), "curve_loss": ("eval",), "curve_iia": ("eval",)}
    VIEWS = ("curve", "basis")

    basis: torch.Tensor
    curve_loss: torch.Tensor
    curve_iia: torch.Tensor
    curve_steps: tuple[int, ...]
    hook: str
    positions: int | tuple[int, ...] | None
    heads: tuple[int, ...] | None
    variable: str
    method: str
    task: str
    iia: float
    lower: float
    upper: float
    n_test: int
    train_iia: float
    steps: int
    lr: float
    seed: int
    boundary: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """The subspace dimension."""
        return int(self.basis.shape[0])

    @property
    def directions(self) -> torch.Tensor:
        """``[k, d]`` the subspace's orthonormal directions (for probe-like use)."""
        return self.basis

    def headline(self) -> dict[str, Any]:
        return {"iia": round(self.iia, 4), "k": self.k, "at": self.hook, "method": self.method}

    def site(self) -> AlignedSite:
        """This subspace as an :class:`~interp.causal.AlignedSite` (for :func:`~interp.causal.iia`)."""
        from interp.causal.alignment import AlignedSite

        return AlignedSite(self.hook, positions=self.positions, heads=self.heads, basis=self.basis)

    def intervention(self, source: Any, *, positions: Positions | str = "same") -> SubspacePatch:
        """A :class:`~interp.hooks.SubspacePatch` that takes this subspace from ``source`` (a tensor of the
        site's activation, or a ``Trace`` holding it) at ``positions`` (default: the positions it was learned
        at)."""
        pos = self.positions if positions == "same" else positions
        return SubspacePatch(self.hook, source=source, basis=self.basis, positions=pos,  # type: ignore[arg-type]
                             heads=self.heads)

    def removal(self, scale: float = 0.0) -> Project:
        """A :class:`~interp.hooks.Project` that scales the subspace by ``scale`` (``0``: removes it) at the
        positions it was learned at."""
        return Project(self.hook, directions=self.basis, scale=scale, positions=self.positions, heads=self.heads)

    def coordinates(self, acts: torch.Tensor) -> torch.Tensor:
        """``[..., k]``: the coordinates of activations ``[..., d]`` in the subspace (a probe's scores)."""
        if acts.shape[-1] != self.basis.shape[-1]:
            raise BadInputError(f"activations have dimension {acts.shape[-1]} but the subspace lives in "
                                f"{self.basis.shape[-1]}")
        return acts.to(self.basis.dtype) @ self.basis.T

    def _view_curve(self) -> Figure:
        x = np.array(self.curve_steps, dtype=float)
        return layer_curves({"training loss": self.curve_loss, "IIA (training batches)": self.curve_iia}, x=x,
                            x_labels=[str(s) for s in self.curve_steps], x_title="step", y_title="loss / IIA",
                            title=f"{self.method} at {self.hook}: {self.variable}, k={self.k} (held-out IIA "
                                  f"{self.iia:.3f})")

    def _view_basis(self) -> Figure:
        return heatmap(self.basis, y_labels=[f"dir {i}" for i in range(self.k)], x_title="dimension",
                       title=f"{self.method} basis at {self.hook} ({self.variable})", colorbar_title="weight")


@dataclass(frozen=True, repr=False)
class IITResult(Result):
    """Interchange intervention training of a network to an alignment (IIT; strict IIT also trains the
    non-aligned sites to be irrelevant), with its curves and final scores.

    Tensors: ``loss`` ``[eval, term]`` (terms ``task``, ``iit``, ``strict``), ``accuracy`` ``[eval]`` (task),
    ``iia`` ``[eval, variable]`` (held-out, each variable interchanged alone). Final scores: ``task_accuracy``,
    ``final_iia`` per variable, ``ablated_accuracy`` (task accuracy with every non-aligned site resample-ablated).
    Views: ``"curves"`` (losses), ``"iia"`` (IIA and accuracy over training).
    """

    AXES = {"loss": ("eval", "term"), "accuracy": ("eval",), "iia": ("eval", "variable")}
    VIEWS = ("curves", "iia")

    loss: torch.Tensor
    accuracy: torch.Tensor
    iia: torch.Tensor
    steps: tuple[int, ...]
    variables: tuple[str, ...]
    task: str
    alignment: dict[str, Any]
    non_aligned: tuple[str, ...]
    strict: bool
    task_accuracy: float
    final_iia: tuple[float, ...]
    ablated_accuracy: float | None
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, list[Any]]:
        return {"eval": list(self.steps), "term": ["task", "iit", "strict"], "variable": list(self.variables)}

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_accuracy": round(self.task_accuracy, 4)}
        out |= {f"iia_{v}": round(x, 4) for v, x in zip(self.variables, self.final_iia, strict=True)}
        if self.ablated_accuracy is not None:
            out["ablated_accuracy"] = round(self.ablated_accuracy, 4)
        return out

    def _view_curves(self) -> Figure:
        x = np.array(self.steps, dtype=float)
        series = {f"{t} loss": self.loss[:, i] for i, t in enumerate(("task", "iit", "strict"))
                  if not (t == "strict" and not self.strict)}
        return layer_curves(series, x=x, x_labels=[str(s) for s in self.steps], x_title="step", y_title="loss",
                            title=f"{'Strict IIT' if self.strict else 'IIT'} on {self.task}")

    def _view_iia(self) -> Figure:
        x = np.array(self.steps, dtype=float)
        series = {"task accuracy": self.accuracy} | {f"IIA {v}": self.iia[:, i] for i, v in enumerate(self.variables)}
        return layer_curves(series, x=x, x_labels=[str(s) for s in self.steps], x_title="step", y_title="accuracy",
                            title=f"Task accuracy and held-out IIA during training on {self.task}")


__all__ = ["IIAResult", "IITResult", "IIATable", "SubspaceResult", "wilson"]
