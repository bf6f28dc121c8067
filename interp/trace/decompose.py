"""The residual stream taken apart: what TransformerLens users reach for on a cache.

- :func:`accumulated_resid`: the residual stream at each layer boundary (``resid_pre`` of every layer, then
  the last ``resid_post``), optionally with the midpoints (``resid_mid``);
- :func:`decompose_resid`: the stream as a sum of its writers: ``embed`` (everything before block 0, i.e.
  ``resid_pre.0``: token plus position embeddings), then each layer's ``attn_out`` and ``mlp_out``;
- :func:`stack_head_results`: each head's output in the residual stream, ``z[:, :, h] @ W_O[layer, h]``
  (without the output bias, which is ``attn_out - Σ heads``).

They read a :class:`~interp.trace.Trace` (the ``Trace`` methods of the same names call them); the labels use
the short hook names (``attn_out.3``) and heads as ``L3H1``.

Example:
    >>> import interp, torch
    >>> m = interp.load_model("smollm2-135m")
    >>> tr = m.run("The capital of France is", capture=["resid_pre.0", "attn_out", "mlp_out", "resid_post"]).trace
    >>> parts, labels = tr.decompose_resid()
    >>> labels[:3], parts.shape
    (['embed', 'attn_out.0', 'mlp_out.0'], torch.Size([61, 1, 5, 576]))
    >>> torch.allclose(parts.sum(0), tr["resid_post.29"], atol=1e-3)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from interp.errors import BadInputError
from interp.models import Model
from interp.sites import Component, Site

if TYPE_CHECKING:
    from interp.trace.trace import Trace


def _layers(trace: Trace, comp: Component) -> list[int]:
    sites = [Site.parse(n) for n in trace.names if not n.startswith("hf:")]
    return sorted(s.layer for s in sites if s.component is comp and s.layer is not None)


def _n_layers(trace: Trace) -> int:
    layers = [Site.parse(n).layer for n in trace.names if not n.startswith("hf:")]
    known = [L for L in layers if L is not None]
    if not known:
        raise BadInputError(f"this trace holds no per-layer hooks (it holds {', '.join(trace.names) or 'none'})")
    return max(known) + 1


def _end(trace: Trace, layer: int | None, comp: Component) -> int:
    """The number of blocks the stream has passed: ``layer`` (negative from the end) or all captured."""
    n = max(_n_layers(trace), 1 + max(_layers(trace, comp), default=-1))
    if layer is None:
        return n
    end = layer + n + 1 if layer < 0 else layer
    if not 0 <= end <= n:
        raise BadInputError(f"bad layer {layer!r}; valid: 0..{n} (or -{n + 1}..-1), the stream before that block")
    return end


def _need(trace: Trace, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in trace]
    if missing:
        short = [Site.parse(n).short for n in missing]
        raise BadInputError(f"{what} needs the hooks {', '.join(short[:6])}{'...' if len(short) > 6 else ''}, which "
                            f"this trace does not hold; capture them (model.run(..., capture=[...]))")


def accumulated_resid(trace: Trace, layer: int | None = None, *, incl_mid: bool = False
                      ) -> tuple[torch.Tensor, list[str]]:
    """``([point, batch, pos, d_model], labels)``: the stream before each block up to ``layer`` (``None``: all,
    ending with the last block's output), labelled ``resid_pre.L`` / ``resid_mid.L`` / ``resid_post.L``.

    Needs ``resid_pre`` of those layers (and ``resid_mid`` with ``incl_mid``; ``resid_post`` of the last layer
    for the final point).
    """
    n = _n_layers(trace)
    end = _end(trace, layer, Component.RESID_PRE)
    names: list[str] = []
    for L in range(min(end, n)):
        names.append(Site(Component.RESID_PRE, L).name)
        if incl_mid:
            names.append(Site(Component.RESID_MID, L).name)
    if end == n:
        names.append(Site(Component.RESID_POST, n - 1).name)
    _need(trace, names, "accumulated_resid")
    return torch.stack([trace[n_] for n_ in names]), [Site.parse(n_).short for n_ in names]


def decompose_resid(trace: Trace, layer: int | None = None, *, mode: str = "all") -> tuple[torch.Tensor, list[str]]:
    """``([component, batch, pos, d_model], labels)``: ``embed`` (``resid_pre.0``), then each block's
    ``attn_out.L`` and ``mlp_out.L`` before ``layer`` (``None``: every block), summing to the stream there.

    Args:
        trace: holds ``resid_pre.0`` (or ``embed`` for models whose stream starts there) and the ``attn_out`` /
            ``mlp_out`` of the layers asked for.
        layer: the stream before this block (``None`` or ``-1``: after the last block).
        mode: ``"all"``, ``"attn"`` or ``"mlp"`` (only those writers, after ``embed``).
    """
    if mode not in ("all", "attn", "mlp"):
        raise BadInputError(f"bad mode {mode!r}; valid: 'all', 'attn', 'mlp'")
    end = _end(trace, layer, Component.ATTN_OUT)
    first = Site(Component.RESID_PRE, 0).name
    if first not in trace and Site(Component.EMBED).name in trace:
        first = Site(Component.EMBED).name
    names = [first]
    for L in range(end):
        if mode in ("all", "attn"):
            names.append(Site(Component.ATTN_OUT, L).name)
        if mode in ("all", "mlp"):
            names.append(Site(Component.MLP_OUT, L).name)
    _need(trace, names, "decompose_resid")
    return torch.stack([trace[n_] for n_ in names]), ["embed", *(Site.parse(n_).short for n_ in names[1:])]


def stack_head_results(trace: Trace, model: Model, layer: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """``([layer * head, batch, pos, d_model], labels)``: each head's output written into the residual stream,
    ``z[..., h, :] @ W_O[layer, h]``, for the blocks before ``layer`` (``None``: all); labels ``L3H1``.

    Needs ``z`` of those layers; ``model`` supplies ``W_O`` (checked to be the model that made the trace).
    """
    trace.check_model(model)
    end = _end(trace, layer, Component.Z)
    names = [Site(Component.Z, L).name for L in range(end)]
    _need(trace, names, "stack_head_results")
    W_O = model.weights.W_O  # [layer, head, d_head, d_model]
    out, labels = [], []
    for L, name in enumerate(names):
        z = trace[name]  # [batch, pos, head, d_head]
        res = torch.einsum("bphd,hdm->hbpm", z.to(W_O.dtype), W_O[L].to(z.device))
        out.append(res)
        labels += [f"L{L}H{h}" for h in range(z.shape[2])]
    return torch.cat(out), labels


__all__ = ["accumulated_resid", "decompose_resid", "stack_head_results"]
