"""How large captured activations are, from a model's dimensions alone (no forward, no weights needed).

A store capture sizes its batches from these numbers; with a model built on the ``meta`` device they tell
what a capture of a 70B model will need before any weight is downloaded.

Example:
    >>> from interp.models.adapters import Dims
    >>> from interp.sites import Site
    >>> d = Dims(n_layers=32, n_heads=32, n_kv_heads=8, d_model=4096, d_head=128, d_mlp=14336, d_vocab=128256)
    >>> activation_shape(d, Site.parse("blocks.3.attn.hook_pattern"), batch=2, seq_len=512)
    (2, 32, 512, 512)
    >>> capture_bytes(d, [Site.parse("resid_post.0"), Site.parse("resid_post.1")], batch=8, seq_len=1024,
    ...               dtype="bfloat16") / 2**20  # MiB
    128.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from interp.errors import BadInputError
from interp.models.adapters.base import Dims
from interp.sites import Component, Site

_POSITION_AXES = ("pos", "q_pos", "k_pos")


def activation_shape(dims: Dims, site: Site, batch: int, seq_len: int) -> tuple[int, ...]:
    """The shape of a named hook point's activation for ``batch`` sequences of ``seq_len`` tokens.

    Axes are those of :attr:`interp.sites.Component.axes`: positions (``pos``, ``q_pos``, ``k_pos``) are
    ``seq_len``; the others come from :meth:`Dims.size` (``expert`` for mixture-of-experts hook points).

    Raises:
        BadInputError: an ``hf:`` site (its shape depends on the module: run the model once to see it).

    Example:
        >>> from interp.models.adapters import Dims
        >>> from interp.sites import Site
        >>> d = Dims(n_layers=32, n_heads=32, n_kv_heads=8, d_model=4096, d_head=128, d_mlp=14336, d_vocab=32000,
        ...          n_experts=8)
        >>> activation_shape(d, Site.parse("expert_out.3"), batch=2, seq_len=16)
        (2, 16, 8, 4096)
    """
    if site.component is Component.HF:
        raise BadInputError(f"{site.name} is a module's activation; its shape is known only by running the model")
    out = []
    for axis in site.component.axes:
        if axis == "batch":
            out.append(batch)
        elif axis in _POSITION_AXES:
            out.append(seq_len)
        else:
            out.append(dims.size(axis))
    return tuple(out)


def capture_bytes(dims: Dims, sites: Iterable[Site], batch: int, seq_len: int,
                  dtype: torch.dtype | str = torch.float32) -> int:
    """Bytes that capturing ``sites`` over ``batch`` sequences of ``seq_len`` tokens holds in ``dtype``.

    Example:
        >>> from interp.models.adapters import Dims
        >>> from interp.sites import Site
        >>> d = Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=64, d_head=16, d_mlp=256, d_vocab=100)
        >>> capture_bytes(d, [Site.parse("mlp_post.0")], batch=3, seq_len=10, dtype="float16")
        15360
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    item = torch.empty((), dtype=dtype).element_size()  # type: ignore[arg-type]
    return sum(math.prod(activation_shape(dims, s, batch, seq_len)) for s in sites) * item


__all__ = ["activation_shape", "capture_bytes"]
