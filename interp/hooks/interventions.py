"""Interventions: composable edits of hook points, restricted to positions and heads.

Each intervention is a frozen dataclass; the hook engine calls ``apply(act, site, lengths)`` at every site it
names, in the order given. ``site`` is any spelling of :mod:`interp.sites`: one hook point
(``"blocks.3.hook_resid_post"``, ``"resid_post.3"``, ``"hf:model.layers.3.mlp"``) or several (``"mlp_out"``:
every layer; ``"blocks.*.attn.hook_z"``). Selections:

- ``positions``: ints, lists or slices over each sequence's real tokens, negative from each sequence's end
  (the rule of :mod:`interp.sites.positions`); on ``pattern`` they select query positions;
- ``heads`` (per-head sites ``q/k/v/z/pattern``): head indices within the site's layer, or heads spelled
  ``(layer, head)`` / ``"L5H1"``, which select those heads at their own layer (so ``Ablate("z",
  heads=["L5H1", "L7H0"])`` ablates two heads of two layers).

Example:
    >>> import torch
    >>> from interp.hooks import Add, Ablate
    >>> from interp.sites import Site
    >>> act = torch.ones(1, 3, 2)  # [batch, pos, d_model]
    >>> Add("resid_post.0", torch.tensor([1.0, -1.0]), positions=[-1]).apply(act)[0]
    tensor([[1., 1.],
            [1., 1.],
            [2., 0.]])
    >>> Ablate("resid_post.0", positions=0).apply(act)[0, 0]
    tensor([0., 0.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from interp.errors import BadInputError
from interp.sites import Component, HeadRef, Positions, Site, SiteSpec, normalize_positions, position_mask
from interp.sites.names import _BY_SHORT, split_stack
from interp.sites.positions import index_list

Heads = int | Sequence[int] | Sequence[HeadRef | tuple[int, int] | str] | str | None


def _normalize_heads(x: Any) -> tuple[int | HeadRef, ...] | slice | None:
    """Heads as a tuple of ints (within the site's layer) and HeadRefs (a layer of their own)."""
    if x is None or isinstance(x, slice):
        return x
    if isinstance(x, str):
        return tuple(HeadRef.parse(p) for p in x.split(",") if p.strip())
    if isinstance(x, HeadRef):
        return (x,)
    if isinstance(x, int) and not isinstance(x, bool):
        return (x,)
    items = list(x) if not isinstance(x, torch.Tensor) else x.flatten().tolist()
    out: list[int | HeadRef] = []
    for i in items:
        if isinstance(i, (str, tuple, list, HeadRef)):
            out.append(HeadRef.parse(i))
        else:
            out.extend(index_list(i, "heads"))
    return tuple(out)


def _site_spec(x: Any) -> Site | str:
    """One Site where the spelling names one hook point; the string itself where it names several."""
    if isinstance(x, Site):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        return Site.parse(x)
    if not isinstance(x, str):
        raise TypeError(f"an intervention's site must be a hook name or a Site, got {type(x).__name__}: {x!r}")
    base = split_stack(x)[1]  # "encoder.resid_post.3": the same spellings on an encoder-decoder's stacks
    if any(ch in x for ch in "*?[") or (base in _BY_SHORT and _BY_SHORT[base].per_layer):
        return x
    head, _, layer = base.rpartition(".")
    if head in _BY_SHORT and layer.startswith("-") and layer[1:].isdigit():
        return x  # a negative layer: resolved against the model
    return Site.parse(x)


def _component_of(spec: Site | str) -> Component | None:
    if isinstance(spec, Site):
        return spec.component
    spec = split_stack(spec)[1]
    if spec in _BY_SHORT:
        return _BY_SHORT[spec]
    head = spec.rpartition(".")[0]
    return _BY_SHORT.get(head)


@dataclass(frozen=True)
class Intervention:
    """Base class: an edit of ``site`` at the selected positions and heads.

    Args:
        site: one or several hook points in any :mod:`interp.sites` spelling.
        positions: an int, a list of ints, a slice, or ``None`` for every real token (see the module docstring).
        heads: for per-head sites, head indices within the layer, ``(layer, head)`` pairs or ``"L5H1"``
            strings, or ``None`` for every head.
    """

    site: SiteSpec
    positions: Positions = field(default=None, kw_only=True)
    heads: Heads = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        spec = _site_spec(self.site)
        object.__setattr__(self, "site", spec)
        comp = _component_of(spec)
        if self.heads is not None and comp is not None and comp.head_axis is None:
            raise BadInputError(f"{spec} has no head axis; heads= applies to q, k, v, z, pattern, result and "
                                "q_input, k_input, v_input")
        object.__setattr__(self, "positions", normalize_positions(self.positions, "positions"))
        heads = _normalize_heads(self.heads)
        object.__setattr__(self, "heads", heads)
        if isinstance(spec, Site) and isinstance(heads, tuple):
            other = [h for h in heads if isinstance(h, HeadRef) and h.layer != spec.layer]
            if other:
                raise BadInputError(f"head {other[0]} is not in layer {spec.layer} of {spec.name}; name its site "
                                    f"({spec.component.short}.{other[0].layer}) or a pattern ({spec.component.short})")

    def applies_to(self, site: Site) -> bool:
        """Whether this intervention edits ``site`` (a pattern site with heads spelled ``L5H1`` only edits the
        layers of those heads)."""
        if isinstance(self.heads, tuple) and self.heads and all(isinstance(h, HeadRef) for h in self.heads):
            return any(h.layer == site.layer for h in self.heads)  # type: ignore[union-attr]
        return True

    def _head_index(self, site: Site) -> list[int] | slice | None:
        if self.heads is None or isinstance(self.heads, slice):
            return self.heads
        out: list[int] = []
        for h in self.heads:  # type: ignore[union-attr]
            if isinstance(h, HeadRef):
                if h.layer == site.layer:
                    out.append(h.head)
            else:
                out.append(int(h))  # type: ignore[arg-type]
        return out

    def mask(self, act: torch.Tensor, site: Site | None = None, lengths: torch.Tensor | None = None
             ) -> torch.Tensor | None:
        """Boolean mask broadcastable to ``act`` that is True where this intervention applies.

        ``lengths`` (``[batch]`` real tokens per sequence) places negative positions; without it every row
        counts as real tokens only.
        """
        site = site or self._one_site()
        if self.positions is None and self.heads is None:
            return None
        axes = site.component.axes
        if site.component is Component.HF:
            axes = ("batch", "pos", *(f"dim{i}" for i in range(act.dim() - 2)))
        if act.dim() != len(axes):
            raise BadInputError(f"{site.name} activation has shape {tuple(act.shape)}, expected axes {axes}")
        mask = torch.ones([1] * act.dim(), dtype=torch.bool, device=act.device)
        if self.positions is not None:
            p_ax = axes.index("q_pos") if "q_pos" in axes else axes.index("pos")
            size = act.shape[p_ax]
            lens = lengths if lengths is not None and lengths.shape[0] == act.shape[0] else None
            if lens is None:
                lens = torch.full((act.shape[0],), size, dtype=torch.long)
            pm = position_mask(self.positions, lens.clamp(max=size), size).to(act.device)  # [batch, pos]
            view = [1] * act.dim()
            view[0], view[p_ax] = act.shape[0], size
            mask = mask & pm.view(view)
        if self.heads is not None:
            h_ax = axes.index("head") if "head" in axes else axes.index("kv_head")
            n = act.shape[h_ax]
            idx = self._head_index(site)
            hm = torch.zeros(n, dtype=torch.bool)
            if isinstance(idx, slice):
                hm[idx] = True
            else:
                bad = [h for h in idx or [] if not -n <= h < n]
                if bad:
                    raise BadInputError(f"head {bad[0]} is out of range for {site.name}, which has {n} heads "
                                        f"(valid: 0..{n - 1})")
                hm[torch.tensor(idx or [], dtype=torch.long)] = True
            view = [1] * act.dim()
            view[h_ax] = n
            mask = mask & hm.to(act.device).view(view)
        return mask

    def _one_site(self) -> Site:
        if isinstance(self.site, Site):
            return self.site
        raise BadInputError(f"{self.site!r} names several hook points; apply() needs the site it runs at")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        """The edited activation everywhere (before restricting to the selection)."""
        raise NotImplementedError

    def apply(self, act: torch.Tensor, site: Site | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Return a new tensor: ``edit(act)`` inside the selection, ``act`` outside it."""
        site = site or self._one_site()
        new = self.edit(act, site)
        if new.shape != act.shape:
            new = new.expand_as(act)
        mask = self.mask(act, site, lengths)
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
        raise BadInputError(f"{what} contains NaN or inf values")


def _check_finite_number(x: Any, what: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(x).__name__}: {x!r}")
    if not math.isfinite(x):
        raise BadInputError(f"{what} must be finite, got {x!r}")


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
            raise BadInputError("Patch needs source= (a tensor or a Trace holding this hook)")
        if not isinstance(self.site, Site):
            if isinstance(self.source, torch.Tensor):
                raise BadInputError(f"Patch of several hook points ({self.site!r}) needs source= as a Trace "
                                    "or a mapping of hook names to tensors, not one tensor")
            return
        src = _source_tensor(self.source, self.site)
        if not src.is_floating_point():
            raise TypeError(f"patch source for {self.site.name} has dtype {src.dtype}; activations are floating "
                            "point: pass the activation of another run (a float tensor or a Trace)")
        _check_finite(src, f"patch source for {self.site.name}")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        src = _source_tensor(self.source, site).to(act.device)
        if src.shape[1:] != act.shape[1:] or src.shape[0] not in (1, act.shape[0]):
            raise BadInputError(
                f"patch source for {site.name} has shape {tuple(src.shape)} but the activation has "
                f"{tuple(act.shape)}; sources must match (batch may be 1) — are the prompts the same length?"
            )
        return src


@dataclass(frozen=True)
class Ablate(Intervention):
    """Zero, mean or resample ablation.

    Args:
        method: ``"zero"``; ``"mean"``: the mean over the sequences (the batch axis) of ``reference`` — a
            reference dataset's activations — at each position, or, without ``reference``, over the sequences of
            the current batch, which then needs at least 2 (the mean of one sequence is itself: a silent no-op,
            refused); ``over="tokens"`` averages the positions too (allowed on one sequence);
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
            raise BadInputError(f"unknown ablation method {self.method!r}; use 'zero', 'mean' or 'resample'")
        if self.over not in ("batch", "tokens"):
            raise BadInputError(f"over must be 'batch' or 'tokens', got {self.over!r}")
        if self.reference is not None and isinstance(self.site, Site):
            _check_finite(_source_tensor(self.reference, self.site), f"ablation reference for {self.site.name}")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        if self.method == "zero":
            return torch.zeros_like(act)
        ref = act.detach() if self.reference is None else _source_tensor(self.reference, site).to(act.device)
        if self.method == "mean":
            if self.reference is None and self.over == "batch" and ref.shape[0] < 2:
                raise BadInputError(f"mean ablation of {site.name} without reference= takes the mean over the batch, "
                                    "and a batch of 1 sequence is its own mean (the ablation would change nothing); "
                                    "pass reference= (a Trace or tensor from reference inputs), run a batch of >= 2 "
                                    "sequences, or use over='tokens'")
            mean = ref.mean(0, keepdim=True)
            if self.over == "tokens":
                axes = site.component.axes
                mean = mean.mean(axes.index("q_pos" if "q_pos" in axes else "pos"), keepdim=True)
            elif mean.shape[1:] != act.shape[1:]:
                self._bad(ref, act, site)
            return mean
        g = torch.Generator().manual_seed(self.seed)
        n = ref.shape[0]
        if ref.shape[1:] != act.shape[1:]:
            self._bad(ref, act, site)
        if self.reference is None:  # a random *other* sequence of the batch
            if n < 2:
                raise BadInputError(f"resample ablation of {site.name} without reference= needs a batch of at "
                                 "least 2 sequences (each takes another's activation); pass reference=")
            pick = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
        else:
            pick = torch.randint(0, n, (act.shape[0],), generator=g)
        return ref[pick.to(ref.device)]

    def _bad(self, ref: torch.Tensor, act: torch.Tensor, site: Site) -> None:
        raise BadInputError(f"ablation reference for {site.name} has shape {tuple(ref.shape)}, "
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
        _check_finite(self.vector, f"steering vector for {self.site}")
        _check_finite_number(self.scale, "Add scale")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        assert self.vector is not None
        try:
            return act + self.scale * self.vector.to(act.device, act.dtype)
        except RuntimeError as e:
            raise BadInputError(f"vector of shape {tuple(self.vector.shape)} does not broadcast to "
                             f"{site.name} activation {tuple(act.shape)}") from e


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply the activation by ``factor``."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_finite_number(self.factor, "Scale factor")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        return act * self.factor


@dataclass(frozen=True)
class Clamp(Intervention):
    """Clamp the activation into ``[min, max]`` (either may be ``None``)."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min is None and self.max is None:
            raise BadInputError("Clamp needs min= and/or max=")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise BadInputError(f"Clamp min={self.min} is greater than max={self.max}")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        return act.clamp(self.min, self.max)


@dataclass(frozen=True)
class Lambda(Intervention):
    """Apply any function ``fn(act, site) -> act`` (for ad-hoc experiments)."""

    fn: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.fn):
            raise TypeError("Lambda needs fn= as a callable (act, site) -> act")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        out = self.fn(act, site)
        if out is None:
            return act
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"Lambda fn for {site.name} must return a torch.Tensor or None, "
                            f"got {type(out).__name__}")
        if out.shape != act.shape:
            raise BadInputError(f"Lambda fn for {site.name} returned shape {tuple(out.shape)}; "
                             f"it must keep the activation's shape {tuple(act.shape)}")
        return out


@dataclass(frozen=True)
class Transform(Intervention):
    """Multiply the last axis by a matrix: ``act @ matrix`` (``[d, d]``), e.g. a head's ``hook_z`` by the
    ``d_head x d_head`` map that removes some of its OV components (:func:`interp.heads.ov_component_edit`).

    Example:
        >>> import torch
        >>> from interp.hooks import Transform
        >>> act = torch.ones(1, 2, 3, 2)  # [batch, pos, head, d_head]
        >>> Transform("z.0", torch.diag(torch.tensor([2.0, 0.0])), heads=[1]).apply(act)[0, 0].tolist()
        [[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]]
    """

    matrix: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.matrix
        if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise BadInputError(f"Transform needs matrix= as a square [d, d] tensor, got "
                                f"{tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")
        _check_finite(m, f"Transform matrix for {self.site}")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        assert self.matrix is not None
        if act.shape[-1] != self.matrix.shape[0]:
            raise BadInputError(f"Transform matrix is {tuple(self.matrix.shape)} but {site.name} has last axis "
                                f"{act.shape[-1]}")
        return act @ self.matrix.to(act.device, act.dtype)


@dataclass(frozen=True)
class Project(Intervention):
    """Scale the part of the activation along some directions by ``scale`` (``0``: remove it; a probe's
    direction, a feature's decoder row, a subspace). ``directions`` is ``[d]`` or ``[k, d]``; they are
    orthonormalised first.

    Example:
        >>> import torch
        >>> from interp.hooks import Project
        >>> Project("resid_post.0", torch.tensor([1.0, 0.0])).apply(torch.tensor([[[3.0, 4.0]]])).tolist()
        [[[0.0, 4.0]]]
    """

    directions: torch.Tensor | None = None
    scale: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.directions
        if not isinstance(d, torch.Tensor) or d.dim() not in (1, 2) or d.numel() == 0:
            raise BadInputError("Project needs directions= as a [d] or [k, d] tensor")
        _check_finite(d, f"Project directions for {self.site}")
        _check_finite_number(self.scale, "Project scale")
        basis = torch.linalg.qr(d.reshape(-1, d.shape[-1]).double().T).Q.T  # [k, d] orthonormal rows
        object.__setattr__(self, "_basis", basis)

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        basis = self._basis.to(act.device, act.dtype)  # type: ignore[attr-defined]
        if act.shape[-1] != basis.shape[-1]:
            raise BadInputError(f"directions have dimension {basis.shape[-1]} but {site.name} has {act.shape[-1]}")
        along = (act @ basis.T) @ basis
        return act - (1.0 - self.scale) * along


@runtime_checkable
class Dictionary(Protocol):
    """What a dictionary (an SAE or a transcoder) offers interventions: codes, directions, reconstructions."""

    d_sae: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def direction(self, feature: int) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor: ...


def _check_dictionary(sae: Any, what: str) -> None:
    if not isinstance(sae, Dictionary):
        raise TypeError(f"{what} needs sae= with encode, direction and reconstruct (an interp.features."
                        f"SparseAutoencoder), got {type(sae).__name__}")


@dataclass(frozen=True)
class FeatureEdit(Intervention):
    """Set one dictionary feature's activation ``z`` to ``scale * z + add`` (the SAE's units) by adding
    ``(new - z) * direction(feature)``; the SAE's reconstruction error is kept, so ``scale=1, add=0`` changes
    nothing. ``scale=0`` suppresses the feature; ``add > 0`` injects it where it is silent.

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> from interp.hooks import FeatureEdit
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, n_tokens=512, batch_size=128), progress=False)
        >>> sae = sae.fit(torch.randn(512, 4))
        >>> x = torch.randn(1, 3, 4)
        >>> bool(torch.equal(FeatureEdit("resid_post.0", sae=sae, feature=3).apply(x), x))
        True
    """

    sae: Any = None
    feature: int = 0
    scale: float = 1.0
    add: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dictionary(self.sae, "FeatureEdit")
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or not 0 <= self.feature < self.sae.d_sae:
            raise BadInputError(f"bad feature {self.feature!r}; valid: 0..{self.sae.d_sae - 1}")
        _check_finite_number(self.scale, "FeatureEdit scale")
        _check_finite_number(self.add, "FeatureEdit add")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        if self.scale == 1.0 and self.add == 0.0:
            return act
        d = self.sae.direction(self.feature).to(act.device, act.dtype)
        if self.scale == 1.0:
            delta = torch.full(act.shape[:-1], float(self.add), device=act.device, dtype=act.dtype)
        else:
            delta = (self.scale - 1.0) * self.sae.encode(act)[..., self.feature].to(act.dtype) + self.add
        return act + delta[..., None] * d


@dataclass(frozen=True)
class Splice(Intervention):
    """Replace the activation by a dictionary's reconstruction of it (``keep_error=True`` adds the
    reconstruction error back as a constant: the run is unchanged, but gradients flow through the features).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> from interp.hooks import Splice
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, n_tokens=512, batch_size=128), progress=False)
        >>> sae = sae.fit(torch.randn(512, 4))
        >>> x = torch.randn(1, 3, 4)
        >>> bool(torch.allclose(Splice("resid_post.0", sae=sae).apply(x), sae.reconstruct(x)))
        True
    """

    sae: Any = None
    keep_error: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dictionary(self.sae, "Splice")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        rec = self.sae.reconstruct(act).to(act.dtype)
        return rec + (act - rec).detach() if self.keep_error else rec


@dataclass(frozen=True)
class SubspacePatch(Patch):
    """Interchange a subspace of the last axis with another run: ``act + w * ((source - act) @ Bᵀ) @ B``, where
    the rows of ``basis`` (``[k, d]``, or one direction ``[d]``) span the subspace (orthonormalised first when
    they are not orthonormal; a learned orthonormal basis is used as it is, so gradients reach it). Only the
    part of ``act`` inside the subspace takes the source's values; the rest is kept. ``basis=None`` patches the
    whole activation (:class:`Patch`). ``weights`` (``[k]``, in ``[0, 1]``) interchange each direction by that
    fraction (Boundless DAS's soft boundary; ``None``: all of it). ``source``, ``positions`` and ``heads``
    as in :class:`Patch` (per-head sites: the subspace lies in each selected head's ``d_head``).

    This is the interchange intervention of distributed alignment search (DAS; Geiger et al. 2023): with ``B``
    the first ``k`` rows of a learned rotation it swaps the top-``k`` rotated dimensions.

    Example:
        >>> import torch
        >>> from interp.hooks import SubspacePatch
        >>> act, src = torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[7.0, 8.0, 9.0]]])
        >>> SubspacePatch("resid_post.0", source=src, basis=torch.tensor([0.0, 1.0, 0.0])).apply(act).tolist()
        [[[1.0, 8.0, 3.0]]]
        >>> SubspacePatch("resid_post.0", source=src, basis=torch.eye(3)[:2], weights=torch.tensor([1.0, 0.5])
        ...               ).apply(act).tolist()
        [[[7.0, 5.0, 3.0]]]
    """

    basis: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        b = self.basis
        if b is None:
            if self.weights is not None:
                raise BadInputError("SubspacePatch weights= needs basis= (one weight per basis row)")
            object.__setattr__(self, "_basis", None)
            return
        if not isinstance(b, torch.Tensor) or b.dim() not in (1, 2) or b.numel() == 0 or not b.is_floating_point():
            raise BadInputError(f"SubspacePatch needs basis= as a float [d] or [k, d] tensor, got "
                                f"{tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}")
        b = b.reshape(-1, b.shape[-1])
        if b.shape[0] > b.shape[1]:
            raise BadInputError(f"SubspacePatch basis has {b.shape[0]} rows but a subspace of a {b.shape[1]}-dim "
                                f"activation has at most {b.shape[1]} dimensions")
        _check_finite(b.detach(), f"SubspacePatch basis for {self.site}")
        gram = b.detach().double() @ b.detach().double().T
        if not torch.allclose(gram, torch.eye(b.shape[0], dtype=torch.float64), atol=1e-4):
            b = torch.linalg.qr(b.double().T).Q.T.to(b.dtype)  # orthonormal rows spanning the same subspace
        object.__setattr__(self, "_basis", b)
        w = self.weights
        if w is not None:
            if not isinstance(w, torch.Tensor) or w.shape != (b.shape[0],):
                raise BadInputError(f"SubspacePatch weights must be a [{b.shape[0]}] tensor (one per basis row), "
                                    f"got {tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
            _check_finite(w.detach(), f"SubspacePatch weights for {self.site}")

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        src = super().edit(act, site)
        basis: torch.Tensor | None = self._basis  # type: ignore[attr-defined]
        if basis is None:
            return src
        if act.shape[-1] != basis.shape[-1]:
            raise BadInputError(f"SubspacePatch basis has dimension {basis.shape[-1]} but {site.name} has last axis "
                                f"{act.shape[-1]}")
        basis = basis.to(act.device, act.dtype)
        coef = (src.to(act.dtype) - act) @ basis.T  # [..., k]
        if self.weights is not None:
            coef = coef * self.weights.to(act.device, act.dtype)
        return act + coef @ basis
