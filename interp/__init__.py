"""interp: a mechanistic-interpretability workbench.

One model class (:class:`Model`), one vocabulary of hook points, heads and positions (:mod:`interp.sites`),
one trace format (:class:`Trace`, :class:`~interp.trace.TraceStore`), interventions (:mod:`interp.hooks`),
and tools that take ``(model, inputs, *, options)`` and return results with one surface
(:class:`~interp.trace.results.Result`).

Example:
    >>> import interp
    >>> model = interp.load_model("smollm2-135m")
    >>> res = model.run("The capital of France is", capture="resid_post")
    >>> res.trace.stack("resid_post").shape
    torch.Size([30, 1, 5, 576])
"""

from interp.errors import (
    BadInputError,
    CorruptStoreError,
    InterpError,
    MissingDependencyError,
    ModelMismatchError,
    SchemaVersionError,
    UnknownNameError,
)
from interp.hooks import Ablate, Add, Clamp, Intervention, Lambda, Patch, Scale
from interp.models import Inputs, Model, from_hf, load_model
from interp.progress import quiet
from interp.sites import HeadRef, Site
from interp.trace import Manifest, Result, RunResult, Trace, TraceStore, load_result
from interp.version import __version__

__all__ = [
    "Ablate", "Add", "BadInputError", "Clamp", "CorruptStoreError", "HeadRef", "Inputs", "InterpError",
    "Intervention", "Lambda", "Manifest", "MissingDependencyError", "Model", "ModelMismatchError", "Patch",
    "Result", "RunResult", "Scale", "SchemaVersionError", "Site", "Trace", "TraceStore", "UnknownNameError",
    "__version__", "from_hf", "load_model", "load_result", "quiet",
]
