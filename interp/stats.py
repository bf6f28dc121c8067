"""Small statistics shared by several tools (below them all): Pearson and Spearman correlations, average ranks.

    >>> import torch
    >>> from interp.stats import pearson, ranks, spearman
    >>> ranks(torch.tensor([3.0, 1.0, 3.0])).tolist()
    [2.5, 1.0, 2.5]
    >>> round(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0])), 3)
    0.5
"""

from __future__ import annotations

import torch

__all__ = ["pearson", "ranks", "spearman"]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two flat tensors (in float64); NaN for fewer than two values or a constant input."""
    if a.numel() < 2:
        return float("nan")
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a flat tensor (ascending, float64), ties given their average rank (as scipy's rankdata)."""
    order = x.argsort(stable=True)
    r = torch.empty(x.shape, dtype=torch.float64)
    r[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in x.unique():
        same = x == v
        if int(same.sum()) > 1:
            r[same] = r[same].mean()
    return r


def spearman(a: torch.Tensor, b: torch.Tensor, *, min_n: int = 2) -> float:
    """Spearman rank correlation over the pairs where neither value is NaN; NaN for fewer than ``min_n`` pairs."""
    a, b = a.flatten(), b.flatten()
    ok = ~(a.isnan() | b.isnan())
    if int(ok.sum()) < max(2, min_n):
        return float("nan")
    return pearson(ranks(a[ok].double()), ranks(b[ok].double()))
