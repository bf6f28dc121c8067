"""Many patched runs in few forwards: runs are stacked in the batch, grouped by the first layer
they change, and each group starts at that layer from the cached residual stream.

A *cell* is one patched run: ``(start, edits)``. ``start`` is the first block that sees a change;
layers before it are identical to the target run, so the forward starts there
(:func:`interp.hooks.partial.forward_from`). An edit replaces, in the target run, the source run's
values at one site, restricted to a position and a head; an edit whose site is ``None`` patches
the residual stream entering ``start`` itself. A position is one padded index for every sequence, or one
per sequence (in right-padded batches, ``-1`` is a different index in each row).

Positions before a cell's first edited position are the target run's at every layer (attention is
causal), so where the model allows it (:func:`_packable`) cells are packed into one sequence of only
their changed positions, which attend to the target run's recorded keys/values for the rest
(:func:`interp.hooks.partial.forward_packed`): a patch at position ``p`` of an ``n``-token prompt
computes ``n - p`` positions instead of ``n``. Cells of different start layers share one packed
forward, each joining the stream at its layer, so every layer's weights are read once per forward.

A cell whose every edit writes the values the target run already holds there is the target run
itself (exactly: nothing downstream changes), so it is not run: its value is the target run's. With
symmetric token replacement this covers every position before the first differing token, at every
layer, and positions the corruption has not reached yet at early layers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError
from interp.hooks import Lambda
from interp.hooks.attention import ATTN_IMPL
from interp.hooks.partial import forward_from, forward_packed
from interp.models import Model
from interp.progress import progress as progress_bar
from interp.sites import Component, Site

if TYPE_CHECKING:
    from interp.patching.setup import PatchingSetup

EditFn = Callable[[torch.Tensor, Site], torch.Tensor]

DEFAULT_BUDGET = 1 << 30  # bytes of activations per stacked forward
SKIP_NOOPS = True  # False runs no-op cells too (benchmarks/patching.py measures both)
PACK = True  # False: every cell computes all positions (benchmarks/patching.py measures both)
PACK_FAMILIES = ("llama", "gpt2", "gpt_neox")  # attention reads keys/values through cache.update
PACK_TOKENS = 512  # packed tokens per forward: past this, masked attention over them costs more than it saves

Pos = int | tuple[int, ...] | None
"""A cell's position: one padded index for every sequence, one per sequence, or ``None`` (all)."""


@dataclass(frozen=True)
class Edit:
    """Take the source run's values (or those of ``run``) at ``site`` (``None``: the stream entering the
    cell's start layer), position ``pos`` (``None``: all; a tuple: one padded index per sequence; query
    position on ``pattern``) and head ``head`` (``None``: all)."""

    site: Site | None
    pos: Pos = None
    head: int | None = None
    run: str | None = None  # take the values from this run ("clean"/"corrupted") instead of the source


Cell = tuple[int, tuple[Edit, ...]]


def bytes_per_sequence(model: Model, n_pos: int, full_logits: bool) -> int:
    """A rough upper bound of the live activation bytes of one sequence in a no-grad forward."""
    d = model.dims
    per_pos = 12 * d.d_model + 4 * d.d_mlp + 3 * d.n_heads * n_pos
    logits = (n_pos if full_logits else 2) * d.d_vocab
    return 4 * (n_pos * per_pos + logits)


def _mask_shape(site: Site, rest: Sequence[int]) -> tuple[list[int], int, int | None]:
    axes = site.component.axes[1:]
    pos_axis = axes.index("q_pos") if "q_pos" in axes else axes.index("pos")
    head_axis = axes.index("head") if "head" in axes else None
    shape = list(rest)
    shape[-1] = 1
    return shape, pos_axis, head_axis


def _selection(site: Site | None, e: Edit, ndim: int) -> tuple[Any, ...]:
    """Index of the values an edit with one position for every sequence writes in a ``[seqs, ...]``
    activation of ``ndim`` dims."""
    if isinstance(e.pos, tuple):
        raise BadInputError("per-sequence positions have no single index; use _edit_mask")
    index: list[Any] = [slice(None)] * ndim
    if site is None:
        if e.pos is not None:
            index[1] = e.pos
        return tuple(index)
    _, pos_axis, head_axis = _mask_shape(site, [1] * (ndim - 1))
    if e.pos is not None:
        index[1 + pos_axis] = e.pos
    if e.head is not None:
        if head_axis is None:
            raise BadInputError(f"{site.name} has no head axis")
        index[1 + head_axis] = e.head
    return tuple(index)


def _edit_mask(site: Site | None, e: Edit, shape: Sequence[int]) -> torch.Tensor:
    """``[seqs, *shape[1:]]`` (last axis 1) mask of what an edit writes in an activation of ``shape``."""
    mask_shape = [*shape[:-1], 1]
    m = torch.zeros(mask_shape, dtype=torch.bool)
    if not isinstance(e.pos, tuple):
        m[_selection(site, e, len(shape))] = True
        return m
    for row, p in enumerate(e.pos):
        sel = list(_selection(site, Edit(e.site, p, e.head, e.run), len(shape)))
        sel[0] = row
        m[tuple(sel)] = True
    return m


def _values(setup: PatchingSetup, run: str, site: Site | None, start: int) -> torch.Tensor:
    return setup.stream(run, start) if site is None else setup.acts(run, [site])[site.name]


def _is_noop(setup: PatchingSetup, cell: Cell, target: str, source: str) -> bool:
    """True when every edit of ``cell`` writes exactly what the target run holds there."""
    start, edits = cell
    for e in edits:
        run = e.run or source
        if run == target:
            continue
        new, old = _values(setup, run, e.site, start), _values(setup, target, e.site, start)
        if isinstance(e.pos, tuple):
            m = _edit_mask(e.site, e, new.shape).to(new.device)
            if not bool(((new == old) | ~m).all()):
                return False
            continue
        sel = _selection(e.site, e, new.dim())
        if not torch.equal(new[sel], old[sel]):
            return False
    return True


def _prefetch(setup: PatchingSetup, cells: Sequence[Cell], target: str, source: str) -> None:
    """Capture every site the cells read, one forward per run they read (instead of one per site)."""
    n_layers = setup.model.dims.n_layers
    sites = {e.site for _, edits in cells for e in edits if e.site is not None}
    sites |= {Site(Component.RESID_PRE, s) if s < n_layers else Site(Component.RESID_POST, n_layers - 1)
              for s, _ in cells}
    for run in {target, source} | {e.run for _, edits in cells for e in edits if e.run}:
        setup.acts(run, sorted(sites, key=lambda s: s.name))


def _site_edit(src: torch.Tensor, mask: torch.Tensor, n_runs: int) -> EditFn:
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        view = act.view(n_runs, -1, *act.shape[1:])
        return torch.where(mask, src.unsqueeze(0), view).view_as(act)

    return fn


def run_cells(setup: PatchingSetup, cells: Sequence[Cell], target: str, source: str, *,
              memory_budget: int = DEFAULT_BUDGET, progress: bool | None = None, desc: str = "patching") -> torch.Tensor:
    """The metric of every cell's patched run: ``[len(cells)]``.

    Args:
        setup: a :class:`~interp.patching.setup.PatchingSetup`.
        cells: the patched runs.
        target: ``"clean"`` or ``"corrupted"``: the run that is patched.
        source: the run whose activations are patched in.
        memory_budget: bytes of activations per stacked forward (runs are chunked to fit).
        progress: show a progress bar (``None``: the library switch, :mod:`interp.progress`).
    """
    model, n = setup.model, setup.n
    metric = setup.metric
    per_run = n * bytes_per_sequence(model, setup.n_pos, metric.full_logits)
    chunk = max(1, memory_budget // per_run)
    _prefetch(setup, cells, target, source)
    unpatched = setup.clean_value if target == "clean" else setup.corrupted_value
    out = torch.full((len(cells),), float("nan"))
    by_start: dict[int, list[int]] = defaultdict(list)
    for i, cell in enumerate(cells):
        if SKIP_NOOPS and not math.isnan(unpatched) and _is_noop(setup, cell, target, source):
            out[i] = unpatched
        else:
            by_start[cell[0]].append(i)
    ids, mask = setup.ids_for(target), setup.attention_mask
    bar = progress_bar(total=sum(map(len, by_start.values())), desc=desc, enabled=progress, leave=False)
    if PACK and by_start and _packable(setup, [cells[i] for idx in by_start.values() for i in idx]):
        for part in _packed_chunks(setup, cells, [i for start in sorted(by_start) for i in by_start[start]],
                                   memory_budget):
            out[part] = _run_packed(setup, [cells[i] for i in part], target, source)
            bar.update(len(part))
        bar.close()
        return out
    for start in sorted(by_start):
        idx = by_start[start]
        for c0 in range(0, len(idx), chunk):
            part = idx[c0:c0 + chunk]
            out[part] = _run_group(setup, [cells[i] for i in part], start, ids, mask, target, source)
            bar.update(len(part))
    bar.close()
    return out


def capture_cells(setup: PatchingSetup, cells: Sequence[Cell], target: str, source: str, capture: Sequence[Site], *,
                  memory_budget: int = DEFAULT_BUDGET, progress: bool | None = None) -> dict[str, torch.Tensor]:
    """The activations at ``capture`` of every cell's patched run: ``{name: [len(cells), seqs, ...]}``
    (each forward stops once they are read)."""
    per_run = setup.n * bytes_per_sequence(setup.model, setup.n_pos, False)
    chunk = max(1, memory_budget // per_run)
    _prefetch(setup, cells, target, source)
    by_start: dict[int, list[int]] = defaultdict(list)
    for i, (start, _) in enumerate(cells):
        by_start[start].append(i)
    parts: dict[str, list[tuple[list[int], torch.Tensor]]] = defaultdict(list)
    ids, mask = setup.ids_for(target), setup.attention_mask
    for start in progress_bar(sorted(by_start), desc="recomputing", enabled=progress, leave=False):
        idx = by_start[start]
        for c0 in range(0, len(idx), chunk):
            part = idx[c0:c0 + chunk]
            acts = _run_group(setup, [cells[i] for i in part], start, ids, mask, target, source, capture)
            for name, t in acts.items():
                parts[name].append((part, t))
    out = {}
    for name, pieces in parts.items():
        first = pieces[0][1]
        full = torch.empty(len(cells), *first.shape[1:], dtype=first.dtype)
        for part, t in pieces:
            full[part] = t.cpu()
        out[name] = full
    return out


def _run_group(setup: PatchingSetup, cells: Sequence[Cell], start: int, ids: torch.Tensor, mask: torch.Tensor,
               target: str, source: str, capture: Sequence[Site] = ()) -> Any:
    r, n = len(cells), setup.n
    base = setup.stream(target, start)
    resid = base.unsqueeze(0).repeat(r, *([1] * base.dim()))
    site_edits: dict[tuple[Site, str], list[tuple[int, Edit]]] = defaultdict(list)
    for ri, (_, edits) in enumerate(cells):
        for e in edits:
            if e.site is None:
                src = setup.stream(e.run or source, start)
                if isinstance(e.pos, tuple):
                    rows, cols = torch.arange(n), torch.tensor(e.pos)
                    resid[ri, rows, cols] = src[rows, cols]
                else:
                    sel = slice(None) if e.pos is None else e.pos
                    resid[ri, :, sel] = src[:, sel]
            else:
                site_edits[(e.site, e.run or source)].append((ri, e))
    ivs = []
    for (site, run), entries in site_edits.items():
        src = setup.acts(run, [site])[site.name]
        m = torch.zeros(r, *src.shape[:-1], 1, dtype=torch.bool)
        for ri, e in entries:
            m[ri] |= _edit_mask(site, e, src.shape)
        ivs.append(Lambda(site, fn=_site_edit(src, m.to(src.device), r)))
    rows_ids = ids.repeat(r, 1)
    rows_mask = mask.repeat(r, 1)
    positions = None if setup.metric.full_logits else setup.answer_pos.repeat(r)
    res = forward_from(setup.model, rows_ids, rows_mask, start_layer=start, resid=resid.flatten(0, 1),
                       interventions=ivs, positions=positions, capture=list(capture), stop_early=bool(capture))
    if capture:
        return {s.name: res.activations[s.name].view(r, n, *res.activations[s.name].shape[1:]) for s in capture}
    assert res.logits is not None
    logits = res.logits.view(r, n, *res.logits.shape[1:])
    return setup.metric(logits).cpu()


def _first_pos(cell: Cell) -> int:
    """The first position a cell changes (every earlier one is the target run's, at every layer)."""
    return min((min(e.pos) if isinstance(e.pos, tuple) else e.pos if e.pos is not None else 0) for e in cell[1])


def _packable(setup: PatchingSetup, cells: Sequence[Cell]) -> bool:
    """Whether these cells can run packed: a family whose attention takes keys/values through the cache,
    full (not sliding-window) causal attention with a mask the kernel honours, no padding, a metric at
    one position per sequence, and edits at one position for every sequence on position-first sites (not
    the attention pattern)."""
    model, cfg = setup.model, setup.model.hf.config
    window = getattr(cfg, "sliding_window", None)
    if (model.adapter.family not in PACK_FAMILIES or setup.metric.full_logits or not bool(setup.attention_mask.all())
            or getattr(cfg, "_attn_implementation", None) not in ("eager", "sdpa", ATTN_IMPL)
            or (window and getattr(cfg, "use_sliding_window", True) and window < setup.n_pos)
            or not bool((setup.answer_pos >= max(map(_first_pos, cells))).all())):
        return False
    return all((e.site is None or e.site.component.axes[1] == "pos") and not isinstance(e.pos, tuple)
               for _, edits in cells for e in edits)


def _packed_chunks(setup: PatchingSetup, cells: Sequence[Cell], idx: Sequence[int], budget: int) -> list[list[int]]:
    """Split cells (in start order) into packed forwards of at most :data:`PACK_TOKENS` tokens (attention
    over a packed sequence costs ``T * (K + T)``) whose activations fit ``budget`` bytes."""
    d, n, n_pos = setup.model.dims, setup.n, setup.n_pos
    chunks: list[list[int]] = [[]]
    tokens = 0
    for i in idx:
        t = n * (n_pos - _first_pos(cells[i]))
        total = tokens + t
        need = 4 * (total * (12 * d.d_model + 4 * d.d_mlp) + 4 * d.n_heads * total * (n * n_pos + total))
        if chunks[-1] and (need > budget or total > PACK_TOKENS):
            chunks.append([])
            total = t
        chunks[-1].append(i)
        tokens = total
    return chunks


def _run_packed(setup: PatchingSetup, cells: Sequence[Cell], target: str, source: str) -> torch.Tensor:
    """The metric of each cell (in start order), all packed into one forward of their changed positions."""
    n, n_pos, dev = setup.n, setup.n_pos, setup.model.device
    firsts = torch.tensor([_first_pos(c) for c in cells])
    starts = torch.tensor([start for start, _ in cells])
    lengths = n * (n_pos - firsts)
    tok_cell = torch.arange(len(cells)).repeat_interleave(lengths)
    tok_seq = torch.cat([torch.arange(n).repeat_interleave(n_pos - int(f)) for f in firsts])
    tok_pos = torch.cat([torch.arange(int(f), n_pos).repeat(n) for f in firsts])
    tok_start = starts[tok_cell]
    hidden = torch.empty(len(tok_cell), setup.model.dims.d_model, dtype=setup.model.dtype, device=dev)
    site_edits: dict[tuple[Site, str], list[tuple[int, Edit]]] = defaultdict(list)
    for ri, (start, edits) in enumerate(cells):
        mine = tok_cell == ri
        hidden[mine] = setup.stream(target, start)[tok_seq[mine], tok_pos[mine]]
        for e in edits:
            if e.site is None:
                sel = mine & ((tok_pos == e.pos) if e.pos is not None else True)
                hidden[sel] = setup.stream(e.run or source, start)[tok_seq[sel], tok_pos[sel]]
            else:
                site_edits[(e.site, e.run or source)].append((ri, e))
    ivs = []
    for (site, run), entries in site_edits.items():
        src = setup.acts(run, [site])[site.name]
        shape, _, _ = _mask_shape(site, src.shape[1:])  # [pos, ...]: packed tokens replace pos
        m = torch.zeros(len(tok_cell), *shape[1:], dtype=torch.bool)
        for ri, e in entries:
            sel = (tok_cell == ri) & ((tok_pos == e.pos) if e.pos is not None else True)
            index: tuple[Any, ...] = (sel, *_selection(site, e, len(shape) + 1)[2:])
            m[index] = True
        assert site.layer is not None
        active = int((tok_start <= site.layer).sum())  # tokens in the stream at this site's block
        ivs.append(Lambda(site, fn=_packed_edit(src[tok_seq, tok_pos][:active], m[:active].to(dev))))
    key_seq = torch.arange(n * n_pos) // n_pos
    key_pos = torch.arange(n * n_pos) % n_pos
    same_seq = tok_seq[:, None] == tok_seq[None]
    allowed = torch.cat([(key_seq[None] == tok_seq[:, None]) & (key_pos[None] < firsts[tok_cell][:, None]),
                         same_seq & (tok_cell[:, None] == tok_cell[None]) & (tok_pos[None] <= tok_pos[:, None])], 1)
    read = (tok_pos == setup.answer_pos[tok_seq].cpu()).nonzero()[:, 0]  # cell-major, then sequence
    ids = setup.ids_for(target).cpu()[tok_seq, tok_pos]
    logits = forward_packed(setup.model, ids[None], tok_pos[None], setup.packed_kv(target), allowed,
                            start_layer=tok_start, resid=hidden[None], interventions=ivs, read=read)
    return setup.metric(logits.view(len(cells), n, -1)).cpu()


def _packed_edit(src: torch.Tensor, mask: torch.Tensor) -> EditFn:
    """Replace the packed tokens' values where ``mask`` (keys/values: the last ones, after the prefix)."""
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        off = act.shape[1] - src.shape[0]
        out = act.clone()
        out[0, off:] = torch.where(mask, src.to(act.device, act.dtype), act[0, off:])
        return out

    return fn


__all__ = ["DEFAULT_BUDGET", "Cell", "Edit", "bytes_per_sequence", "capture_cells", "run_cells"]
