"""``probe``: linear and k-sparse probes on every selected hook, one hook at a time, with a control task."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from interp.errors import BadInputError, bad_value
from interp.models import Inputs, Model
from interp.probing.data import (
    POOLS,
    ActivationSource,
    Pool,
    build_examples,
    check_positions,
    check_token_wise,
    positions_text,
)
from interp.probing.labels import Label, token_labels
from interp.probing.probe import LinearProbe, Task, check_task, f1_macro, group_folds, split_by_sequence
from interp.probing.result import ProbeResult
from interp.probing.sparse import Ranking, check_ks, check_ranking, default_ks, rank_dimensions
from interp.progress import progress as progress_bar
from interp.sites import Positions, SiteSpec, resolve
from interp.trace import Trace, TraceStore
from interp.trace.inputs import ensure_trace

log = logging.getLogger(__name__)


def encode_labels(labels: Sequence[Label], *, task: Task = "classification") -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes ``0..n_classes-1`` and the class names (sorted: numbers first, then strings), or float targets
    and no classes for regression.

    Example:
        >>> codes, classes = encode_labels(["b", "a", "b"])
        >>> codes.tolist(), classes
        ([1, 0, 1], ('a', 'b'))
    """
    if task == "regression":
        try:
            return np.asarray(labels, dtype=np.float64), ()
        except (TypeError, ValueError):
            raise BadInputError(f"regression needs numeric labels; got e.g. {labels[0]!r}") from None
    uniq = sorted(set(labels), key=lambda v: (not isinstance(v, int | float), v if isinstance(v, int | float) else str(v)))
    code = {v: i for i, v in enumerate(uniq)}
    return np.asarray([code[v] for v in labels]), tuple(str(v) for v in uniq)


def control_labels(token_ids: torch.Tensor | np.ndarray, y: np.ndarray | torch.Tensor, *, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control task: every token type gets one label drawn from the empirical label
    distribution, and every example of that type carries it.

    Args:
        token_ids: ``[n_examples]`` the token id of each example.
        y: ``[n_examples]`` the real labels (their distribution is sampled).
        seed: seeds the draw.

    Returns:
        ``[n_examples]`` control labels.

    Example:
        >>> c = control_labels(torch.tensor([5, 7, 5, 9]), np.array([0, 1, 1, 0]))
        >>> bool(c[0] == c[2])
        True
    """
    ids = token_ids.detach().cpu().numpy() if isinstance(token_ids, torch.Tensor) else np.asarray(token_ids)
    yy = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if ids.shape != yy.shape or ids.ndim != 1:
        raise BadInputError(f"token_ids {ids.shape} and labels {yy.shape} must both be [n_examples]")
    rng = np.random.default_rng(seed)
    types, inv = np.unique(ids, return_inverse=True)
    return yy[rng.integers(0, len(yy), size=len(types))][inv.reshape(-1)]


def _activations(model: Model | None, inputs: Inputs, hooks: SiteSpec | Sequence[SiteSpec],
                 max_tokens: int | None) -> tuple[ActivationSource, list[str]]:
    """The source to read and the hook names to probe (a trace or store that holds them is read as it is)."""
    if model is None:
        if not isinstance(inputs, Trace | TraceStore):
            raise BadInputError(f"probe(None, inputs) reads captured activations only: inputs must be a Trace or a "
                                f"TraceStore, not a {type(inputs).__name__}; pass the model to run it on texts or ids")
        src = ActivationSource(inputs)
        return src, src.resolve(hooks)
    names = [s.name for s in resolve(hooks, model.sites(), (n for n, _ in model.hf.named_modules() if n))]
    check_token_wise(names)
    if isinstance(inputs, Trace | TraceStore):
        inputs.check_model(model)
        held = inputs.names if isinstance(inputs, Trace) else inputs.hooks
        if all(n in held for n in names):
            return ActivationSource(inputs), names
        log.info("the %s lacks some of the %d hooks: running the model on its tokens", type(inputs).__name__,
                 len(names))
    return ActivationSource(ensure_trace(model, inputs, names, max_tokens=max_tokens)), names


def probe(
    model: Model | None,
    inputs: Inputs,
    *,
    labels: str | Sequence[object],
    hooks: SiteSpec | Sequence[SiteSpec] = "resid_post",
    positions: Positions = None,
    pool: Pool = None,
    task: Task = "classification",
    ks: Sequence[int] | None = None,
    ranking: Ranking = "f_stat",
    control: bool = True,
    cv: int = 0,
    test_size: float = 0.25,
    balance: bool = True,
    C: float = 1.0,
    alpha: float = 1.0,
    max_iter: int = 100,
    seed: int = 0,
    max_tokens: int | None = None,
    n_threads: int | None = None,
    progress: bool | None = None,
) -> ProbeResult:
    """Fit dense and k-sparse linear probes at every hook, held out by sequence.

    Probing reads activations only, so ``model`` may be ``None`` when ``inputs`` is a
    :class:`~interp.trace.Trace` or :class:`~interp.trace.TraceStore` that holds the hooks. With a model, a
    trace or store of that model that holds the hooks is read as it is (``ModelMismatchError`` for another
    model's), one that lacks some is re-run, and texts or token ids are run through the model. A store is
    read one hook at a time: memory stays at about one layer's examples.

    Args:
        model: the model, or ``None`` to read a trace or store as it is.
        inputs: a text, a list of texts, token ids, a Trace or a TraceStore.
        labels: a per-sequence metadata column of the trace (``"label"``, ``"char_labels"``), or one entry per
            sequence: a scalar, a per-character list or a per-token list (see :func:`~interp.probing.token_labels`).
        hooks: token-wise hook points in any :mod:`interp.sites` spelling: ``"resid_post"`` (every layer, the
            default), ``"resid_post.6"``, ``"mlp_post"`` (neurons), ``"blocks.*.hook_mlp_out"``, ``hf:...``.
            Without a model, negative layers count from the last layer the trace holds.
        positions: the token positions probed, by the rule of :mod:`interp.sites.positions`: ``None`` (every real
            token), an int (``-1``: each sequence's last real token, also in right-padded batches), a list or a
            slice. A position outside some sequence's real tokens is an error naming the sequence.
        pool: ``None`` (each selected token is an example) or ``"mean"`` (one example per sequence: the mean of
            its selected tokens, labelled by the last of them).
        task: ``"classification"`` (logistic regression; accuracy, macro F1) or ``"regression"`` (ridge; R²).
        ks: sparsity levels of the k-sparse probes (default 1, 2, 4, … 64).
        ranking: how dimensions are ranked for k-sparse probing: ``"f_stat"``, ``"mean_diff"``, ``"l1"``.
        control: also fit a control task (random label per token type) and report selectivity.
        cv: folds of cross-validation by sequence on the training part (0: none).
        test_size: fraction of the sequences held out for testing.
        balance: class-balanced weights. ``C`` / ``alpha``: regularisation of logistic regression / ridge.
        max_iter: L-BFGS iterations per logistic fit (the dense probes converge in ~50 on SmolLM2; the
            control task, which memorises token types, is cut off here: raise it for a tighter control).
        seed: seeds the split, the folds and the control labels.
        max_tokens: truncate texts to this many tokens (when the model runs on texts).
        n_threads: BLAS threads for scikit-learn's solvers during the fits (``None``: leave as is;
            1 is fastest on a busy machine).
        progress: a progress bar over hooks (``None``: the library switch, see :mod:`interp.progress`).

    Returns:
        :class:`ProbeResult` with one row per hook.

    Raises:
        UnknownHookError: a hook the model (or, without a model, the trace) does not have.
        UnknownNameError: a metadata column the trace does not have.
        ModelMismatchError: a trace or store made by another model.
        BadInputError: a bad ``task``, ``ranking``, ``ks``, ``positions`` or ``pool``, a position outside a
            sequence, or labels that do not fit.

    Example:
        >>> import interp
        >>> from interp.probing import LabelledSet, probe
        >>> m = interp.load_model("smollm2-135m")
        >>> ds = LabelledSet.load("python_prose").select(24)
        >>> res = probe(m, list(ds.texts), labels=ds.column("label"), hooks="resid_post.6", pool="mean",
        ...             max_tokens=24, ks=[1, 4], progress=False)
        >>> res.hooks, float(res.accuracy[0])
        (('blocks.6.hook_resid_post',), 1.0)
    """
    task = check_task(task)
    ranking = check_ranking(ranking, task)
    sel = check_positions(positions)
    if pool not in POOLS:
        raise bad_value("pool", pool, "None (every selected token is an example) or 'mean' (one per sequence)")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 0:
        raise bad_value("cv", cv, "0 (none) or a number of folds >= 2")
    src, names = _activations(model, inputs, hooks, max_tokens)
    raw = src.column(labels) if isinstance(labels, str) else list(labels)
    per_token = token_labels(src.tokens, raw)
    ex = build_examples(src.lengths, per_token, positions=sel, pool=pool, token_ids=src.token_ids, tokens=src.tokens)
    y, classes = encode_labels(ex.labels, task=task)
    if task == "classification" and len(classes) < 2:
        raise BadInputError(f"classification needs at least 2 classes; the labels hold only {list(classes)}")
    train, test = split_by_sequence(ex.groups, test_size=test_size, seed=seed)
    tr, te = train.numpy(), test.numpy()
    y_ctrl = control_labels(ex.token_ids, y, seed=seed) if control else None
    folds = group_folds(ex.groups[train], cv, seed=seed) if cv else []

    def fit(X: np.ndarray, target: np.ndarray) -> LinearProbe:
        return LinearProbe(task, C=C, alpha=alpha, balance=balance, max_iter=max_iter).fit(X, target)

    acc: list[float] = []
    train_acc: list[float] = []
    f1: list[float] = []
    cv_mean: list[float] = []
    cv_std: list[float] = []
    ctrl: list[float] = []
    sp_acc: list[list[float]] = []
    sp_f1: list[list[float]] = []
    neurons: list[torch.Tensor] = []
    dirs_all: list[torch.Tensor] = []
    bias: list[torch.Tensor] = []
    proj_std: list[float] = []
    top: list[torch.Tensor] = []
    k_list: tuple[int, ...] = ()
    from sklearn.exceptions import ConvergenceWarning

    limit = threadpool_limits(n_threads) if n_threads else contextlib.nullcontext()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped control fits; see max_iter
        for name in progress_bar(names, enabled=progress, desc="probing", unit="hook"):
            X = src.features(name, ex).numpy()
            d = X.shape[1]
            if not k_list:
                k_list = check_ks(ks, d) if ks is not None else default_ks(d)
            elif k_list[-1] > d:
                raise BadInputError(f"hook {name} has {d} dimensions, fewer than k={k_list[-1]}; probe it separately")
            Xtr, Xte = X[tr], X[te]
            p = fit(Xtr, y[tr])
            acc.append(p.score(Xte, y[te]))
            train_acc.append(p.score(Xtr, y[tr]))
            f1.append(f1_macro(y[te], p.predict(Xte)) if task == "classification" else float("nan"))
            dirs = torch.atleast_2d(p.direction_)
            dirs_all.append(dirs)
            bias.append(torch.from_numpy(p.intercept_).float())
            proj_std.append(float((Xtr @ dirs[0].numpy().astype(Xtr.dtype)).std()))
            cv_scores = [fit(Xtr[a], y[tr][a]).score(Xtr[b], y[tr][b]) for a, b in folds]
            cv_mean.append(float(np.mean(cv_scores)) if cv_scores else float("nan"))
            cv_std.append(float(np.std(cv_scores)) if cv_scores else float("nan"))
            if y_ctrl is not None and len(np.unique(y_ctrl[tr])) > 1:
                ctrl.append(fit(Xtr, y_ctrl[tr]).score(Xte, y_ctrl[te]))
            else:
                ctrl.append(float("nan"))
            order = rank_dimensions(Xtr, y[tr], method=ranking, task=task)
            accs, f1s = [], []
            for k in k_list:
                cols = order[:k].numpy()
                sp = fit(Xtr[:, cols], y[tr])
                accs.append(sp.score(Xte[:, cols], y[te]))
                f1s.append(f1_macro(y[te], sp.predict(Xte[:, cols])) if task == "classification" else float("nan"))
            sp_acc.append(accs)
            sp_f1.append(f1s)
            neurons.append(order[: k_list[-1]].clone())
            top.append(torch.tensor(X[:, int(order[0])], dtype=torch.float32))  # a copy: a view would keep X alive
            del X, Xtr, Xte
    accuracy = torch.tensor(acc)
    control_accuracy = torch.tensor(ctrl)
    return ProbeResult(
        hooks=tuple(names), ks=k_list, task=task, positions=positions_text(sel), pool=pool, ranking=ranking,
        classes=classes, accuracy=accuracy, train_accuracy=torch.tensor(train_acc), f1=torch.tensor(f1),
        cv_mean=torch.tensor(cv_mean), cv_std=torch.tensor(cv_std), control_accuracy=control_accuracy,
        selectivity=accuracy - control_accuracy, sparse_accuracy=torch.tensor(sp_acc), sparse_f1=torch.tensor(sp_f1),
        neurons=torch.stack(neurons), directions=torch.stack(dirs_all), intercepts=torch.stack(bias),
        projection_std=torch.tensor(proj_std), top_activations=torch.stack(top),
        example_labels=torch.from_numpy(y).float() if task == "regression" else torch.from_numpy(y).long(),
        is_test=test, n_seqs=src.n_seqs, model_id=src.model_id,
    )


__all__ = ["control_labels", "encode_labels", "probe"]
