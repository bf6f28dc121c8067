"""``probe``: linear and k-sparse probes on every selected hook, one hook at a time, with a control task."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.probing.data import ActivationSource, Position, Source, build_examples
from interp.probing.labels import token_labels
from interp.probing.probe import LinearProbe, f1_macro, group_folds, split_by_sequence
from interp.probing.result import ProbeResult
from interp.probing.sparse import RANKINGS, check_ks, default_ks, rank_dimensions


def encode_labels(labels: Sequence[Any], task: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes ``0..n_classes-1`` and the class names (sorted), or float targets for regression."""
    if task == "regression":
        try:
            return np.asarray(labels, dtype=np.float64), ()
        except (TypeError, ValueError):
            raise BadInputError("regression needs numeric labels; got e.g. " + repr(labels[0])) from None
    uniq = sorted(set(labels), key=lambda v: (not isinstance(v, int | float), v if isinstance(v, int | float) else str(v)))
    code = {v: i for i, v in enumerate(uniq)}
    return np.asarray([code[v] for v in labels]), tuple(str(v) for v in uniq)


def control_labels(token_ids: torch.Tensor, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control task: every token type gets one label drawn from the empirical label
    distribution, and every example of that type carries it.

    Example:
        >>> c = control_labels(torch.tensor([5, 7, 5, 9]), np.array([0, 1, 1, 0]))
        >>> bool(c[0] == c[2])
        True
    """
    rng = np.random.default_rng(seed)
    types, inv = np.unique(token_ids.numpy(), return_inverse=True)
    return y[rng.integers(0, len(y), size=len(types))][inv]


def probe(
    source: Source,
    labels: str | Sequence[Any],
    hooks: str | Sequence[str] = "blocks.*.hook_resid_post",
    *,
    position: Position = "all",
    task: str = "classification",
    ks: Sequence[int] | None = None,
    ranking: str = "f_stat",
    control: bool = True,
    cv: int = 0,
    test_size: float = 0.25,
    balance: bool = True,
    C: float = 1.0,
    alpha: float = 1.0,
    max_iter: int = 100,
    seed: int = 0,
    n_threads: int | None = None,
    progress: bool = True,
) -> ProbeResult:
    """Fit a dense and k-sparse linear probes at every hook, held out by sequence.

    Args:
        source: a :class:`~interp.trace.Trace`, a :class:`~interp.trace.TraceStore` or its path.
            A store is read one hook at a time: memory stays at about one layer's examples.
        labels: a per-sequence metadata column of the trace (``"label"``, ``"char_labels"``), or one
            entry per sequence: a scalar, a per-character list or a per-token list (see
            :func:`~interp.probing.token_labels`).
        hooks: token-wise hook names or glob patterns (``"blocks.*.mlp.hook_post"`` for neurons).
        position: ``"all"`` tokens, each sequence's ``"last"`` token, an int position, ``"mean"``
            over the sequence, or a ``slice`` (mean over those positions).
        task: ``"classification"`` (logistic regression; accuracy, macro F1) or ``"regression"``
            (ridge; R²).
        ks: sparsity levels of the k-sparse probes (default 1, 2, 4, … 64).
        ranking: how dimensions are ranked for k-sparse probing: ``"f_stat"``, ``"mean_diff"``, ``"l1"``.
        control: also fit a control task (random label per token type) and report selectivity.
        cv: folds of cross-validation by sequence on the training part (0: none).
        test_size: fraction of the sequences held out for testing.
        balance: class-balanced weights; C/alpha: regularisation of logistic regression / ridge.
        max_iter: L-BFGS iterations per logistic fit (the dense probes converge in ~50 on SmolLM2; the
            control task, which memorises token types, is cut off here: raise it for a tighter control).
        seed: seeds the split, the folds and the control labels.
        n_threads: BLAS threads for scikit-learn's solvers during the fits (``None``: leave as is;
            1 is fastest on a busy machine).
        progress: a tqdm bar over hooks.

    Returns:
        :class:`ProbeResult` with one row per hook.

    Raises:
        KeyError: a hook or metadata column the source does not have.
        ValueError: bad ``task``, ``ranking``, ``ks``, ``position``, or labels that do not fit.

    Example:
        >>> import interp
        >>> from interp.probing import LabelledSet, probe
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> ds = LabelledSet.load("python_prose").select(64)
        >>> tr = m.run(list(ds.texts), capture="blocks.*.hook_resid_post", metadata=ds.metadata, max_tokens=48).trace  # doctest: +SKIP
        >>> res = probe(tr, "label", position="mean")  # doctest: +SKIP
        >>> float(res.accuracy.max())  # doctest: +SKIP
        1.0
    """
    if task not in ("classification", "regression"):
        raise BadInputError(f"task must be 'classification' or 'regression', got {task!r}")
    if ranking not in RANKINGS:
        raise BadInputError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    if ranking == "l1" and task == "regression":
        raise BadInputError("ranking='l1' is for classification; use 'f_stat' or 'mean_diff' for regression")
    src = ActivationSource(source)
    names = src.resolve(hooks)
    raw = src.column(labels) if isinstance(labels, str) else list(labels)
    per_token = token_labels(src.tokens, raw)
    ex = build_examples(src.lengths, per_token, position, src.token_ids, src.tokens)
    y, classes = encode_labels(ex.labels, task)
    if task == "classification" and len(classes) < 2:
        raise BadInputError(f"classification needs at least 2 classes; the labels hold only {list(classes)}")
    train, test = split_by_sequence(ex.groups, test_size, seed)
    tr, te = train.numpy(), test.numpy()
    y_ctrl = control_labels(ex.token_ids, y, seed) if control else None
    folds = group_folds(ex.groups[train], cv, seed) if cv else []
    kw = {"task": task, "C": C, "alpha": alpha, "balance": balance, "max_iter": max_iter}
    rows: dict[str, list[Any]] = {k: [] for k in ("acc", "train", "f1", "cv_mean", "cv_std", "ctrl", "sp_acc",
                                                  "sp_f1", "neurons", "dirs", "bias", "proj_std", "top")}
    k_list: tuple[int, ...] = ()
    from sklearn.exceptions import ConvergenceWarning

    limit = threadpool_limits(n_threads) if n_threads else contextlib.nullcontext()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped control fits; see max_iter
        for name in tqdm(names, desc="probing", disable=not progress, unit="hook"):
            X = src.features(name, ex).numpy()
            d = X.shape[1]
            if not k_list:
                k_list = check_ks(ks, d) if ks is not None else default_ks(d)
            elif k_list[-1] > d:
                raise BadInputError(f"hook {name} has {d} dimensions, fewer than k={k_list[-1]}; probe it separately")
            Xtr, Xte = X[tr], X[te]
            p = LinearProbe(**kw).fit(Xtr, y[tr])
            rows["acc"].append(p.score(Xte, y[te]))
            rows["train"].append(p.score(Xtr, y[tr]))
            rows["f1"].append(f1_macro(y[te], p.predict(Xte)) if task == "classification" else float("nan"))
            dirs = torch.atleast_2d(p.direction_)
            rows["dirs"].append(dirs)
            rows["bias"].append(torch.from_numpy(p.intercept_).float())
            rows["proj_std"].append(float((Xtr @ dirs[0].numpy().astype(Xtr.dtype)).std()))
            cv_scores = [LinearProbe(**kw).fit(Xtr[a], y[tr][a]).score(Xtr[b], y[tr][b]) for a, b in folds]
            rows["cv_mean"].append(float(np.mean(cv_scores)) if cv_scores else float("nan"))
            rows["cv_std"].append(float(np.std(cv_scores)) if cv_scores else float("nan"))
            if y_ctrl is not None and len(np.unique(y_ctrl[tr])) > 1:
                rows["ctrl"].append(LinearProbe(**kw).fit(Xtr, y_ctrl[tr]).score(Xte, y_ctrl[te]))
            else:
                rows["ctrl"].append(float("nan"))
            order = rank_dimensions(Xtr, y[tr], ranking, task)
            accs, f1s = [], []
            for k in k_list:
                cols = order[:k].numpy()
                sp = LinearProbe(**kw).fit(Xtr[:, cols], y[tr])
                accs.append(sp.score(Xte[:, cols], y[te]))
                f1s.append(f1_macro(y[te], sp.predict(Xte[:, cols])) if task == "classification" else float("nan"))
            rows["sp_acc"].append(accs)
            rows["sp_f1"].append(f1s)
            rows["neurons"].append(order[: k_list[-1]].clone())
            rows["top"].append(torch.tensor(X[:, int(order[0])], dtype=torch.float32))  # a copy: a view would keep X alive
            del X, Xtr, Xte
    acc = torch.tensor(rows["acc"])
    ctrl = torch.tensor(rows["ctrl"])
    return ProbeResult(
        hooks=tuple(names), ks=k_list, task=task, position=str(position), ranking=ranking, classes=classes,
        accuracy=acc, train_accuracy=torch.tensor(rows["train"]), f1=torch.tensor(rows["f1"]),
        cv_mean=torch.tensor(rows["cv_mean"]), cv_std=torch.tensor(rows["cv_std"]), control_accuracy=ctrl,
        selectivity=acc - ctrl, sparse_accuracy=torch.tensor(rows["sp_acc"]), sparse_f1=torch.tensor(rows["sp_f1"]),
        neurons=torch.stack(rows["neurons"]), directions=torch.stack(rows["dirs"]), intercepts=torch.stack(rows["bias"]),
        projection_std=torch.tensor(rows["proj_std"]), top_activations=torch.stack(rows["top"]),
        example_labels=torch.from_numpy(y).float() if task == "regression" else torch.from_numpy(y).long(),
        is_test=test, n_seqs=src.n_seqs, model_id=src.model_id,
    )


__all__ = ["control_labels", "encode_labels", "probe"]
