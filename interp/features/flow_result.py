"""Result objects of feature flow: per-feature classes of one layer, and the flow graph of one feature."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.features.points import node_label
from interp.plot import bar_top_tokens, layer_curves, layered_graph, sankey
from interp.trace.results import Result, Upgrade, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

SOURCE_NAMES = ("resid", "attn", "mlp")
CLASSES = ("carried", "attention", "mlp", "new")


def _classes_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 called the per-feature classes ``labels`` (now the name of every result's axis labels)."""
    if "labels" in fields:
        fields["classes"] = fields.pop("labels")


@dataclass(frozen=True, repr=False)
class FeatureClasses(Result):
    """Where each feature of one residual-stream SAE comes from.

    Attributes:
        hook: the residual SAE's hook.
        scores: ``[source, feature]`` best cosine similarity in each predecessor (``resid``, ``attn``,
            ``mlp``; NaN where that SAE is missing).
        matches: ``[source, feature]`` index of that best predecessor feature (-1 where missing).
        classes: per feature, ``carried`` / ``attention`` / ``mlp`` / ``new`` (interp 0.1 called it ``labels``).
        threshold: the similarity a link needs.
        sources: the predecessor hooks (``""`` where missing), in ``SOURCE_NAMES`` order.
        method: which directions were compared.

    Views: ``counts`` (features per class), ``scores`` (each predecessor's best cosine, features sorted).

    Example:
        >>> import torch
        >>> c = FeatureClasses("blocks.1.hook_resid_post", torch.tensor([[0.9, 0.1], [0.2, 0.1], [0.1, 0.7]]),
        ...                    torch.zeros(3, 2, dtype=torch.long), ("carried", "mlp"), 0.5,
        ...                    ("blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"))
        >>> c
        FeatureClasses(scores[source=3, feature=2], matches[source=3, feature=2], carried=1, attention=0, mlp=1, new=0)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"scores": ("source", "feature"), "matches": ("source", "feature")}
    VIEWS: ClassVar[tuple[str, ...]] = ("counts", "scores")
    UPGRADES: ClassVar[dict[int, Upgrade]] = {0: _classes_v0}

    hook: str
    scores: torch.Tensor
    matches: torch.Tensor
    classes: tuple[str, ...]
    threshold: float
    sources: tuple[str, ...]
    method: str = "decoder"

    def __post_init__(self) -> None:
        n_src = len(SOURCE_NAMES)
        if self.scores.shape != self.matches.shape or self.scores.dim() != 2 or self.scores.shape[0] != n_src:
            raise BadInputError(f"scores {tuple(self.scores.shape)} and matches {tuple(self.matches.shape)} must both "
                                f"be [{len(SOURCE_NAMES)}, feature]")
        if len(self.classes) != self.scores.shape[1]:
            raise BadInputError(f"{len(self.classes)} classes for {self.scores.shape[1]} features")

    def counts(self) -> dict[str, int]:
        """How many features fall in each class."""
        c = Counter(self.classes)
        return {k: c.get(k, 0) for k in CLASSES}

    def labels(self) -> dict[str, list[Any]]:
        return {"source": list(SOURCE_NAMES)}

    def headline(self) -> dict[str, Any]:
        return self.counts()

    def to_frame(self) -> pd.DataFrame:
        """One row per (source, feature): best similarity, matched feature and the feature's class."""
        df = labelled_frame(self.scores, ["source", "feature"], {"source": list(SOURCE_NAMES)}, name="similarity")
        df["match"] = self.matches.flatten().tolist()
        df["class"] = [self.classes[f] for f in df["feature"]]
        return df

    def _view_counts(self) -> Figure:
        """Bar chart of the class counts."""
        c = self.counts()
        return bar_top_tokens(list(c), list(c.values()), title=f"where the features of {self.hook} come from "
                              f"(cosine >= {self.threshold})", x_title="features", signed=False)

    def _view_scores(self) -> Figure:
        """Each predecessor's best cosine per feature, sorted (the threshold decides the classes)."""
        series = {f"{name} ({src})": self.scores[i].sort(descending=True).values
                  for i, (name, src) in enumerate(zip(SOURCE_NAMES, self.sources, strict=True)) if src}
        return layer_curves(series, x_title="feature (sorted by score)", y_title="best cosine similarity",
                            title=f"best match of each feature of {self.hook} (threshold {self.threshold})")


def _flow_graph_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 stored the edges as tensors ``edges [edge, 2]`` and ``weights [edge]``."""
    e, w = tensors.pop("edges", None), tensors.pop("weights", None)
    if e is not None and w is not None:
        fields["edges"] = [[int(a), int(b), float(v)] for (a, b), v in zip(e.tolist(), w.tolist(), strict=True)]


@dataclass(frozen=True, repr=False)
class FlowGraph(Result):
    """The flow graph of one feature: nodes are (hook, feature), edges point downstream.

    Attributes:
        hooks / features / columns: per node, its SAE's hook, its feature index, and its left-to-right
            column (residual stream after ``c/2`` blocks for even ``c``; block ``(c-1)/2``'s sublayers for odd).
        edges: ``(upstream node, downstream node, cosine similarity)``.
        root: the node the graph was grown from.
        direction: ``"backward"`` (where the root comes from) or ``"forward"`` (where it goes).
        threshold / method: the similarity an edge needed and the directions compared.
        top_tokens: per node, the tokens its decoder direction promotes (empty without a model).

    Views: ``graph`` (one column per residual stream / sublayer; hover a node for its tokens), ``sankey``.

    Example:
        >>> g = FlowGraph(("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), (3, 7), (2, 4), ((0, 1, 0.8),),
        ...               root=1)
        >>> g
        FlowGraph(backward from r2 #7: 2 nodes, 1 edges)
        >>> g.to_frame().to_dict("records")[0]["similarity"]
        0.8
    """

    VIEWS: ClassVar[tuple[str, ...]] = ("graph", "sankey")
    UPGRADES: ClassVar[dict[int, Upgrade]] = {0: _flow_graph_v0}

    hooks: tuple[str, ...]
    features: tuple[int, ...]
    columns: tuple[int, ...]
    edges: tuple[tuple[int, int, float], ...]
    root: int = 0
    direction: str = "backward"
    threshold: float = 0.5
    method: str = "decoder"
    top_tokens: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.hooks)
        if len(self.features) != n or len(self.columns) != n:
            raise BadInputError(f"hooks, features and columns must have one entry per node ({n})")
        if self.top_tokens and len(self.top_tokens) != n:
            raise BadInputError(f"{len(self.top_tokens)} top-token lists for {n} nodes")
        for a, b, _ in self.edges:
            if not (0 <= a < n and 0 <= b < n):
                raise BadInputError(f"edge ({a}, {b}) points outside the {n} nodes")
        if not 0 <= self.root < max(n, 1):
            raise BadInputError(f"root {self.root} is not a node")

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(hook, feature)`` per node."""
        return list(zip(self.hooks, self.features, strict=True))

    def label(self, i: int) -> str:
        """``"r4 #12"`` / ``"attn4 #3"`` / ``"mlp4 #7"``."""
        return node_label(self.hooks[i], self.features[i])

    def has_edge(self, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        """Whether ``src -> dst`` (each ``(hook, feature)``, hooks by full name) is an edge."""
        idx = {k: i for i, k in enumerate(self.nodes)}
        return src in idx and dst in idx and any(a == idx[src] and b == idx[dst] for a, b, _ in self.edges)

    def headline(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return (f"FlowGraph({self.direction} from {self.label(self.root) if self.hooks else '?'}: "
                f"{len(self.hooks)} nodes, {len(self.edges)} edges)")

    def summary(self) -> str:
        lines = [repr(self), f"  threshold {self.threshold}, {self.method} directions"]
        lines += [f"  {self.label(a):>12} -> {self.label(b):<12} cos {v:.3f}" for a, b, v in self.edges[:12]]
        if len(self.edges) > 12:
            lines.append(f"  ... {len(self.edges) - 12} more edges")
        lines.append(f"  views: {', '.join(self.VIEWS)}")
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: source and target hook/feature, similarity."""
        import pandas as pd

        cols = ["src_hook", "src_feature", "dst_hook", "dst_feature", "similarity"]
        rows = [{"src_hook": self.hooks[a], "src_feature": self.features[a], "dst_hook": self.hooks[b],
                 "dst_feature": self.features[b], "similarity": v} for a, b, v in self.edges]
        return pd.DataFrame(rows, columns=cols)

    def _title(self) -> str:
        return f"feature flow ({self.direction}) of {self.label(self.root)}" if self.hooks else "feature flow"

    def _view_sankey(self) -> Figure:
        """A Sankey diagram of the edges (widths: cosine similarity)."""
        hover = [", ".join(t) for t in self.top_tokens] if self.top_tokens else None
        return sankey([self.label(i) for i in range(len(self.hooks))], list(self.edges), title=self._title(),
                      value_title="cosine similarity", node_hover=hover)

    def _view_graph(self) -> Figure:
        """A layered graph, one column per residual stream / sublayer; hovering a node shows the tokens its
        direction promotes."""
        cols = sorted(set(self.columns))
        where = {}
        layers: list[list[str]] = [[] for _ in cols]
        hovers: list[list[Any]] = [[] for _ in cols]
        for i, c in enumerate(self.columns):
            li = cols.index(c)
            where[i] = (li, len(layers[li]))
            layers[li].append(self.label(i))
            hovers[li].append(", ".join(self.top_tokens[i]) if self.top_tokens else self.hooks[i])
        names = [f"resid {c // 2}" if c % 2 == 0 else f"block {c // 2}" for c in cols]
        return layered_graph(layers, [(where[a], where[b], v) for a, b, v in self.edges], layer_names=names,
                             node_hover=hovers, title=self._title(), weight_title="cosine similarity")


__all__ = ["CLASSES", "SOURCE_NAMES", "FeatureClasses", "FlowGraph"]
