"""The one vocabulary: hook points, heads and positions, parsed once into typed values.

- hook points (:mod:`interp.sites.names`): full TransformerLens names (``blocks.3.hook_resid_post``), globs
  (``blocks.*.hook_z``), the short form (``resid_post`` for every layer, ``resid_post.3``, ``z.-1``) and
  ``hf:<module path>`` for any Hugging Face submodule;
- heads (:mod:`interp.sites.heads`): ``(layer, head)`` pairs or ``"L17H3"``;
- positions (:mod:`interp.sites.positions`): ints, lists and slices over each sequence's real tokens,
  negative from each sequence's end.

Every tool and CLI flag takes these spellings and rejects bad ones with the same errors
(:class:`~interp.errors.BadInputError`, :class:`UnknownHookError`).

Example:
    >>> from interp.sites import HeadRef, Site, parse_heads
    >>> Site.parse("resid_post.3").name, parse_heads("L1H2")
    ('blocks.3.hook_resid_post', [HeadRef(1, 2)])
"""

from interp.sites.heads import HeadRef, HeadSpec, parse_heads
from interp.sites.names import (
    SHORT_NAMES,
    STACKS,
    Component,
    Site,
    SiteSpec,
    UnknownHookError,
    all_sites,
    resolve,
    split_stack,
)
from interp.sites.positions import Positions, normalize_positions, position_mask, resolve_positions

__all__ = [
    "SHORT_NAMES", "STACKS", "Component", "HeadRef", "HeadSpec", "Positions", "Site", "SiteSpec", "UnknownHookError",
    "all_sites", "normalize_positions", "parse_heads", "position_mask", "resolve", "resolve_positions", "split_stack",
]
