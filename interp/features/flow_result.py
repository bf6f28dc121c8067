"""Result objects of feature flow: per-feature classes of one layer, and the flow graph of one feature."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.plot import bar_top_tokens, layered_graph, sankey
from interp.trace.results import labelled_frame, read_result, write_result

SOURCE_NAMES = ("resid", "attn", "mlp")


@dataclass(frozen=True)
class FeatureClasses:
    """Where each feature of one residual-stream SAE comes from.

    Attributes:
        hook: the residual SAE's hook.
        scores: ``[source, feature]`` best cosine similarity in each predecessor (``resid``, ``attn``,
            ``mlp``; NaN where that SAE is missing).
        matches: ``[source, feature]`` index of that best predecessor feature (-1 where missing).
        labels: per feature, ``carried`` / ``attention`` / ``mlp`` / ``new``.
        threshold: the similarity a link needs.
        sources: the predecessor hooks (``""`` where missing), in ``SOURCE_NAMES`` order.
        method: which directions were compared.
    """

    hook: str
    scores: torch.Tensor
    matches: torch.Tensor
    labels: tuple[str, ...]
    threshold: float
    sources: tuple[str, ...]
    method: str = "decoder"

    def __post_init__(self) -> None:
        if self.scores.shape != self.matches.shape or self.scores.shape[0] != len(SOURCE_NAMES):
            raise BadInputError(f"scores {tuple(self.scores.shape)} and matches {tuple(self.matches.shape)} must both "
                             f"be [{len(SOURCE_NAMES)}, feature]")
        if len(self.labels) != self.scores.shape[1]:
            raise BadInputError(f"{len(self.labels)} labels for {self.scores.shape[1]} features")

    def counts(self) -> dict[str, int]:
        """How many features fall in each class."""
        c = Counter(self.labels)
        return {k: c.get(k, 0) for k in ("carried", "attention", "mlp", "new")}

    def to_frame(self) -> Any:
        """One row per (source, feature): best similarity, matched feature and the feature's class."""
        df = labelled_frame(self.scores, ["source", "feature"], {"source": list(SOURCE_NAMES)}, name="similarity")
        df["match"] = self.matches.flatten().tolist()
        df["class"] = [self.labels[f] for f in df["feature"]]
        return df

    def plot(self) -> Any:
        """Bar chart of the class counts."""
        c = self.counts()
        return bar_top_tokens(list(c), list(c.values()), title=f"where the features of {self.hook} come from "
                              f"(cosine >= {self.threshold})", x_title="features", signed=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "FeatureClasses", {"scores": self.scores, "matches": self.matches},
                            {"hook": self.hook, "labels": list(self.labels), "threshold": self.threshold,
                             "sources": list(self.sources), "method": self.method})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureClasses:
        t, m = read_result(path, "FeatureClasses")
        return cls(hook=m["hook"], scores=t["scores"], matches=t["matches"], labels=tuple(m["labels"]),
                   threshold=m["threshold"], sources=tuple(m["sources"]), method=m["method"])


@dataclass(frozen=True)
class FlowGraph:
    """The flow graph of one feature: nodes are (hook, feature), edges point downstream.

    Attributes:
        hooks / features / columns: per node, its SAE's hook, its feature index, and its left-to-right
            column (residual stream after ``c/2`` blocks for even ``c``; block ``(c-1)/2``'s sublayers for odd).
        edges: ``(upstream node, downstream node, cosine similarity)``.
        root: the node the graph was grown from.
        direction: ``"backward"`` (where the root comes from) or ``"forward"`` (where it goes).
        top_tokens: per node, the tokens its decoder direction promotes (empty without a model).
    """

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
        return list(zip(self.hooks, self.features, strict=True))

    def label(self, i: int) -> str:
        """``"r4 #12"`` / ``"attn4 #3"`` / ``"mlp4 #7"``."""
        from interp.features.flow import point_of

        p = point_of(self.hooks[i])
        return f"{'r' if p.kind == 'resid' else p.kind}{p.stage} #{self.features[i]}"

    def has_edge(self, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        """Whether ``src -> dst`` (each ``(hook, feature)``) is an edge."""
        idx = {k: i for i, k in enumerate(self.nodes)}
        return src in idx and dst in idx and any(a == idx[src] and b == idx[dst] for a, b, _ in self.edges)

    def to_frame(self) -> Any:
        """One row per edge: source and target hook/feature, similarity."""
        import pandas as pd

        return pd.DataFrame([{"src_hook": self.hooks[a], "src_feature": self.features[a], "dst_hook": self.hooks[b],
                              "dst_feature": self.features[b], "similarity": v} for a, b, v in self.edges])

    def plot(self, kind: str = "graph") -> Any:
        """A layered graph (one column per residual stream / sublayer) or a Sankey diagram (``kind="sankey"``);
        hovering a node shows the tokens its direction promotes."""
        hover = [list(t) for t in self.top_tokens] if self.top_tokens else None
        title = f"feature flow ({self.direction}) of {self.label(self.root)}" if self.hooks else "feature flow"
        if kind == "sankey":
            return sankey([self.label(i) for i in range(len(self.hooks))], list(self.edges), title=title,
                          value_title="cosine similarity", node_hover=[", ".join(h) for h in hover] if hover else None)
        if kind != "graph":
            raise BadInputError(f"kind must be 'graph' or 'sankey', got {kind!r}")
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
                             node_hover=hovers, title=title, weight_title="cosine similarity")

    def save(self, path: str | os.PathLike[str]) -> Path:
        e = torch.tensor([[a, b] for a, b, _ in self.edges], dtype=torch.long).reshape(-1, 2)
        w = torch.tensor([v for _, _, v in self.edges], dtype=torch.float32)
        return write_result(path, "FlowGraph", {"edges": e, "weights": w},
                            {"hooks": list(self.hooks), "features": list(self.features), "columns": list(self.columns),
                             "root": self.root, "direction": self.direction, "threshold": self.threshold,
                             "method": self.method, "top_tokens": [list(t) for t in self.top_tokens]})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FlowGraph:
        t, m = read_result(path, "FlowGraph")
        edges = tuple((int(a), int(b), float(v)) for (a, b), v in zip(t["edges"].tolist(), t["weights"].tolist(),
                                                                         strict=True))
        return cls(hooks=tuple(m["hooks"]), features=tuple(m["features"]), columns=tuple(m["columns"]), edges=edges,
                   root=m["root"], direction=m["direction"], threshold=m["threshold"], method=m["method"],
                   top_tokens=tuple(tuple(x) for x in m["top_tokens"]))

    def __repr__(self) -> str:
        return (f"FlowGraph({self.direction} from {self.label(self.root) if self.hooks else '?'}: "
                f"{len(self.hooks)} nodes, {len(self.edges)} edges)")


__all__ = ["SOURCE_NAMES", "FeatureClasses", "FlowGraph"]
