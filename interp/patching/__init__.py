"""Patching: activation patching sweeps, attribution patching (AtP, AtP*), path patching, back-patching.

Example:
    >>> import interp
    >>> from interp.patching import activation_patching, prepare
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             "When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")  # doctest: +SKIP
    >>> activation_patching(s, "resid_pre").plot()  # doctest: +SKIP
"""

from interp.patching.activation import COMPONENTS, activation_patching
from interp.patching.attribution import attribution_patching
from interp.patching.backpatch import back_patching
from interp.patching.metrics import Metric, normalize
from interp.patching.path import path_patching
from interp.patching.result import PatchingResult
from interp.patching.setup import Ablation, Noise, PatchingSetup, prepare

__all__ = ["COMPONENTS", "Ablation", "Metric", "Noise", "PatchingResult", "PatchingSetup", "activation_patching",
           "attribution_patching", "back_patching", "normalize", "path_patching", "prepare"]
