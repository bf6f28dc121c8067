"""Run plans: edits of which blocks run, in what order, and of how much each attention head contributes.

:class:`LayerPlan` runs the model's blocks as a list of steps: each step is one block index, or a tuple
of block indices run in parallel on the same input with their outputs averaged (``combine="mean"``, the
Painters paper's parallel layers) or their residual contributions summed (``combine="sum"``:
``x + sum_i (block_i(x) - x)``). Blocks not named do not run (skipping); a block named twice runs twice
(repeating); any order is allowed (reordering). :class:`HeadMask` multiplies each head's output
(``hook_z``) by ``scales[layer, head]``; it is differentiable with respect to the scales, so one backward
pass gives ``d loss / d mask`` for every head at once (Michel et al., 2019).

Both are :class:`~interp.hooks.Intervention` objects, so every tool that takes ``interventions=`` accepts
them and they combine with any other edit. A plan is installed by the hook engine for the duration of
one run: the block list is swapped for the plan's steps (the blocks themselves, so their hook points
fire where they run: a repeated block's captures keep its last call) and restored afterwards.

Limits: a plan does not apply inside partial forwards (``interp.hooks.partial``: they cut the block list
themselves); repeated blocks are for forwards without a KV cache (``Model.run`` uses none); models whose
layers use different attention kinds (Gemma 2/3's local and global layers) are refused, because the
model hands each list position the mask of that position's kind.

Example:
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from interp.models import from_hf
    >>> from interp.hooks import LayerPlan, run_with_hooks
    >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100)))
    >>> out = run_with_hooks(m, torch.tensor([[1, 2, 3]]), capture="resid_post",
    ...                      interventions=[LayerPlan(order=(2, 0))])
    >>> sorted(out.activations)  # block 1 never ran
    ['blocks.0.hook_resid_post', 'blocks.2.hook_resid_post']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from interp.errors import BadInputError
from interp.hooks.interventions import Intervention
from interp.sites import Site, SiteSpec

Step = int | tuple[int, ...]


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class _Steps(nn.Module):
    """Runs one or more plan steps where the model calls one block (the blocks are not registered as children:
    they still belong to the original block list)."""

    def __init__(self, blocks: Sequence[nn.Module], steps: Sequence[tuple[int, ...]], combine: str) -> None:
        super().__init__()
        self._blocks = tuple(blocks)
        self._steps = tuple(steps)
        self._combine = combine

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        h = hidden_states
        out: Any = h
        for step in self._steps:
            if len(step) == 1:
                out = self._blocks[step[0]](h, *args, **kwargs)
                h = _first(out)
                continue
            outs = [self._blocks[i](h, *args, **kwargs) for i in step]
            deltas = torch.stack([_first(o) - h for o in outs])
            new = h + (deltas.mean(0) if self._combine == "mean" else deltas.sum(0))
            out = (new, *outs[-1][1:]) if isinstance(outs[-1], tuple) else new
            h = new
        return out


@dataclass(frozen=True)
class LayerPlan(Intervention):
    """Run the blocks as a list of steps (skip, reorder, repeat, run in parallel).

    Args:
        order: the steps in the order they run: block indices (negative from the end) or tuples of indices
            run in parallel on the same input; ``None`` runs every block in its own order.
        drop: blocks removed from ``order`` (skipped), wherever they occur.
        combine: how a parallel step joins its blocks' outputs: ``"mean"`` (the average of the blocks' outputs)
            or ``"sum"`` (the input plus the sum of each block's change to it).
        permutation: require ``order`` (after ``drop``) to name every block exactly once (a reordering that
            neither repeats nor loses a block).

    Raises (when a run installs it):
        BadInputError: an index out of range, a plan that leaves no block to run, a repeated or missing
            block with ``permutation=True``, or a model whose layers mix attention kinds.

    Example:
        >>> LayerPlan(order=(0, (1, 2), 3), combine="sum")
        LayerPlan(order=(0, (1, 2), 3), combine='sum')
    """

    site: SiteSpec = "embed"
    order: tuple[Step, ...] | None = None
    drop: tuple[int, ...] = ()
    combine: Literal["mean", "sum"] = "mean"
    permutation: bool = False
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.combine not in ("mean", "sum"):
            raise BadInputError(f"combine must be 'mean' or 'sum', got {self.combine!r}")
        if self.order is not None:
            steps: list[Step] = []
            for s in self.order:
                if isinstance(s, (tuple, list)):
                    if not s or not all(_is_int(i) for i in s):
                        raise BadInputError(f"a parallel step must be a non-empty tuple of block indices, got {s!r}")
                    steps.append(tuple(int(i) for i in s))
                elif _is_int(s):
                    steps.append(int(s))
                else:
                    raise BadInputError(f"a step must be a block index or a tuple of indices, got {s!r}")
            object.__setattr__(self, "order", tuple(steps))
        drop: tuple[Any, ...] = (self.drop,) if _is_int(self.drop) else tuple(self.drop)
        if not all(_is_int(i) for i in drop):
            raise BadInputError(f"drop must be block indices, got {self.drop!r}")
        object.__setattr__(self, "drop", tuple(int(i) for i in drop))

    def __repr__(self) -> str:
        parts = []
        if self.order is not None:
            parts.append(f"order={self.order!r}")
        if self.drop:
            parts.append(f"drop={self.drop!r}")
        if self.combine != "mean":
            parts.append(f"combine={self.combine!r}")
        if self.permutation:
            parts.append("permutation=True")
        return f"LayerPlan({', '.join(parts)})"

    def steps(self, n_layers: int) -> list[tuple[int, ...]]:
        """The resolved steps for a model of ``n_layers`` blocks (indices made non-negative, dropped blocks
        removed, empty parallel steps removed).

        Example:
            >>> LayerPlan(drop=(1, -1)).steps(4)
            [(0,), (2,)]
        """
        def norm(i: int) -> int:
            if not -n_layers <= i < n_layers:
                raise BadInputError(f"block {i} is out of range for a model of {n_layers} blocks "
                                    f"(valid: 0..{n_layers - 1}, or negative from the end)")
            return i % n_layers

        order = [(i,) for i in range(n_layers)] if self.order is None else [
            tuple(norm(i) for i in s) if isinstance(s, tuple) else (norm(s),) for s in self.order]
        dropped = {norm(i) for i in self.drop}
        steps = [t for t in (tuple(i for i in s if i not in dropped) for s in order) if t]
        if not steps:
            raise BadInputError(f"this plan leaves no block to run (dropped {sorted(dropped)} of {n_layers}); "
                                "keep at least one block")
        if self.permutation:
            flat = [i for s in steps for i in s]
            repeated = sorted({i for i in flat if flat.count(i) > 1})
            missing = sorted(set(range(n_layers)) - set(flat) - dropped)
            if repeated or missing:
                what = (f"repeats block(s) {repeated}" if repeated else "") + (
                    " and " if repeated and missing else "") + (f"misses block(s) {missing}" if missing else "")
                raise BadInputError(f"the order {list(self.order or ())} {what}; a reordering names each of the "
                                    f"{n_layers} blocks once (use repeat/skip for repeats and drops)")
        return steps

    def apply(self, act: torch.Tensor, site: Site | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return act  # the plan edits the block list, not an activation

    def install(self, model: Any) -> Callable[[], None]:
        """Swap ``model``'s block list for the plan's steps; return the function that restores it (called by
        the hook engine around a run)."""
        n = model.dims.n_layers
        steps = self.steps(n)
        kinds = set(getattr(model.config, "layer_types", None) or ())
        if len(kinds) > 1 and steps != [(i,) for i in range(n)]:
            raise BadInputError(f"{model.name} mixes attention kinds across layers ({', '.join(sorted(kinds))}); "
                                "a layer plan would hand blocks another kind's mask, so it is not supported here")
        parent_path, _, attr = model.adapter.layers.rpartition(".")
        parent = model.module(parent_path) if parent_path else model.hf
        blocks = getattr(parent, attr)
        originals = list(blocks)
        # one wrapper per step; the model may slice its list to n_layers, so the tail shares the last wrapper
        groups = [steps[i:i + 1] for i in range(min(len(steps), n) - 1)] + [steps[min(len(steps), n) - 1:]]
        setattr(parent, attr, nn.ModuleList([_Steps(originals, g, self.combine) for g in groups]))

        def restore() -> None:
            setattr(parent, attr, blocks)

        return restore


@dataclass(frozen=True)
class HeadMask(Intervention):
    """Multiply each attention head's output (``hook_z``) by ``scales[layer, head]``; gradients reach ``scales``.

    Args:
        scales: the mask, ``[n_layers, n_heads]`` (1 keeps a head, 0 removes it; any value scales it), or
            ``[batch, n_layers, n_heads]``: one mask per sequence of the batch (a backward pass of a loss summed
            over sequences then gives each sequence's own gradient). Give it ``requires_grad=True`` and take a
            gradient to get every head's importance from one backward pass.

    Example:
        >>> import torch
        >>> hm = HeadMask(scales=torch.tensor([[1.0, 0.0]]))
        >>> hm.apply(torch.ones(1, 2, 2, 3), Site.parse("z.0"))[0, 0]
        tensor([[1., 1., 1.],
                [0., 0., 0.]])
    """

    site: SiteSpec = "z"
    scales: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.scales, torch.Tensor) or self.scales.dim() not in (2, 3):
            shape = tuple(self.scales.shape) if isinstance(self.scales, torch.Tensor) else type(self.scales).__name__
            raise BadInputError(f"scales must be a [n_layers, n_heads] (or [batch, n_layers, n_heads]) tensor, "
                                f"got {shape}")

    def __repr__(self) -> str:
        assert self.scales is not None
        return f"HeadMask(scales={list(self.scales.shape)})"

    def install(self, model: Any) -> Callable[[], None]:
        """Check the mask's shape against ``model`` (called by the hook engine before a run)."""
        assert self.scales is not None
        want = (model.dims.n_layers, model.dims.n_heads)
        if tuple(self.scales.shape[-2:]) != want:
            raise BadInputError(f"head mask has shape {tuple(self.scales.shape)}; {model.name} needs "
                                f"[n_layers, n_heads] = {list(want)}")
        return lambda: None

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        assert self.scales is not None and site.layer is not None
        n_layers, n_heads = self.scales.shape[-2:]
        if site.layer >= n_layers or act.shape[-2] != n_heads:
            raise BadInputError(f"head mask of shape {tuple(self.scales.shape)} does not fit {site.name} "
                                f"({act.shape[-2]} heads)")
        if self.scales.dim() == 3:
            if self.scales.shape[0] != act.shape[0]:
                raise BadInputError(f"a per-sequence head mask has {self.scales.shape[0]} rows but the batch has "
                                    f"{act.shape[0]} sequences")
            return act * self.scales[:, site.layer].to(act.device, act.dtype)[:, None, :, None]
        return act * self.scales[site.layer].to(act.device, act.dtype)[:, None]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def original_blocks(model: Any) -> list[nn.Module]:
    """``model``'s blocks in their own order, also while a :class:`LayerPlan` has swapped the block list (an
    edit that installs itself can then find block ``i``'s modules whatever order the plans were installed in).

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100)))
        >>> undo = LayerPlan(order=(2, 0)).install(m)
        >>> [type(b).__name__ for b in m.hf.transformer.h][:1], [type(b).__name__ for b in original_blocks(m)]
        (['_Steps'], ['GPT2Block', 'GPT2Block', 'GPT2Block'])
        >>> undo()
    """
    parent_path, _, attr = model.adapter.layers.rpartition(".")
    parent = model.module(parent_path) if parent_path else model.hf
    blocks = list(getattr(parent, attr))
    if blocks and isinstance(blocks[0], _Steps):
        return list(blocks[0]._blocks)
    return blocks
