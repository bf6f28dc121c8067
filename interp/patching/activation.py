"""Activation patching sweeps (Zhang & Nanda 2023): every layer x position (x head) of one component.

Example:
    >>> import interp
    >>> from interp.patching import activation_patching
    >>> m = interp.load_model("smollm2-135m")
    >>> res = activation_patching(m, "When Mary and John went to the store, John gave a drink to",
    ...                           corrupt="When Mary and John went to the store, Mary gave a drink to",
    ...                           answer=" Mary", wrong=" John", component="resid_pre", layers=[0, -1])
    >>> res.values.shape, res.coords["layer"]
    (torch.Size([2, 14]), (0, 29))
    >>> round(float(res.normalized[0, 9]), 2)  # the clean second name restores the answer at layer 0
    1.0
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from interp.errors import BadInputError, bad_value, unknown_name
from interp.models import EncoderDecoder, Inputs, Model
from interp.patching.batched import DEFAULT_BUDGET, Cell, Edit, Pos, run_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import Answer, Corruption, MetricSpec, PatchingSetup, setup_for
from interp.sites import Component, HeadRef, HeadSpec, Positions, Site, parse_heads, position_mask
from interp.sites.positions import index_list

if TYPE_CHECKING:
    from interp.patching.encdec import EncDecPatchingSetup

STREAM = frozenset({Component.RESID_PRE, Component.RESID_MID, Component.RESID_POST, Component.ATTN_OUT,
                    Component.MLP_OUT})
HEADS = frozenset({Component.Z, Component.Q, Component.K, Component.V, Component.PATTERN})
CROSS_HEADS = frozenset({Component.CROSS_Q, Component.CROSS_K, Component.CROSS_V, Component.CROSS_PATTERN,
                         Component.CROSS_Z})
"""An encoder–decoder's cross-attention components swept per head (:mod:`interp.patching.encdec`)."""
COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
"""The components activation and attribution patching sweep (short names of :mod:`interp.sites`)."""

Direction = Literal["denoising", "noising"]
HeadsSelection = int | Sequence[int] | HeadSpec | Sequence[HeadSpec]
"""Heads to sweep: head indices (at every swept layer) or heads (``(layer, head)`` / ``"L5H1"``)."""


def parse_component(component: str | Component) -> Component:
    """A component activation patching sweeps, from its short name (``"resid_pre"``, ``"z"``...).

    Raises:
        UnknownNameError: any other name (the message lists the components that are swept).

    Example:
        >>> parse_component("z")
        <Component.Z: 'attn.hook_z'>
    """
    comp: Component | None = None
    if isinstance(component, Component):
        comp = component
    elif isinstance(component, str):
        try:
            comp = Component.parse(component)
        except BadInputError:
            comp = None
    if comp is None or comp not in STREAM | HEADS:
        raise unknown_name("component", str(getattr(component, "short", component)), COMPONENTS,
                           hint="(the components patching sweeps)")
    return comp


def runs_for(direction: str, setup: PatchingSetup) -> tuple[str, str]:
    """``(target, source)``: denoising patches clean values into the corrupted run, noising the reverse."""
    if direction == "denoising":
        if setup.ablation is not None:
            raise BadInputError(f"{setup.corruption} ablation has no corrupted run to denoise; use direction='noising'")
        return "corrupted", "clean"
    if direction == "noising":
        return "clean", "corrupted"
    raise bad_value("direction", direction, "'denoising' (clean values into the corrupted run) or 'noising' "
                    "(corrupted values into the clean run)")


Layers = int | Sequence[int] | slice | None
"""Layers: an int, ints (a list, a range), a slice, negative from the end; ``None``: every layer."""


def resolve_layers(layers: Layers, n_layers: int) -> list[int]:
    """Layer indices (negative from the end) as ``0..n_layers-1``; ``None``: every layer.

    Example:
        >>> resolve_layers([0, -1], 30), resolve_layers(slice(-3, None), 30)
        ([0, 29], [27, 28, 29])
    """
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, slice):
        out = list(range(n_layers))[layers]
        if not out:
            raise bad_value("layers", layers, f"a selection of at least one of the layers 0..{n_layers - 1}")
        return out
    try:
        items = index_list(layers, "layers")
    except TypeError:
        raise bad_value("layers", layers, f"ints in -{n_layers}..{n_layers - 1}") from None
    out = []
    for L in items:
        q = L + n_layers if L < 0 else L
        if not 0 <= q < n_layers:
            raise bad_value("layer", L, f"0..{n_layers - 1}, or -{n_layers}..-1 counted from the end")
        out.append(q)
    if not out:
        raise bad_value("layers", layers, "at least one layer")
    return out


def sweep_positions(positions: Positions, lengths: torch.Tensor, n_pos: int) -> tuple[list[int], list[Pos]]:
    """The position axis of a sweep: ``(coords, cell positions)``.

    ``None`` is every padded index. Ints (and lists) count over each sequence's real tokens, negative from
    its last one; a slice selects the same number of positions in each sequence. A coordinate is the padded
    index where it is the same in every sequence, else the position as counted from the end (negative); a
    cell position is one padded index, or one per sequence.

    Example:
        >>> sweep_positions([0, -1], torch.tensor([3, 2]), 3)
        ([0, -1], [0, (2, 1)])
    """
    if positions is None:
        return list(range(n_pos)), list(range(n_pos))
    lens = [int(n) for n in lengths.tolist()]
    if isinstance(positions, slice):
        per_row = [list(range(n))[positions] for n in lens]
        other = next((i for i, r in enumerate(per_row) if len(r) != len(per_row[0])), None)
        if other is not None:
            raise BadInputError(f"positions {positions} select {len(per_row[0])} positions in sequence 0 but "
                                f"{len(per_row[other])} in sequence {other}; a sweep needs as many in each: give "
                                "ints (negative: from each sequence's last real token)")
        cols = [tuple(r[j] for r in per_row) for j in range(len(per_row[0]))]
    else:
        try:
            items = index_list(positions, "positions")
        except TypeError:
            raise bad_value("positions", positions, "an int, a list of ints, a slice or None") from None
        position_mask(items, lengths, n_pos)  # raises naming the sequence a position falls outside of
        cols = [tuple(p + n if p < 0 else p for n in lens) for p in items]
    if not cols:
        raise bad_value("positions", positions, "a selection of at least one position")
    coords: list[int] = []
    cells: list[Pos] = []
    for col in cols:
        if len(set(col)) == 1:
            coords.append(col[0])
            cells.append(col[0])
        else:
            offsets = {p - n for p, n in zip(col, lens, strict=True)}
            if len(offsets) != 1:
                raise BadInputError(f"positions {positions} select different positions in sequences of different "
                                    "lengths; give ints (negative: from each sequence's last real token)")
            coords.append(offsets.pop())
            cells.append(col)
    return coords, cells


def _split_heads(heads: HeadsSelection) -> tuple[list[int], list[HeadRef]]:
    """Head indices (ints) and heads (``(layer, head)``, ``"L5H1"``), the way interventions read ``heads=``."""
    if isinstance(heads, (str, HeadRef)):
        return [], parse_heads(heads)
    items: list[Any] = [heads] if isinstance(heads, int) else list(heads)  # type: ignore[arg-type]
    ints: list[int] = []
    refs: list[HeadRef] = []
    for h in items:
        if isinstance(h, (str, tuple, list)):
            refs.append(HeadRef.parse(h))
            continue
        try:
            if isinstance(h, bool):
                raise TypeError
            ints.append(operator.index(h))
        except TypeError:
            raise bad_value("head", h, "a head index, (layer, head) or 'L5H1'") from None
    if ints and refs:
        raise BadInputError(f"heads {heads!r} mix head indices and (layer, head) heads; give one kind")
    return ints, refs


@dataclass(frozen=True)
class Sweep:
    """The cells of a sweep over one component: its axes, coordinates and (for heads) which to run."""

    component: Component
    axes: tuple[str, ...]
    coords: dict[str, tuple[int, ...]]
    positions: tuple[Pos, ...]  # per pos coordinate (or, without a pos axis, the positions each cell patches)
    wanted: frozenset[HeadRef] | None = None  # only these (layer, head) cells; the others are NaN

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[a]) for a in self.axes)

    @property
    def per_head(self) -> bool:
        return self.component in HEADS | CROSS_HEADS

    def runs(self, layer: int, head: int) -> bool:
        return self.wanted is None or HeadRef(layer, head) in self.wanted


def plan_sweep(setup: PatchingSetup, component: str | Component, *, layers: Layers = None,
               positions: Positions = None, heads: HeadsSelection | None = None, per_position: bool = False) -> Sweep:
    """Parse the component, layers, positions and heads of a sweep (the vocabulary of :mod:`interp.sites`)."""
    d = setup.model.dims
    return plan_sweep_over(parse_component(component), d.n_layers, d.n_heads, setup.lengths, setup.n_pos,
                           layers=layers, positions=positions, heads=heads, per_position=per_position)


def plan_sweep_over(comp: Component, n_layers: int, n_heads: int, lengths: torch.Tensor, n_pos: int, *,
                    layers: Layers = None, positions: Positions = None, heads: HeadsSelection | None = None,
                    per_position: bool = False) -> Sweep:
    """:func:`plan_sweep` of a parsed component over ``n_layers`` blocks of ``n_heads`` heads, positions counted
    over sequences of ``lengths`` real tokens padded to ``n_pos`` (one stack of an encoder–decoder, too)."""
    Ls = resolve_layers(layers, n_layers)
    pos_coords, pos_cells = sweep_positions(positions, lengths, n_pos)
    if comp not in HEADS | CROSS_HEADS:
        if heads is not None:
            raise BadInputError(f"heads= applies to z, q, k, v and pattern, not {comp.short!r}")
        if per_position:
            raise BadInputError(f"per_position= applies to z, q, k, v and pattern, not {comp.short!r}")
        return Sweep(comp, ("layer", "pos"), {"layer": tuple(Ls), "pos": tuple(pos_coords)}, tuple(pos_cells))
    wanted: frozenset[HeadRef] | None = None
    if heads is None:
        Hs = list(range(n_heads))
    else:
        ints, refs = _split_heads(heads)
        bad = [h for h in ints if not 0 <= h < n_heads]
        if bad or not (ints or refs):
            raise bad_value("heads", bad[0] if bad else heads, f"head indices 0..{n_heads - 1}, (layer, head) or 'L5H1'")
        if refs:
            refs = [h.check(n_layers, n_heads) for h in refs]
            if layers is None:
                Ls = sorted({h.layer for h in refs})
            outside = [h for h in refs if h.layer not in Ls]
            if outside:
                raise BadInputError(f"head {outside[0]} is not in the swept layers {Ls}")
            Hs, wanted = sorted({h.head for h in refs}), frozenset(refs)
        else:
            Hs = ints
    if per_position:
        return Sweep(comp, ("layer", "head", "pos"), {"layer": tuple(Ls), "head": tuple(Hs), "pos": tuple(pos_coords)},
                     tuple(pos_cells), wanted)
    cells: tuple[Pos, ...] = (None,) if positions is None else tuple(pos_cells)
    return Sweep(comp, ("layer", "head"), {"layer": tuple(Ls), "head": tuple(Hs)}, cells, wanted)


def sweep_cells(sweep: Sweep, n_layers: int, window: int = 1, stack: str | None = None
                ) -> tuple[list[Cell], list[int]]:
    """The patched runs of a sweep (each: the layer a run may resume from, and its edits) and the flat index of
    each in the result grid. ``stack``: an encoder–decoder's stack the sites are on (its runs do not resume
    from a layer, so residual edits are always named sites)."""
    cells: list[Cell] = []
    index: list[int] = []
    comp = sweep.component
    Ls = sweep.coords["layer"]
    resume = stack is None and window == 1
    if not sweep.per_head:
        for i, L in enumerate(Ls):
            lo, hi = max(0, L - window // 2), min(n_layers, L + (window + 1) // 2)
            for j, p in enumerate(sweep.positions):
                if resume and comp is Component.RESID_PRE:
                    cells.append((L, (Edit(None, p),)))
                elif resume and comp is Component.RESID_POST:
                    cells.append((L + 1, (Edit(None, p),)))
                else:
                    cells.append((lo, tuple(Edit(Site(comp, layer, stack=stack), p) for layer in range(lo, hi))))
                index.append(i * len(sweep.positions) + j)
        return cells, index
    Hs = sweep.coords["head"]
    per_position = "pos" in sweep.axes
    for i, L in enumerate(Ls):
        for j, h in enumerate(Hs):
            if not sweep.runs(L, h):
                continue
            site = Site(comp, L, stack=stack)
            if per_position:
                for k, p in enumerate(sweep.positions):
                    cells.append((L, (Edit(site, p, h),)))
                    index.append((i * len(Hs) + j) * len(sweep.positions) + k)
            else:
                cells.append((L, tuple(Edit(site, p, h) for p in sweep.positions)))
                index.append(i * len(Hs) + j)
    return cells, index


def make_result(setup: PatchingSetup, sweep: Sweep, values: torch.Tensor, *, method: str, direction: str,
                meta: dict[str, Any], exact: torch.Tensor | None = None) -> PatchingResult:
    """A :class:`PatchingResult` of a sweep's values (``[*sweep.shape]``)."""
    if "pos" not in sweep.axes and sweep.positions != (None,):
        meta = {**meta, "positions": [p if isinstance(p, int) else list(p or ()) for p in sweep.positions]}
    return PatchingResult(
        values=values.detach().float().cpu(), axes=sweep.axes, coords=dict(sweep.coords), tokens=tuple(setup.tokens),
        component=sweep.component.short, method=method, direction=direction, metric=setup.metric.name,
        clean_value=setup.clean_value, corrupted_value=setup.corrupted_value, meta=meta,
        exact=None if exact is None else exact.detach().float().cpu())


def activation_patching(
    model: Model | EncoderDecoder,
    inputs: Inputs | PatchingSetup | EncDecPatchingSetup,
    *,
    corrupt: Corruption | None = None,
    decoder_inputs: Any = None,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: MetricSpec | None = None,
    component: str | Component = "resid_pre",
    layers: Layers = None,
    positions: Positions = None,
    heads: HeadsSelection | None = None,
    direction: Direction = "denoising",
    per_position: bool = False,
    window: int = 1,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> PatchingResult:
    """Patch one component at every layer x position (x head) and measure the metric.

    Args:
        model: a causal language model, or an :class:`~interp.models.EncoderDecoder` (see below).
        inputs: the clean prompt(s) (any ``Inputs``), or a :class:`~interp.patching.PatchingSetup` from
            :func:`~interp.patching.prepare` (reuses its runs; then leave ``corrupt``, ``answer``, ``wrong``
            and ``metric`` out).
        corrupt: the corrupted prompt(s) (same token counts), ``Noise(...)`` or ``Ablation(...)``.
        decoder_inputs: encoder–decoders only: the decoder's input in both runs (target texts, teacher-forced;
            ids as the decoder reads them; ``(ids, mask)``; ``None``: the start token alone).
        answer / wrong / metric: see :func:`~interp.patching.prepare` (default metric ``logit_diff``).
        component: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out`` (per layer x
            position), or per head ``z``, ``q``, ``k``, ``v`` and ``pattern`` (the head's whole pattern, or
            query rows). Per-head q/k/v are per *query* head, also under grouped-query attention.
        layers: layers to sweep: ints, a range or a slice, negative from the end (default all).
        positions: positions to sweep: ints over each sequence's real tokens (negative from its last real
            token), a list, a slice, or ``None`` (every position). For head components without
            ``per_position`` the selected positions are patched together (default: all).
        heads: heads to sweep: head indices at every layer, or heads ``(layer, head)`` / ``"L5H1"`` (then
            only those cells run; the others are NaN).
        direction: ``"denoising"`` (clean values into the corrupted run) or ``"noising"`` (corrupted
            values into the clean run).
        per_position: for head components, one cell per (head, position).
        window: for ``attn_out``/``mlp_out``/``resid_mid``, patch this many consecutive layers centred on
            each layer (causal tracing uses 10).
        memory_budget: bytes of activations per stacked forward.
        progress: show a progress bar (``None``: the library switch).

    Encoder–decoders (:mod:`interp.patching.encdec`): ``inputs`` and ``corrupt`` are the clean and corrupted
    *sources* (a :class:`~interp.patching.encdec.EncDecPatchingSetup` from
    :func:`~interp.patching.encdec.prepare_encdec` reuses both runs), the metric reads the last real decoder
    position, and ``component`` names its stack: ``"encoder.resid_pre"``, ``"decoder.mlp_out"``,
    ``"decoder.cross_attn_out"``, per head ``"encoder.z"``, ``"decoder.cross_k"``... (``ENCDEC_COMPONENTS``);
    positions count over the source for ``encoder.*`` and cross-attention keys/values, else over the decoder's
    input. ``Noise`` / ``Ablation`` corruptions are not supported there.

    Returns:
        A :class:`~interp.patching.PatchingResult` of raw metric values with axes ``(layer, pos)``,
        ``(layer, head)`` or ``(layer, head, pos)``; ``.normalized`` gives
        ``(patched - corrupted) / (clean - corrupted)``.

    Raises:
        BadInputError: an unknown component, a layer, position or head outside the model or the prompts
            (the message names it and what is valid), or a corruption that does not fit the direction.

    Example:
        >>> import interp
        >>> from interp.patching import activation_patching, prepare
        >>> m = interp.load_model("smollm2-135m")
        >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
        ...             corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
        >>> res = activation_patching(m, s, component="z", layers=[23], heads="L23H3,L23H0", progress=False)
        >>> res.top(1)[0][0]
        HeadRef(23, 3)
    """
    from interp.patching.encdec import EncDecPatchingSetup, encdec_activation_patching  # it imports this module

    if isinstance(model, EncoderDecoder) or isinstance(inputs, EncDecPatchingSetup):
        if not isinstance(component, str):
            raise BadInputError(f"an encoder-decoder's component names its stack, e.g. 'encoder.resid_pre'; got "
                                f"{component!r}")
        return encdec_activation_patching(
            model, inputs, corrupt=corrupt,  # type: ignore[arg-type]  # a one-stack model with a setup: refused there
            decoder_inputs=decoder_inputs, answer=answer, wrong=wrong, metric=metric, component=component,
            layers=layers, positions=positions, heads=heads, direction=direction, per_position=per_position,
            window=window, memory_budget=memory_budget, progress=progress)
    if decoder_inputs is not None:
        raise BadInputError(f"decoder_inputs= is for encoder-decoders; {model.name!r} is a one-stack model")
    setup = setup_for(model, inputs, corrupt=corrupt, answer=answer, wrong=wrong, metric=metric)
    if setup.corruption == "none":
        raise BadInputError("activation patching needs corrupt= (corrupted prompts, Noise(...) or Ablation(...))")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise bad_value("window", window, "an int >= 1")
    sweep = plan_sweep(setup, component, layers=layers, positions=positions, heads=heads, per_position=per_position)
    if window > 1 and sweep.component not in (Component.ATTN_OUT, Component.MLP_OUT, Component.RESID_MID):
        raise BadInputError(f"window= applies to attn_out, mlp_out and resid_mid, not {sweep.component.short!r}")
    target, source = runs_for(direction, setup)
    cells, index = sweep_cells(sweep, setup.model.dims.n_layers, window)
    vals = run_cells(setup, cells, target, source, memory_budget=memory_budget, progress=progress,
                     desc=f"patching {sweep.component.short}")
    grid = torch.full(sweep.shape, float("nan"))
    grid.view(-1)[torch.tensor(index, dtype=torch.long)] = vals
    return make_result(setup, sweep, grid, method="exact", direction=direction,
                       meta={"window": window, "corruption": setup.corruption, "n_seqs": setup.n})


__all__ = ["COMPONENTS", "CROSS_HEADS", "HEADS", "STREAM", "Direction", "HeadsSelection", "Layers", "Sweep", "activation_patching",
           "parse_component", "plan_sweep", "plan_sweep_over", "resolve_layers", "runs_for", "sweep_cells", "sweep_positions"]
