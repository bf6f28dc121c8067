"""Hook-point names, parsed once into typed :class:`Site` objects.

Three spellings name the same hook points everywhere (``model.run``, every tool, every CLI flag):

- the full TransformerLens-style name: ``blocks.3.hook_resid_post``, ``blocks.3.attn.hook_z``, ``logits``;
- a glob over full names: ``blocks.*.hook_resid_post``;
- the short form: the component alone for every layer (``resid_post``, ``z``), or with a layer after a dot
  (``resid_post.3``; negative layers count from the end: ``resid_post.-1``). The short components are
  ``embed resid_pre q k v pattern z attn_out resid_mid mlp_pre mlp_post mlp_out resid_post ln_final logits``,
  the per-head points of circuit discovery ``q_input k_input v_input result`` (TransformerLens' ``hook_q_input``
  and ``attn.hook_result``; computed only when a run asks for them), plus the architecture-specific ``attn_raw mlp_raw`` (sublayer outputs before a post-norm: Gemma 2/3, OLMo 2)
  and ``router_logits router_weights expert_out`` (mixture-of-experts MLPs); docs/models.md has their shapes.

A fourth spelling reaches any submodule of the Hugging Face model (the escape hatch for what the named
points do not cover): ``hf:model.layers.3.mlp.act_fn`` (the module's output) or
``hf:model.layers.3.mlp.down_proj:input`` (its first positional input).

Example:
    >>> from interp.sites import Site, all_sites, resolve, Component
    >>> Site.parse("blocks.3.attn.hook_z")
    Site('blocks.3.attn.hook_z')
    >>> Site.parse("z.3") == Site.parse("blocks.3.attn.hook_z")
    True
    >>> avail = all_sites(4, [Component.RESID_POST, Component.Z])
    >>> [s.short for s in resolve(["resid_post.-1", "z.0"], avail)]
    ['z.0', 'resid_post.3']
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Union

from interp.errors import BadInputError, UnknownNameError


class UnknownHookError(UnknownNameError):
    """A hook name that is malformed or that the model does not have. The message lists close matches."""


class Component(Enum):
    """What a hook point reads. The value is the TransformerLens name suffix after ``blocks.{L}.``."""

    EMBED = "hook_embed"
    RESID_PRE = "hook_resid_pre"
    ATTN_OUT = "hook_attn_out"
    RESID_MID = "hook_resid_mid"
    MLP_OUT = "hook_mlp_out"
    RESID_POST = "hook_resid_post"
    Q_INPUT = "hook_q_input"  # each query head's input: the stream before the attention's norm, one copy per head
    K_INPUT = "hook_k_input"  # per key/value head (grouped-query models have fewer)
    V_INPUT = "hook_v_input"
    Q = "attn.hook_q"
    K = "attn.hook_k"
    V = "attn.hook_v"
    PATTERN = "attn.hook_pattern"
    Z = "attn.hook_z"
    RESULT = "attn.hook_result"  # each head's output in d_model: z[..., h, :] @ W_O[h] (their sum + b_O is the o-proj output)
    MLP_PRE = "mlp.hook_pre"
    MLP_POST = "mlp.hook_post"
    # architecture-specific points (only models that have the component offer them; see docs/models.md)
    ATTN_RAW = "hook_attn_raw"  # attention output before a post-attention norm (Gemma 2/3, OLMo 2)
    MLP_RAW = "hook_mlp_raw"  # MLP output before a post-feed-forward norm (Gemma 2/3, OLMo 2)
    ROUTER_LOGITS = "mlp.hook_router_logits"  # mixture of experts: the router's logits
    ROUTER_WEIGHTS = "mlp.hook_router_weights"  # the weight of each expert, zero where not chosen
    EXPERT_OUT = "mlp.hook_expert_out"  # each expert's weighted output (zero where not chosen)
    # encoder-decoder cross-attention (decoder blocks only; queries from the decoder, keys/values from the encoder)
    CROSS_ATTN_OUT = "hook_cross_attn_out"  # the cross-attention sublayer's output (before the residual add)
    CROSS_Q = "cross_attn.hook_q"
    CROSS_K = "cross_attn.hook_k"  # over the encoder's (source) positions
    CROSS_V = "cross_attn.hook_v"  # over the encoder's (source) positions
    CROSS_PATTERN = "cross_attn.hook_pattern"  # [batch, head, q_pos (decoder), k_pos (encoder)]
    CROSS_Z = "cross_attn.hook_z"
    LN_FINAL = "ln_final.hook_normalized"
    LOGITS = "logits"
    HF = "hf"  # any submodule of the Hugging Face model, by its path (Site.module)

    @property
    def per_layer(self) -> bool:
        return self not in (Component.EMBED, Component.LN_FINAL, Component.LOGITS, Component.HF)

    @property
    def short(self) -> str:
        """The short form: ``resid_post``, ``z``, ``mlp_pre``..."""
        return _SHORT_OF[self]

    @property
    def axes(self) -> tuple[str, ...]:
        """Names of the tensor axes of this component's activations (``hf:`` sites: batch, pos, then the rest)."""
        return _AXES[self]

    @property
    def pos_axis(self) -> int:
        """The axis that positions index (the query position for ``pattern``)."""
        return self.axes.index("q_pos") if "q_pos" in self.axes else self.axes.index("pos")

    @property
    def over_source(self) -> bool:
        """True for cross-attention keys and values: their positions are the encoder's (the source's), not the
        decoder's; ``cross_pattern``'s key axis is the source's too."""
        return self in (Component.CROSS_K, Component.CROSS_V)

    @property
    def head_axis(self) -> int | None:
        """The index of the head axis (``head``, or ``kv_head`` for the key/value inputs), or ``None``.

        Example:
            >>> Component.Z.head_axis, Component.K_INPUT.head_axis, Component.RESID_PRE.head_axis
            (2, 2, None)
        """
        for name in ("head", "kv_head"):
            if name in self.axes:
                return self.axes.index(name)
        return None

    @property
    def inside_attention(self) -> bool:
        """True for sites computed inside the attention kernel (need the hooked attention path)."""
        return self in (Component.Q, Component.K, Component.V, Component.PATTERN)

    @classmethod
    def parse(cls, x: str | Component) -> Component:
        """A component from its short form (``"resid_pre"``, ``"z"``) or itself.

        Example:
            >>> Component.parse("mlp_out")
            <Component.MLP_OUT: 'hook_mlp_out'>
        """
        if isinstance(x, Component):
            return x
        if not isinstance(x, str):
            raise TypeError(f"a component must be a short name like 'resid_pre' or a Component, got "
                            f"{type(x).__name__}: {x!r}")
        comp = _BY_SHORT.get(x)
        if comp is None or comp is Component.HF:
            hint = ""
            for c in Component:
                if x in (c.value, c.value.removeprefix("attn.").removeprefix("mlp.")) and c is not Component.HF:
                    hint = f"(the TransformerLens suffix {x!r} is written {c.short!r} here)"
            raise _unknown_short(x, hint)
        return comp


_SHORT_OF = {
    Component.EMBED: "embed", Component.RESID_PRE: "resid_pre", Component.ATTN_OUT: "attn_out",
    Component.RESID_MID: "resid_mid", Component.MLP_OUT: "mlp_out", Component.RESID_POST: "resid_post",
    Component.Q_INPUT: "q_input", Component.K_INPUT: "k_input", Component.V_INPUT: "v_input",
    Component.RESULT: "result", Component.Q: "q", Component.K: "k", Component.V: "v", Component.PATTERN: "pattern", Component.Z: "z",
    Component.MLP_PRE: "mlp_pre", Component.MLP_POST: "mlp_post", Component.LN_FINAL: "ln_final",
    Component.LOGITS: "logits", Component.HF: "hf",
    Component.ATTN_RAW: "attn_raw", Component.MLP_RAW: "mlp_raw", Component.ROUTER_LOGITS: "router_logits",
    Component.ROUTER_WEIGHTS: "router_weights", Component.EXPERT_OUT: "expert_out",
    Component.CROSS_ATTN_OUT: "cross_attn_out", Component.CROSS_Q: "cross_q", Component.CROSS_K: "cross_k",
    Component.CROSS_V: "cross_v", Component.CROSS_PATTERN: "cross_pattern", Component.CROSS_Z: "cross_z",
}
_BY_SHORT = {v: k for k, v in _SHORT_OF.items()}
SHORT_NAMES: tuple[str, ...] = tuple(s for s in _SHORT_OF.values() if s != "hf")

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
    Component.RESULT: ("batch", "pos", "head", "d_model"),
    Component.Q_INPUT: ("batch", "pos", "head", "d_model"),
    Component.K_INPUT: ("batch", "pos", "kv_head", "d_model"),
    Component.V_INPUT: ("batch", "pos", "kv_head", "d_model"),
    Component.MLP_PRE: ("batch", "pos", "d_mlp"),
    Component.MLP_POST: ("batch", "pos", "d_mlp"),
    Component.LN_FINAL: ("batch", "pos", "d_model"),
    Component.LOGITS: ("batch", "pos", "vocab"),
    Component.HF: ("batch", "pos", "hidden"),
    Component.ATTN_RAW: ("batch", "pos", "d_model"),
    Component.MLP_RAW: ("batch", "pos", "d_model"),
    Component.ROUTER_LOGITS: ("batch", "pos", "expert"),
    Component.ROUTER_WEIGHTS: ("batch", "pos", "expert"),
    Component.EXPERT_OUT: ("batch", "pos", "expert", "d_model"),
    Component.CROSS_ATTN_OUT: ("batch", "pos", "d_model"),
    Component.CROSS_Q: ("batch", "pos", "head", "d_head"),
    Component.CROSS_K: ("batch", "pos", "head", "d_head"),
    Component.CROSS_V: ("batch", "pos", "head", "d_head"),
    Component.CROSS_PATTERN: ("batch", "head", "q_pos", "k_pos"),
    Component.CROSS_Z: ("batch", "pos", "head", "d_head"),
}

# ASCII digits only, no leading zeros, nothing after the suffix (not even a newline).
_LAYER_NAME = re.compile(r"blocks\.(0|[1-9][0-9]*)\.(.+)", re.ASCII | re.DOTALL)
_SHORT_LAYER = re.compile(r"([a-z_]+)\.(-?(?:0|[1-9][0-9]*))", re.ASCII)
_HF_NAME = re.compile(r"hf:([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?::(input|output))?", re.ASCII)

IO = Literal["output", "input"]


def _unknown_short(x: str, hint: str = "") -> UnknownHookError:
    close = difflib.get_close_matches(x, SHORT_NAMES, n=3, cutoff=0.5)
    msg = f"unknown component {x!r}."
    if close:
        msg += f" Did you mean {', '.join(close)}?"
    msg += f" Components: {', '.join(SHORT_NAMES)}"
    return UnknownHookError(f"{msg} {hint}".rstrip())


@dataclass(frozen=True)
class Site:
    """One hook point: a component and, for per-layer components, a layer index.

    Args:
        component: which activation.
        layer: the block index, or ``None`` for ``embed``, ``ln_final``, ``logits`` and ``hf:`` sites.
        module: for ``Component.HF``, the dotted path of the Hugging Face submodule.
        io: for ``Component.HF``, read/edit the module's ``"output"`` (default) or its first ``"input"``.
        stack: ``"encoder"`` or ``"decoder"`` for the two stacks of an encoder–decoder (the name then starts with
            it: ``encoder.blocks.3.hook_resid_post``, short ``encoder.resid_post.3``); ``None`` for one-stack models.
    """

    component: Component
    layer: int | None = None
    module: str | None = None
    io: IO = "output"
    stack: str | None = None

    def __post_init__(self) -> None:
        c = self.component
        if self.stack is not None and (self.stack not in STACKS or c in (Component.HF, Component.LOGITS)):
            raise BadInputError(f"stack must be None or one of {', '.join(STACKS)} (not on logits or hf: sites), "
                                f"got {self.stack!r} for {c.value}")
        if c.per_layer and (self.layer is None or isinstance(self.layer, bool) or self.layer < 0):
            raise BadInputError(f"{c.value} needs a layer index >= 0, got {self.layer!r}")
        if not c.per_layer and self.layer is not None:
            raise BadInputError(f"{c.value} has no layer, got layer={self.layer!r}")
        if (c is Component.HF) != (self.module is not None):
            raise BadInputError("module= is given for hf: sites, and only for them")
        if self.io not in ("output", "input") or (self.io == "input" and c is not Component.HF):
            raise BadInputError(f"io must be 'output' or 'input' (hf: sites only), got {self.io!r}")

    @property
    def name(self) -> str:
        """The canonical name (the key in traces): ``blocks.3.hook_resid_post``, ``logits``, ``hf:model.norm``."""
        if self.component is Component.HF:
            return f"hf:{self.module}" + (":input" if self.io == "input" else "")
        pre = f"{self.stack}." if self.stack else ""
        if self.layer is None:
            return pre + self.component.value
        return f"{pre}blocks.{self.layer}.{self.component.value}"

    @property
    def short(self) -> str:
        """The short form: ``resid_post.3``, ``z.0``, ``logits`` (``hf:`` sites keep their name)."""
        if self.component is Component.HF:
            return self.name
        pre = f"{self.stack}." if self.stack else ""
        return pre + (self.component.short if self.layer is None else f"{self.component.short}.{self.layer}")

    @property
    def axes(self) -> tuple[str, ...]:
        return self.component.axes

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Site({self.name!r})"

    @classmethod
    def parse(cls, name: str | Site | tuple[str, int]) -> Site:
        """One hook point from a full name, a short form with a layer (``"z.3"``), a ``(short, layer)`` pair,
        or an ``hf:`` path. Raises :class:`UnknownHookError` naming close matches.

        Negative layers need the model (use :func:`resolve`).
        """
        if isinstance(name, Site):
            return name
        if isinstance(name, tuple) and len(name) == 2 and isinstance(name[0], str) and _is_int(name[1]):
            return cls.parse(f"{name[0]}.{int(name[1])}")
        if not isinstance(name, str):
            raise TypeError(f"a hook name must be a str or Site, got {type(name).__name__}: {name!r}")
        stack, rest = split_stack(name)
        if stack is not None:  # an encoder-decoder stack: the same spellings after "encoder." / "decoder."
            inner = cls.parse(rest)
            if inner.component in (Component.HF, Component.LOGITS):
                raise UnknownHookError(f"{name!r}: {inner.short} has no stack; write {inner.short!r} alone")
            return cls(inner.component, inner.layer, stack=stack)
        m = _LAYER_NAME.fullmatch(name)
        if m:
            suffix = m.group(2)
            for comp in Component:
                if comp.per_layer and comp.value == suffix:
                    return cls(comp, int(m.group(1)))
        elif name.startswith("hf:"):
            hm = _HF_NAME.fullmatch(name)
            if hm:
                return cls(Component.HF, module=hm.group(1), io=hm.group(2) or "output")  # type: ignore[arg-type]
            raise UnknownHookError(f"bad module hook {name!r}: write hf:<dotted module path>, optionally followed "
                                   "by :input (e.g. hf:model.layers.3.mlp.act_fn, hf:model.layers.3.mlp.down_proj:input)")
        else:
            for comp in Component:
                if not comp.per_layer and comp is not Component.HF and name in (comp.value, comp.short):
                    return cls(comp)
            sm = _SHORT_LAYER.fullmatch(name)
            if sm and sm.group(1) in _BY_SHORT:
                comp = _BY_SHORT[sm.group(1)]
                layer = int(sm.group(2))
                if not comp.per_layer:
                    raise UnknownHookError(f"{comp.short!r} has no layer; write {comp.short!r} alone, not {name!r}")
                if layer < 0:
                    raise UnknownHookError(f"{name!r}: a negative layer counts from the end, which needs the model; "
                                           "pass it to model.run / a tool (or resolve it with interp.sites.resolve)")
                return cls(comp, layer)
            if name in _BY_SHORT and _BY_SHORT[name].per_layer:
                raise UnknownHookError(f"{name!r} names the component at every layer; one hook point needs a "
                                       f"layer: {name}.0 or blocks.0.{_BY_SHORT[name].value}")
        raise _bad_name(name)


STACKS = ("encoder", "decoder")
"""The two stacks of an encoder–decoder; their hook names start with ``encoder.`` / ``decoder.``."""


def split_stack(name: str) -> tuple[str | None, str]:
    """``("encoder", "resid_post.3")`` from ``"encoder.resid_post.3"``; ``(None, name)`` without a stack prefix.

    Example:
        >>> split_stack("decoder.blocks.1.cross_attn.hook_pattern"), split_stack("z.3")
        (('decoder', 'blocks.1.cross_attn.hook_pattern'), (None, 'z.3'))
    """
    head, dot, rest = name.partition(".")
    return (head, rest) if dot and head in STACKS else (None, name)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bad_name(name: str) -> UnknownHookError:
    layer = re.match(r"blocks\.([0-9]+)\.", name, re.ASCII)
    L = int(layer.group(1)) if layer else 0
    here = [c.value if not c.per_layer else f"blocks.{L}.{c.value}" for c in Component if c is not Component.HF]
    here += [c.short if not c.per_layer else f"{c.short}.{L}" for c in Component if c is not Component.HF]
    close = difflib.get_close_matches(name, here, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownHookError(
        f"unknown hook name {name!r}.{hint} Write a full name (blocks.{L}.hook_resid_post, blocks.{L}.attn.hook_z, "
        f"logits), a glob (blocks.*.hook_resid_post), a short form (resid_post for every layer, resid_post.{L}, "
        f"z.{L}; components: {', '.join(SHORT_NAMES)}) or hf:<module path>"
    )


def all_sites(n_layers: int, components: Iterable[Component]) -> list[Site]:
    """Every named site of the given components, in forward order (layer-major)."""
    comps = list(components)
    out = [Site(c) for c in comps if c is Component.EMBED]
    for layer in range(n_layers):
        out += [Site(c, layer) for c in comps if c.per_layer]
    out += [Site(c) for c in comps if c in (Component.LN_FINAL, Component.LOGITS)]
    return out


SiteSpec = Union[str, Site, "tuple[str, int]"]
"""One spelling of hook points: a full name, a glob, a short form, a ``(short, layer)`` pair, a Site, ``hf:...``."""


def resolve(patterns: SiteSpec | Sequence[SiteSpec], available: Sequence[Site],
            modules: Iterable[str] | None = None) -> list[Site]:
    """Turn names, short forms and globs into the sites a model has.

    Args:
        patterns: one or more of: a full name, a glob over full names (``blocks.*.hook_z``), a short form
            (``resid_post`` = every layer, ``resid_post.3``, ``resid_post.-1`` = the last layer), a
            ``(short, layer)`` pair, a :class:`Site`, or an ``hf:`` module path.
        available: the named sites the model offers.
        modules: the model's submodule paths, to check ``hf:`` sites (``None``: not checked here).

    Returns:
        Matching sites in forward order (``hf:`` sites last, in the order given), without duplicates.

    Raises:
        UnknownHookError: a name or pattern matches nothing; the message lists close matches.

    Example:
        >>> from interp.sites import Component, all_sites, resolve
        >>> avail = all_sites(2, [Component.RESID_POST, Component.ATTN_OUT])
        >>> [s.name for s in resolve("resid_post", avail)]
        ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
        >>> [s.name for s in resolve("blocks.*.hook_attn_out", avail)]
        ['blocks.0.hook_attn_out', 'blocks.1.hook_attn_out']
    """
    if isinstance(patterns, (str, Site)) or (isinstance(patterns, tuple) and len(patterns) == 2
                                             and isinstance(patterns[0], str) and _is_int(patterns[1])):
        patterns = [patterns]  # type: ignore[list-item]
    names = {s.name: s for s in available}
    n_layers = 1 + max((s.layer for s in available if s.layer is not None), default=-1)
    stack_layers = {st: 1 + max((s.layer for s in available if s.layer is not None and s.stack == st), default=-1)
                    for st in STACKS}
    module_set: set[str] | None = None
    chosen: set[Site] = set()
    extra: list[Site] = []
    for pat in patterns:  # type: ignore[union-attr]
        if isinstance(pat, tuple) and len(pat) == 2 and isinstance(pat[0], str) and _is_int(pat[1]):
            pat = f"{pat[0]}.{int(pat[1])}"
        if isinstance(pat, Site):
            site = pat
        elif not isinstance(pat, str):
            raise TypeError(f"hook names must be strings or Site objects, got {type(pat).__name__}: {pat!r}")
        elif pat.startswith("hf:"):
            site = Site.parse(pat)
        elif any(ch in pat for ch in "*?["):
            hits = [s for n, s in names.items() if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise _not_available(pat, names)
            chosen.update(hits)
            continue
        elif split_stack(pat)[1] in _BY_SHORT and _BY_SHORT[split_stack(pat)[1]].per_layer:
            st, comp_name = split_stack(pat)  # "encoder.resid_post": every layer of one stack
            hits = [s for s in available if s.component is _BY_SHORT[comp_name] and (st is None or s.stack == st)]
            if not hits:
                raise _not_available(pat, names)
            chosen.update(hits)
            continue
        else:
            st, rest = split_stack(pat)
            sm = _SHORT_LAYER.fullmatch(rest)
            if sm and sm.group(1) in _BY_SHORT and int(sm.group(2)) < 0:
                n = n_layers if st is None else stack_layers[st]
                layer = n + int(sm.group(2))
                if layer < 0:
                    raise UnknownHookError(f"layer {sm.group(2)} in {pat!r} is out of range for a "
                                           f"{'model' if st is None else st} of {n} layers (valid: {-n}..{n - 1})")
                pat = f"{st + '.' if st else ''}{sm.group(1)}.{layer}"
            site = Site.parse(pat)
        if site.component is Component.HF:
            if modules is not None:
                module_set = set(modules) if module_set is None else module_set
                if site.module not in module_set:
                    raise _no_module(site, module_set)
            if site not in extra:
                extra.append(site)
            continue
        if site.name not in names:
            raise _not_available(pat if isinstance(pat, str) else site.name, names, site.name)
        chosen.add(site)
    order = {s: i for i, s in enumerate(available)}
    return sorted(chosen, key=order.__getitem__) + extra


def _no_module(site: Site, modules: set[str]) -> UnknownHookError:
    close = difflib.get_close_matches(site.module or "", sorted(modules), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return UnknownHookError(f"the model has no submodule {site.module!r} for {site.name!r}.{hint} "
                            "List them with [n for n, _ in model.hf.named_modules()].")


def _not_available(name: str, names: dict[str, Site], full: str | None = None) -> UnknownHookError:
    """The error for a well-formed name the model lacks (``full``: its canonical name, when spelled otherwise)."""
    shorts = {s.short: s for s in names.values()}
    close = difflib.get_close_matches(name, list(names) + list(shorts), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    n_layers = 1 + max((s.layer for s in names.values() if s.layer is not None), default=-1)
    shown = f"{name!r} ({full})" if full and full != name else repr(name)
    return UnknownHookError(
        f"this model has no hook {shown}.{hint} It has {len(names)} hook points over {n_layers} layers; "
        "list them with model.hook_names()."
    )
