"""Where SAEs read: hook names in the one vocabulary, and their place in the flow of a transformer block.

SAEs are keyed by the canonical full hook name (``blocks.4.hook_resid_post``); every function of
:mod:`interp.features` accepts any spelling of :mod:`interp.sites` (``resid_post.4``, ``("resid_post", 4)``,
``resid_post.-1`` when a model is given to count layers from the end) and stores the canonical one.

In flow terms, block ``L`` turns the residual stream ``r_L`` (``resid_pre.L`` = ``resid_post.{L-1}``) into
``r_{L+1}`` by adding its attention output (``attn_out.L``) and MLP output (``mlp_out.L``).

Example:
    >>> from interp.features.points import canonical_hook, point_of
    >>> canonical_hook("resid_post.4")
    'blocks.4.hook_resid_post'
    >>> point_of("resid_post.4"), point_of("blocks.5.hook_resid_pre") == point_of("resid_post.4")
    (Point(kind='resid', stage=5), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from interp.errors import BadInputError, unknown_name
from interp.sites import Component, Site, SiteSpec, resolve

if TYPE_CHECKING:
    from interp.models import Model

T = TypeVar("T")
HookKey = TypeVar("HookKey", bound=SiteSpec)
"""The key type of a mapping of SAEs by hook: any :mod:`interp.sites` spelling."""


def canonical_hook(hook: SiteSpec, model: Model | None = None) -> str:
    """The canonical full name of one hook point in any spelling (a negative layer needs ``model``).

    Raises:
        UnknownHookError: a name that is no hook point (close matches listed), or one the model lacks.
        BadInputError: a spelling that names several hook points (``resid_post`` = every layer).

    Example:
        >>> canonical_hook(("mlp_out", 3))
        'blocks.3.hook_mlp_out'
    """
    if model is None:
        return Site.parse(hook).name
    sites = resolve(hook, model.sites(), (n for n, _ in model.hf.named_modules() if n))
    if len(sites) != 1:
        raise BadInputError(f"hook {hook!r} names {len(sites)} hook points; an SAE reads one (e.g. "
                            f"{sites[0].short if sites else 'resid_post.3'})")
    return sites[0].name


def key_by_hook(saes: Mapping[HookKey, T], model: Model | None = None) -> dict[str, T]:
    """``saes`` re-keyed by canonical hook names (keys in any spelling).

    Raises:
        BadInputError: two keys name the same hook point, or there are no SAEs.
    """
    if not saes:
        raise BadInputError("no SAEs given: pass saes={hook: SparseAutoencoder, ...} "
                            "(e.g. interp.features.load_saes())")
    out: dict[str, T] = {}
    for key, sae in saes.items():
        name = canonical_hook(key, model)
        if name in out:
            raise BadInputError(f"two SAEs given for the same hook point {name} (key {key!r})")
        out[name] = sae
    return out


def pick(saes: Mapping[str, T], hook: SiteSpec, model: Model | None = None) -> tuple[str, T]:
    """``(canonical name, SAE)`` of ``hook`` in canonically keyed ``saes``; an unknown hook lists the ones given."""
    name = canonical_hook(hook, model)
    if name not in saes:
        raise unknown_name("SAE hook", name, list(saes), hint="(the hooks of the SAEs given)")
    return name, saes[name]


@dataclass(frozen=True)
class Point:
    """Where an SAE reads, in flow terms: the residual stream after ``stage`` blocks, or a block's sublayer."""

    kind: Literal["resid", "attn", "mlp"]
    stage: int  # resid: number of blocks applied; attn/mlp: the block index

    @property
    def column(self) -> int:
        """Left-to-right position: r_0, block 0 sublayers, r_1, ..."""
        return 2 * self.stage if self.kind == "resid" else 2 * self.stage + 1

    @property
    def label(self) -> str:
        """``r4`` (residual stream after 4 blocks), ``attn4`` / ``mlp4`` (block 4's sublayers)."""
        return f"{'r' if self.kind == 'resid' else self.kind}{self.stage}"


def point_of(hook: SiteSpec) -> Point:
    """The flow position of a hook point (``resid_pre``, ``resid_post``, ``attn_out`` or ``mlp_out``)."""
    site = Site.parse(hook)
    c, L = site.component, site.layer
    if L is not None:
        if c is Component.RESID_PRE:
            return Point("resid", L)
        if c is Component.RESID_POST:
            return Point("resid", L + 1)
        if c is Component.ATTN_OUT:
            return Point("attn", L)
        if c is Component.MLP_OUT:
            return Point("mlp", L)
    raise BadInputError(f"feature flow reads SAEs at resid_pre, resid_post, attn_out or mlp_out "
                        f"(blocks.L.hook_resid_pre/hook_resid_post/hook_attn_out/hook_mlp_out), not {site.name!r}")


def node_label(hook: str, feature: int) -> str:
    """``"r5 #12"`` / ``"attn4 #3"`` / ``"mlp4 #7"`` (the hook's name where it is no flow point)."""
    try:
        where = point_of(hook).label
    except BadInputError:
        where = hook
    return f"{where} #{feature}"


__all__ = ["HookKey", "Point", "canonical_hook", "key_by_hook", "node_label", "pick", "point_of"]
