"""The results of circuit discovery: a scored :class:`Circuit` and a :class:`FaithfulnessCurve`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.circuits.graph import Graph, build_graph, owner
from interp.errors import BadInputError, bad_value
from interp.models import Model
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class Circuit(Result):
    """Scored edges (or nodes) of a model's graph, and the selection that forms the circuit.

    Shapes: ``scores`` ``[unit]`` and ``selected`` ``[unit]`` (bool), where a unit is an edge (``level="edge"``)
    or a sender node (``level="node"``); ``edges`` ``[edge, 2]`` (sender index, receiver index) into
    ``senders`` / ``receivers`` (see :mod:`interp.circuits.graph`). A score estimates the metric change when
    the unit is patched from the source run (exact patching: the change itself); ``selected`` is what
    ``top`` / ``threshold`` chose (ACDC: the edges it kept; a true circuit: its edges). ``position_scores``
    ``[unit, pos]`` (``None`` unless scored per position: :func:`~interp.circuits.discover_by_position`) splits
    each score over the token positions where the edge meets, labelled by ``positions``.

    Views: ``graph`` (the selected circuit as a layered graph; edge width ``|score|``; ``positions=True``: one
    node per (node, token position), the edges at the positions where they carry the most), ``scores`` (the
    sorted scores).

    Example:
        >>> import torch
        >>> from interp.circuits import Circuit
        >>> c = Circuit(scores=torch.tensor([0.5, -2.0, 0.1]), selected=torch.zeros(3, dtype=torch.bool),
        ...             edges=torch.tensor([[0, 0], [0, 1], [1, 1]]), senders=("input", "L0H0"),
        ...             receivers=("L0H0.q", "logits"), method="eap", metric="logit_diff")
        >>> c.top(2).edge_list()
        [('input', 'logits', -2.0), ('input', 'L0H0.q', 0.5)]
        >>> c.top(2).nodes()
        ['input', 'L0H0', 'logits']
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"scores": ("unit",), "position_scores": ("unit", "pos")}
    VIEWS: ClassVar[tuple[str, ...]] = ("graph", "scores")

    scores: torch.Tensor
    selected: torch.Tensor
    edges: torch.Tensor
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    method: str = ""
    metric: str = ""
    level: str = "edge"
    clean_value: float = float("nan")
    corrupted_value: float = float("nan")
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    position_scores: torch.Tensor | None = None
    positions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in ("edge", "node"):
            raise bad_value("level", self.level, "'edge' or 'node'")
        n = self.edges.shape[0] if self.level == "edge" else len(self.senders)
        if self.scores.shape != (n,) or self.selected.shape != (n,):
            raise BadInputError(f"scores/selected must be [{n}] for level={self.level!r}, got "
                                f"{tuple(self.scores.shape)} / {tuple(self.selected.shape)}")
        ps = self.position_scores
        if ps is not None:
            if ps.dim() != 2 or ps.shape[0] != n:
                raise BadInputError(f"position_scores must be [{n}, pos] for level={self.level!r}, got "
                                    f"{tuple(ps.shape)}")
            if not self.positions:
                object.__setattr__(self, "positions", tuple(str(p) for p in range(ps.shape[1])))
            if len(self.positions) != ps.shape[1]:
                raise BadInputError(f"positions must label the {ps.shape[1]} positions of position_scores, got "
                                    f"{len(self.positions)} labels")
        elif self.positions:
            raise BadInputError("positions labels are given without position_scores")

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: Graph, scores: torch.Tensor, selected: torch.Tensor | None = None, **kw: Any) -> Circuit:
        """A circuit over ``graph``'s edges (``scores [edge]``) or senders (``[sender]``, with ``level="node"``)."""
        sel = torch.zeros(scores.shape[0], dtype=torch.bool) if selected is None else selected.bool()
        return cls(scores=scores.detach().float().cpu(), selected=sel.cpu(), edges=graph.edges.clone(),
                   senders=graph.senders, receivers=graph.receivers, **kw)

    def graph_for(self, model: Model) -> Graph:
        """``model``'s graph, checked to be the one this circuit was found on."""
        g = build_graph(model, mlps=any(s.startswith("MLP") for s in self.senders))
        if g.senders != self.senders or g.receivers != self.receivers:
            raise BadInputError(f"this circuit was found on another graph ({len(self.senders)} senders, "
                                f"{len(self.receivers)} receivers) than {model.name!r}'s")
        return g

    @property
    def n_units(self) -> int:
        return int(self.scores.shape[0])

    def unit_names(self) -> list[str]:
        if self.level == "node":
            return list(self.senders)
        return [f"{self.senders[s]}->{self.receivers[r]}" for s, r in self.edges.tolist()]

    def labels(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"unit": self.unit_names()}
        if self.position_scores is not None:
            out["pos"] = list(self.positions)
        return out

    # -- selecting ------------------------------------------------------------------------------
    def _with(self, selected: torch.Tensor, **meta: Any) -> Circuit:
        return dataclasses.replace(self, selected=selected, meta={**self.meta, **meta})

    def order(self) -> torch.Tensor:
        """Unit indices by decreasing ``|score|`` (ties: the lower index first)."""
        return torch.sort(self.scores.abs().nan_to_num(0.0), descending=True, stable=True).indices

    def top(self, n: int | float) -> Circuit:
        """The ``n`` units of largest ``|score|`` (a float in ``(0, 1]``: that fraction of the units)."""
        k = round(n * self.n_units) if isinstance(n, float) else int(n)
        if k < 0 or (isinstance(n, float) and not 0 <= n <= 1):
            raise bad_value("n", n, "a count >= 0 or a fraction in [0, 1]")
        sel = torch.zeros(self.n_units, dtype=torch.bool)
        sel[self.order()[:k]] = True
        return self._with(sel, selection=f"top {n}")

    def threshold(self, x: float) -> Circuit:
        """The units with ``|score| >= x``."""
        return self._with(self.scores.abs() >= x, selection=f"|score| >= {x}")

    def edge_mask(self) -> torch.Tensor:
        """``[edge]`` bool: the graph edges the selection keeps (node level: every edge out of a kept node)."""
        if self.level == "edge":
            return self.selected.clone()
        return self.selected[self.edges[:, 0]]

    def edge_list(self) -> list[tuple[str, str, float]]:
        """The selected units as ``(sender, receiver, score)`` by decreasing ``|score|`` (node level: ``(node, "*", s)``)."""
        out = []
        for i in self.order().tolist():
            if not self.selected[i]:
                continue
            if self.level == "node":
                out.append((self.senders[i], "*", float(self.scores[i])))
            else:
                s, r = self.edges[i].tolist()
                out.append((self.senders[s], self.receivers[r], float(self.scores[i])))
        return out

    def nodes(self) -> list[str]:
        """The nodes the selected edges touch (receivers named by their node: ``L1H2.k`` → ``L1H2``), in graph order."""
        keep = self.edge_mask()
        names: set[str] = set()
        for s, r in self.edges[keep].tolist():
            names.add(self.senders[s])
            names.add(owner(self.receivers[r]))
        order = list(dict.fromkeys([*self.senders, *(owner(r) for r in self.receivers)]))
        return [n for n in order if n in names]

    # -- text / tables --------------------------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        return {"method": self.method, "level": self.level, "selected": int(self.selected.sum()),
                "of": self.n_units}

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: ``sender``, ``receiver`` (``*`` at node level), ``score``, ``selected``, ``rank``."""
        import pandas as pd

        rank = torch.empty(self.n_units, dtype=torch.long)
        rank[self.order()] = torch.arange(self.n_units)
        if self.level == "node":
            snd, rcv = list(self.senders), ["*"] * self.n_units
        else:
            snd = [self.senders[s] for s in self.edges[:, 0].tolist()]
            rcv = [self.receivers[r] for r in self.edges[:, 1].tolist()]
        return pd.DataFrame({"sender": snd, "receiver": rcv, "score": self.scores.tolist(),
                             "selected": self.selected.tolist(), "rank": rank.tolist()})

    # -- plots ----------------------------------------------------------------------------------
    def _layer_of(self, node: str) -> int:
        if node == "input":
            return 0
        if node == "logits":
            return 10_000
        if node.startswith("MLP"):
            return 2 * int(node[3:]) + 2
        layer = int(node[1:].split("H")[0].split("KV")[0])
        return 2 * layer + 1

    def _column_name(self, c: int) -> str:
        return "embed" if c == 0 else "out" if c == 10_000 else (f"attn {(c - 1) // 2}" if c % 2 else
                                                                 f"mlp {(c - 2) // 2}")

    def _view_graph(self, max_edges: int = 200, title: str | None = None, positions: bool = False) -> Figure:
        from interp.plot.graph import layered_graph

        chosen = self if bool(self.selected.any()) else self.top(min(20, self.n_units))
        if positions:
            return chosen._position_graph(max_edges, title)
        items = chosen.edge_list()[:max_edges]
        if chosen.level == "node":
            items = [(s, "logits", w) for s, _, w in items]
        pairs = [(s, owner(r), w, r) for s, r, w in items]
        nodes = sorted({n for s, r, _, _ in pairs for n in (s, r)}, key=self._layer_of)
        cols = sorted({self._layer_of(n) for n in nodes})
        col_of = {c: i for i, c in enumerate(cols)}
        layers: list[list[str]] = [[] for _ in cols]
        where: dict[str, tuple[int, int]] = {}
        for n in nodes:
            ci = col_of[self._layer_of(n)]
            where[n] = (ci, len(layers[ci]))
            layers[ci].append(n)
        names = [self._column_name(c) for c in cols]
        edges = [(where[s], where[r], w, f"{s} → {full}") for s, r, w, full in pairs]
        return layered_graph(layers, edges, layer_names=names, weight_title="score",
                             title=title or f"circuit ({self.method}, {len(items)} {self.level}s)")

    def _position_graph(self, max_edges: int, title: str | None) -> Figure:
        """The selected units at the ``max_edges`` (unit, position) pairs of largest ``|position score|``: nodes
        ``"L1H2 @ 3:' Mary'"`` per (node, position), columns by layer, rows by position within a column."""
        from interp.plot.graph import layered_graph

        if self.position_scores is None:
            raise BadInputError(f"this circuit ({self.method or 'no method'}) has no per-position scores, so "
                                "plot(positions=True) has nothing to draw; score it with "
                                "interp.circuits.discover_by_position(model, task, method='eap' or 'eap-ig'), or "
                                "plot it without positions")
        units = self.selected.nonzero().flatten()
        ps = self.position_scores[units]  # [chosen unit, pos]
        flat = ps.abs().flatten()
        k = min(max_edges, int((flat > 0).sum()))
        top = torch.sort(flat, descending=True, stable=True).indices[:k].tolist()
        n_pos = ps.shape[1]
        pairs = []  # (sender, receiver node, position, weight, receiver name)
        for i in top:
            u, p = divmod(i, n_pos)
            unit = int(units[u])
            if self.level == "node":
                s, r = self.senders[unit], "logits"
            else:
                si, ri = self.edges[unit].tolist()
                s, r = self.senders[si], self.receivers[ri]
            pairs.append((s, owner(r), p, float(ps[u, p]), r))
        node_order = {n: i for i, n in enumerate(dict.fromkeys([*self.senders, *(owner(r) for r in self.receivers)]))}
        nodes = sorted({(n, p) for s, r, p, _, _ in pairs for n in (s, r)},
                       key=lambda np_: (self._layer_of(np_[0]), np_[1], node_order.get(np_[0], 0)))
        cols = sorted({self._layer_of(n) for n, _ in nodes})
        col_of = {c: i for i, c in enumerate(cols)}
        layers: list[list[str]] = [[] for _ in cols]
        where: dict[tuple[str, int], tuple[int, int]] = {}
        for n, p in nodes:
            ci = col_of[self._layer_of(n)]
            where[(n, p)] = (ci, len(layers[ci]))
            layers[ci].append(f"{n} @ {self.positions[p]}")
        edges = [(where[(s, p)], where[(r, p)], w, f"{s} → {full} at {self.positions[p]}")
                 for s, r, p, w, full in pairs]
        return layered_graph(layers, edges, layer_names=[self._column_name(c) for c in cols], weight_title="score",
                             title=title or f"circuit by position ({self.method}, {len(pairs)} {self.level}-positions)")

    def _view_scores(self, title: str | None = None) -> Figure:
        from interp.plot.lines import layer_curves

        vals = self.scores[self.order()].abs()
        return layer_curves({"|score|": vals}, x_title="rank", y_title="|score|",
                            title=title or f"{self.method} scores by rank")


@dataclass(frozen=True, repr=False)
class FaithfulnessCurve(Result):
    """Faithfulness of the top circuits of a scoring over circuit sizes, and its MIB summaries.

    Shapes: ``fractions``, ``n_units`` and ``faithfulness`` ``[size]``. ``f = (m(C) - m(∅)) / (m(N) - m(∅))``:
    ``m(C)`` the metric with only the circuit's edges clean (every other edge patched from the source),
    ``m(∅)`` with every edge patched, ``m(N)`` the clean model. ``cpr``: the area under ``f`` over the edge
    fraction (trapezoids over ``fractions``, higher is better); ``cmd``: the area under ``|1 - f|`` (lower is better).

    Views: ``curve``.

    Example:
        >>> import torch
        >>> from interp.circuits import FaithfulnessCurve
        >>> c = FaithfulnessCurve(fractions=torch.tensor([0.0, 0.5, 1.0]), n_units=torch.tensor([0, 5, 10]),
        ...                       faithfulness=torch.tensor([0.0, 1.0, 1.0]), cpr=0.75, cmd=0.25)
        >>> c
        FaithfulnessCurve(faithfulness[size=3], n_units[size=3], cpr=0.75, cmd=0.25)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"faithfulness": ("size",), "n_units": ("size",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("curve",)

    fractions: torch.Tensor
    n_units: torch.Tensor
    faithfulness: torch.Tensor
    cpr: float
    cmd: float
    full_value: float = float("nan")
    empty_value: float = float("nan")
    method: str = ""
    level: str = "edge"
    meta: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, list[Any]]:
        return {"size": [round(float(x), 6) for x in self.fractions]}

    def headline(self) -> dict[str, Any]:
        return {"cpr": round(self.cpr, 4), "cmd": round(self.cmd, 4)}

    def _view_curve(self, title: str | None = None) -> Figure:
        from interp.plot.lines import layer_curves

        return layer_curves({"faithfulness": self.faithfulness}, x=self.fractions, x_title=f"fraction of {self.level}s",
                            y_title="faithfulness", title=title or f"faithfulness ({self.method})")


__all__ = ["Circuit", "FaithfulnessCurve"]
