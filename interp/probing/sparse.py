"""k-sparse probing (Gurnee et al. 2023): rank dimensions by a cheap score, fit probes on the top k.

Scores (computed on the training examples only):

- ``"mean_diff"``: the largest absolute difference of a dimension's class mean from the mean of the
  other classes, in units of its standard deviation (for regression: absolute correlation);
- ``"f_stat"``: the ANOVA F statistic (``sklearn.feature_selection.f_classif``; ``f_regression``);
- ``"l1"``: the order in which dimensions enter an L1-regularised logistic-regression path
  (earliest first), ties broken by the F statistic.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(300, 20, generator=g); y = (X[:, 7] + 0.1 * X[:, 3] > 0).long()
    >>> rank_dimensions(X, y, method="f_stat")[:1].tolist()
    [7]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from interp.errors import BadInputError, unknown_name
from interp.probing.probe import Matrix, Targets, Task, as_matrix, as_targets, check_task

Ranking = Literal["mean_diff", "f_stat", "l1"]
RANKINGS: tuple[Ranking, ...] = ("mean_diff", "f_stat", "l1")


def check_ranking(method: str, task: str = "classification") -> Ranking:
    """``method`` if it is a ranking for ``task``; else a :class:`BadInputError` naming it and the valid ones."""
    if method not in RANKINGS:
        raise unknown_name("ranking", method, RANKINGS)
    if method == "l1" and task == "regression":
        raise BadInputError("ranking 'l1' is for classification; use 'f_stat' or 'mean_diff' for regression")
    return method  # type: ignore[return-value]


def scores(X: Matrix, y: Targets, *, method: Ranking = "f_stat", task: Task = "classification") -> np.ndarray:
    """``[d]`` score of every dimension of ``X`` ``[n, d]`` for labels ``y`` ``[n]`` (higher: more informative);
    see the module docstring.

    Raises:
        BadInputError: an unknown ``method`` or ``task``, or shapes that do not match.

    Example (only dimension 2 decides the label):
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 5))
        >>> int(scores(X, (X[:, 2] > 0).astype(int)).argmax())
        2
    """
    check_ranking(method, check_task(task))
    x, yy = as_matrix(X), as_targets(y)
    if len(yy) != len(x):
        raise BadInputError(f"{len(yy)} labels for {len(x)} examples")
    sd = x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    if task == "regression":
        if method == "f_stat":
            from sklearn.feature_selection import f_regression

            return np.nan_to_num(f_regression(x, yy.astype(np.float64))[0])
        yc = (yy - yy.mean()) / max(float(yy.std()), 1e-12)
        return np.abs(((x - x.mean(0)) / sd * yc[:, None]).mean(0))
    if method == "f_stat":
        from sklearn.feature_selection import f_classif

        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(f_classif(x, yy)[0])
    classes = np.unique(yy)
    if method == "mean_diff":
        out = np.zeros(x.shape[1])
        for c in classes if len(classes) > 2 else classes[1:]:
            m = yy == c
            out = np.maximum(out, np.abs(x[m].mean(0) - x[~m].mean(0)) / sd)
        return out
    return _l1_entry(x, yy)


def _l1_entry(x: np.ndarray, y: np.ndarray, n_steps: int = 12) -> np.ndarray:
    from sklearn.feature_selection import f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import l1_min_c

    xs = (x - x.mean(0)) / np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.nan_to_num(f_classif(xs, y)[0])
    entry = np.full(x.shape[1], n_steps, dtype=np.float64)
    c0 = l1_min_c(xs, y, loss="log")
    for step, c in enumerate(c0 * np.logspace(0, 3, n_steps)):
        m = LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", max_iter=200, class_weight="balanced")
        m.fit(xs, y)
        nz = np.abs(np.atleast_2d(m.coef_)).max(0) > 0
        entry = np.where(nz & (entry == n_steps), step, entry)
    # earlier entry first; within a step, larger F first (f / (1 + max f) < 1 keeps steps apart)
    return -(entry - f / (1.0 + f.max()))


def rank_dimensions(X: Matrix, y: Targets, *, method: Ranking = "f_stat", task: Task = "classification"
                    ) -> torch.Tensor:
    """Dimensions of ``X`` ``[n, d]`` in decreasing order of their score for labels ``y``: a ``[d]`` long tensor
    (ties keep index order).

    Example:
        >>> import numpy as np
        >>> X = np.array([[0.0, 5.0], [0.1, -5.0], [1.0, 5.0], [1.1, -5.0]])
        >>> rank_dimensions(X, [0, 0, 1, 1], method="mean_diff").tolist()
        [0, 1]
    """
    s = scores(X, y, method=method, task=task)
    return torch.from_numpy(np.argsort(-s, kind="stable").copy())


def default_ks(d: int, k_max: int = 64) -> tuple[int, ...]:
    """1, 2, 4, … up to ``min(k_max, d)``.

    Example:
        >>> default_ks(20)
        (1, 2, 4, 8, 16)
    """
    ks, k = [], 1
    while k <= min(k_max, d):
        ks.append(k)
        k *= 2
    return tuple(ks)


def check_ks(ks: Sequence[int], d: int) -> tuple[int, ...]:
    """``ks`` as a tuple if they are increasing ints in ``[1, d]``; else a :class:`BadInputError` naming them."""
    try:
        out = tuple(int(k) for k in ks)
    except (TypeError, ValueError):
        raise BadInputError(f"bad ks {ks!r}; valid: increasing ints in [1, {d}] (the number of dimensions)") from None
    if not out or any(k < 1 or k > d for k in out) or list(out) != sorted(set(out)):
        raise BadInputError(f"bad ks {list(ks)}; valid: increasing ints in [1, {d}] (the number of dimensions)")
    return out


__all__ = ["RANKINGS", "Ranking", "check_ks", "check_ranking", "default_ks", "rank_dimensions", "scores"]
