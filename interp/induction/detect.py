"""Classify heads as induction / previous-token / duplicate-token heads, and find which previous-token heads
feed each induction head through K-composition (Elhage et al. 2021; the composition math lives in
:mod:`interp.models.circuits`, shared with the heads tool).

Example:
    >>> import torch
    >>> from interp.induction.detect import HeadRoles
    >>> r = HeadRoles(induction_heads=(((1, 2), 0.8),), prev_token_heads=(((0, 3), 0.9),), duplicate_heads=(),
    ...               thresholds={"induction": 0.4, "prev_token": 0.4, "duplicate": 0.4},
    ...               feeders={(1, 2): (((0, 3), 0.3),)})
    >>> r.to_dict()["induction_heads"][0]["fed_by"]
    [{'layer': 0, 'head': 3, 'k_composition': 0.3}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.errors import BadInputError
from interp.induction.result import InductionScores
from interp.models.circuits import ov_factors, pair_composition, qk_factors

Head = tuple[int, int]


@dataclass(frozen=True)
class HeadRoles:
    """Heads above each threshold, best first, and the K-composition feeders of each induction head.

    Attributes:
        induction_heads, prev_token_heads, duplicate_heads: ``((layer, head), score)`` above threshold.
        thresholds: the thresholds used, by kind.
        feeders: induction head -> ``((layer, head), k_composition)`` of the previous-token heads in
            earlier layers, strongest first (empty without ``model``).
    """

    induction_heads: tuple[tuple[Head, float], ...]
    prev_token_heads: tuple[tuple[Head, float], ...]
    duplicate_heads: tuple[tuple[Head, float], ...]
    thresholds: Mapping[str, float]
    feeders: Mapping[Head, tuple[tuple[Head, float], ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def rows(items: tuple[tuple[Head, float], ...]) -> list[dict[str, Any]]:
            return [{"layer": h[0], "head": h[1], "score": s} for h, s in items]

        ind = rows(self.induction_heads)
        for row, (h, _) in zip(ind, self.induction_heads, strict=True):
            row["fed_by"] = [{"layer": f[0], "head": f[1], "k_composition": c} for f, c in self.feeders.get(h, ())]
        return {"thresholds": dict(self.thresholds), "induction_heads": ind,
                "prev_token_heads": rows(self.prev_token_heads), "duplicate_heads": rows(self.duplicate_heads)}


def _above(t: torch.Tensor, threshold: float) -> tuple[tuple[Head, float], ...]:
    H = t.shape[1]
    order = t.flatten().argsort(descending=True)
    return tuple(((int(i) // H, int(i) % H), round(float(t.flatten()[i]), 6)) for i in order
                 if float(t.flatten()[i]) >= threshold)


def classify_heads(
    model: Any,
    scores: InductionScores,
    *,
    induction_threshold: float = 0.4,
    prev_token_threshold: float = 0.4,
    duplicate_threshold: float = 0.4,
    fold_norm: bool = True,
) -> HeadRoles:
    """Rank and classify heads from :class:`InductionScores`; with ``model``, rank the previous-token heads
    that feed each induction head by K-composition score.

    Args:
        model: the model the scores came from (``None`` skips the K-composition step).
        scores: from :func:`~interp.induction.induction_scores`.
        induction_threshold / prev_token_threshold / duplicate_threshold: minimum score, in [0, 1].
        fold_norm: fold the attention-input norm weights into the weights for the composition scores.

    Raises:
        ValueError: on a threshold outside [0, 1].
    """
    th = {"induction": induction_threshold, "prev_token": prev_token_threshold, "duplicate": duplicate_threshold}
    for k, v in th.items():
        if not 0.0 <= v <= 1.0:
            raise BadInputError(f"{k}_threshold must be in [0, 1], got {v}")
    ind = _above(scores.induction, induction_threshold)
    prev = _above(scores.prev_token, prev_token_threshold)
    dup = _above(scores.duplicate, duplicate_threshold)
    feeders: dict[Head, tuple[tuple[Head, float], ...]] = {}
    if model is not None and ind and prev:
        pairs = [((la, ha), (lb, hb)) for (lb, hb), _ in ind for (la, ha), _ in prev if la < lb]
        comp = k_composition(model.weights, pairs, fold_norm=fold_norm)
        for (lb, hb), _ in ind:
            fs = [(a, round(float(c), 6)) for (a, b), c in zip(pairs, comp, strict=True) if b == (lb, hb)]
            feeders[(lb, hb)] = tuple(sorted(fs, key=lambda x: -x[1]))
    return HeadRoles(induction_heads=ind, prev_token_heads=prev, duplicate_heads=dup, thresholds=th, feeders=feeders)


def k_composition(weights: Any, pairs: list[tuple[Head, Head]], fold_norm: bool = True) -> torch.Tensor:
    """K-composition scores ``[n_pairs]`` of (sender, receiver) head pairs: ``‖W_OV^a (W_QK^b)ᵀ‖ / (‖W_OV^a‖ ‖W_QK^b‖)``,
    via :func:`interp.models.circuits.pair_composition` (the same score as ``composition_scores(w, "k")``,
    computed only for the pairs asked for)."""
    if not pairs:
        return torch.zeros(0)
    Wv, Wo = ov_factors(weights, fold_norm=fold_norm)  # [L, H, d, dh], [L, H, dh, d]
    Q, Kt = qk_factors(weights, fold_norm=fold_norm)  # [L, H, d, dh], [L, H, dh, d]
    la, ha = (torch.tensor(x) for x in zip(*(a for a, _ in pairs), strict=True))
    lb, hb = (torch.tensor(x) for x in zip(*(b for _, b in pairs), strict=True))
    # (W_QK)ᵀ = W_K W_Qᵀ = Ktᵀ Qᵀ
    return pair_composition((Wv[la, ha].double(), Wo[la, ha].double()),
                            (Kt[lb, hb].transpose(-1, -2).double(), Q[lb, hb].transpose(-1, -2).double())).float()
