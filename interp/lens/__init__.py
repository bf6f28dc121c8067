"""Lenses: read the residual stream as next-token predictions, layer by layer.

Example:
    >>> import interp
    >>> from interp.lens import logit_lens
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> logit_lens(m, "The capital of France is", target=" Paris").plot()  # doctest: +SKIP
"""

from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult

__all__ = ["LogitLensResult", "logit_lens"]
