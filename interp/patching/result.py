"""``PatchingResult``: metric values over named axes (layer, pos, head...), with their baselines.

Example:
    >>> import torch
    >>> r = PatchingResult(values=torch.tensor([[1.0, 3.0]]), axes=("layer", "pos"),
    ...                    coords={"layer": (0,), "pos": (0, 1)}, tokens=("a", "b"), component="resid_pre",
    ...                    method="exact", direction="denoising", metric="logit_diff",
    ...                    clean_value=3.0, corrupted_value=1.0)
    >>> r.normalized
    tensor([[0., 1.]])
    >>> r.to_frame()[["layer", "pos", "value", "normalized"]].to_dict("records")[1]
    {'layer': 0, 'pos': '1: b', 'value': 3.0, 'normalized': 1.0}
    >>> r.top(1)
    [({'layer': 0, 'pos': 1}, 3.0)]
    >>> r
    PatchingResult(values[layer=1, pos=2], method='exact', metric='logit_diff', clean=3, corrupted=1, top='L0 1: b', top_value=3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.patching.metrics import normalize
from interp.sites import HeadRef
from interp.trace.results import Result, Upgrade

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

Cell = HeadRef | dict[str, int | HeadRef]
"""A cell of a result: a head (results over ``(layer, head)``) or its coordinates by axis name (a
``(layer, head)`` pair among them is one ``"head"`` entry)."""


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def _upgrade_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1: path-patching receivers were ``[[layer, head], ...]`` (now ``"L5H1"`` strings), their
    input ``"qkv"`` (now ``["q", "k", "v"]``), and undefined baselines ``null`` (now NaN)."""
    meta = fields.get("meta") or {}
    recv = meta.get("receivers")
    if isinstance(recv, list):
        meta["receivers"] = [str(HeadRef.parse(tuple(r))) for r in recv]
    if isinstance(meta.get("receiver_input"), str):  # "qkv" -> ["q", "k", "v"]
        meta["receiver_input"] = list(meta["receiver_input"])
    for k in ("clean_value", "corrupted_value"):
        if fields.get(k) is None:
            fields[k] = float("nan")


@dataclass(frozen=True, repr=False)
class PatchingResult(Result):
    """Raw metric values of patched runs (or estimates of them), on named axes.

    Views (``res.plot(view)``): ``heatmap`` (default: layer x position with token labels, layer x head, or
    (layer, head) x position; ``normalized=``, ``title=``) and ``paths`` (the ``k`` strongest cells as a
    graph: path-patching senders linked to their receivers or the logits, other cells to the logits,
    back-patching source layers to their destinations; ``k=``, ``title=``).

    Attributes:
        values: ``[*shape]`` metric per cell, axes named by ``axes`` — ``(layer, pos)``, ``(layer, head)``,
            ``(layer, head, pos)`` or ``(src_layer, dst_layer)`` (back-patching); NaN where no cell was run.
        axes: axis names.
        coords: per axis, the coordinate of each index (layer numbers, head numbers, positions as given:
            a negative position counts from each sequence's last real token).
        tokens: the first clean sequence's token strings (labels for ``pos``).
        component: what was patched (``resid_pre``, ``z``...).
        method: ``exact``, ``attribution``, ``atp*``, ``atp+graddrop``, ``path`` or ``backpatch``.
        direction: ``denoising``, ``noising`` (or ``backward`` for back-patching).
        metric: the metric's name.
        clean_value / corrupted_value: the metric on the unpatched runs (NaN when undefined).
        meta: extra settings (window, corruption, receivers...).
        exact: ``[*shape]`` for estimates, the exact values of the same sweep (to compare with), or None.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    coords: dict[str, tuple[int, ...]]
    tokens: tuple[str, ...]
    component: str
    method: str
    direction: str
    metric: str
    clean_value: float
    corrupted_value: float
    meta: dict[str, Any] = field(default_factory=dict)
    exact: torch.Tensor | None = None

    VIEWS: ClassVar[tuple[str, ...]] = ("heatmap", "paths")
    SCHEMA_VERSION: ClassVar[int] = 1
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {0: _upgrade_v0}

    def __post_init__(self) -> None:
        for k in ("clean_value", "corrupted_value"):
            v = getattr(self, k)
            object.__setattr__(self, k, float("nan") if v is None else float(v))
        object.__setattr__(self, "axes", tuple(self.axes))
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "coords", {a: tuple(int(i) for i in v) for a, v in self.coords.items()})
        if self.values.dim() != len(self.axes):
            raise BadInputError(f"values have {self.values.dim()} dims but axes are {self.axes}")
        for a, n in zip(self.axes, self.values.shape, strict=True):
            if len(self.coords.get(a, ())) != n:
                raise BadInputError(f"coords[{a!r}] must have {n} entries, got {len(self.coords.get(a, ()))}")
        if self.exact is not None and self.exact.shape != self.values.shape:
            raise BadInputError(f"exact has shape {tuple(self.exact.shape)}, values {tuple(self.values.shape)}")

    @property
    def AXES(self) -> Mapping[str, tuple[str, ...]]:  # type: ignore[override]
        """``{"values": axes, "exact": axes}``: this result's axes are its own (they depend on the sweep)."""
        return {"values": self.axes, "exact": self.axes}

    # -- numbers ---------------------------------------------------------------------------------
    @property
    def normalized(self) -> torch.Tensor:
        """``(values - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""
        return normalize(self.values, self.clean_value, self.corrupted_value)

    @property
    def can_normalize(self) -> bool:
        """Whether :attr:`normalized` is defined (both baselines known and different)."""
        span = self.clean_value - self.corrupted_value
        return math.isfinite(span) and abs(span) > 1e-12

    def correlation(self) -> float:
        """Pearson r between these values and ``exact`` (estimates only; NaN cells are left out)."""
        if self.exact is None:
            raise BadInputError("this result holds no exact values to compare with; pass exact= to the estimate")
        x, y = self.values.flatten().double(), self.exact.flatten().double()
        keep = ~(x.isnan() | y.isnan())
        return float(torch.corrcoef(torch.stack([x[keep], y[keep]]))[0, 1])

    def _baseline(self) -> float:
        base = self.corrupted_value if self.direction == "denoising" else self.clean_value
        return base if math.isfinite(base) else 0.0

    def _cell(self, index: tuple[int, ...]) -> Cell:
        coords = {a: self.coords[a][j] for a, j in zip(self.axes, index, strict=True)}
        if "layer" not in coords or "head" not in coords:
            return dict(coords)
        head = HeadRef(coords.pop("layer"), coords.pop("head"))
        if not coords:
            return head
        return {"head": head, **coords}

    def _order(self) -> list[int]:
        """Flat indices of the cells, strongest first (NaN cells left out)."""
        eff = self.values if self.meta.get("magnitude") else (self.values - self._baseline()).abs()
        flat = eff.flatten()
        return [i for i in flat.nan_to_num(nan=-math.inf).argsort(descending=True).tolist() if not math.isnan(flat[i])]

    def top(self, k: int = 10) -> list[tuple[Cell, float]]:
        """The ``k`` cells that move the metric most: largest ``|value - baseline|`` (the target run's value;
        for magnitude estimates, the largest values). NaN cells are skipped.

        Returns:
            ``(cell, value)`` pairs: ``cell`` is a :class:`~interp.sites.HeadRef` for ``(layer, head)``
            results, else ``{axis: coordinate}`` (with ``"head": HeadRef`` where a head is one of them).
        """
        out: list[tuple[Cell, float]] = []
        flat = self.values.flatten()
        for i in self._order()[:k]:
            idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), self.values.shape))
            out.append((self._cell(idx), float(flat[i])))
        return out

    # -- labels and tables -----------------------------------------------------------------------
    def _pos_label(self, p: int) -> str:
        return f"{p}: {self.tokens[p]}" if -len(self.tokens) <= p < len(self.tokens) else str(p)

    def labels(self) -> dict[str, list[Any]]:
        """Per axis: positions as ``"3: ␣John"`` (the first sequence's token), other axes their numbers."""
        return {a: ([self._pos_label(p) for p in self.coords[a]] if a == "pos" else list(self.coords[a]))
                for a in self.axes}

    def _tick_labels(self, axis: str) -> list[str]:
        prefix = {"layer": "L", "head": "H", "src_layer": "L", "dst_layer": "L"}.get(axis, "")
        return self.labels()[axis] if axis == "pos" else [f"{prefix}{i}" for i in self.coords[axis]]

    def cell_label(self, cell: Cell) -> str:
        """A cell from :meth:`top` as text: ``"L5H1"``, ``"L3 9:  John"``, ``"L5H1 13:  to"``, ``"src L20 dst L10"``.

        Example:
            >>> import torch
            >>> r = PatchingResult(values=torch.tensor([[1.0, 3.0]]), axes=("layer", "head"),
            ...                    coords={"layer": (5,), "head": (0, 1)}, tokens=(), component="z", method="exact",
            ...                    direction="denoising", metric="logit_diff", clean_value=3.0, corrupted_value=1.0)
            >>> r.cell_label(r.top(1)[0][0])
            'L5H1'
        """
        if isinstance(cell, HeadRef):
            return str(cell)
        prefix = {"layer": "L", "src_layer": "src L", "dst_layer": "dst L"}
        parts = []
        for a, v in cell.items():
            if isinstance(v, HeadRef):
                parts.append(str(v))
            elif a == "pos":
                parts.append(self._pos_label(v))
            else:
                parts.append(f"{prefix.get(a, a + ' ')}{v}")
        return " ".join(parts)

    def headline(self) -> dict[str, Any]:
        """Method, metric, both baselines and the strongest cell."""
        out: dict[str, Any] = {"method": self.method, "metric": self.metric, "clean": self.clean_value,
                               "corrupted": self.corrupted_value}
        best = self.top(1)
        if best:
            out["top"], out["top_value"] = self.cell_label(best[0][0]), best[0][1]
        return out

    def to_frame(self) -> pd.DataFrame:
        """Long-form table: one row per cell, the axes' labels, ``value`` (raw), ``normalized`` (when
        defined) and ``exact`` (for estimates)."""
        df = super().to_frame()
        if self.can_normalize:
            df["normalized"] = self.normalized.flatten().tolist()
        if self.exact is not None:
            df["exact"] = self.exact.flatten().tolist()
        return df

    def to_dict(self) -> dict[str, Any]:
        """The labelled arrays and the settings as JSON (NaN written as ``null``)."""
        out = super().to_dict()
        out["attributes"] = _nan_to_none(out["attributes"])
        return out

    def _to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, fields = super()._to_saved()
        return tensors, _nan_to_none(fields)

    # -- views -----------------------------------------------------------------------------------
    def _view_heatmap(self, normalized: bool | None = None, title: str | None = None) -> Figure:
        """A heatmap: layer x position with token labels, layer x head grid, or (layer, head) x position."""
        import interp.plot as ip

        norm = self.can_normalize and not self.meta.get("magnitude") if normalized is None else normalized
        z = self.normalized if norm else self.values
        what = f"{self.metric} (normalised)" if norm else self.metric
        title = title or f"{self.method} patching of {self.component} ({self.direction})"
        if z.dim() == 1:
            return ip.heatmap(z.unsqueeze(1), ["effect"], self._tick_labels(self.axes[0]), title=title,
                              colorbar_title=what)
        if z.dim() == 3:
            rows = [f"L{L}H{h}" for L in self.coords[self.axes[0]] for h in self.coords[self.axes[1]]]
            return ip.heatmap(z.flatten(0, 1), self._tick_labels(self.axes[2]), rows, title=title, colorbar_title=what,
                              y_title="head", x_title=self.axes[2])
        return ip.heatmap(z, self._tick_labels(self.axes[1]), self._tick_labels(self.axes[0]), title=title,
                          colorbar_title=what, y_title=self.axes[0], x_title=self.axes[1])

    def _effects(self) -> torch.Tensor:
        """Each cell's effect: normalised (0 = the target run) when defined, else ``value - target value``;
        magnitude estimates as they are."""
        if self.meta.get("magnitude"):
            return self.values
        if self.can_normalize:
            return self.normalized - (1.0 if self.direction == "noising" else 0.0)
        return self.values - self._baseline()

    def _view_paths(self, k: int = 8, title: str | None = None) -> Figure:
        """The ``k`` strongest cells as a graph, one column per layer, linked to where their effect goes: a
        path-patching result's receivers (or the logits), the logits for other sweeps; back-patching links
        each source layer to its destination. Edge weight = the cell's effect (normalised when defined, else
        ``value - target value``)."""
        import interp.plot as ip

        eff = self._effects().flatten()
        order = self._order()[:k]
        if not order:
            raise BadInputError("this result has no cell to draw: every value is NaN")
        index = [tuple(int(j) for j in torch.unravel_index(torch.tensor(i), self.values.shape)) for i in order]
        if self.axes == ("src_layer", "dst_layer"):
            used = sorted({self.coords[a][ix[n]] for ix in index for n, a in enumerate(self.axes)})
            col = {L: c for c, L in enumerate(used)}
            edges = [((col[self.coords["src_layer"][s]], 0), (col[self.coords["dst_layer"][d]], 0), float(eff[i]))
                     for i, (s, d) in zip(order, index, strict=True)]
            return ip.layered_graph([[f"L{L}"] for L in used], edges, layer_names=[f"L{L}" for L in used],
                                    weight_title="effect", title=title or f"back-patching: the {len(order)} strongest moves")
        layer_axis = "layer" if "layer" in self.axes else self.axes[0]
        nodes = [(self.coords[layer_axis][ix[self.axes.index(layer_axis)]], self.cell_label(self._cell(ix)), float(eff[i]))
                 for i, ix in zip(order, index, strict=True)]
        cols = sorted({L for L, _, _ in nodes})
        layers = [[name for L, name, _ in nodes if c == L] for c in cols]
        recv = self.meta.get("receivers", "logits") if self.method == "path" else "logits"
        receivers: list[tuple[str, int | None]] = [("logits", None)] if recv == "logits" else [
            (str(h), h.layer) for h in map(HeadRef.parse, recv)]
        recv_cols: list[int | None] = [*sorted({L for _, L in receivers if L is not None})] or [None]
        for rl in recv_cols:
            layers.append([name for name, L in receivers if rl == L])
        via = ",".join(self.meta.get("receiver_input", ()))
        names = [f"L{L}" for L in cols] + ["logits" if L is None else f"L{L} ({via})" for L in recv_cols]
        edges = []
        for ci, c in enumerate(cols):
            for ni, (_, _, w) in enumerate(x for x in nodes if x[0] == c):
                for ri in range(len(recv_cols)):
                    for rn in range(len(layers[len(cols) + ri])):
                        edges.append(((ci, ni), (len(cols) + ri, rn), w))
        what = "senders" if self.method == "path" else "cells"
        return ip.layered_graph(layers, edges, layer_names=names, weight_title="effect",
                                title=title or f"{self.method} patching: top {len(nodes)} {what} ({self.direction})")


__all__ = ["Cell", "PatchingResult"]
