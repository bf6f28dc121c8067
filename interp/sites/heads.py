"""Attention heads: one spelling for every tool and CLI flag.

A head is a :class:`HeadRef` ``(layer, head)``; it is written as a ``(layer, head)`` pair of ints or as a
string ``"L17H3"``. A list of heads is a list of those, or one string with several separated by commas
(``"L5H1,L6H9"``, what CLI flags take). Heads are query heads: under grouped-query attention, K/V heads are
expanded, so ``head`` runs over ``0..n_heads-1``.

Example:
    >>> from interp.sites import HeadRef, parse_heads
    >>> HeadRef.parse("L17H3")
    HeadRef(17, 3)
    >>> str(HeadRef.parse((17, 3)))
    'L17H3'
    >>> parse_heads("L0H1, L2H3")
    [HeadRef(0, 1), HeadRef(2, 3)]
    >>> parse_heads([(0, 1), "L2H3"], n_layers=3, n_heads=4)
    [HeadRef(0, 1), HeadRef(2, 3)]
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from typing import Any, NamedTuple, Union

from interp.errors import BadInputError

_HEAD = re.compile(r"\s*L(0|[1-9][0-9]*)H(0|[1-9][0-9]*)\s*", re.ASCII)

HeadSpec = Union["HeadRef", "tuple[int, int]", str]
"""One head: ``HeadRef``, ``(layer, head)`` or ``"L17H3"``."""


def _pair_like(x: Any) -> bool:
    """A sequence, array or 1-d tensor of length 2 (not a string)."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or not hasattr(x, "__getitem__"):
        return False
    if getattr(x, "ndim", 1) != 1:
        return False
    return len(x) == 2


def _int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


class HeadRef(NamedTuple):
    """One attention head: ``layer`` and (query) ``head`` index. Written ``"L{layer}H{head}"``."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    def __repr__(self) -> str:
        return f"HeadRef({self.layer}, {self.head})"

    @classmethod
    def parse(cls, x: HeadSpec | Any) -> HeadRef:
        """A head from ``HeadRef``, ``(layer, head)`` (ints, NumPy ints, 0-d tensors) or ``"L17H3"``."""
        if isinstance(x, HeadRef):
            return x
        if isinstance(x, str):
            m = _HEAD.fullmatch(x)
            if m:
                return cls(int(m.group(1)), int(m.group(2)))
        elif _pair_like(x):
            layer, head = _int(x[0]), _int(x[1])
            if layer is not None and head is not None and layer >= 0 and head >= 0:
                return cls(layer, head)
        raise BadInputError(f"bad head {x!r}; write a head as a (layer, head) pair of ints >= 0 or as 'L17H3'")

    def check(self, n_layers: int | None, n_heads: int | None) -> HeadRef:
        """This head, or a :class:`BadInputError` when it is outside a model of that size."""
        if n_layers is not None and not 0 <= self.layer < n_layers:
            raise BadInputError(f"head {self} is out of range: layer {self.layer} not in 0..{n_layers - 1}")
        if n_heads is not None and not 0 <= self.head < n_heads:
            raise BadInputError(f"head {self} is out of range: head {self.head} not in 0..{n_heads - 1}")
        return self


def parse_heads(x: HeadSpec | Iterable[HeadSpec], *, n_layers: int | None = None,
                n_heads: int | None = None) -> list[HeadRef]:
    """Heads from one head, a list of heads, or a comma-separated string; checked against the model's size.

    Raises:
        BadInputError: a malformed or out-of-range head (naming it and what is valid), or no heads at all.

    Example:
        >>> parse_heads("L5H1, L0H2", n_layers=30, n_heads=9), parse_heads([(5, 1)])
        ([HeadRef(5, 1), HeadRef(0, 2)], [HeadRef(5, 1)])
        >>> parse_heads("L31H0", n_layers=30, n_heads=9)
        Traceback (most recent call last):
        interp.errors.BadInputError: head L31H0 is out of range: layer 31 not in 0..29
    """
    if isinstance(x, str):
        items: list[Any] = [p for p in x.split(",") if p.strip()]
    elif isinstance(x, HeadRef) or (_pair_like(x) and all(_int(v) is not None for v in x)):
        items = [x]
    else:
        try:
            items = list(x)  # type: ignore[arg-type]
        except TypeError:
            raise BadInputError(f"bad heads {x!r}; give heads as (layer, head) pairs or 'L17H3' strings") from None
    if not items:
        raise BadInputError(f"no heads in {x!r}; give at least one (layer, head) pair or 'L17H3'")
    return [HeadRef.parse(i).check(n_layers, n_heads) for i in items]


__all__ = ["HeadRef", "HeadSpec", "parse_heads"]
