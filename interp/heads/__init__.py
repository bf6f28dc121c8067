"""Heads: SVD of OV/QK circuits, composition scores, communication channels and singular-component edits.

Papers: Elhage et al. 2021 (composition), Millidge & Black 2022 (SVD in vocabulary space), Merullo et
al. 2024 ("Talking Heads": channels and weight edits), Franco & Crovella 2024. The circuit math lives
in :mod:`interp.models.circuits`.

Example:
    >>> import interp
    >>> from interp.heads import composition, head_svd
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> svd = head_svd(m, "ov")  # doctest: +SKIP
    >>> comp = composition(m)  # doctest: +SKIP
"""

from interp.heads.channels import ChannelActivity, ChannelResult, channel, channel_activity, receiver_factors
from interp.heads.composition import CompositionResult, composition
from interp.heads.edits import edited_weights, ov_component_edit, ov_component_maps
from interp.heads.svd import HeadSVD, head_svd

__all__ = [
    "ChannelActivity", "ChannelResult", "CompositionResult", "HeadSVD", "channel", "channel_activity", "composition",
    "edited_weights", "head_svd", "ov_component_edit", "ov_component_maps", "receiver_factors",
]
