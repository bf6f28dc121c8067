"""Lenses: read the residual stream as next-token predictions, layer by layer, and measure what each layer does
(and :func:`logit_attrs`: each component's direct contribution to a logit difference).

Every function takes the model first, then the inputs (a text, texts, token ids, a Trace or a TraceStore),
then keyword options, and returns a :class:`~interp.trace.results.Result`.

Example:
    >>> import interp
    >>> from interp.lens import TunedLens, angular_distances, logit_lens
    >>> m = interp.load_model("smollm2-135m")
    >>> logit_lens(m, "The capital of France is", target=" Paris").top_tokens(layer=-1)[0]
    ' Paris'
    >>> angular_distances(m, "The capital of France is").best_block(4)
    4
    >>> TunedLens.load("data/lenses/smollm2-135m").apply(m, "The capital of France is").lens
    'tuned'
"""

from interp.lens.comparison import LensComparison, compare_lenses
from interp.lens.decoder_lens import DecoderLensResult, decoder_lens
from interp.lens.dla import LogitAttribution, logit_attrs
from interp.lens.latent_language import LanguageItem, language_token_sets, latent_language, load_language_prompts
from interp.lens.latent_language_result import LatentLanguageResult
from interp.lens.layer_metrics import BLOCK, angular_distances, skip_layer_loss, sublayer_similarity
from interp.lens.layer_metrics_result import AngularDistanceResult, SkipLossResult, SublayerSimilarityResult
from interp.lens.logit_lens import logit_lens
from interp.lens.result import LogitLensResult
from interp.lens.tuned_lens import TunedLens, fast_matmul_dtype, find_tuned_lens

__all__ = [
    "BLOCK", "AngularDistanceResult", "DecoderLensResult", "LanguageItem", "LatentLanguageResult", "LensComparison", "LogitAttribution",
    "LogitLensResult", "SkipLossResult", "SublayerSimilarityResult", "TunedLens", "angular_distances",
    "compare_lenses", "decoder_lens", "fast_matmul_dtype", "find_tuned_lens", "language_token_sets", "latent_language",
    "load_language_prompts", "logit_attrs", "logit_lens", "skip_layer_loss", "sublayer_similarity",
]
