"""Causal abstraction (Geiger et al.): does a high-level causal model describe what the network computes?

- a high-level model: :class:`CausalModel` (variables, parents, functions) and a :class:`CausalTask` that ties it
  to prompts and answers; shipped tasks :func:`hierarchical_equality`, :func:`ioi` and :func:`addition`
  (SmolLM2), :func:`toy_ioi`; :meth:`CausalTask.sample` draws base/source pairs with counterfactual answers;
- an :class:`Alignment`: each variable ↦ sites (:class:`AlignedSite`: hook, positions, heads, subspace);
- interchange interventions batched over pairs (one forward of the sources, one of the bases; several
  variables at once): :func:`iia` (IIA with a Wilson interval), :func:`iia_sweep` (layer × position × subspace
  size);
- subspaces: a fixed basis (a probe direction, SAE decoder rows) in an :class:`AlignedSite`, or learned by
  :func:`das` (DAS, Boundless DAS, low-rank DAS) into a :class:`SubspaceResult` usable as an
  :class:`~interp.hooks.SubspacePatch` and as probe directions;
- training to an alignment: :func:`train_iit` (IIT and strict IIT) on :func:`toy_transformer` models; two
  trained models ship (:func:`load_iit_model`: ``"iit-equality"``, ``"iit-ioi"``).

Example:
    >>> from interp.causal import AlignedSite, iia, load_iit_model
    >>> shipped = load_iit_model("iit-equality")
    >>> data = shipped.task.sample(128, variables=["WX", "WY"], seed=0)  # a two-source interchange
    >>> res = iia(shipped.model, data, alignment=[shipped.alignment,
    ...           {"WX": AlignedSite("mlp_out.0", positions=0), "WY": AlignedSite("mlp_out.0", positions=2)}],
    ...           progress=False)
    >>> [round(float(x), 1) for x in res.iia]  # the trained alignment, then two sites that hold nothing
    [1.0, 0.5]
"""

from interp.causal.alignment import AlignedSite, Alignment
from interp.causal.das import METHODS, das
from interp.causal.engine import RowPatch
from interp.causal.graph import CausalModel
from interp.causal.iia import iia, iia_sweep, task_accuracy
from interp.causal.iit import ablated_accuracy, toy_transformer, train_iit
from interp.causal.results import IIAResult, IIATable, IITResult, SubspaceResult, wilson
from interp.causal.shipped import SHIPPED, IITModel, load_iit_model
from interp.causal.task import Answer, CausalTask, InterchangeData, Prompt
from interp.causal.tasks import TASKS, addition, get_task, hierarchical_equality, ioi, toy_ioi

__all__ = [
    "METHODS", "SHIPPED", "TASKS", "AlignedSite", "Alignment", "Answer", "CausalModel", "CausalTask", "IIAResult",
    "IIATable", "IITModel", "IITResult", "InterchangeData", "Prompt", "RowPatch", "SubspaceResult",
    "ablated_accuracy", "addition", "das", "get_task", "hierarchical_equality", "iia", "iia_sweep", "ioi",
    "load_iit_model", "task_accuracy", "toy_ioi", "toy_transformer", "train_iit", "wilson",
]
