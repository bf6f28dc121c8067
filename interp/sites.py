"""Hook-point names: TransformerLens-style strings parsed once into typed :class:`Site` objects.

The user-facing names follow TransformerLens so that code moves over unchanged::

    hook_embed
    blocks.{L}.hook_resid_pre   blocks.{L}.hook_attn_out   blocks.{L}.hook_resid_mid
    blocks.{L}.hook_mlp_out     blocks.{L}.hook_resid_post
    blocks.{L}.attn.hook_q / hook_k / hook_v / hook_pattern / hook_z
    blocks.{L}.mlp.hook_pre     blocks.{L}.mlp.hook_post
    ln_final.hook_normalized    logits

Example:
    >>> from interp.sites import Site
    >>> Site.parse("blocks.3.attn.hook_z")
    Site(component=<Component.Z: 'attn.hook_z'>, layer=3)
    >>> Site.parse("blocks.3.attn.hook_z").name
    'blocks.3.attn.hook_z'
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class Component(Enum):
    """What a hook point reads. The value is the name suffix after ``blocks.{L}.``."""

    EMBED = "hook_embed"
    RESID_PRE = "hook_resid_pre"
    ATTN_OUT = "hook_attn_out"
    RESID_MID = "hook_resid_mid"
    MLP_OUT = "hook_mlp_out"
    RESID_POST = "hook_resid_post"
    Q = "attn.hook_q"
    K = "attn.hook_k"
    V = "attn.hook_v"
    PATTERN = "attn.hook_pattern"
    Z = "attn.hook_z"
    MLP_PRE = "mlp.hook_pre"
    MLP_POST = "mlp.hook_post"
    LN_FINAL = "ln_final.hook_normalized"
    LOGITS = "logits"

    @property
    def per_layer(self) -> bool:
        return self not in (Component.EMBED, Component.LN_FINAL, Component.LOGITS)

    @property
    def axes(self) -> tuple[str, ...]:
        """Names of the tensor axes of this component's activations."""
        return _AXES[self]

    @property
    def inside_attention(self) -> bool:
        """True for sites computed inside the attention kernel (need the hooked attention path)."""
        return self in (Component.Q, Component.K, Component.V, Component.PATTERN)


_AXES: dict[Component, tuple[str, ...]] = {
    Component.EMBED: ("batch", "pos", "d_model"),
    Component.RESID_PRE: ("batch", "pos", "d_model"),
    Component.ATTN_OUT: ("batch", "pos", "d_model"),
    Component.RESID_MID: ("batch", "pos", "d_model"),
    Component.MLP_OUT: ("batch", "pos", "d_model"),
    Component.RESID_POST: ("batch", "pos", "d_model"),
    Component.Q: ("batch", "pos", "head", "d_head"),
    Component.K: ("batch", "pos", "head", "d_head"),
    Component.V: ("batch", "pos", "head", "d_head"),
    Component.PATTERN: ("batch", "head", "q_pos", "k_pos"),
    Component.Z: ("batch", "pos", "head", "d_head"),
    Component.MLP_PRE: ("batch", "pos", "d_mlp"),
    Component.MLP_POST: ("batch", "pos", "d_mlp"),
    Component.LN_FINAL: ("batch", "pos", "d_model"),
    Component.LOGITS: ("batch", "pos", "vocab"),
}

# ASCII digits only, no leading zeros, nothing after the suffix (not even a newline).
_LAYER_NAME = re.compile(r"blocks\.(0|[1-9][0-9]*)\.(.+)", re.ASCII | re.DOTALL)


class UnknownHookError(KeyError):
    """A hook name that the model does not have. The message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Site:
    """One hook point: a component and, for per-layer components, a layer index.

    Args:
        component: which activation.
        layer: the block index, or ``None`` for ``hook_embed``, ``ln_final.hook_normalized``
            and ``logits``.
    """

    component: Component
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.component.per_layer and (self.layer is None or self.layer < 0):
            raise ValueError(f"{self.component.value} needs a layer index >= 0, got {self.layer!r}")
        if not self.component.per_layer and self.layer is not None:
            raise ValueError(f"{self.component.value} has no layer, got layer={self.layer!r}")

    @property
    def name(self) -> str:
        """The TransformerLens-style name, e.g. ``blocks.3.hook_resid_post``."""
        if self.layer is None:
            return self.component.value
        return f"blocks.{self.layer}.{self.component.value}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str | Site) -> Site:
        """Parse a hook name. Raises :class:`UnknownHookError` naming close matches."""
        if isinstance(name, Site):
            return name
        if not isinstance(name, str):
            raise TypeError(f"a hook name must be a str or Site, got {type(name).__name__}: {name!r}")
        m = _LAYER_NAME.fullmatch(name)
        if m:
            suffix = m.group(2)
            for comp in Component:
                if comp.per_layer and comp.value == suffix:
                    return cls(comp, int(m.group(1)))
        else:
            for comp in Component:
                if not comp.per_layer and comp.value == name:
                    return cls(comp)
        examples = [c.value if not c.per_layer else f"blocks.0.{c.value}" for c in Component]
        layer = re.match(r"blocks\.([0-9]+)\.", name, re.ASCII)
        here = [c.value if not c.per_layer else f"blocks.{int(layer.group(1)) if layer else 0}.{c.value}"
                for c in Component]
        close = difflib.get_close_matches(name, here, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownHookError(f"unknown hook name {name!r}.{hint} Valid names look like: {', '.join(examples)}")


def all_sites(n_layers: int, components: Iterable[Component]) -> list[Site]:
    """Every site of the given components, in forward order (layer-major)."""
    comps = list(components)
    out = [Site(c) for c in comps if c is Component.EMBED]
    for layer in range(n_layers):
        out += [Site(c, layer) for c in comps if c.per_layer]
    out += [Site(c) for c in comps if c in (Component.LN_FINAL, Component.LOGITS)]
    return out


def resolve(patterns: str | Site | Sequence[str | Site], available: Sequence[Site]) -> list[Site]:
    """Turn names and glob patterns (``blocks.*.hook_resid_post``) into sites the model has.

    Args:
        patterns: one or more exact names, :class:`Site` objects or ``fnmatch`` patterns.
        available: the sites the model offers.

    Returns:
        Matching sites in forward order, without duplicates.

    Raises:
        UnknownHookError: a name or pattern matches nothing; the message lists close matches.

    Example:
        >>> from interp.sites import Component, all_sites, resolve
        >>> avail = all_sites(2, [Component.RESID_POST, Component.ATTN_OUT])
        >>> [s.name for s in resolve("blocks.*.hook_resid_post", avail)]
        ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    """
    if isinstance(patterns, (str, Site)):
        patterns = [patterns]
    names = {s.name: s for s in available}
    chosen: set[Site] = set()
    for pat in patterns:
        if isinstance(pat, Site):
            if pat.name not in names:
                raise _not_available(pat.name, names)
            chosen.add(pat)
            continue
        if not isinstance(pat, str):
            raise TypeError(f"hook names must be strings or Site objects, got {type(pat).__name__}: {pat!r}")
        if any(ch in pat for ch in "*?["):
            hits = [s for n, s in names.items() if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise _not_available(pat, names)
            chosen.update(hits)
        elif pat in names:
            chosen.add(names[pat])
        else:
            Site.parse(pat)  # raises with a helpful message when the name is malformed
            raise _not_available(pat, names)
    order = {s: i for i, s in enumerate(available)}
    return sorted(chosen, key=order.__getitem__)


def _not_available(name: str, names: dict[str, Site]) -> UnknownHookError:
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    n_layers = 1 + max((s.layer for s in names.values() if s.layer is not None), default=-1)
    return UnknownHookError(
        f"this model has no hook {name!r}.{hint} It has {len(names)} hook points over {n_layers} layers; "
        "list them with model.hook_names()."
    )
