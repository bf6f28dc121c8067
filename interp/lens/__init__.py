"""Lenses: read the residual stream as next-token predictions, layer by layer, and measure what each layer does.

Example:
    >>> import interp
    >>> from interp.lens import angular_distances, logit_lens
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> logit_lens(m, "The capital of France is", target=" Paris").plot()  # doctest: +SKIP
    >>> angular_distances(m, "The capital of France is").best_block(4)  # doctest: +SKIP
"""

from interp.lens.layer_metrics import angular_distances, skip_layer_loss, sublayer_similarity
from interp.lens.layer_metrics_result import AngularDistanceResult, SkipLossResult, SublayerSimilarityResult
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult

__all__ = [
    "AngularDistanceResult", "LogitLensResult", "SkipLossResult", "SublayerSimilarityResult", "angular_distances",
    "logit_lens", "skip_layer_loss", "sublayer_similarity",
]
