"""Classify heads as induction / previous-token / duplicate-token heads, and find which previous-token heads
feed each induction head through K-composition (Elhage et al. 2021; the composition math lives in
:mod:`interp.models.circuits`, shared with the heads tool).

Example:
    >>> from interp.induction.detect import HeadRoles
    >>> r = HeadRoles(induction_heads=(("L1H2", 0.8),), prev_token_heads=(("L0H3", 0.9),), duplicate_heads=(),
    ...               thresholds={"induction": 0.4, "prev_token": 0.4, "duplicate": 0.4},
    ...               feeders={"L1H2": (("L0H3", 0.3),)})
    >>> r.feeders[(1, 2)]
    ((HeadRef(0, 3), 0.3),)
    >>> r.to_dict()["attributes"]["induction_heads"][0]["fed_by"]
    [{'head': 'L0H3', 'k_composition': 0.3}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.induction.result import InductionScores
from interp.models import Inputs, Model, WeightViews
from interp.models.circuits import ov_factors, pair_composition, qk_factors
from interp.plot import heatmap
from interp.sites import HeadRef, HeadSpec
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

Ranked = tuple[tuple[HeadRef, float], ...]


def _ranked(items: Sequence[tuple[HeadSpec, float]]) -> Ranked:
    return tuple((HeadRef.parse(h), float(s)) for h, s in items)


@dataclass(frozen=True, repr=False)
class HeadRoles(Result):
    """Heads above each threshold, best first, and the K-composition feeders of each induction head.

    Attributes:
        induction_heads, prev_token_heads, duplicate_heads: ``(HeadRef, score)`` above the threshold, best first.
        thresholds: the thresholds used, by kind (``"induction"``, ``"prev_token"``, ``"duplicate"``).
        feeders: induction head -> ``(HeadRef, k_composition)`` of the previous-token heads in earlier layers,
            strongest first (empty when classified without a model). Look-ups take a ``HeadRef`` or a
            ``(layer, head)`` pair (``roles.feeders[(1, 2)]``, ``roles.feeders[HeadRef.parse("L1H2")]``).

    Views: ``"feeders"`` (K-composition of every previous-token head, columns, into every induction head, rows).
    """

    VIEWS: ClassVar[tuple[str, ...]] = ("feeders",)

    induction_heads: Ranked
    prev_token_heads: Ranked
    duplicate_heads: Ranked
    thresholds: Mapping[str, float]
    feeders: Mapping[HeadRef, Ranked] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("induction_heads", "prev_token_heads", "duplicate_heads"):
            object.__setattr__(self, name, _ranked(getattr(self, name)))
        object.__setattr__(self, "thresholds", {str(k): float(v) for k, v in self.thresholds.items()})
        object.__setattr__(self, "feeders", {HeadRef.parse(k): _ranked(v) for k, v in self.feeders.items()})

    def headline(self) -> dict[str, Any]:
        def names(items: Ranked) -> str:
            return ",".join(str(h) for h, _ in items[:4]) + ("..." if len(items) > 4 else "")

        return {"induction": names(self.induction_heads), "prev_token": names(self.prev_token_heads),
                "duplicate": names(self.duplicate_heads)}

    def to_frame(self) -> pd.DataFrame:
        """One row per classified head: columns ``role, head, layer, head_index, score``."""
        import pandas as pd

        rows = [{"role": role, "head": str(h), "layer": h.layer, "head_index": h.head, "score": s}
                for role, items in (("induction", self.induction_heads), ("prev_token", self.prev_token_heads),
                                    ("duplicate", self.duplicate_heads)) for h, s in items]
        return pd.DataFrame(rows, columns=["role", "head", "layer", "head_index", "score"])

    def to_dict(self) -> dict[str, Any]:
        """The roles as rows ``{"head": "L1H2", "score": ...}`` (induction heads with ``fed_by``)."""
        def rows(items: Ranked) -> list[dict[str, Any]]:
            return [{"head": str(h), "score": s} for h, s in items]

        ind = rows(self.induction_heads)
        for row, (h, _) in zip(ind, self.induction_heads, strict=True):
            row["fed_by"] = [{"head": str(f), "k_composition": c} for f, c in self.feeders.get(h, ())]
        return {"class": type(self).__name__, "schema_version": self.SCHEMA_VERSION, "arrays": {},
                "attributes": {"thresholds": dict(self.thresholds), "induction_heads": ind,
                               "prev_token_heads": rows(self.prev_token_heads),
                               "duplicate_heads": rows(self.duplicate_heads)}}

    def _view_feeders(self) -> Figure:
        if not self.feeders:
            raise BadInputError("bad view 'feeders': no K-composition was computed (no induction or previous-token "
                                "head above its threshold, or classify_heads ran without a model)")
        rows = list(self.feeders)
        cols = list(dict.fromkeys(f for fs in self.feeders.values() for f, _ in fs))
        grid = torch.full((len(rows), len(cols)), float("nan"))
        for i, r in enumerate(rows):
            for f, c in self.feeders[r]:
                grid[i, cols.index(f)] = c
        return heatmap(grid, x_labels=[str(c) for c in cols], y_labels=[str(r) for r in rows],
                       x_title="previous-token head", y_title="induction head", colorbar_title="K-composition",
                       title="K-composition: which previous-token heads feed each induction head")


def _above(t: torch.Tensor, threshold: float) -> Ranked:
    H = t.shape[1]
    flat = t.flatten()
    order = flat.argsort(descending=True, stable=True)
    return tuple((HeadRef(int(i) // H, int(i) % H), round(float(flat[i]), 6)) for i in order
                 if float(flat[i]) >= threshold)


def classify_heads(
    model: Model | None,
    inputs: Inputs | None = None,
    *,
    scores: InductionScores | None = None,
    induction_threshold: float = 0.4,
    prev_token_threshold: float = 0.4,
    duplicate_threshold: float = 0.4,
    fold_norm: bool = True,
) -> HeadRoles:
    """Rank and classify heads by their induction, previous-token and duplicate-token scores; with ``model``,
    rank the previous-token heads that feed each induction head by K-composition score.

    Args:
        model: the model (``None`` with ``scores`` given skips the K-composition step).
        inputs: what to score when ``scores`` is not given (``None``: repeated random tokens, as
            :func:`~interp.induction.induction_scores`).
        scores: scores already computed by :func:`~interp.induction.induction_scores`.
        induction_threshold / prev_token_threshold / duplicate_threshold: minimum score, in [0, 1].
        fold_norm: fold the attention-input norm weights into the weights for the composition scores.

    Raises:
        BadInputError: a threshold outside [0, 1].

    Example:
        >>> import interp
        >>> from interp.induction import induction_scores
        >>> toy = interp.load_model("toy-induction")
        >>> roles = classify_heads(toy, scores=induction_scores(toy, n_seq=8, half=26), prev_token_threshold=0.3)
        >>> [h.layer for h, _ in roles.induction_heads], roles.prev_token_heads[0][0].layer
        ([1, 1, 1, 1], 0)
        >>> top = roles.induction_heads[0][0]
        >>> roles.feeders[top][0][0].layer  # its strongest feeder: a previous-token head of layer 0
        0
    """
    th = {"induction": induction_threshold, "prev_token": prev_token_threshold, "duplicate": duplicate_threshold}
    for k, v in th.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise BadInputError(f"bad {k}_threshold {v!r}; valid: a number in [0, 1]")
    if scores is None:
        if model is None:
            raise BadInputError("classify_heads needs a model or scores= (from induction_scores)")
        from interp.induction.scores import induction_scores

        scores = induction_scores(model, inputs)
    elif inputs is not None:
        raise BadInputError("give inputs or scores=, not both: the scores already say what was scored")
    ind = _above(scores.induction, induction_threshold)
    prev = _above(scores.prev_token, prev_token_threshold)
    dup = _above(scores.duplicate, duplicate_threshold)
    feeders: dict[HeadRef, Ranked] = {}
    if model is not None and ind and prev:
        pairs = [(a, b) for b, _ in ind for a, _ in prev if a.layer < b.layer]
        comp = k_composition(model.weights, pairs, fold_norm=fold_norm)
        for b, _ in ind:
            fs = [(a, round(float(c), 6)) for (a, bb), c in zip(pairs, comp, strict=True) if bb == b]
            feeders[b] = tuple(sorted(fs, key=lambda x: -x[1]))
    return HeadRoles(induction_heads=ind, prev_token_heads=prev, duplicate_heads=dup, thresholds=th, feeders=feeders)


def k_composition(weights: WeightViews, pairs: Sequence[tuple[HeadSpec, HeadSpec]], *,
                  fold_norm: bool = True) -> torch.Tensor:
    """K-composition scores ``[n_pairs]`` of (sender, receiver) head pairs: ``‖W_OV^a (W_QK^b)ᵀ‖ / (‖W_OV^a‖ ‖W_QK^b‖)``,
    via :func:`interp.models.circuits.pair_composition` (the same score as ``composition_scores(w, "k")``,
    computed only for the pairs asked for).

    Example:
        >>> import interp
        >>> w = interp.load_model("toy-induction").weights
        >>> k_composition(w, [("L0H3", "L1H0"), ((0, 0), (1, 0))]).shape
        torch.Size([2])
    """
    if not pairs:
        return torch.zeros(0)
    refs = [(HeadRef.parse(a), HeadRef.parse(b)) for a, b in pairs]
    Wv, Wo = ov_factors(weights, fold_norm=fold_norm)  # [L, H, d, dh], [L, H, dh, d]
    Q, Kt = qk_factors(weights, fold_norm=fold_norm)  # [L, H, d, dh], [L, H, dh, d]
    la = torch.tensor([a.layer for a, _ in refs])
    ha = torch.tensor([a.head for a, _ in refs])
    lb = torch.tensor([b.layer for _, b in refs])
    hb = torch.tensor([b.head for _, b in refs])
    # (W_QK)ᵀ = W_K W_Qᵀ = Ktᵀ Qᵀ
    return pair_composition((Wv[la, ha].double(), Wo[la, ha].double()),
                            (Kt[lb, hb].transpose(-1, -2).double(), Q[lb, hb].transpose(-1, -2).double())).float()


__all__ = ["HeadRoles", "classify_heads", "k_composition"]
