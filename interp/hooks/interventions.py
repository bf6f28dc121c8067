"""Interventions: composable edits of one hook point, restricted to positions and heads.

Each intervention is a frozen dataclass with ``apply(act) -> new act``; the hook engine calls them
in the order given. Selections are by position (``positions``) and, on per-head sites
(``attn.hook_q/k/v/z/pattern``), by head (``heads``); positions index the padded sequence, and on
``hook_pattern`` they select query positions.

Example:
    >>> import torch
    >>> from interp.hooks import Add, Ablate
    >>> act = torch.ones(1, 3, 2)  # [batch, pos, d_model]
    >>> Add("blocks.0.hook_resid_post", torch.tensor([1.0, -1.0]), positions=[2]).apply(act)[0]
    tensor([[1., 1.],
            [1., 1.],
            [2., 0.]])
    >>> Ablate("blocks.0.hook_resid_post", positions=0).apply(act)[0, 0]
    tensor([0., 0.])
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from interp.sites import Site

Positions = int | Sequence[int] | slice | None
Heads = int | Sequence[int] | None


def _as_int(i: Any, what: str) -> int:
    """An index as a plain int: ints, NumPy integers and 0-d integer tensors; never bools."""
    if isinstance(i, bool) or (isinstance(i, torch.Tensor) and (i.dim() != 0 or i.dtype == torch.bool)):
        raise TypeError(f"{what} must be ints, got {i!r}")
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError(f"{what} must be ints, got {i!r}") from None


def _items(x: Any, what: str) -> list[int]:
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


def _normalize_selection(x: Any, what: str) -> int | tuple[int, ...] | slice | None:
    """Type-check a positions/heads selection when the intervention is made (ranges are checked on use);
    sequences, arrays and tensors become a tuple of ints (so that an iterator is not used up)."""
    if x is None or isinstance(x, slice):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    return tuple(_items(x, what))


def _as_index_list(x: int | Sequence[int] | slice, size: int, what: str) -> torch.Tensor:
    idx = torch.arange(size)
    if isinstance(x, slice):
        return idx[x]
    items = _items(x, what)
    for i in items:
        if not -size <= i < size:
            raise IndexError(f"{what} {i} is out of range for size {size} (valid: {-size}..{size - 1})")
    return idx[torch.tensor(items, dtype=torch.long)] if items else idx[:0]


@dataclass(frozen=True)
class Intervention:
    """Base class: an edit of ``site`` at the selected positions and heads.

    Args:
        site: hook name (``"blocks.3.hook_resid_post"``) or :class:`~interp.sites.Site`.
        positions: an int, a list of ints, a slice, or ``None`` for every position.
        heads: for per-head sites, an int, a list, or ``None`` for every head.
    """

    site: Site | str
    positions: Positions = field(default=None, kw_only=True)
    heads: Heads = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", Site.parse(self.site))
        if self.heads is not None and "head" not in self.site.component.axes:
            raise ValueError(f"{self.site.name} has no head axis; heads= applies to attn.hook_q/k/v/z/pattern")
        object.__setattr__(self, "positions", _normalize_selection(self.positions, "positions"))
        object.__setattr__(self, "heads", _normalize_selection(self.heads, "heads"))

    def mask(self, act: torch.Tensor) -> torch.Tensor | None:
        """Boolean mask broadcastable to ``act`` that is True where this intervention applies."""
        if self.positions is None and self.heads is None:
            return None
        axes = self.site.component.axes
        if act.dim() != len(axes):
            raise ValueError(f"{self.site.name} activation has shape {tuple(act.shape)}, expected axes {axes}")
        shape = [1] * act.dim()
        mask = torch.ones(shape, dtype=torch.bool, device=act.device)
        pos_axis = axes.index("q_pos") if "q_pos" in axes else axes.index("pos")
        for sel, axis, what in ((self.positions, pos_axis, "position"), (self.heads, axes.index("head") if "head" in axes else -1, "head")):
            if sel is None:
                continue
            m = torch.zeros(act.shape[axis], dtype=torch.bool, device=act.device)
            m[_as_index_list(sel, act.shape[axis], what).to(act.device)] = True
            view = [1] * act.dim()
            view[axis] = -1
            mask = mask & m.view(view)
        return mask

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        """The edited activation everywhere (before restricting to the selection)."""
        raise NotImplementedError

    def apply(self, act: torch.Tensor) -> torch.Tensor:
        """Return a new tensor: ``edit(act)`` inside the selection, ``act`` outside it."""
        new = self.edit(act)
        if new.shape != act.shape:
            new = new.expand_as(act)
        mask = self.mask(act)
        return new.to(act.dtype) if mask is None else torch.where(mask, new.to(act.dtype), act)


def _source_tensor(source: Any, site: Site) -> torch.Tensor:
    """The tensor for ``site`` in a tensor, a ``Trace`` or a mapping of hook names to tensors."""
    if isinstance(source, torch.Tensor):
        return source
    bad = TypeError(f"a patch source / ablation reference must be a torch.Tensor, a Trace or a mapping of "
                    f"hook names to tensors, got {type(source).__name__}")
    if isinstance(source, (str, bytes, Sequence)) or not hasattr(source, "__getitem__"):
        raise bad
    try:
        t = source[site.name]
    except (TypeError, IndexError, ValueError):  # e.g. an array indexed by a name
        raise bad from None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"the source holds a {type(t).__name__} for {site.name}, not a torch.Tensor")
    return t


def _check_finite(t: torch.Tensor, what: str) -> None:
    if (t.is_floating_point() or t.is_complex()) and not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf values")


def _check_finite_number(x: Any, what: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(x).__name__}: {x!r}")
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x!r}")


@dataclass(frozen=True)
class Patch(Intervention):
    """Replace the activation with values from another run (a tensor or a ``Trace``).

    ``source`` is the full activation of that run (same shape, or batch 1 to broadcast); only the
    selected positions/heads are copied.
    """

    source: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None:
            raise ValueError("Patch needs source= (a tensor or a Trace holding this hook)")
        src = _source_tensor(self.source, self.site)
        if not src.is_floating_point():
            raise TypeError(f"patch source for {self.site.name} has dtype {src.dtype}; activations are floating "
                            "point: pass the activation of another run (a float tensor or a Trace)")
        _check_finite(src, f"patch source for {self.site.name}")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        src = _source_tensor(self.source, self.site).to(act.device)
        if src.shape[1:] != act.shape[1:] or src.shape[0] not in (1, act.shape[0]):
            raise ValueError(
                f"patch source for {self.site.name} has shape {tuple(src.shape)} but the activation has "
                f"{tuple(act.shape)}; sources must match (batch may be 1) — are the prompts the same length?"
            )
        return src


@dataclass(frozen=True)
class Ablate(Intervention):
    """Zero, mean or resample ablation.

    Args:
        method: ``"zero"``; ``"mean"`` (mean over the batch of ``reference`` — or of the current
            run without one — at each position; ``over="tokens"`` averages positions too);
            ``"resample"`` (each sequence takes the activation of a random other sequence of
            ``reference`` or of the current batch, seeded).
        reference: a tensor or ``Trace`` with this hook, from a reference dataset.
    """

    method: Literal["zero", "mean", "resample"] = "zero"
    reference: Any = None
    over: Literal["batch", "tokens"] = "batch"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ("zero", "mean", "resample"):
            raise ValueError(f"unknown ablation method {self.method!r}; use 'zero', 'mean' or 'resample'")
        if self.over not in ("batch", "tokens"):
            raise ValueError(f"over must be 'batch' or 'tokens', got {self.over!r}")
        if self.reference is not None:
            _check_finite(_source_tensor(self.reference, self.site), f"ablation reference for {self.site.name}")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        if self.method == "zero":
            return torch.zeros_like(act)
        ref = act.detach() if self.reference is None else _source_tensor(self.reference, self.site).to(act.device)
        if self.method == "mean":
            mean = ref.mean(0, keepdim=True)
            if self.over == "tokens":
                axes = self.site.component.axes
                mean = mean.mean(axes.index("q_pos" if "q_pos" in axes else "pos"), keepdim=True)
            elif mean.shape[1:] != act.shape[1:]:
                self._bad(ref, act)
            return mean
        g = torch.Generator().manual_seed(self.seed)
        n = ref.shape[0]
        if ref.shape[1:] != act.shape[1:]:
            self._bad(ref, act)
        if self.reference is None:  # a random *other* sequence of the batch
            if n < 2:
                raise ValueError(f"resample ablation of {self.site.name} without reference= needs a batch of at "
                                 "least 2 sequences (each takes another's activation); pass reference=")
            pick = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
        else:
            pick = torch.randint(0, n, (act.shape[0],), generator=g)
        return ref[pick.to(ref.device)]

    def _bad(self, ref: torch.Tensor, act: torch.Tensor) -> None:
        raise ValueError(f"ablation reference for {self.site.name} has shape {tuple(ref.shape)}, "
                         f"incompatible with the activation {tuple(act.shape)}")


@dataclass(frozen=True)
class Add(Intervention):
    """Add ``scale * vector`` (a steering vector, broadcast over batch and positions)."""

    vector: torch.Tensor | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.vector, torch.Tensor):
            raise TypeError(f"Add needs vector= as a torch.Tensor, got {type(self.vector).__name__}")
        _check_finite(self.vector, f"steering vector for {self.site.name}")
        _check_finite_number(self.scale, "Add scale")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        assert self.vector is not None
        try:
            return act + self.scale * self.vector.to(act.device, act.dtype)
        except RuntimeError as e:
            raise ValueError(f"vector of shape {tuple(self.vector.shape)} does not broadcast to "
                             f"{self.site.name} activation {tuple(act.shape)}") from e


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply the activation by ``factor``."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_finite_number(self.factor, "Scale factor")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        return act * self.factor


@dataclass(frozen=True)
class Clamp(Intervention):
    """Clamp the activation into ``[min, max]`` (either may be ``None``)."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is None and self.max is None:
            raise ValueError("Clamp needs min= and/or max=")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Clamp min={self.min} is greater than max={self.max}")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        return act.clamp(self.min, self.max)


@dataclass(frozen=True)
class Lambda(Intervention):
    """Apply any function ``fn(act, site) -> act`` (for ad-hoc experiments)."""

    fn: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.fn):
            raise TypeError("Lambda needs fn= as a callable (act, site) -> act")

    def edit(self, act: torch.Tensor) -> torch.Tensor:
        out = self.fn(act, self.site)
        if out is None:
            return act
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"Lambda fn for {self.site.name} must return a torch.Tensor or None, "
                            f"got {type(out).__name__}")
        if out.shape != act.shape:
            raise ValueError(f"Lambda fn for {self.site.name} returned shape {tuple(out.shape)}; "
                             f"it must keep the activation's shape {tuple(act.shape)}")
        return out
