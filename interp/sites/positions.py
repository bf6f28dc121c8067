"""Token positions: one rule for every tool.

A position selection is an ``int``, a list of ints, a ``slice`` or ``None`` (every position). It indexes
**each sequence's real tokens**: ``0`` is the first token, ``-1`` the last real token of each sequence,
``-2`` the one before it. Batches are right-padded, so in a batch of prompts of different lengths ``-1``
lands on a different padded index in each row, and padding is never selected. An int outside a sequence's
real tokens is an error naming the sequence; a slice takes what falls inside each sequence (as Python
slices do). On ``attn.hook_pattern`` positions select query positions.

Example:
    >>> import torch
    >>> from interp.sites import position_mask
    >>> position_mask(-1, torch.tensor([3, 2]), size=3).int().tolist()
    [[0, 0, 1], [0, 1, 0]]
    >>> position_mask(slice(1, None), torch.tensor([3, 2]), size=3).int().tolist()
    [[0, 1, 1], [0, 1, 0]]
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from interp.errors import BadInputError

Positions = int | Sequence[int] | slice | None
"""A position selection: an int, a list of ints, a slice, or ``None`` for every position."""


def _as_int(i: Any, what: str) -> int:
    """An index as a plain int: ints, NumPy integers and 0-d integer tensors; never bools."""
    if isinstance(i, bool) or (isinstance(i, torch.Tensor) and (i.dim() != 0 or i.dtype == torch.bool)):
        raise TypeError(f"{what} must be ints, got {i!r}")
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError(f"{what} must be ints, got {i!r}") from None


def index_list(x: Any, what: str = "positions") -> list[int]:
    """An int or a sequence of ints (NumPy/tensor items too) as a list of ints."""
    if isinstance(x, (str, bytes, Mapping)):
        raise TypeError(f"{what} must be an int, a sequence of ints or a slice, got {x!r}")
    try:
        return [_as_int(x, what)]
    except TypeError:
        pass
    try:
        seq = list(x)
    except TypeError:
        raise TypeError(f"{what} must be an int, a sequence of ints or a slice, got {x!r}") from None
    return [_as_int(i, what) for i in seq]


def normalize_positions(x: Any, what: str = "positions") -> int | tuple[int, ...] | slice | None:
    """Type-check a selection when it is made (ranges are checked on use); sequences, arrays and tensors
    become a tuple of ints (so that an iterator is not used up).

    Example:
        >>> import torch
        >>> normalize_positions([0, -1]), normalize_positions(torch.tensor([1, 2])), normalize_positions(-1)
        ((0, -1), (1, 2), -1)
    """
    if x is None or isinstance(x, slice):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    return tuple(index_list(x, what))


def position_mask(sel: Positions, lengths: torch.Tensor, size: int, what: str = "position") -> torch.Tensor:
    """``[batch, size]`` boolean mask of the selected positions of each sequence.

    Args:
        sel: the selection (see the module docstring for the rule).
        lengths: ``[batch]`` number of real tokens of each sequence (right padding).
        size: the padded length.

    Raises:
        BadInputError: an int outside some sequence's real tokens (naming the first such sequence).

    Example (two sequences of 3 and 2 real tokens, padded to 4):
        >>> import torch
        >>> position_mask(-1, torch.tensor([3, 2]), 4).int().tolist()  # each one's last real token
        [[0, 0, 1, 0], [0, 1, 0, 0]]
        >>> position_mask(slice(0, 2), torch.tensor([3, 1]), 4).int().tolist()  # a slice stops at the padding
        [[1, 1, 0, 0], [1, 0, 0, 0]]
    """
    batch = lengths.shape[0]
    lengths = lengths.to("cpu", torch.long)
    mask = torch.zeros(batch, size, dtype=torch.bool)
    if sel is None:
        return torch.arange(size)[None, :] < lengths[:, None]
    if isinstance(sel, slice):
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            cols = torch.arange(int(n))[sel]
            mask[rows[:, None], cols[None, :]] = True
        return mask
    items = torch.tensor(index_list(sel, what + "s"), dtype=torch.long)
    if items.numel() == 0:
        return mask
    idx = torch.where(items[None, :] < 0, items[None, :] + lengths[:, None], items[None, :].expand(batch, -1))
    bad = (idx < 0) | (idx >= lengths[:, None])
    if bad.any():
        b, j = (int(v) for v in bad.nonzero()[0])
        n = int(lengths[b])
        raise BadInputError(f"{what} {int(items[j])} is outside sequence {b}, which has {n} real tokens "
                            f"(valid: {-n}..{n - 1}; negative positions count from each sequence's last real token)")
    mask[torch.arange(batch)[:, None].expand_as(idx), idx] = True
    return mask


def resolve_positions(sel: Positions, length: int, what: str = "position", sequence: int | None = None) -> list[int]:
    """The selected positions of one sequence of ``length`` real tokens, as non-negative ints in order given
    (slices in their order; ints as given, negatives counted from the end).

    Example:
        >>> resolve_positions([-1, 0], 5), resolve_positions(slice(-2, None), 5)
        ([4, 0], [3, 4])
    """
    if sel is None:
        return list(range(length))
    if isinstance(sel, slice):
        return list(range(length))[sel]
    out = []
    for p in index_list(sel, what + "s"):
        q = p + length if p < 0 else p
        if not 0 <= q < length:
            where = f"sequence {sequence}, which has {length} real tokens" if sequence is not None else \
                f"a sequence of {length} tokens"
            raise BadInputError(f"{what} {p} is outside {where} (valid: {-length}..{length - 1})")
        out.append(q)
    return out


__all__ = ["Positions", "index_list", "normalize_positions", "position_mask", "resolve_positions"]
