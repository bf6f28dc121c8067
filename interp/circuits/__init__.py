"""Circuit discovery: a model's graph of heads, MLPs and the edges between them, exact edge interventions,
edge scores (exact patching, EAP, EAP-IG, ACDC; node-level variants; EAP per token position), faithfulness curves (CPR / CMD), and
models whose circuits are known.

Example:
    >>> import interp
    >>> from interp.circuits import discover, faithfulness, induction_task, load_toy
    >>> m = load_toy()
    >>> task = induction_task(m)
    >>> c = discover(m, task, method="eap-ig", progress=False)
    >>> curve = faithfulness(m, task, circuit=c)
    >>> round(float(curve.faithfulness[0]), 6), round(float(curve.faithfulness[-1]), 6)  # no edge, every edge
    (0.0, 1.0)
"""

from interp.circuits.compiled import (
    COMPILED,
    compiled_config,
    compiled_ids,
    compiled_outputs,
    compiled_task,
    compiled_truth,
    load_compiled,
)
from interp.circuits.engine import EdgeRunner
from interp.circuits.graph import Graph, build_graph
from interp.circuits.known import (
    IOI_PAIRS,
    TASKS,
    induction_heads,
    induction_task,
    ioi_task,
    load_toy,
    named_task,
    toy_truth,
    truth_circuit,
)
from interp.circuits.methods import METHODS, MIB_FRACTIONS, circuit_metric, discover, edge_auroc, faithfulness
from interp.circuits.positions import discover_by_position
from interp.circuits.result import Circuit, FaithfulnessCurve
from interp.circuits.task import CircuitTask, make_task

__all__ = ["COMPILED", "IOI_PAIRS", "METHODS", "TASKS", "MIB_FRACTIONS", "Circuit", "CircuitTask", "EdgeRunner", "FaithfulnessCurve", "Graph",
           "build_graph", "circuit_metric", "compiled_config", "compiled_ids", "compiled_outputs", "compiled_task",
           "compiled_truth", "discover", "discover_by_position", "edge_auroc", "faithfulness", "induction_heads", "induction_task",
           "ioi_task", "load_compiled", "load_toy", "make_task", "named_task", "toy_truth", "truth_circuit"]
