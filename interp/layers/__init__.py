"""Which layers and heads matter: run plans, task suites and the layer/head studies."""

from interp.layers.edits import head_mask, parallel, reorder, repeat, reverse, shuffle, skip, swap

__all__ = ["head_mask", "parallel", "reorder", "repeat", "reverse", "shuffle", "skip", "swap"]
