"""Many patched runs in few forwards: runs are stacked in the batch, grouped by the first layer
they change, and each group starts at that layer from the cached residual stream.

A *cell* is one patched run: ``(start, edits)``. ``start`` is the first block that sees a change;
layers before it are identical to the target run, so the forward starts there
(:func:`interp.hooks.partial.forward_from`). An edit replaces, in the target run, the source run's
values at one site, restricted to a position and a head; an edit whose site is ``None`` patches
the residual stream entering ``start`` itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.hooks import Lambda
from interp.hooks.partial import forward_from
from interp.sites import Site

DEFAULT_BUDGET = 1 << 30  # bytes of activations per stacked forward


@dataclass(frozen=True)
class Edit:
    """Take the source run's values (or those of ``run``) at ``site`` (``None``: the stream entering the
    cell's start layer), position ``pos`` (``None``: all; query position on ``hook_pattern``) and head
    ``head`` (``None``: all)."""

    site: Site | None
    pos: int | None = None
    head: int | None = None
    run: str | None = None  # take the values from this run ("clean"/"corrupted") instead of the source


Cell = tuple[int, tuple[Edit, ...]]


def bytes_per_sequence(model: Any, n_pos: int, full_logits: bool) -> int:
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


def _site_edit(src: torch.Tensor, mask: torch.Tensor, n_runs: int) -> Any:
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        view = act.view(n_runs, -1, *act.shape[1:])
        return torch.where(mask.unsqueeze(1), src.unsqueeze(0), view).view_as(act)

    return fn


def run_cells(setup: Any, cells: Sequence[Cell], target: str, source: str, *,
              memory_budget: int = DEFAULT_BUDGET, progress: bool = True, desc: str = "patching") -> torch.Tensor:
    """The metric of every cell's patched run: ``[len(cells)]``.

    Args:
        setup: a :class:`~interp.patching.setup.PatchingSetup`.
        cells: the patched runs.
        target: ``"clean"`` or ``"corrupted"``: the run that is patched.
        source: the run whose activations are patched in.
        memory_budget: bytes of activations per stacked forward (runs are chunked to fit).
        progress: show a progress bar.
    """
    model, n = setup.model, setup.n
    metric = setup.metric
    per_run = n * bytes_per_sequence(model, setup.n_pos, metric.full_logits)
    chunk = max(1, memory_budget // per_run)
    by_start: dict[int, list[int]] = defaultdict(list)
    for i, (start, _) in enumerate(cells):
        by_start[start].append(i)
    out = torch.full((len(cells),), float("nan"))
    ids, mask = setup.ids_for(target), setup.attention_mask
    bar = tqdm(total=len(cells), desc=desc, disable=not progress, leave=False)
    for start in sorted(by_start):
        idx = by_start[start]
        for c0 in range(0, len(idx), chunk):
            part = idx[c0:c0 + chunk]
            out[part] = _run_group(setup, [cells[i] for i in part], start, ids, mask, target, source)
            bar.update(len(part))
    bar.close()
    return out


def capture_cells(setup: Any, cells: Sequence[Cell], target: str, source: str, capture: Sequence[Site], *,
                  memory_budget: int = DEFAULT_BUDGET, progress: bool = True) -> dict[str, torch.Tensor]:
    """The activations at ``capture`` of every cell's patched run: ``{name: [len(cells), seqs, ...]}``
    (each forward stops once they are read)."""
    per_run = setup.n * bytes_per_sequence(setup.model, setup.n_pos, False)
    chunk = max(1, memory_budget // per_run)
    by_start: dict[int, list[int]] = defaultdict(list)
    for i, (start, _) in enumerate(cells):
        by_start[start].append(i)
    parts: dict[str, list[tuple[list[int], torch.Tensor]]] = defaultdict(list)
    ids, mask = setup.ids_for(target), setup.attention_mask
    for start in tqdm(sorted(by_start), desc="recomputing", disable=not progress, leave=False):
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


def _run_group(setup: Any, cells: Sequence[Cell], start: int, ids: torch.Tensor, mask: torch.Tensor,
               target: str, source: str, capture: Sequence[Site] = ()) -> Any:
    r, n = len(cells), setup.n
    base = setup.stream(target, start)
    resid = base.unsqueeze(0).repeat(r, *([1] * base.dim()))
    site_edits: dict[tuple[Site, str], list[tuple[int, Edit]]] = defaultdict(list)
    for ri, (_, edits) in enumerate(cells):
        for e in edits:
            if e.site is None:
                src = setup.stream(e.run or source, start)
                sel = slice(None) if e.pos is None else e.pos
                resid[ri, :, sel] = src[:, sel]
            else:
                site_edits[(e.site, e.run or source)].append((ri, e))
    ivs = []
    if site_edits:
        for (site, run), entries in site_edits.items():
            src = setup.acts(run, [site])[site.name]
            shape, pos_axis, head_axis = _mask_shape(site, src.shape[1:])
            m = torch.zeros(r, *shape, dtype=torch.bool, device=src.device)
            for ri, e in entries:
                index: list[Any] = [ri] + [slice(None)] * len(shape)
                if e.pos is not None:
                    index[1 + pos_axis] = e.pos
                if e.head is not None:
                    if head_axis is None:
                        raise ValueError(f"{site.name} has no head axis")
                    index[1 + head_axis] = e.head
                m[tuple(index)] = True
            ivs.append(Lambda(site, fn=_site_edit(src, m, r)))
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


__all__ = ["DEFAULT_BUDGET", "Cell", "Edit", "bytes_per_sequence", "capture_cells", "run_cells"]
