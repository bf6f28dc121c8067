"""Scale out on Ray: capture (and sweeps) split over workers that write disjoint shards of one store.

Needs the ``[distributed]`` extra (Ray) for ``backend="ray"``; nothing here imports Ray at import time.

Example:
    >>> from interp import distributed
    >>> sorted(n for n in distributed.__all__ if not n[0].isupper())
    ['as_location', 'capture', 'map_items', 'merge_parts']
"""

from interp.distributed.capture import CaptureRun, capture
from interp.distributed.location import StoreLocation, as_location
from interp.distributed.manifests import MergeReport, merge_parts
from interp.distributed.sweep import map_items

__all__ = ["CaptureRun", "MergeReport", "StoreLocation", "as_location", "capture", "map_items", "merge_parts"]
