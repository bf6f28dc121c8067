"""Models: the one :class:`Model` class, loading, architecture adapters and weight views.
The only package that knows Hugging Face module names."""

from interp.models.adapters import Adapter, Dims, WeightViews, adapter_for
from interp.models.circuits import composition_scores, factored_svd, ov_factors, qk_factors  # noqa: F401
from interp.models.encdec import EncoderDecoder
from interp.models.encdec_registry import ENCDEC_MODELS, load_encdec
from interp.models.encdec_view import DecoderView
from interp.models.model import Inputs, Model
from interp.models.registry import (
    KNOWN_MODELS,
    HubUnreachableError,
    from_hf,
    interp_home,
    load_model,
    supported_model_types,
)

__all__ = [
    "ENCDEC_MODELS", "KNOWN_MODELS", "Adapter", "DecoderView", "EncoderDecoder", "Dims", "HubUnreachableError", "Inputs", "Model", "WeightViews", "adapter_for", "from_hf",
    "interp_home", "load_encdec", "load_model", "supported_model_types",
]
