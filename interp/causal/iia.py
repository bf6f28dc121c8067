"""Interchange intervention accuracy (IIA): how often the network, with an alignment's sites taken from the
source runs, gives the high-level model's counterfactual answer.

:func:`iia` scores one or several alignments on the same pairs; :func:`iia_sweep` scores one variable
interchanged at one component over layers × positions (and subspace sizes, with subspaces learned by
:func:`~interp.causal.das`). Every batch of pairs costs one forward of the sources and one of the bases, the
interchanges of every alignment (or sweep cell) stacked in the base batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from interp.causal.alignment import AlignedSite, Alignment, Heads, ResolvedSite, resolve_alignment
from interp.causal.engine import encode_prompts, interchange_edits, predict, source_activations, tail_logits
from interp.causal.results import IIAResult, IIATable, wilson
from interp.causal.task import InterchangeData, answer_ids
from interp.errors import BadInputError, unknown_name
from interp.hooks import Intervention
from interp.models import Model
from interp.progress import progress as progress_bar
from interp.sites import Component, resolve

MAX_ROWS = 512  # base rows per stacked forward


def _ids(model: Model, inputs: InterchangeData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    vocab, tok = model.dims.d_vocab, model.tokenizer
    cand = None if inputs.candidates is None else answer_ids(vocab, tok, inputs.candidates, "candidate")
    return (answer_ids(vocab, tok, inputs.labels, "label"), answer_ids(vocab, tok, inputs.counterfactuals,
                                                                       "counterfactual"), cand)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"bad batch_size {batch_size!r}; valid: an int >= 1")


def evaluate(model: Model, inputs: InterchangeData, resolved: Sequence[Mapping[str, Sequence[ResolvedSite]]], *,
             batch_size: int = 64, target: str = "counterfactual", progress: bool | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct [alignment, example], base_correct [example])``: whether each interchange gives the
    counterfactual answer (``target="label"``: the base answer, for interchanges that should change nothing,
    like resample ablations of sites no variable is aligned to), and whether the unedited network gives the
    base answer."""
    _check_batch_size(batch_size)
    labels, cfs, cand = _ids(model, inputs)
    if target not in ("counterfactual", "label"):
        raise unknown_name("target", target, ("counterfactual", "label"))
    if target == "label":
        cfs = labels
    n = len(inputs)
    correct = torch.zeros(len(resolved), n, dtype=torch.bool)
    base_ok = torch.zeros(n, dtype=torch.bool)
    sites = list({rs.site: None for res in resolved for ss in res.values() for rs in ss})
    starts = range(0, n, batch_size)
    for s in progress_bar(starts, enabled=progress, desc="interchange", total=len(starts)):
        sub = inputs.subset(slice(s, s + batch_size))
        base = encode_prompts(model, sub.base)
        srcs = {v: encode_prompts(model, sub.sources[v]) for v in sub.variables}
        acts = source_activations(model, srcs, sites) if sites and srcs else {}
        b = base[0].shape[0]
        per = max(1, MAX_ROWS // b - 1)
        for c0 in range(0, max(1, len(resolved)), per):
            chunk = list(resolved[c0:c0 + per])
            first = b if c0 == 0 else 0  # the unedited bases ride along in the first chunk
            edits = interchange_edits(chunk, base, srcs, acts, first_row=first) if chunk else []
            reps = first // b + len(chunk)
            ids, mask = base[0].repeat(reps, 1), base[1].repeat(reps, 1)
            pred = predict(tail_logits(model, ids, mask, edits), cand).cpu()
            if first:
                base_ok[s:s + b] = pred[:b] == labels[s:s + b]
            for i in range(len(chunk)):
                correct[c0 + i, s:s + b] = pred[first + i * b:first + (i + 1) * b] == cfs[s:s + b]
    return correct, base_ok


def task_accuracy(model: Model, inputs: InterchangeData, *, interventions: Sequence[Intervention] = (),
                  batch_size: int = 64) -> float:
    """The share of bases on which the network gives the base answer (with ``interventions`` applied, e.g.
    ablations of the sites no variable is aligned to).

    Example:
        >>> from interp.causal import load_iit_model, task_accuracy
        >>> shipped = load_iit_model("iit-equality")
        >>> task_accuracy(shipped.model, shipped.task.sample(64, seed=2)) >= 0.98
        True
    """
    _check_batch_size(batch_size)
    labels, _, cand = _ids(model, inputs)
    ok = 0
    for s in range(0, len(inputs), batch_size):
        ids, mask = encode_prompts(model, inputs.base[s:s + batch_size])
        pred = predict(tail_logits(model, ids, mask, list(interventions)), cand).cpu()  # type: ignore[arg-type]
        ok += int((pred == labels[s:s + batch_size]).sum())
    return ok / len(inputs)


def iia(model: Model, inputs: InterchangeData, *, alignment: Alignment | Mapping[str, Any] | Sequence[Alignment],
        batch_size: int = 64, confidence: float = 0.95, progress: bool | None = None) -> IIAResult:
    """Interchange intervention accuracy of one alignment (or several, scored on the same pairs).

    Args:
        model: the network.
        inputs: base/source pairs (:meth:`CausalTask.sample`); every variable they interchange must be aligned.
        alignment: an :class:`Alignment` (or its ``{variable: sites}`` mapping), or a list of them.
        batch_size: pairs per forward.
        confidence: of the Wilson interval ``lower``..``upper``.
        progress: show a progress bar (``None``: the library switch).

    Returns:
        :class:`IIAResult` with one row per alignment.

    Raises:
        BadInputError: a variable of the data the alignment does not cover, a site the model lacks, a subspace
            larger than its site, base/source pairs of different lengths without a position mapping.

    Example:
        >>> from interp.causal import iia, load_iit_model
        >>> shipped = load_iit_model("iit-equality")
        >>> data = shipped.task.sample(64, variables=["WX"], seed=1)
        >>> res = iia(shipped.model, data, alignment=shipped.alignment, progress=False)
        >>> float(res.iia[0]) >= 0.98
        True
    """
    als = [alignment] if isinstance(alignment, Mapping) else list(alignment)
    if not als:
        raise BadInputError("no alignment given")
    als = [a if isinstance(a, Alignment) else Alignment(a) for a in als]
    resolved = [resolve_alignment(model, a, inputs.variables) for a in als]
    correct, base_ok = evaluate(model, inputs, resolved, batch_size=batch_size, progress=progress)
    rate, lo, hi = wilson(correct, confidence)
    return IIAResult(iia=rate, lower=lo, upper=hi, correct=correct, alignments=tuple(a.label() for a in als),
                     variables=inputs.variables, task=inputs.task, n=len(inputs), changed=inputs.changed,
                     base_accuracy=float(base_ok.float().mean()), confidence=confidence)


def _sweep_positions(model: Model, inputs: InterchangeData, positions: Sequence[int] | None
                     ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    lengths = {len(model.encode(p)[0][0]) if isinstance(p, str) else len(p) for p in inputs.base[:64]}
    if positions is None:
        if len(lengths) != 1:
            raise BadInputError("the bases have different token lengths; give positions= (counted from the end, "
                                "e.g. [-3, -2, -1]) for the sweep")
        positions = list(range(lengths.pop()))
    pos = tuple(int(p) for p in positions)
    first = inputs.base[0]
    toks = model.to_str_tokens(model.encode(first)[0])[0] if isinstance(first, str) else [str(t) for t in first]
    labels = []
    for p in pos:
        q = p + len(toks) if p < 0 else p
        labels.append(f"{p}:{toks[q]}" if 0 <= q < len(toks) and isinstance(first, str) else str(p))
    return pos, tuple(labels)


def iia_sweep(model: Model, inputs: InterchangeData, *, variable: str | None = None, component: str = "resid_post",
              layers: int | Sequence[int] | None = None, positions: Sequence[int] | None = None,
              heads: Heads = None, sizes: Sequence[int] = (0,), method: str = "das", test: float = 0.3,
              steps: int = 100, lr: float = 1e-2, batch_size: int = 64, seed: int = 0,
              progress: bool | None = None) -> IIATable:
    """IIA of one variable interchanged at ``component`` of each layer, at each position, for each subspace size.

    Args:
        model: the network.
        inputs: base/source pairs interchanging one variable.
        variable: the variable (default: the data's only one).
        component: a component short name (``"resid_post"``, ``"mlp_out"``, ``"z"``...).
        layers: layers to sweep (negative from the end; ``None``: every layer).
        positions: positions to sweep (``None``: every position, when the bases have equal lengths).
        heads: on per-head components, the heads interchanged (``None``: all).
        sizes: subspace sizes; ``0`` interchanges the whole activation, ``k > 0`` learns a ``k``-dim subspace
            per cell with :func:`~interp.causal.das` (``method``, ``steps``, ``lr``) on a training split and
            scores it on the held-out ``test`` share (every size is then scored on that split).
        batch_size: pairs per forward.
        seed: seeds the split and the training.
        progress: show progress bars (``None``: the library switch).

    Returns:
        :class:`IIATable` ``[layer, pos, size]``.

    Example:
        >>> from interp.causal import iia_sweep, load_iit_model
        >>> shipped = load_iit_model("iit-equality")
        >>> table = iia_sweep(shipped.model, shipped.task.sample(48, variables="WX"), component="mlp_out",
        ...                   progress=False)
        >>> table.iia.shape, table.headline()["at"]
        (torch.Size([2, 5, 1]), 'mlp_out.0@1')
    """
    from interp.causal.das import das

    var = _one_variable(inputs, variable)
    comp = Component.parse(component)
    n_layers = model.dims.n_layers
    if layers is None:
        layer_list = list(range(n_layers))
    else:
        layer_list = [layers] if isinstance(layers, int) else list(layers)
        for L in layer_list:
            if not -n_layers <= L < n_layers:
                raise BadInputError(f"layer {L} is out of range for a model of {n_layers} layers "
                                    f"(valid: {-n_layers}..{n_layers - 1})")
        layer_list = [L % n_layers for L in layer_list]
    resolve(f"{comp.short}.{layer_list[0]}", model.sites())  # the model has the component (else: close matches)
    pos, pos_labels = _sweep_positions(model, inputs, positions)
    size_list = [int(k) for k in sizes]
    if not size_list or any(k < 0 for k in size_list):
        raise BadInputError(f"bad sizes {list(sizes)!r}; valid: ints >= 0 (0: the whole activation)")
    learn = any(k > 0 for k in size_list)
    train, held = inputs.split(test, seed) if learn else (inputs, inputs)
    cells = [(i, j) for i in range(len(layer_list)) for j in range(len(pos))]
    full = [{var: [AlignedSite(f"{comp.short}.{layer_list[i]}", positions=pos[j], heads=heads)]} for i, j in cells]
    correct = torch.zeros(len(layer_list), len(pos), len(size_list), len(held), dtype=torch.bool)
    by_size: dict[int, list[Alignment]] = {}
    for k in size_list:
        if k == 0:
            by_size[k] = [Alignment(a) for a in full]
            continue
        als = []
        for (i, j) in progress_bar(cells, enabled=progress, desc=f"{method} k={k}"):
            site = AlignedSite(f"{comp.short}.{layer_list[i]}", positions=pos[j], heads=heads)
            learned = das(model, train, site=site, variable=var, k=k, method=method, steps=steps, lr=lr,  # type: ignore[arg-type]
                          test=held, seed=seed, batch_size=batch_size, progress=False)
            als.append(Alignment({var: learned.site()}))
        by_size[k] = als
    base_ok = None
    for s, k in enumerate(size_list):
        resolved = [resolve_alignment(model, a, held.variables) for a in by_size[k]]
        got, base_ok = evaluate(model, held, resolved, batch_size=batch_size, progress=progress)
        correct[:, :, s] = got.view(len(layer_list), len(pos), len(held))
    rate, lo, hi = wilson(correct)
    assert base_ok is not None
    return IIATable(iia=rate, lower=lo, upper=hi, correct=correct, layers=tuple(layer_list), positions=pos,
                    position_labels=pos_labels, sizes=tuple(size_list), component=comp.short, variable=var,
                    method=method if learn else "interchange", task=inputs.task, n=len(held), changed=held.changed,
                    base_accuracy=float(base_ok.float().mean()))


def _one_variable(inputs: InterchangeData, variable: str | None) -> str:
    if variable is None:
        if len(inputs.variables) != 1:
            raise BadInputError(f"the data interchanges {list(inputs.variables)}; name one with variable=")
        return inputs.variables[0]
    if variable not in inputs.variables:
        raise unknown_name("variable", variable, inputs.variables, hint="(the variables the data interchanges)")
    if len(inputs.variables) != 1:
        raise BadInputError(f"a sweep interchanges one variable, but the data interchanges {list(inputs.variables)}")
    return variable


__all__ = ["evaluate", "iia", "iia_sweep", "task_accuracy"]
