"""``LinearProbe``: a standardised logistic-regression or ridge probe (scikit-learn underneath), and
the train/test split by sequence that keeps tokens of one sequence on one side.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 5, generator=g); y = (X[:, 2] > 0).long()
    >>> p = LinearProbe().fit(X, y)
    >>> p.score(X, y) > 0.95, int(p.direction_.abs().argmax())
    (True, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from interp.errors import BadInputError

TASKS = ("classification", "regression")


class LinearProbe:
    """A linear probe on standardised activations, fitted with scikit-learn.

    Args:
        task: ``"classification"`` (logistic regression; binary or multinomial) or ``"regression"`` (ridge).
        C: inverse L2 strength of the logistic regression.
        alpha: L2 strength of the ridge.
        balance: weight classes inversely to their frequency (``class_weight="balanced"``).
        standardize: scale every dimension to zero mean and unit variance (statistics of the training set).
        max_iter: iterations of the solver.

    Attributes (after ``fit``):
        mean_, scale_: ``[d]`` standardisation statistics.
        coef_: ``[n_out, d]`` weights on the standardised inputs (``n_out`` = 1 for binary and regression).
        intercept_: ``[n_out]``.
        classes_: the class labels (classification).
        direction_: ``[d]`` (``[n_out, d]`` multiclass) unit vectors in activation space: the weights
            divided by the scales, normalised. For a binary probe it points towards ``classes_[1]``.
    """

    def __init__(self, task: str = "classification", C: float = 1.0, alpha: float = 1.0, balance: bool = True,
                 standardize: bool = True, max_iter: int = 500) -> None:
        if task not in TASKS:
            raise BadInputError(f"task must be one of {TASKS}, got {task!r}")
        if C <= 0 or alpha < 0:
            raise BadInputError(f"C must be > 0 and alpha >= 0, got C={C}, alpha={alpha}")
        self.task, self.C, self.alpha, self.balance = task, C, alpha, balance
        self.standardize, self.max_iter = standardize, max_iter

    def _np(self, X: Any) -> np.ndarray:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        x = np.asarray(X)
        x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
        if x.ndim != 2:
            raise BadInputError(f"X must be [n_examples, d], got shape {x.shape}")
        return x

    def _scaled(self, X: Any) -> np.ndarray:
        x = self._np(X)
        if x.shape[1] != self.mean_.shape[0]:
            raise BadInputError(f"X has {x.shape[1]} dimensions; the probe was fitted on {self.mean_.shape[0]}")
        return (x - self.mean_.astype(x.dtype)) / self.scale_.astype(x.dtype)

    def fit(self, X: Any, y: Sequence[Any] | np.ndarray | torch.Tensor) -> LinearProbe:
        """Fit on ``X`` ``[n, d]`` and labels ``y`` ``[n]``; returns ``self``."""
        from sklearn.linear_model import LogisticRegression, Ridge

        x = self._np(X)
        yy = np.asarray(y.tolist() if isinstance(y, torch.Tensor) else y)
        if len(yy) != len(x):
            raise BadInputError(f"{len(yy)} labels for {len(x)} examples")
        self.mean_ = x.mean(0, dtype=np.float64) if self.standardize else np.zeros(x.shape[1])
        sd = x.std(0, dtype=np.float64) if self.standardize else np.ones(x.shape[1])
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        xs = (x - self.mean_.astype(x.dtype)) / self.scale_.astype(x.dtype)  # float32 stays float32 (faster, smaller)
        if self.task == "classification":
            if len(np.unique(yy)) < 2:
                raise BadInputError(f"classification needs at least 2 classes in the training labels, got {np.unique(yy)}")
            self.model_ = LogisticRegression(C=self.C, class_weight="balanced" if self.balance else None,
                                             max_iter=self.max_iter)
            self.model_.fit(xs, yy)
            self.classes_ = self.model_.classes_
        else:
            self.model_ = Ridge(alpha=self.alpha).fit(xs, yy.astype(np.float64))
        self.coef_ = np.atleast_2d(self.model_.coef_)
        self.intercept_ = np.atleast_1d(self.model_.intercept_)
        raw = self.coef_ / self.scale_
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        d = torch.from_numpy(raw / np.where(norms > 0, norms, 1.0)).float()
        self.direction_ = d[0] if d.shape[0] == 1 else d
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(self._scaled(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (classification) or predicted values (regression)."""
        xs = self._scaled(X)
        return self.model_.decision_function(xs) if self.task == "classification" else self.model_.predict(xs)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (classification) or R² (regression)."""
        return float(self.model_.score(self._scaled(X), np.asarray(y.tolist() if isinstance(y, torch.Tensor) else y)))


def split_by_sequence(groups: torch.Tensor, test_size: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean train/test masks over examples such that every sequence is on one side only.

    Args:
        groups: ``[n_examples]`` sequence index of every example.
        test_size: fraction of the sequences held out.
        seed: seed of the permutation of the sequences.

    Raises:
        ValueError: ``test_size`` outside (0, 1), or fewer than 2 sequences.

    Example:
        >>> tr, te = split_by_sequence(torch.tensor([0, 0, 1, 1, 2, 3]), test_size=0.5)
        >>> sorted(set(torch.tensor([0, 0, 1, 1, 2, 3])[te].tolist())) != sorted(set(torch.tensor([0, 0, 1, 1, 2, 3])[tr].tolist()))
        True
    """
    if not 0 < test_size < 1:
        raise BadInputError(f"test_size must be in (0, 1), got {test_size}")
    seqs = torch.unique(groups)
    if len(seqs) < 2:
        raise BadInputError(f"a split by sequence needs at least 2 sequences, got {len(seqs)}")
    perm = seqs[torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed))]
    n_test = min(len(seqs) - 1, max(1, round(test_size * len(seqs))))
    test = torch.isin(groups, perm[:n_test])
    return ~test, test


def group_folds(groups: torch.Tensor, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` cross-validation folds (train, validation index arrays) with whole sequences in each fold."""
    seqs = torch.unique(groups)
    if k < 2 or k > len(seqs):
        raise BadInputError(f"cv must be between 2 and the number of sequences ({len(seqs)}), got {k}")
    perm = seqs[torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed + 1))]
    fold_of = torch.empty(int(seqs.max()) + 1, dtype=torch.long)
    fold_of[perm] = torch.arange(len(perm)) % k
    f = fold_of[groups].numpy()
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 (binary F1 averaged over both classes for two classes)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


__all__ = ["TASKS", "LinearProbe", "f1_macro", "group_folds", "split_by_sequence"]
