"""Probing: linear and k-sparse probes on any hook point (Gurnee et al. 2023), with control tasks
(Hewitt & Liang 2019), from an in-memory :class:`~interp.trace.Trace` or a
:class:`~interp.trace.TraceStore` streamed one hook at a time.

``probe(model, inputs, *, labels=..., hooks=..., positions=..., pool=...)`` returns a :class:`ProbeResult`;
probing reads activations only, so ``model`` may be ``None`` when ``inputs`` is a trace or store holding the
hooks. Positions follow :mod:`interp.sites.positions` (``-1``: each sequence's last real token). A probe's
direction becomes an intervention: ``res.intervention(layer, scale=...)`` (an ``Add``, steering along it) and
``res.removal(layer)`` (a ``Project`` that removes it).

Example:
    >>> from interp.probing import probe, synthetic_trace
    >>> tr, labels = synthetic_trace(n_seqs=40, seq_len=8, d=32, planted=(5,), seed=1)
    >>> res = probe(None, tr, labels=labels, hooks="resid_post", ks=[1, 2], progress=False)
    >>> res.top_neurons(0, k=1)
    [5]
"""

from interp.probing.data import ActivationSource, Examples, Pool, build_examples
from interp.probing.labels import BUILTIN_SETS, Label, LabelledSet, align_char_labels, token_labels
from interp.probing.probe import LinearProbe, Matrix, Targets, group_folds, split_by_sequence
from interp.probing.result import ProbeResult
from interp.probing.run import control_labels, encode_labels, probe
from interp.probing.sparse import RANKINGS, default_ks, rank_dimensions, scores
from interp.probing.synthetic import synthetic_trace

__all__ = [
    "BUILTIN_SETS", "RANKINGS", "ActivationSource", "Examples", "Label", "LabelledSet", "LinearProbe", "Matrix",
    "Pool", "ProbeResult", "Targets", "align_char_labels", "build_examples", "control_labels", "default_ks",
    "encode_labels", "group_folds", "probe", "rank_dimensions", "scores", "split_by_sequence", "synthetic_trace",
    "token_labels",
]
