"""Sparse features: SAEs trained on stored activations, cross-layer feature flow, steering.

- :class:`SparseAutoencoder` (TopK or ReLU + L1) ``fit`` on a :class:`~interp.trace.TraceStore` hook;
  saved as safetensors + JSON, loads SAELens' layout too; :func:`evaluate_sae` (EV, L0, dead
  fraction, spliced cross-entropy); :func:`feature_dashboard`.
- :func:`classify_features` / :func:`feature_flow` (Laptev et al. 2025): data-free matching of
  features across layers and sublayers; :func:`validate_flow` checks edges with data.
- :func:`steer` with :class:`FeatureEdit` (or :func:`path_edits` of a flow graph).

Example:
    >>> import torch
    >>> from interp.features import SAEConfig, SparseAutoencoder
    >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=2048), progress=False)
    >>> sae.fit(torch.randn(2048, 16)).encode(torch.randn(2, 16)).shape
    torch.Size([2, 32])
"""

from interp.features.dashboard import FeatureDashboard, feature_activations, feature_dashboard
from interp.features.evaluate import SAEEvaluation, evaluate_sae, spliced_ce
from interp.features.flow import (
    chance_similarity,
    classify_features,
    cosine_matrix,
    feature_flow,
    point_of,
    promoted_tokens,
    similarity,
)
from interp.features.flow_result import FeatureClasses, FlowGraph
from interp.features.sae import SAEConfig, SparseAutoencoder, load_saes
from interp.features.saelens import load_saelens, save_saelens
from interp.features.steer import FeatureEdit, SteeringResult, path_edits, steer
from interp.features.validate import FlowValidation, validate_flow

__all__ = [
    "FeatureClasses", "FeatureDashboard", "FeatureEdit", "FlowGraph", "FlowValidation", "SAEConfig", "SAEEvaluation",
    "SparseAutoencoder", "SteeringResult", "chance_similarity", "classify_features", "cosine_matrix", "evaluate_sae", "feature_activations",
    "feature_dashboard", "feature_flow", "load_saelens", "load_saes", "path_edits", "point_of", "promoted_tokens", "save_saelens",
    "similarity", "spliced_ce", "steer", "validate_flow",
]
