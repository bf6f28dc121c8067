"""Lenses: read the residual stream as next-token predictions, layer by layer, and measure what each layer does.

Example:
    >>> import interp
    >>> from interp.lens import TunedLens, angular_distances, logit_lens
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> logit_lens(m, "The capital of France is", target=" Paris").plot()  # doctest: +SKIP
    >>> angular_distances(m, "The capital of France is").best_block(4)  # doctest: +SKIP
    >>> TunedLens.load("data/lenses/smollm2-135m").apply(m, "The capital of France is").plot()  # doctest: +SKIP
"""

from interp.lens.comparison import LensComparison, compare_lenses
from interp.lens.layer_metrics import angular_distances, skip_layer_loss, sublayer_similarity
from interp.lens.layer_metrics_result import AngularDistanceResult, SkipLossResult, SublayerSimilarityResult
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult
from interp.lens.tuned_lens import TunedLens, find_tuned_lens

__all__ = [
    "AngularDistanceResult", "LensComparison", "LogitLensResult", "SkipLossResult", "SublayerSimilarityResult",
    "TunedLens", "angular_distances", "compare_lenses", "find_tuned_lens", "logit_lens", "skip_layer_loss", "sublayer_similarity",
]
