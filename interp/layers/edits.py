"""Running a model differently: skip, reorder, repeat, run in parallel, mask heads.

Each helper returns a list of :mod:`interp.hooks` interventions, so the edit goes wherever
``interventions=`` goes (``model.run``, every tool) and combines with other edits by list concatenation.
Blocks are skipped, reordered, repeated and run in parallel by a :class:`~interp.hooks.LayerPlan` (the
block list is swapped for the plan while a run lasts); a sublayer is skipped by zeroing its output
(``attn_out`` / ``mlp_out``), which in a residual block is exactly running the block without it; heads are
scaled by a :class:`~interp.hooks.HeadMask`.

Example:
    >>> import torch, interp
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> m = interp.from_hf(LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
    ...     num_attention_heads=4, vocab_size=100)))
    >>> edits = skip(m, blocks=[1]) + skip(m, attn=[3])
    >>> edits
    [LayerPlan(drop=(1,)), Ablate(site=Site('blocks.3.hook_attn_out'), ...)]
    >>> m.run(torch.tensor([[1, 2, 3]]), interventions=edits).logits.shape
    torch.Size([1, 3, 100])
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import torch

from interp.errors import BadInputError
from interp.hooks import Ablate, HeadMask, Intervention, LayerPlan
from interp.models import Model


def _index(model: Model, i: int, what: str = "block") -> int:
    n = model.dims.n_layers
    if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n:
        raise BadInputError(f"{what} {i!r} is out of range for {model.name} ({n} blocks: 0..{n - 1}, "
                            "or negative from the end)")
    return i % n


def _span(model: Model, start: int, stop: int) -> tuple[int, int]:
    n = model.dims.n_layers
    if not isinstance(start, int) or not isinstance(stop, int) or not 0 <= start < stop <= n:
        raise BadInputError(f"a span needs 0 <= start < stop <= {n} ({model.name} has {n} blocks), "
                            f"got start={start!r}, stop={stop!r}")
    return start, stop


def skip(model: Model, *, blocks: Sequence[int] = (), attn: Sequence[int] = (),
         mlp: Sequence[int] = ()) -> list[Intervention]:
    """Skip whole blocks, attention sublayers and MLP sublayers.

    Args:
        model: the model the edit is for (indices are checked against it; negative ones count from the end).
        blocks: blocks that do not run at all.
        attn: blocks whose attention sublayer adds nothing to the residual stream.
        mlp: blocks whose MLP sublayer adds nothing to the residual stream.

    Raises:
        BadInputError: an index out of range, or every block skipped.
    """
    bl = sorted({_index(model, i) for i in blocks})
    if len(bl) == model.dims.n_layers:
        raise BadInputError(f"skipping every block of {model.name} ({len(bl)}) leaves nothing to run; keep at least one")
    out: list[Intervention] = [LayerPlan(drop=tuple(bl))] if bl else []
    out += [Ablate(f"attn_out.{_index(model, i)}") for i in sorted(set(attn))]
    out += [Ablate(f"mlp_out.{_index(model, i)}") for i in sorted(set(mlp))]
    return out


def reorder(model: Model, *, order: Sequence[int]) -> list[Intervention]:
    """Run every block once, in ``order`` (a permutation of ``0..n_layers-1``).

    Raises:
        BadInputError: ``order`` repeats or misses a block (use :func:`repeat`, :func:`skip` or a
            :class:`~interp.hooks.LayerPlan` for those).
    """
    plan = LayerPlan(order=tuple(order), permutation=True)
    plan.steps(model.dims.n_layers)  # fail now, not at the first run
    return [plan]


def reverse(model: Model, *, start: int, stop: int) -> list[Intervention]:
    """Run blocks ``start..stop-1`` in reverse order (the Painters paper's "reverse the middle")."""
    start, stop = _span(model, start, stop)
    n = model.dims.n_layers
    return reorder(model, order=[*range(start), *reversed(range(start, stop)), *range(stop, n)])


def shuffle(model: Model, *, start: int, stop: int, seed: int = 0) -> list[Intervention]:
    """Run blocks ``start..stop-1`` in a random (seeded) order."""
    start, stop = _span(model, start, stop)
    mid = list(range(start, stop))
    random.Random(seed).shuffle(mid)
    return reorder(model, order=[*range(start), *mid, *range(stop, model.dims.n_layers)])


def swap(model: Model, *, i: int, j: int) -> list[Intervention]:
    """Exchange the places of blocks ``i`` and ``j``."""
    i, j = _index(model, i), _index(model, j)
    order = list(range(model.dims.n_layers))
    order[i], order[j] = order[j], order[i]
    return reorder(model, order=order)


def repeat(model: Model, *, layers: int | Sequence[int], times: int = 2) -> list[Intervention]:
    """Run each of ``layers`` ``times`` times in a row where it stands (``times=1`` changes nothing)."""
    layer_set = {_index(model, i) for i in ([layers] if isinstance(layers, int) else layers)}
    if not isinstance(times, int) or times < 1:
        raise BadInputError(f"times must be a positive int, got {times!r}")
    order: list[int] = []
    for i in range(model.dims.n_layers):
        order += [i] * (times if i in layer_set else 1)
    return [LayerPlan(order=tuple(order))]


def parallel(model: Model, *, start: int, stop: int, combine: Literal["mean", "sum"] = "mean") -> list[Intervention]:
    """Run blocks ``start..stop-1`` side by side on the same input (the Painters paper's parallel layers).

    ``combine="mean"`` averages their outputs; ``"sum"`` adds each block's change of the residual stream to
    the input (``x + sum_i (block_i(x) - x)``).
    """
    start, stop = _span(model, start, stop)
    n = model.dims.n_layers
    return [LayerPlan(order=(*range(start), tuple(range(start, stop)), *range(stop, n)), combine=combine)]


def head_mask(model: Model, *, scales: torch.Tensor | None = None, heads: Sequence[str | tuple[int, int]] = (),
              requires_grad: bool = False) -> list[Intervention]:
    """Scale each head's output: ``scales`` ``[n_layers, n_heads]`` (default all ones), or ones with the
    listed ``heads`` (``"L5H1"`` / ``(5, 1)``) set to zero. ``requires_grad=True`` makes the scales a leaf
    that a backward pass fills (``edits[0].scales.grad``).

    Raises:
        BadInputError: ``scales`` of the wrong shape, or a head out of range.
    """
    from interp.sites import HeadRef

    want = (model.dims.n_layers, model.dims.n_heads)
    if scales is None:
        scales = torch.ones(want)
    if not isinstance(scales, torch.Tensor) or tuple(scales.shape) != want:
        got = tuple(scales.shape) if isinstance(scales, torch.Tensor) else type(scales).__name__
        raise BadInputError(f"head mask must have shape [n_layers, n_heads] = {list(want)} for {model.name}, got {got}")
    scales = scales.detach().clone().float()
    for h in heads:
        ref = HeadRef.parse(h)
        if not (0 <= ref.layer < want[0] and 0 <= ref.head < want[1]):
            raise BadInputError(f"head {ref} is out of range for {model.name} ({want[0]} layers x {want[1]} heads)")
        scales[ref.layer, ref.head] = 0.0
    if requires_grad:
        scales.requires_grad_(True)
    return [HeadMask(scales=scales)]
