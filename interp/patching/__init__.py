"""Patching: activation patching sweeps, attribution patching (AtP, AtP*), path patching, back-patching.

Every tool is called ``tool(model, inputs, *, corrupt=..., answer=..., wrong=..., metric=..., ...)``:
``inputs`` are the clean prompt(s), ``corrupt`` the corrupted prompt(s), ``Noise(...)`` or ``Ablation(...)``.
To run several sweeps on the same runs, :func:`prepare` them once and pass the :class:`PatchingSetup` as
``inputs``. Components, layers, positions and heads are spelled as everywhere in interp
(:mod:`interp.sites`); results are :class:`PatchingResult`.

Example:
    >>> import interp
    >>> from interp.patching import activation_patching, prepare
    >>> m = interp.load_model("smollm2-135m")
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
    >>> res = activation_patching(m, s, component="resid_pre", layers=[0, -1], positions=[9, -1], progress=False)
    >>> res.values.shape, res.labels()["pos"]
    (torch.Size([2, 2]), ['9:  John', '13:  to'])
"""

from interp.patching.activation import COMPONENTS, activation_patching
from interp.patching.attribution import attribution_patching
from interp.patching.backpatch import back_patching
from interp.patching.conflicts import (
    ConflictHeads,
    ConflictIntervention,
    conflict_heads,
    conflict_intervention,
    dual_intervention,
    load_conflicts,
)
from interp.patching.encdec import ENCDEC_COMPONENTS, EncDecPatchingSetup, prepare_encdec
from interp.patching.metrics import Metric, normalize
from interp.patching.path import path_patching
from interp.patching.result import PatchingResult
from interp.patching.setup import Ablation, Noise, PatchingSetup, prepare

__all__ = ["COMPONENTS", "ENCDEC_COMPONENTS", "Ablation", "ConflictHeads", "ConflictIntervention", "EncDecPatchingSetup",
           "Metric", "Noise", "PatchingResult", "PatchingSetup", "activation_patching", "attribution_patching",
           "back_patching", "conflict_heads", "conflict_intervention", "dual_intervention", "load_conflicts", "normalize",
           "path_patching", "prepare", "prepare_encdec"]
