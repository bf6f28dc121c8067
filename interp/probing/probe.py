"""``LinearProbe``: a standardised logistic-regression or ridge probe (scikit-learn underneath), and
the train/test split by sequence that keeps tokens of one sequence on one side.

``LinearProbe`` is a fitted estimator in scikit-learn's manner: its settings are given to the constructor,
``fit(X, y)`` returns the probe, and what it learned ends in ``_`` (``mean_``, ``scale_``, ``coef_``,
``intercept_``, ``classes_``, ``direction_``). ``X`` is ``[n_examples, d]`` activations, a ``torch.Tensor`` or a
NumPy array.

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
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from interp.errors import BadInputError, bad_value
from interp.probing.labels import Label

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression, Ridge

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
Matrix = torch.Tensor | np.ndarray
"""``[n_examples, d]`` activations: a ``torch.Tensor`` or a NumPy array."""
Targets = torch.Tensor | np.ndarray | Sequence[Label]
"""``[n_examples]`` labels (class labels or regression targets): a tensor, an array or a list."""


def as_matrix(X: Matrix, what: str = "X") -> np.ndarray:
    """``X`` as a 2-d float32/float64 NumPy array (other dtypes become float64)."""
    x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise BadInputError(f"{what} must be [n_examples, d], got shape {x.shape}")
    return x


def as_targets(y: Targets) -> np.ndarray:
    """``y`` as a 1-d NumPy array."""
    out = np.asarray(y.tolist() if isinstance(y, torch.Tensor) else y)
    if out.ndim != 1:
        raise BadInputError(f"labels must be [n_examples], got shape {out.shape}")
    return out


def check_task(task: str) -> Task:
    if task not in TASKS:
        raise bad_value("task", task, "'classification' (logistic regression) or 'regression' (ridge)")
    return task  # type: ignore[return-value]


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
        model_: the fitted scikit-learn estimator.

    Example:
        >>> import numpy as np
        >>> X = np.array([[0.0, 1.0], [0.1, 3.0], [1.0, 1.2], [1.1, 2.9]]); y = [0, 0, 1, 1]
        >>> p = LinearProbe(C=10.0).fit(X, y)
        >>> p.predict(X).tolist(), p.direction_.abs().argmax().item()
        ([0, 0, 1, 1], 0)
    """

    mean_: np.ndarray
    scale_: np.ndarray
    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    direction_: torch.Tensor
    model_: LogisticRegression | Ridge

    def __init__(self, task: Task = "classification", *, C: float = 1.0, alpha: float = 1.0, balance: bool = True,
                 standardize: bool = True, max_iter: int = 500) -> None:
        self.task = check_task(task)
        if not C > 0 or not alpha >= 0:
            raise BadInputError(f"C must be > 0 and alpha >= 0, got C={C!r}, alpha={alpha!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise bad_value("max_iter", max_iter, "an int >= 1")
        self.C, self.alpha, self.balance = C, alpha, balance
        self.standardize, self.max_iter = standardize, max_iter

    def __repr__(self) -> str:
        return (f"LinearProbe(task={self.task!r}, C={self.C}, alpha={self.alpha}, balance={self.balance}, "
                f"standardize={self.standardize}, max_iter={self.max_iter})")

    def _fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise BadInputError("this LinearProbe is not fitted yet: call fit(X, y) first")

    def _scaled(self, X: Matrix) -> np.ndarray:
        self._fitted()
        x = as_matrix(X)
        if x.shape[1] != self.mean_.shape[0]:
            raise BadInputError(f"X has {x.shape[1]} dimensions; the probe was fitted on {self.mean_.shape[0]}")
        return (x - self.mean_.astype(x.dtype)) / self.scale_.astype(x.dtype)

    def fit(self, X: Matrix, y: Targets) -> LinearProbe:
        """Fit on ``X`` ``[n, d]`` and labels ``y`` ``[n]``; returns ``self``.

        Raises:
            BadInputError: shapes that do not match, or fewer than 2 classes for classification.
        """
        from sklearn.linear_model import LogisticRegression, Ridge

        x = as_matrix(X)
        yy = as_targets(y)
        if len(yy) != len(x):
            raise BadInputError(f"{len(yy)} labels for {len(x)} examples")
        self.mean_ = x.mean(0, dtype=np.float64) if self.standardize else np.zeros(x.shape[1])
        sd = x.std(0, dtype=np.float64) if self.standardize else np.ones(x.shape[1])
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        xs = (x - self.mean_.astype(x.dtype)) / self.scale_.astype(x.dtype)  # float32 stays float32 (faster, smaller)
        if self.task == "classification":
            if len(np.unique(yy)) < 2:
                raise BadInputError(f"classification needs at least 2 classes in the training labels, got "
                                    f"{np.unique(yy).tolist()}")
            clf = LogisticRegression(C=self.C, class_weight="balanced" if self.balance else None,
                                     max_iter=self.max_iter)
            clf.fit(xs, yy)
            self.classes_ = clf.classes_
            self.model_ = clf
        else:
            self.model_ = Ridge(alpha=self.alpha).fit(xs, yy.astype(np.float64))
        self.coef_ = np.atleast_2d(self.model_.coef_)
        self.intercept_ = np.atleast_1d(self.model_.intercept_)
        raw = self.coef_ / self.scale_
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        d = torch.from_numpy(raw / np.where(norms > 0, norms, 1.0)).float()
        self.direction_ = d[0] if d.shape[0] == 1 else d
        return self

    def predict(self, X: Matrix) -> np.ndarray:
        """``[n]`` predicted classes (classification) or values (regression)."""
        xs = self._scaled(X)
        return np.asarray(self.model_.predict(xs))

    def decision_function(self, X: Matrix) -> np.ndarray:
        """Logits (classification) or predicted values (regression)."""
        xs = self._scaled(X)
        if self.task == "classification":
            return np.asarray(self.model_.decision_function(xs))  # type: ignore[union-attr]
        return np.asarray(self.model_.predict(xs))

    def score(self, X: Matrix, y: Targets) -> float:
        """Accuracy (classification) or R² (regression)."""
        xs = self._scaled(X)
        return float(self.model_.score(xs, as_targets(y)))


def split_by_sequence(groups: torch.Tensor, *, test_size: float = 0.25, seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean train/test masks over examples such that every sequence is on one side only.

    Args:
        groups: ``[n_examples]`` sequence index of every example.
        test_size: fraction of the sequences held out.
        seed: seed of the permutation of the sequences.

    Raises:
        BadInputError: ``test_size`` outside (0, 1), or fewer than 2 sequences.

    Example:
        >>> groups = torch.tensor([0, 0, 1, 1, 2, 3])
        >>> train, test = split_by_sequence(groups, test_size=0.5)
        >>> set(groups[train].tolist()) & set(groups[test].tolist()), int(test.sum() + train.sum())
        (set(), 6)
    """
    if not 0 < test_size < 1:
        raise bad_value("test_size", test_size, "a fraction in (0, 1)")
    seqs = torch.unique(groups)
    if len(seqs) < 2:
        raise BadInputError(f"a split by sequence needs at least 2 sequences, got {len(seqs)}")
    perm = seqs[torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed))]
    n_test = min(len(seqs) - 1, max(1, round(test_size * len(seqs))))
    test = torch.isin(groups, perm[:n_test])
    return ~test, test


def group_folds(groups: torch.Tensor, k: int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` cross-validation folds (train, validation index arrays) with whole sequences in each fold.

    Example:
        >>> folds = group_folds(torch.tensor([0, 0, 1, 2, 2, 3]), 2)
        >>> [len(tr) + len(va) for tr, va in folds]
        [6, 6]
    """
    seqs = torch.unique(groups)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k > len(seqs):
        raise bad_value("cv", k, f"an int from 2 to the number of sequences ({len(seqs)})")
    perm = seqs[torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed + 1))]
    fold_of = torch.empty(int(seqs.max()) + 1, dtype=torch.long)
    fold_of[perm] = torch.arange(len(perm)) % k
    f = fold_of[groups].numpy()
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 (binary F1 averaged over both classes for two classes)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


__all__ = ["TASKS", "LinearProbe", "Matrix", "Targets", "Task", "as_matrix", "as_targets", "check_task", "f1_macro",
           "group_folds", "split_by_sequence"]
