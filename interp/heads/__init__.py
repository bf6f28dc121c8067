"""Heads: SVD of OV/QK circuits, composition scores, communication channels and singular-component edits.

Papers: Elhage et al. 2021 (composition), Millidge & Black 2022 (SVD in vocabulary space), Merullo et
al. 2024 ("Talking Heads": channels and weight edits), Franco & Crovella 2024. The circuit math lives
in :mod:`interp.models.circuits`. Heads are spelled as everywhere in interp: ``"L5H1"``, ``(5, 1)`` or a
:class:`~interp.sites.HeadRef`; the composition *kind* (``"q"``, ``"k"``, ``"v"``) says which input of
the receiving head reads the sender's output.

Example:
    >>> import interp, torch
    >>> from interp.heads import channel, composition, head_svd, ov_component_edit
    >>> toy = interp.load_model("toy-induction")  # 2 layers x 4 heads: previous-token heads feed induction heads
    >>> comp = composition(toy, kinds="k", baseline_samples=20)
    >>> sender, receiver, score, z = comp.top_pairs("k", 1)[0]
    >>> sender, receiver, z > 5
    (HeadRef(0, 2), HeadRef(1, 3), True)
    >>> svd = head_svd(toy, heads=[sender, receiver], top_components=1, progress=False)
    >>> ch = channel(toy, sender=sender, receiver=receiver, kind="k")
    >>> edit = ov_component_edit(toy, head=sender, components=ch.components(2))
    >>> logits = toy.run(torch.tensor([[1, 5, 9, 1, 5]]), interventions=[edit]).logits
"""

from interp.heads.channels import ChannelActivity, ChannelResult, channel, channel_activity
from interp.heads.composition import CompositionResult, Pair, composition
from interp.heads.decompose import AttentionDecomposition, attention_decomposition
from interp.heads.edits import edited_weights, ov_component_edit, ov_component_maps
from interp.heads.graph import CommunicationGraph, SubspaceValidation, communication_graph, subspace_removal
from interp.heads.svd import HeadSVD, head_svd

__all__ = [
    "ChannelActivity", "ChannelResult", "CompositionResult", "HeadSVD", "Pair", "channel", "channel_activity",
    "composition", "edited_weights", "head_svd", "ov_component_edit", "ov_component_maps",
    "AttentionDecomposition", "CommunicationGraph", "SubspaceValidation", "attention_decomposition",
    "communication_graph", "subspace_removal",
]
