"""Alignments: each high-level variable ↦ the sites of the network that hold it.

A site is a hook point (any :mod:`interp.sites` spelling of one layer's component, ``"resid_post.3"``,
``"z.1"``, ``"hf:..."``), the token positions there (per sequence, negative from each sequence's last real
token), optionally heads (``"L1H2"``, on per-head sites) and optionally a subspace of the last axis (``[k, d]``
rows: a probe direction, SAE decoder rows, a learned DAS basis). An interchange intervention on a variable
replaces, at each of its sites, the base run's values (in the subspace) by the source run's.

Positions map base to source: the i-th selected position of the source goes to the i-th selected position of
the base. Positions counted from the end (``-1``) map pairs of different token lengths; other selections need
base and source of equal lengths, or ``source_positions=`` given explicitly.

Example:
    >>> from interp.causal import AlignedSite, Alignment
    >>> al = Alignment({"WX": AlignedSite("mlp_out.0", positions=1), "WY": AlignedSite("mlp_out.0", positions=3)})
    >>> al
    Alignment(WX: mlp_out.0@1; WY: mlp_out.0@3)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from interp.errors import BadInputError, unknown_name
from interp.models import Model
from interp.sites import Component, HeadRef, Positions, Site, normalize_positions, resolve

if TYPE_CHECKING:
    from interp.causal.results import SubspaceResult

Heads = int | Sequence[int | str | tuple[int, int] | HeadRef] | str | None
"""Heads on a per-head site: indices within the site's layer, ``(layer, head)`` pairs or ``"L1H2"``."""


def _normalize_heads(x: Heads) -> tuple[int | HeadRef, ...] | None:
    if x is None:
        return None
    if isinstance(x, str):
        return tuple(HeadRef.parse(p.strip()) for p in x.split(",") if p.strip())
    if isinstance(x, HeadRef):
        return (x,)
    if isinstance(x, int) and not isinstance(x, bool):
        return (x,)
    out: list[int | HeadRef] = []
    for h in x:  # type: ignore[union-attr]
        if isinstance(h, (str, tuple, list, HeadRef)):
            out.append(HeadRef.parse(h))
        elif isinstance(h, int) and not isinstance(h, bool):
            out.append(h)
        else:
            raise TypeError(f"heads must be ints, (layer, head) pairs or 'L1H2' strings, got {h!r}")
    return tuple(out)


# the size of the last axis of each component, by model dimension
_LAST_DIM = {
    Component.EMBED: "d_model", Component.RESID_PRE: "d_model", Component.ATTN_OUT: "d_model",
    Component.RESID_MID: "d_model", Component.MLP_OUT: "d_model", Component.RESID_POST: "d_model",
    Component.ATTN_RAW: "d_model", Component.MLP_RAW: "d_model", Component.LN_FINAL: "d_model",
    Component.Q: "d_head", Component.K: "d_head", Component.V: "d_head", Component.Z: "d_head",
    Component.MLP_PRE: "d_mlp", Component.MLP_POST: "d_mlp",
}


@dataclass(frozen=True)
class AlignedSite:
    """One site a variable is aligned to: a hook point, positions, heads and a subspace.

    Args:
        hook: one hook point (``"resid_post.3"``, ``"blocks.0.hook_mlp_out"``, ``"z.1"``, ``"hf:..."``); a
            spelling that names several (``"resid_post"``) aligns the variable to each of them.
        positions: base positions (an int, a list, a slice, ``None``: every real token).
        source_positions: the source positions they take their values from (default: ``positions``).
        heads: on per-head sites (``q k v z``), heads within the layer or ``"L1H2"``; ``None``: every head.
        basis: a subspace of the last axis, ``[k, d]`` rows or one ``[d]`` direction (a tensor, or a learned
            :class:`~interp.causal.SubspaceResult`); ``None``: the whole activation.
    """

    hook: str | Site
    positions: Positions = None
    source_positions: Positions = None
    heads: Heads = None
    basis: torch.Tensor | SubspaceResult | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", normalize_positions(self.positions, "positions"))
        object.__setattr__(self, "source_positions", normalize_positions(self.source_positions, "source_positions"))
        object.__setattr__(self, "heads", _normalize_heads(self.heads))
        b = self.basis
        if b is not None and not isinstance(b, torch.Tensor):
            if not hasattr(b, "basis"):
                raise TypeError(f"basis must be a tensor or a SubspaceResult, got {type(b).__name__}")
        elif isinstance(b, torch.Tensor) and (b.dim() not in (1, 2) or b.numel() == 0 or not b.is_floating_point()):
            raise BadInputError(f"basis must be a float [d] or [k, d] tensor, got shape {tuple(b.shape)}")

    def basis_tensor(self) -> torch.Tensor | None:
        """The subspace as ``[k, d]`` rows (``None``: the whole activation)."""
        b = self.basis
        if b is None:
            return None
        t = b if isinstance(b, torch.Tensor) else b.basis
        return t.reshape(-1, t.shape[-1]).detach()

    def label(self) -> str:
        """``mlp_out.0@1``, ``z.1@-1[L1H2]``, ``resid_post.3@-1/4d``."""
        hook = self.hook.short if isinstance(self.hook, Site) else str(self.hook)
        pos = "all" if self.positions is None else _fmt_pos(self.positions)
        if self.source_positions is not None:
            pos += f"<-{_fmt_pos(self.source_positions)}"
        out = f"{hook}@{pos}"
        if self.heads is not None:
            out += "[" + ",".join(str(h) for h in self.heads) + "]"  # type: ignore[union-attr]
        b = self.basis_tensor()
        if b is not None:
            out += f"/{b.shape[0]}d"
        return out


def _fmt_pos(p: Positions) -> str:
    if isinstance(p, slice):
        return f"{'' if p.start is None else p.start}:{'' if p.stop is None else p.stop}"
    if isinstance(p, int):
        return str(p)
    return ",".join(str(i) for i in p)  # type: ignore[union-attr]


SiteLike = AlignedSite | str | tuple[str, Any]


def as_site(x: SiteLike) -> AlignedSite:
    """An :class:`AlignedSite` from itself, a hook name (every position) or ``(hook, positions)``."""
    if isinstance(x, AlignedSite):
        return x
    if isinstance(x, (str, Site)):
        return AlignedSite(x)
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], (str, Site)):
        return AlignedSite(x[0], positions=x[1])
    raise TypeError(f"an aligned site is an AlignedSite, a hook name or (hook, positions), got {x!r}")


class Alignment(Mapping[str, tuple[AlignedSite, ...]]):
    """High-level variables ↦ the sites that hold them: ``{variable: site or [sites]}``.

    A site is an :class:`AlignedSite`, a hook name (every position) or ``(hook, positions)``.
    """

    def __init__(self, sites: Mapping[str, SiteLike | Sequence[SiteLike]]) -> None:
        out: dict[str, tuple[AlignedSite, ...]] = {}
        for var, spec in sites.items():
            if isinstance(spec, (AlignedSite, str, Site)) or (isinstance(spec, tuple) and len(spec) == 2
                                                             and isinstance(spec[0], (str, Site))):
                items = [spec]
            else:
                items = list(spec)  # type: ignore[arg-type]
            if not items:
                raise BadInputError(f"variable {var!r} is aligned to no site")
            out[var] = tuple(as_site(s) for s in items)  # type: ignore[arg-type]
        if not out:
            raise BadInputError("an alignment needs at least one variable")
        self._sites = out

    def __getitem__(self, var: str) -> tuple[AlignedSite, ...]:
        if var not in self._sites:
            raise unknown_name("aligned variable", var, list(self._sites))
        return self._sites[var]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def label(self) -> str:
        """``WX: mlp_out.0@1; WY: mlp_out.0@3``."""
        return "; ".join(f"{v}: {' + '.join(s.label() for s in ss)}" for v, ss in self._sites.items())

    def __repr__(self) -> str:
        return f"Alignment({self.label()})"

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """JSON-able (subspaces are left out: save a :class:`SubspaceResult` for those)."""
        return {v: [{"hook": str(s.hook), "positions": _json_pos(s.positions),
                     "source_positions": _json_pos(s.source_positions),
                     "heads": None if s.heads is None else [str(h) if isinstance(h, HeadRef) else h
                                                            for h in s.heads]}  # type: ignore[union-attr]
                    for s in ss] for v, ss in self._sites.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[Mapping[str, Any]]]) -> Alignment:
        """The inverse of :meth:`to_dict`."""
        return cls({v: [AlignedSite(s["hook"], positions=_pos_json(s.get("positions")),
                                    source_positions=_pos_json(s.get("source_positions")), heads=s.get("heads"))
                        for s in ss] for v, ss in data.items()})


def _json_pos(p: Positions) -> Any:
    if isinstance(p, slice):
        return {"slice": [p.start, p.stop, p.step]}
    return list(p) if isinstance(p, tuple) else p


def _pos_json(p: Any) -> Positions:
    if isinstance(p, dict) and "slice" in p:
        return slice(*p["slice"])
    return p  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ResolvedSite:
    """An aligned site checked against a model: one hook point, head indices within its layer, a basis."""

    site: Site
    positions: Positions
    source_positions: Positions | None
    heads: tuple[int, ...] | None
    basis: torch.Tensor | None
    label: str


def last_dim(model: Model, site: Site) -> int | None:
    """The size of the last axis of ``site``'s activations (``None`` where the model alone does not say)."""
    attr = _LAST_DIM.get(site.component)
    return None if attr is None else int(getattr(model.dims, attr))


def resolve_site(model: Model, spec: SiteLike) -> list[ResolvedSite]:
    """The hook points of one aligned site on ``model``, checked.

    Raises:
        UnknownHookError: a hook the model lacks (close matches named).
        BadInputError: heads on a site without a head axis, a head or layer out of range, or a subspace with
            more dimensions than the site has.
    """
    s = as_site(spec)
    modules = (n for n, _ in model.hf.named_modules() if n)
    sites = resolve(s.hook, model.sites(), modules)
    out = []
    for site in sites:
        heads: tuple[int, ...] | None = None
        if s.heads is not None:
            if "head" not in site.component.axes or site.component is Component.HF:
                raise BadInputError(f"{site.name} has no head axis; heads= applies to q, k, v and z sites")
            idx: list[int] = []
            for h in cast("tuple[int | HeadRef, ...]", s.heads):
                if isinstance(h, HeadRef):
                    if h.layer != site.layer:
                        raise BadInputError(f"head {h} is not in layer {site.layer} of {site.name}")
                    h = h.head
                if not 0 <= h < model.dims.n_heads:
                    raise BadInputError(f"head {h} is out of range for {site.name}, which has {model.dims.n_heads} "
                                        f"heads (valid: 0..{model.dims.n_heads - 1})")
                idx.append(h)
            heads = tuple(idx)
        basis = s.basis_tensor()
        if basis is not None:
            d = last_dim(model, site)
            if d is not None and basis.shape[-1] != d:
                raise BadInputError(f"the subspace of {site.short} has vectors of dimension {basis.shape[-1]}, but "
                                    f"the site's last axis has {d}")
            if basis.shape[0] > basis.shape[-1]:
                raise BadInputError(f"the subspace of {site.short} has {basis.shape[0]} dimensions, more than the "
                                    f"site's {basis.shape[-1]}")
        label = s.label() if len(sites) == 1 else AlignedSite(site, s.positions, s.source_positions, s.heads,
                                                              s.basis).label()
        out.append(ResolvedSite(site, s.positions, s.source_positions, heads, basis, label))
    return out


def resolve_alignment(model: Model, alignment: Alignment | Mapping[str, Any], variables: Sequence[str] = ()
                      ) -> dict[str, list[ResolvedSite]]:
    """Every variable's resolved sites; ``variables`` (those the data interchanges) must all be aligned.

    Raises:
        BadInputError: a variable of ``variables`` the alignment does not cover (and what :func:`resolve_site`
            raises).
    """
    al = alignment if isinstance(alignment, Alignment) else Alignment(alignment)
    missing = [v for v in variables if v not in al]
    if missing:
        raise BadInputError(f"the data interchanges {', '.join(missing)} but the alignment only covers "
                            f"{', '.join(al)}; align every interchanged variable")
    out: dict[str, list[ResolvedSite]] = {}
    for v in variables or list(al):
        try:
            out[v] = [r for s in al[v] for r in resolve_site(model, s)]
        except BadInputError as e:  # name the variable whose site is wrong, keep the error's class
            raise type(e)(f"the alignment of {v!r}: {e}") from None
    return out


__all__ = ["AlignedSite", "Alignment", "ResolvedSite", "as_site", "last_dim", "resolve_alignment", "resolve_site"]
