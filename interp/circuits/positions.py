"""Edge scores split over token positions: where in the sequence each edge of a circuit carries the effect.

An edge ``u -> v`` meets at every position ``p`` of the residual stream: ``u`` writes there and ``v`` reads
there (a head's key and value inputs at ``p`` feed later queries through the pattern, but their edge from
``u`` is at ``p``). EAP's score is a sum over positions, ``Σ_p Σ_batch (src_u − clean_u)[p] · ∂m/∂input_v[p]``;
keeping ``p`` costs nothing more than the score itself: the same one forward and backward (EAP-IG: ``steps``
of them). The scores summed over positions are :func:`~interp.circuits.discover`'s, and
``Circuit.plot(positions=True)`` draws the circuit with one node per (node, position).
"""

from __future__ import annotations

from typing import Literal

import torch

from interp.circuits.engine import DEFAULT_BUDGET, EdgeRunner
from interp.circuits.graph import Graph, build_graph
from interp.circuits.result import Circuit
from interp.circuits.task import CircuitTask
from interp.errors import bad_value
from interp.models import Model


def discover_by_position(
    model: Model,
    inputs: CircuitTask,
    *,
    method: Literal["eap", "eap-ig"] = "eap",
    level: Literal["edge", "node"] = "edge",
    steps: int = 5,
    graph: Graph | None = None,
    runner: EdgeRunner | None = None,
    memory_budget: int = DEFAULT_BUDGET,
) -> Circuit:
    """Score every edge (or node) of ``model``'s graph per token position, with EAP or EAP-IG (over the inputs).

    Args:
        model: a decoder of a supported family (see :func:`~interp.circuits.build_graph`).
        inputs: the task (:func:`~interp.circuits.make_task`); its prompts share one length, so a position is
            the same token slot in every prompt.
        method: ``"eap"`` or ``"eap-ig"`` (``steps`` interpolated input embeddings, as ``discover``).
        level: ``"edge"`` or ``"node"`` (a sender's score is the sum over its outgoing edges).
        steps: EAP-IG's interpolation steps.
        graph: the graph (default :func:`~interp.circuits.build_graph`).
        runner: a prepared :class:`~interp.circuits.engine.EdgeRunner` to reuse.
        memory_budget: bytes of stacked activations per forward.

    Returns:
        A :class:`~interp.circuits.Circuit` whose ``position_scores [unit, pos]`` sum to its ``scores [unit]``, with
        ``positions`` labelling each position by its index and the first prompt's token there.

    Example:
        >>> from interp.circuits import discover, induction_task, load_toy
        >>> m = load_toy()
        >>> task = induction_task(m)
        >>> c = discover_by_position(m, task)
        >>> c.position_scores.shape  # [edge, pos]
        torch.Size([81, 19])
        >>> bool(torch.allclose(c.scores, discover(m, task, method="eap", progress=False).scores, atol=1e-5))
        True
        >>> fig = c.top(5).plot(positions=True)  # one node per (node, position)
    """
    if method not in ("eap", "eap-ig"):
        raise bad_value("method", method, "'eap' or 'eap-ig' (the methods whose scores are sums over positions)")
    if level not in ("edge", "node"):
        raise bad_value("level", level, "'edge' or 'node'")
    if method == "eap-ig" and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise bad_value("steps", steps, "an int >= 1")
    task = inputs
    if runner is None:
        runner = EdgeRunner(model, task, graph=graph if graph is not None else build_graph(model),
                            memory_budget=memory_budget)
    g = runner.graph
    grads = runner.receiver_grads(steps=steps if method == "eap-ig" else 1)  # [batch, pos, receiver, d]
    diff = (runner.src_out - runner.clean_out).float()  # [batch, pos, sender, d]
    dense = torch.einsum("bpsd,bprd->psr", diff, grads.float()).cpu()  # [pos, sender, receiver]
    per_edge = dense[:, g.edges[:, 0], g.edges[:, 1]].T.contiguous()  # [edge, pos]
    if level == "node":
        per_unit = torch.zeros(len(g.senders), per_edge.shape[1]).index_add_(0, g.edges[:, 0], per_edge)
    else:
        per_unit = per_edge
    return Circuit.from_graph(g, per_unit.sum(1), method=method, metric=task.metric_name, level=level,
                              clean_value=runner.clean_value, corrupted_value=runner.corrupted_value,
                              model=model.name, position_scores=per_unit, positions=_labels(model, task),
                              meta={"steps": steps if method == "eap-ig" else 1, "task": task.name})


def _labels(model: Model, task: CircuitTask) -> tuple[str, ...]:
    """``"3:' Mary'"``: each position's index and the first prompt's token there (the index alone without a
    tokenizer)."""
    ids = task.input_ids[:1].cpu()
    if model.tokenizer is None:
        return tuple(str(p) for p in range(ids.shape[1]))
    return tuple(f"{p}:{t!r}" for p, t in enumerate(model.to_str_tokens(ids)[0]))


__all__ = ["discover_by_position"]
