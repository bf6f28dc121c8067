"""Sparse features: SAEs trained on stored activations, cross-layer feature flow, steering.

- :class:`SparseAutoencoder` (TopK or ReLU + L1) ``fit`` on a :class:`~interp.trace.TraceStore` hook, a trace or
  rows; saved as safetensors + JSON (class, schema and interp version), loads interp 0.1's files and SAELens'
  layout too. :func:`evaluate_sae` (EV, L0, dead fraction, spliced cross-entropy), :func:`spliced_ce`,
  :func:`feature_dashboard`.
- :func:`classify_features` / :func:`feature_flow` (Laptev et al. 2025): data-free matching of
  features across layers and sublayers; :func:`validate_flow` checks edges with data.
- :class:`Transcoder` (MLP input → MLP output, optional skip) trained by the same step;
  :func:`train_on_model` trains SAEs and transcoders together on the fly from forwards of the model
  (stopped after the last needed layer, rows shuffled across a buffer of many batches).
- :class:`CrossLayerTranscoder`: one dictionary for all MLPs, each layer's features writing to that and every later
  MLP output, trained by the same fast step.
- :func:`attribution_graph`: per-layer or cross-layer transcoders, frozen attention and norms, direct effects between
  active features, token embeddings, error nodes and the top logits, pruned by influence (:class:`AttributionGraph`);
  :func:`validate_graph` clamps features in the model and correlates the changes with the graph's prediction.
- :func:`steer` with :mod:`interp.hooks` interventions: ``FeatureEdit(site, sae=..., feature=...)``, or
  :func:`path_edits` of a flow graph; ``Splice(site, sae=...)`` replaces an activation by its reconstruction.

Every tool takes ``(model, inputs, *, options)`` (weight-only ones ``(model, *, options)``); SAEs come as
``sae=`` or ``saes={hook: sae}`` with hooks in any :mod:`interp.sites` spelling.

Example:
    >>> import torch
    >>> from interp.features import SAEConfig, SparseAutoencoder
    >>> sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=2048), progress=False)
    >>> sae.fit(torch.randn(2048, 16)).encode(torch.randn(2, 16)).shape
    torch.Size([2, 32])
"""

from interp.features.clt import CrossLayerTranscoder
from interp.features.dashboard import FeatureDashboard, feature_activations, feature_dashboard
from interp.features.evaluate import SAEEvaluation, SplicedLoss, evaluate_sae, spliced_ce
from interp.features.flow import (
    chance_similarity,
    classify_features,
    cosine_matrix,
    feature_flow,
    promoted_tokens,
    similarity,
)
from interp.features.flow_result import FeatureClasses, FlowGraph
from interp.features.graph import AttributionGraph, attribution_graph
from interp.features.graph_validate import GraphValidation, validate_graph
from interp.features.points import canonical_hook, point_of
from interp.features.sae import SAEConfig, SparseAutoencoder, load_saes
from interp.features.saelens import load_saelens, save_saelens
from interp.features.steer import SteeringResult, describe, path_edits, steer
from interp.features.stream import activation_stream, pack_tokens, train_on_model
from interp.features.transcoder import (
    Transcoder,
    TranscoderEvaluation,
    evaluate_transcoder,
    mlp_in_hook,
    transcoder_ce,
)
from interp.features.validate import FlowValidation, validate_flow

__all__ = [
    "AttributionGraph", "attribution_graph", "CrossLayerTranscoder", "FeatureClasses", "FeatureDashboard", "FlowGraph", "FlowValidation", "GraphValidation", "SAEConfig", "SAEEvaluation",
    "SparseAutoencoder", "SplicedLoss", "SteeringResult", "Transcoder", "TranscoderEvaluation",
    "activation_stream", "canonical_hook", "chance_similarity", "classify_features", "cosine_matrix", "describe",
    "evaluate_sae", "evaluate_transcoder", "feature_activations", "feature_dashboard", "feature_flow",
    "load_saelens", "load_saes", "mlp_in_hook", "pack_tokens", "path_edits", "point_of", "promoted_tokens",
    "save_saelens", "similarity", "spliced_ce", "steer", "train_on_model", "transcoder_ce", "validate_flow", "validate_graph",
]
