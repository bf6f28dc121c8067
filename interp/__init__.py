"""interp: a mechanistic-interpretability workbench.

Example:
    >>> import interp
    >>> model = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> res = model.run("The capital of France is", capture="blocks.*.hook_resid_post")  # doctest: +SKIP
    >>> res.trace.stack("hook_resid_post").shape  # doctest: +SKIP
    torch.Size([30, 1, 5, 576])
"""

from interp.hooks import Ablate, Add, Clamp, Intervention, Lambda, Patch, Scale, Site
from interp.trace import HookedModel, Manifest, RunResult, Trace
from interp.trace import load as load_model
from interp.trace import wrap as wrap_model

__version__ = "0.1.0"

__all__ = [
    "Ablate", "Add", "Clamp", "HookedModel", "Intervention", "Lambda", "Manifest", "Patch", "RunResult",
    "Scale", "Site", "Trace", "load_model", "wrap_model",
]
