"""Batched interchange interventions: one forward for the sources, one for the bases.

The sources of every interchanged variable run together in one forward (padded to one width) that keeps the
aligned sites; their values at the source positions are placed at the base positions of a tensor shaped like
the base run's activation, and one forward of the bases swaps them in (:class:`RowPatch`, a
:class:`~interp.hooks.SubspacePatch` restricted to the base positions of each row). Several interchanges of
the same bases (a sweep over layers and positions) stack in the batch of that one forward.

Example:
    >>> import torch
    >>> from interp.causal.engine import RowPatch
    >>> act, src = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    >>> where = torch.tensor([[True, False, False], [False, False, True]])
    >>> RowPatch("resid_post.0", source=src, where=where).apply(act)[:, :, 0].tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from interp.causal.alignment import ResolvedSite
from interp.causal.task import Prompt
from interp.errors import BadInputError
from interp.hooks import SubspacePatch, forward, hooks, run_with_hooks
from interp.models import Model
from interp.sites import Component, Site, resolve_positions

Batch = tuple[torch.Tensor, torch.Tensor]  # (input_ids, attention_mask), [batch, pos]


@dataclass(frozen=True)
class RowPatch(SubspacePatch):
    """A :class:`~interp.hooks.SubspacePatch` at per-row positions: ``where`` (``[batch, pos]`` booleans) says
    which positions of each row take the source's values (``positions=`` cannot say that when rows differ)."""

    where: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.where, torch.Tensor) or self.where.dtype != torch.bool or self.where.dim() != 2:
            raise BadInputError("RowPatch needs where= as a [batch, pos] boolean tensor")

    def mask(self, act: torch.Tensor, site: Site | None = None, lengths: torch.Tensor | None = None
             ) -> torch.Tensor | None:
        site = site or self._one_site()
        m = super().mask(act, site, lengths)
        assert self.where is not None
        p_ax = site.component.pos_axis
        if self.where.shape != (act.shape[0], act.shape[p_ax]):
            raise BadInputError(f"where= has shape {tuple(self.where.shape)} but {site.name} has batch "
                                f"{act.shape[0]} and {act.shape[p_ax]} positions")
        view = [1] * act.dim()
        view[0], view[p_ax] = self.where.shape
        w = self.where.to(act.device).view(view)
        return w if m is None else m & w


def encode_prompts(model: Model, prompts: Sequence[Prompt]) -> Batch:
    """``(ids, mask)`` of texts (the model's tokenizer, right padding) or of token-id tuples (padded with the
    tokenizer's pad id, else 0), on the model's device."""
    if all(isinstance(p, str) for p in prompts):
        return model.encode(list(prompts))  # type: ignore[arg-type]
    if any(isinstance(p, str) for p in prompts):
        raise BadInputError("prompts mix texts and token ids; give one kind")
    lengths = [len(p) for p in prompts]
    if not lengths or min(lengths) == 0:
        raise BadInputError(f"prompt {lengths.index(0) if lengths else 0} has no tokens")
    width = max(lengths)
    pad = int(getattr(model.tokenizer, "pad_token_id", None) or 0)
    ids = torch.tensor([list(p) + [pad] * (width - len(p)) for p in prompts], dtype=torch.long)  # type: ignore[operator]
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.to(model.device), mask.to(model.device)


def _is_from_end(sel: object) -> bool:
    if isinstance(sel, int):
        return sel < 0
    return isinstance(sel, tuple) and len(sel) > 0 and all(i < 0 for i in sel)


def map_positions(rs: ResolvedSite, base_len: torch.Tensor, src_len: torch.Tensor, var: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, base_pos, source_pos)``: flat indices of every (row, position) the site interchanges.

    Raises:
        BadInputError: a base and its source of different token lengths under a selection that does not
            count from the end (without ``source_positions``), positions outside a sequence, or selections
            that pick different numbers of positions in a base and its source.
    """
    sel_b = rs.positions
    sel_s = rs.source_positions if rs.source_positions is not None else rs.positions
    bl, sl = base_len.tolist(), src_len.tolist()
    if rs.source_positions is None and not _is_from_end(sel_b):
        bad = next((i for i, (a, b) in enumerate(zip(bl, sl, strict=True)) if a != b), None)
        if bad is not None:
            raise BadInputError(
                f"base {bad} has {bl[bad]} tokens but its source for {var!r} has {sl[bad]}: positions "
                f"{'all' if sel_b is None else sel_b!r} at {rs.site.short} do not map one onto the other; count "
                "positions from the end (e.g. -1), or give AlignedSite(..., source_positions=...) as the position "
                "mapping")
    rows: list[int] = []
    bpos: list[int] = []
    spos: list[int] = []
    cache_b: dict[int, list[int]] = {}
    cache_s: dict[int, list[int]] = {}
    for i, (lb, ls) in enumerate(zip(bl, sl, strict=True)):
        pb = cache_b.get(lb)
        if pb is None:
            pb = cache_b[lb] = resolve_positions(sel_b, lb, "position", sequence=i)
        ps = cache_s.get(ls)
        if ps is None:
            ps = cache_s[ls] = resolve_positions(sel_s, ls, "source position", sequence=i)
        if len(pb) != len(ps):
            raise BadInputError(f"at {rs.site.short}, base {i} selects {len(pb)} positions but its source for "
                                f"{var!r} selects {len(ps)}; give selections of equal size")
        rows += [i] * len(pb)
        bpos += pb
        spos += ps
    t = torch.tensor
    return t(rows, dtype=torch.long), t(bpos, dtype=torch.long), t(spos, dtype=torch.long)


def source_activations(model: Model, sources: Mapping[str, Batch], sites: Sequence[Site], *, grad: bool = False
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """``{variable: {hook name: activation}}`` of every variable's sources, from one forward (the batches are
    padded to one width; each variable's rows are cut back to its own width). With ``grad`` the activations
    keep their graph (interchange intervention training)."""
    names = sorted({s.name for s in sites})
    vars_ = list(sources)
    # the same source batch for several variables runs once
    uniq: list[Batch] = []
    which: dict[str, int] = {}
    for v in vars_:
        ids, mask = sources[v]
        j = next((k for k, (i2, m2) in enumerate(uniq) if i2 is ids or (i2.shape == ids.shape and torch.equal(i2, ids)
                                                                        and torch.equal(m2, mask))), None)
        if j is None:
            uniq.append((ids, mask))
            j = len(uniq) - 1
        which[v] = j
    width = max(ids.shape[1] for ids, _ in uniq)
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    all_ids = torch.cat([torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=int(pad)) for ids, _ in uniq])
    all_mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1]), value=0) for _, m in uniq])
    if grad:
        acts: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, site: Site) -> None:
            acts[site.name] = act

        with torch.enable_grad(), hooks(model, {n: keep for n in names}):
            forward(model, all_ids, all_mask)
    else:
        acts = run_with_hooks(model, all_ids, all_mask, capture=names, stop_early=True).activations
    out: dict[str, dict[str, torch.Tensor]] = {}
    starts = [0]
    for ids, _ in uniq:
        starts.append(starts[-1] + ids.shape[0])
    for v in vars_:
        j = which[v]
        w = uniq[j][0].shape[1]
        out[v] = {n: a[starts[j]:starts[j + 1], :w] for n, a in acts.items()}
    return out


def all_logits(model: Model, ids: torch.Tensor, mask: torch.Tensor, edits: Sequence[SubspacePatch], *,
               grad: bool = False) -> torch.Tensor:
    """``[batch, pos, vocab]``: the logits with ``edits`` applied (with ``grad``: keeping the graph)."""
    if grad:
        with torch.enable_grad(), hooks(model, interventions=list(edits)):
            return forward(model, ids, mask)
    logits = run_with_hooks(model, ids, mask, interventions=list(edits)).logits
    assert logits is not None
    return logits


@contextmanager
def _from_layer(model: Model, start_layer: int, resid: torch.Tensor) -> Iterator[None]:
    """Inside: the model's forward runs only blocks ``start_layer..``, fed ``resid`` (the residual stream entering
    ``start_layer``). Install interp's hooks before entering (they find their modules by path)."""
    path = model.adapter.layers
    parent_path, _, attr = path.rpartition(".")
    parent = model.module(parent_path) if parent_path else model.hf
    layers = getattr(parent, attr)

    def feed(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (resid, *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else next(k for k, v in kwargs.items()
                                                                      if isinstance(v, torch.Tensor))
        return args, {**kwargs, key: resid}

    handle = layers[start_layer].register_forward_pre_hook(feed, with_kwargs=True, prepend=True)
    setattr(parent, attr, nn.ModuleList(list(layers)[start_layer:]))
    try:
        yield
    finally:
        setattr(parent, attr, layers)
        handle.remove()


class _AtFinalNorm(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends a forward at the final norm (the unembedding runs on the last positions only)."""


def tail_logits(model: Model, ids: torch.Tensor, mask: torch.Tensor, edits: Sequence[SubspacePatch], *,
                start_layer: int = 0, resid: torch.Tensor | None = None, grad: bool = False) -> torch.Tensor:
    """``[batch, vocab]`` last-token logits of a forward that starts at block ``start_layer`` from ``resid`` (its
    ``hook_resid_pre``, recorded from the same inputs), with ``edits`` at sites of layers ``>= start_layer``,
    and unembeds only each sequence's last token: what a frozen model's training step needs when the blocks
    before the edited site never change. Models whose logits are more than the unembedding of the final norm's
    output (logit soft-capping) run whole."""
    adapter = model.adapter
    taps = adapter.taps
    whole = (not adapter.is_causal or Component.LN_FINAL not in taps or Component.LOGITS not in taps
             or getattr(model.config, "final_logit_softcapping", None))
    if whole:
        if start_layer:
            raise BadInputError(f"{model.name}: a forward from layer {start_layer} needs a causal LM with a final norm")
        return last_logits(model, ids, mask, edits, grad=grad)
    norm = model.module(taps[Component.LN_FINAL].module_path(None))
    head = model.module(taps[Component.LOGITS].module_path(None))
    caught: list[torch.Tensor] = []

    def stop(module: nn.Module, args: Any, output: Any) -> None:
        caught.append(output[0] if isinstance(output, tuple) else output)
        raise _AtFinalNorm

    handle = norm.register_forward_hook(stop)
    try:
        tail = _from_layer(model, start_layer, resid) if start_layer and resid is not None else nullcontext()
        with torch.set_grad_enabled(grad), hooks(model, interventions=list(edits)), tail, suppress(_AtFinalNorm):
            forward(model, ids, mask)
    finally:
        handle.remove()
    h = caught[0]
    last = (mask.sum(1) - 1).clamp(min=0).to(h.device)
    with torch.set_grad_enabled(grad):
        return head(h[torch.arange(ids.shape[0], device=h.device), last])  # type: ignore[no-any-return]


def last_logits(model: Model, ids: torch.Tensor, mask: torch.Tensor, edits: Sequence[SubspacePatch], *,
                grad: bool = False) -> torch.Tensor:
    """``[batch, vocab]``: the logits at each sequence's last real token, with ``edits`` applied."""
    logits = all_logits(model, ids, mask, edits, grad=grad)
    last = (mask.sum(1) - 1).clamp(min=0)
    return logits[torch.arange(ids.shape[0], device=logits.device), last]


def predict(logits: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    """``[batch]`` predicted token ids: the argmax over ``candidates`` (token ids) or over the vocabulary."""
    if candidates is None:
        return logits.argmax(-1)
    c = candidates.to(logits.device)
    return c[logits[:, c].argmax(-1)]


def interchange_edits(resolved: Mapping[str, Sequence[ResolvedSite]] | Sequence[Mapping[str, Sequence[ResolvedSite]]],
                      base: Batch, sources: Mapping[str, Batch], acts: Mapping[str, Mapping[str, torch.Tensor]], *,
                      first_row: int = 0) -> list[SubspacePatch]:
    """The edits of interchanges of the same bases: at every site of every variable, the source's values at the
    base positions. Several interchanges (a list of resolved alignments) stack in the batch: the i-th takes
    rows ``first_row + i * batch ..`` of a forward of ``first_row + len(list) * batch`` rows, and edits of the
    same site, heads and subspace share one tensor."""
    many = list(resolved) if isinstance(resolved, Sequence) else [resolved]
    batch, width = base[0].shape
    n = first_row + len(many) * batch
    base_len = base[1].sum(1).cpu()
    src_len = {var: sources[var][1].sum(1).cpu() for var in sources}
    groups: dict[tuple[str, tuple[int, ...] | None, int], tuple[ResolvedSite, torch.Tensor, torch.Tensor]] = {}
    for i, res in enumerate(many):
        offset = first_row + i * batch
        for var, sites in res.items():
            for rs in sites:
                rows, bpos, spos = map_positions(rs, base_len, src_len[var], var)
                src = acts[var][rs.site.name]
                key = (rs.site.name, rs.heads, id(rs.basis) if rs.basis is not None else 0)
                if key not in groups:
                    vals = torch.zeros((n, width, *src.shape[2:]), dtype=src.dtype, device=src.device)
                    groups[key] = (rs, vals, torch.zeros(n, width, dtype=torch.bool))
                _, vals, where = groups[key]
                r = rows.to(src.device)
                target = (r + offset, bpos.to(src.device))
                picked = src[r, spos.to(src.device)]
                if picked.requires_grad:  # keep the graph (interchange intervention training)
                    groups[key] = (rs, vals.index_put(target, picked), where)
                else:
                    vals.index_put_(target, picked)
                where[rows + offset, bpos] = True
    return [RowPatch(rs.site, source=vals, where=where, heads=rs.heads, basis=rs.basis)
            for rs, vals, where in groups.values()]


__all__ = ["Batch", "RowPatch", "all_logits", "encode_prompts", "interchange_edits", "last_logits",
           "map_positions", "predict", "source_activations", "tail_logits"]
