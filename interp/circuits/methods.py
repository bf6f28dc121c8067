"""Scoring edges (or nodes): exact patching, EAP, EAP-IG and ACDC; faithfulness curves; AUROC against a truth.

- ``exact``: every edge (node: every edge out of the node) patched alone, the metric change, many per forward.
- ``eap`` (Syed et al.): ``(src_u - clean_u) · d m / d input_v`` summed over batch and positions: one
  forward per run plus one backward. Node level: the sum over a node's outgoing edges, which is the same
  first-order estimate for patching the node's output.
- ``eap-ig`` (Hanna et al. 2024, integrated gradients over the inputs): the gradient averaged over ``steps``
  runs whose input embeddings go from the source run's to the clean ones (``k / steps``, ``k = 1..steps``);
  ``steps=1`` is EAP exactly.
- ``eap-ig-act`` (MIB's EAP-IG over activations): the gradient at ``v``'s input averaged over ``steps`` runs
  in which the upstream node's output (MIB's node: the input, a layer's heads together, an MLP) goes from the
  source run's to the clean one (``k / steps``) while the rest of the model runs clean; one run per node and
  step. ``steps=1`` is EAP; over many steps the sum over a node's edges approaches exact node patching
  (integrated gradients' completeness).
- ``acdc`` (Conmy et al. 2023): receivers in reverse topological order, each incoming edge tried in turn: it
  stays patched when the distance of the metric from the clean run (KL for ``metric="kl"``, else
  ``|m - m_clean|``) grows by less than ``threshold``. Node level: the same over senders.

Example:
    >>> from interp.circuits import discover, induction_task, load_toy
    >>> m = load_toy()
    >>> c = discover(m, induction_task(m), method="eap")
    >>> c
    Circuit(scores[unit=81], method='eap', level='edge', selected=0, of=81)
    >>> c.top(3).nodes()
    ['input', 'L1H0', 'L1H1', 'L1H2']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import torch

from interp.circuits.engine import DEFAULT_BUDGET, EdgeRunner
from interp.circuits.graph import Graph, build_graph
from interp.circuits.result import Circuit, FaithfulnessCurve
from interp.circuits.task import CircuitTask
from interp.errors import BadInputError, bad_value
from interp.models import Model
from interp.progress import progress as progress_bar

Method = Literal["exact", "eap", "eap-ig", "eap-ig-act", "acdc"]
METHODS = ("exact", "eap", "eap-ig", "eap-ig-act", "acdc")
MIB_FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _runner(model: Model, task: CircuitTask, graph: Graph | None, runner: EdgeRunner | None,
            memory_budget: int) -> EdgeRunner:
    if runner is not None:
        return runner
    return EdgeRunner(model, task, graph=graph or build_graph(model), memory_budget=memory_budget)


def discover(
    model: Model,
    inputs: CircuitTask,
    *,
    method: Method = "eap-ig",
    level: Literal["edge", "node"] = "edge",
    steps: int = 5,
    threshold: float = 0.01,
    graph: Graph | None = None,
    runner: EdgeRunner | None = None,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> Circuit:
    """Score every edge (or node) of ``model``'s graph for ``task``.

    Args:
        model: a decoder of a supported family (see :func:`~interp.circuits.build_graph`).
        inputs: the task, a :class:`~interp.circuits.CircuitTask` (:func:`~interp.circuits.make_task`).
        method: ``"exact"``, ``"eap"``, ``"eap-ig"`` (over the input embeddings), ``"eap-ig-act"`` (over each
            upstream node's activations) or ``"acdc"`` (module docs).
        level: ``"edge"`` or ``"node"`` (senders: the input, heads, MLPs).
        steps: EAP-IG's interpolation steps (both variants).
        threshold: ACDC's threshold on the growth of the distance from the clean run.
        graph: the graph (default :func:`~interp.circuits.build_graph`).
        runner: a prepared :class:`~interp.circuits.engine.EdgeRunner` to reuse (its clean and source runs).
        memory_budget: bytes of stacked activations per forward (exact patching, ACDC).
        progress: progress bars (``None``: the library switch).

    Returns:
        A :class:`~interp.circuits.Circuit`: scores per unit; ``selected`` is ACDC's kept units (others: none).
    """
    if method not in METHODS:
        raise bad_value("method", method, ", ".join(METHODS))
    if level not in ("edge", "node"):
        raise bad_value("level", level, "'edge' or 'node'")
    if method in ("eap-ig", "eap-ig-act") and (not isinstance(steps, int) or steps < 1):
        raise bad_value("steps", steps, "an int >= 1")
    task = inputs
    r = _runner(model, task, graph, runner, memory_budget)
    g = r.graph
    t0 = time.perf_counter()
    selected = None
    if method == "exact":
        scores = _exact(r, level, progress)
    elif method in ("eap", "eap-ig"):
        scores = _eap(r, level, steps if method == "eap-ig" else 1)
    elif method == "eap-ig-act":
        scores = _per_level(r, r.activation_ig(steps=steps), level)
    else:
        scores, selected = _acdc(r, level, threshold, progress)
    meta = {"seconds": time.perf_counter() - t0, "ablation": task.ablation, "task": task.name}
    if method in ("eap-ig", "eap-ig-act"):
        meta["steps"] = steps
    if method == "acdc":
        meta["threshold"] = threshold
    return Circuit.from_graph(g, scores, selected, method=method, metric=task.metric_name, level=level,
                              clean_value=r.clean_value, corrupted_value=r.corrupted_value, model=model.name,
                              meta=meta)


def unit_masks(graph: Graph, units: torch.Tensor, level: str) -> torch.Tensor:
    """``[R, sender, receiver]`` masks that patch each unit alone (edge: one edge; node: all its out-edges)."""
    adj = graph.adjacency().float()
    masks = torch.zeros(len(units), *adj.shape)
    if level == "edge":
        e = graph.edges[units]
        masks[torch.arange(len(units)), e[:, 0], e[:, 1]] = 1.0
    else:
        masks[torch.arange(len(units)), units] = adj[units]
    return masks


def _exact(r: EdgeRunner, level: str, progress: bool | None) -> torch.Tensor:
    g = r.graph
    n = g.n_edges if level == "edge" else len(g.senders)
    out = torch.empty(n)
    chunk = r.chunk_size()
    for c0 in progress_bar(range(0, n, chunk), desc=f"exact {level} patching", enabled=progress, leave=False):
        idx = torch.arange(c0, min(n, c0 + chunk))
        with torch.no_grad():
            out[idx] = r.metric(unit_masks(g, idx, level)).float().cpu()
    return out - r.clean_value


def _eap(r: EdgeRunner, level: str, steps: int) -> torch.Tensor:
    return _per_level(r, r.eap_scores(steps=steps).float().cpu(), level)


def _per_level(r: EdgeRunner, dense: torch.Tensor, level: str) -> torch.Tensor:
    """``[sender, receiver]`` scores → per edge, or per sender (the sum over its edges)."""
    g = r.graph
    edge = dense[g.edges[:, 0], g.edges[:, 1]]
    if level == "edge":
        return edge
    return torch.zeros(len(g.senders)).index_add_(0, g.edges[:, 0], edge)


def _acdc(r: EdgeRunner, level: str, threshold: float, progress: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    g = r.graph
    kl = r.task.metric == "kl"

    def distance(masks: torch.Tensor) -> float:
        with torch.no_grad():
            v = float(r.metric(masks)[0])
        return v if kl else abs(v - r.clean_value)

    n = g.n_edges if level == "edge" else len(g.senders)
    cur = torch.zeros(1, *g.adjacency().shape)
    cur_d = distance(cur)
    scores = torch.zeros(n)
    kept = torch.ones(n, dtype=torch.bool)
    # edges are sorted by receiver, then sender, and senders are in forward order: reversed, both are in
    # reverse topological order (ACDC's: the receivers nearest the logits first)
    order = list(range(n - 1, -1, -1))
    for u in progress_bar(order, desc="acdc", enabled=progress, leave=False):
        trial = torch.maximum(cur, unit_masks(g, torch.tensor([u]), level))
        d = distance(trial)
        scores[u] = d - cur_d
        if d - cur_d < threshold:
            cur, cur_d = trial, d
            kept[u] = False
    return scores, kept


def faithfulness(
    model: Model,
    inputs: CircuitTask,
    *,
    circuit: Circuit,
    fractions: Sequence[float] = MIB_FRACTIONS,
    runner: EdgeRunner | None = None,
    memory_budget: int = DEFAULT_BUDGET,
) -> FaithfulnessCurve:
    """The faithfulness of ``circuit``'s top units at each fraction of the units, with CPR and CMD (MIB).

    Each circuit keeps the top ``round(fraction * units)`` units by ``|score|``; every edge outside it is patched
    from the source run. All sizes go through stacked forwards. See :class:`~interp.circuits.FaithfulnessCurve`.

    Args:
        model: the model.
        inputs: the task (:class:`~interp.circuits.CircuitTask`) the circuit was found for.
        circuit: the scored :class:`~interp.circuits.Circuit`.
        fractions: increasing fractions of the units in ``[0, 1]`` (default MIB's).
        runner: a prepared :class:`~interp.circuits.EdgeRunner` to reuse.
        memory_budget: bytes of stacked activations per forward.
    """
    task = inputs
    fr = torch.tensor([float(x) for x in fractions])
    if fr.numel() < 2 or bool((fr < 0).any() | (fr > 1).any()) or bool((fr.diff() <= 0).any()):
        raise bad_value("fractions", list(fractions), "at least two increasing fractions in [0, 1]")
    r = runner or EdgeRunner(model, task, graph=circuit.graph_for(model), memory_budget=memory_budget)
    if r.graph.senders != circuit.senders or r.graph.receivers != circuit.receivers:
        raise BadInputError("the circuit was found on another graph than this model's")
    adj = r.graph.adjacency().float()
    masks, counts = [], []
    for f in fr.tolist():
        k = round(f * circuit.n_units)
        c = circuit.top(k)
        keep = r.graph.dense(c.edge_mask().float())
        masks.append(adj - keep)
        counts.append(k)
    vals = r.metrics(torch.stack(masks))
    full, empty = r.clean_value, r.corrupted_value
    if abs(full - empty) < 1e-12:
        raise BadInputError("the clean and fully ablated runs have the same metric: faithfulness is undefined")
    f_vals = (vals - empty) / (full - empty)
    cpr = float(torch.trapezoid(f_vals, fr))
    cmd = float(torch.trapezoid((1 - f_vals).abs(), fr))
    return FaithfulnessCurve(fractions=fr, n_units=torch.tensor(counts), faithfulness=f_vals, cpr=cpr, cmd=cmd,
                             full_value=full, empty_value=empty, method=circuit.method, level=circuit.level,
                             meta={"task": task.name, "ablation": task.ablation})


def circuit_metric(model: Model, inputs: CircuitTask, *, circuits: Sequence[Circuit],
                   runner: EdgeRunner | None = None) -> torch.Tensor:
    """The metric with only each circuit's selected edges clean (all others patched): ``[circuit]``.

    Args:
        model: the model.
        inputs: the task (:class:`~interp.circuits.CircuitTask`).
        circuits: circuits over the model's graph (their ``selected`` units are kept clean).
        runner: a prepared :class:`~interp.circuits.EdgeRunner` to reuse.
    """
    if not circuits:
        raise BadInputError("no circuits given")
    r = runner or EdgeRunner(model, inputs, graph=circuits[0].graph_for(model))
    adj = r.graph.adjacency().float()
    masks = torch.stack([adj - r.graph.dense(c.edge_mask().float()) for c in circuits])
    return r.metrics(masks)


def edge_auroc(circuit: Circuit, truth: Circuit) -> float:
    """AUROC of ``|score|`` against the true circuit's selected units, ties counted against the method
    (pessimistic, as InterpBench): ``P(|s_pos| > |s_neg|)`` over pairs, a tie counting 0.

    Example:
        >>> import torch
        >>> from interp.circuits import Circuit
        >>> kw = dict(edges=torch.tensor([[0, 0], [0, 1], [1, 1]]), senders=("input", "L0H0"),
        ...           receivers=("L0H0.q", "logits"))
        >>> truth = Circuit(scores=torch.tensor([1.0, 0, 0]), selected=torch.tensor([True, False, False]), **kw)
        >>> edge_auroc(Circuit(scores=torch.tensor([3.0, 1.0, 3.0]), selected=torch.zeros(3, dtype=torch.bool), **kw), truth)
        0.5
    """
    if truth.level != circuit.level or truth.n_units != circuit.n_units:
        raise BadInputError(f"truth ({truth.level}, {truth.n_units} units) and circuit ({circuit.level}, "
                            f"{circuit.n_units} units) are over different units")
    s = circuit.scores.abs().nan_to_num(0.0)
    pos, neg = s[truth.selected], s[~truth.selected]
    if pos.numel() == 0 or neg.numel() == 0:
        raise BadInputError("the true circuit must have both members and non-members")
    return float((pos[:, None] > neg[None, :]).float().mean())


__all__ = ["METHODS", "MIB_FRACTIONS", "Method", "circuit_metric", "discover", "edge_auroc", "faithfulness",
           "unit_masks"]
