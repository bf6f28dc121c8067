"""Scale out on Ray: capture (and sweeps) split over workers that write disjoint shards of one store.

Needs the ``[distributed]`` extra (Ray) for ``backend="ray"``; nothing here imports Ray at import time. The
store is the one :func:`interp.trace.capture` writes, started and resumed by the same code
(:mod:`interp.trace.resume`).

Example:
    >>> from interp import distributed
    >>> sorted(n for n in distributed.__all__ if not n[0].isupper())
    ['as_location', 'capture', 'map_items', 'merge_parts']
"""

from interp.distributed.capture import CaptureRun, capture
from interp.distributed.pool import RayConnectError
from interp.distributed.sweep import map_items
from interp.trace.location import StoreLocation, as_location
from interp.trace.resume import MergeReport, merge_parts

__all__ = ["CaptureRun", "MergeReport", "RayConnectError", "StoreLocation", "as_location", "capture", "map_items",
           "merge_parts"]
