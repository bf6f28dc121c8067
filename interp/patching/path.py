"""Path patching (Wang et al. 2022, as used for IOI): the effect of sender heads on receivers only
through a given path.

For each sender head ``(l, h)``:

1. run the target input with the sender's output (``hook_z``, all positions) taken from the source
   run and every other head of the later layers frozen to its target value (MLPs too with
   ``freeze_mlps``); with ``receivers="logits"`` the metric of this run is the result (the sender's
   effect on the logits not mediated by other heads);
2. otherwise read the receiver heads' queries/keys/values in that run, and run the target input
   again with only those patched in: the metric is the sender's effect through the receivers'
   ``q``/``k``/``v``.

All senders of a layer share stacked forwards; step 1 stops at the last receiver layer.

Example:
    >>> import interp
    >>> from interp.patching import path_patching, prepare
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             "When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")  # doctest: +SKIP
    >>> res = path_patching(s, receivers=[(20, 3)], receiver_input="q")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.hooks import Lambda
from interp.hooks.partial import forward_from
from interp.patching.activation import Direction, runs_for
from interp.patching.batched import DEFAULT_BUDGET, Cell, Edit, bytes_per_sequence, capture_cells, run_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import PatchingSetup
from interp.sites import Component, Site

_INPUTS = {"q": (Component.Q,), "k": (Component.K,), "v": (Component.V,),
           "qkv": (Component.Q, Component.K, Component.V)}


def _heads(xs: Sequence[tuple[int, int]], n_layers: int, n_heads: int, what: str) -> list[tuple[int, int]]:
    out = []
    for x in xs:
        if len(x) != 2 or not (0 <= int(x[0]) < n_layers and 0 <= int(x[1]) < n_heads):
            raise BadInputError(f"{what} must be (layer, head) pairs in 0..{n_layers - 1} x 0..{n_heads - 1}, got {x!r}")
        out.append((int(x[0]), int(x[1])))
    if not out:
        raise BadInputError(f"{what} is empty")
    return out


def _sender_cell(ls: int, hs: int, last: int, n_heads: int, freeze_mlps: bool, target: str) -> Cell:
    edits = [Edit(Site(Component.Z, ls), None, hs)]
    for layer in range(ls + 1, last + 1):
        edits.append(Edit(Site(Component.Z, layer), None, None, run=target))
        if freeze_mlps:
            edits.append(Edit(Site(Component.MLP_OUT, layer), None, None, run=target))
    if freeze_mlps:
        edits.append(Edit(Site(Component.MLP_OUT, ls), None, None, run=target))
    return (ls, tuple(edits))


def path_patching(
    setup: PatchingSetup,
    receivers: Sequence[tuple[int, int]] | Literal["logits"] = "logits",
    receiver_input: Literal["q", "k", "v", "qkv"] = "qkv",
    *,
    senders: Sequence[tuple[int, int]] | None = None,
    direction: Direction = "noising",
    freeze_mlps: bool = False,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool = True,
) -> PatchingResult:
    """Path-patch every sender head (or the given ones) into ``receivers``.

    Args:
        setup: from :func:`~interp.patching.prepare`.
        receivers: ``(layer, head)`` pairs, or ``"logits"`` for the direct path to the output.
        receiver_input: which input of the receivers carries the path: ``q``, ``k``, ``v`` or all three.
        senders: ``(layer, head)`` pairs (default: every head below the first receiver layer).
        direction: ``"noising"`` (senders take corrupted values in the clean run, as in IOI) or
            ``"denoising"``.
        freeze_mlps: also freeze MLP outputs after the sender (by default MLPs recompute).
        memory_budget / progress: as for :func:`~interp.patching.activation_patching`.

    Returns:
        A :class:`~interp.patching.PatchingResult` with axes ``(layer, head)`` over senders (NaN for
        heads that are not senders); ``meta["receivers"]`` names the receivers.
    """
    target, source = runs_for(direction, setup)
    d = setup.model.dims
    if isinstance(receivers, str):
        if receivers != "logits":
            raise BadInputError(f"receivers must be (layer, head) pairs or 'logits', got {receivers!r}")
        recv: list[tuple[int, int]] = []
        last = d.n_layers - 1
    else:
        recv = _heads(receivers, d.n_layers, d.n_heads, "receivers")
        if receiver_input not in _INPUTS:
            raise BadInputError(f"receiver_input must be one of {', '.join(_INPUTS)}, got {receiver_input!r}")
        last = max(L for L, _ in recv)
    first_recv = min((L for L, _ in recv), default=d.n_layers)
    if senders is None:
        send = [(L, h) for L in range(first_recv) for h in range(d.n_heads)]
    else:
        send = _heads(senders, d.n_layers, d.n_heads, "senders")
        bad = [x for x in send if x[0] >= first_recv]
        if bad:
            raise BadInputError(f"senders {bad} are not before the first receiver layer {first_recv}")
    if not send:
        raise BadInputError("no sender heads lie before the receivers")
    cells = [_sender_cell(ls, hs, last, d.n_heads, freeze_mlps, target) for ls, hs in send]
    if not recv:
        vals = run_cells(setup, cells, target, source, memory_budget=memory_budget, progress=progress,
                         desc="path patching")
    else:
        comps = _INPUTS[receiver_input]
        rsites = sorted({Site(c, L) for L, _ in recv for c in comps}, key=lambda s: (s.layer, s.component.value))
        caught = capture_cells(setup, cells, target, source, rsites, memory_budget=memory_budget, progress=progress)
        vals = _receive(setup, recv, rsites, caught, target, memory_budget, progress)
    grid = torch.full((d.n_layers, d.n_heads), float("nan"))
    for (ls, hs), v in zip(send, vals.tolist(), strict=True):
        grid[ls, hs] = v
    return PatchingResult(
        values=grid, axes=("layer", "head"), coords={"layer": tuple(range(d.n_layers)), "head": tuple(range(d.n_heads))},
        tokens=tuple(setup.tokens), component="z", method="path", direction=direction, metric=setup.metric.name,
        clean_value=setup.clean_value, corrupted_value=setup.corrupted_value,
        meta={"receivers": "logits" if not recv else [list(x) for x in recv], "receiver_input": receiver_input,
              "freeze_mlps": freeze_mlps, "corruption": setup.corruption},
    )


def _receive(setup: PatchingSetup, recv: list[tuple[int, int]], rsites: list[Site], caught: dict[str, torch.Tensor],
             target: str, memory_budget: int, progress: bool) -> torch.Tensor:
    """Metric of the target run with the receivers' inputs replaced, per sender: ``[senders]``."""
    n_cells = next(iter(caught.values())).shape[0]
    n, model = setup.n, setup.model
    start = min(s.layer for s in rsites if s.layer is not None)
    chunk = max(1, memory_budget // (n * bytes_per_sequence(model, setup.n_pos, setup.metric.full_logits)))
    base = setup.stream(target, start)
    out = torch.empty(n_cells)
    for c0 in tqdm(range(0, n_cells, chunk), desc="receivers", disable=not progress, leave=False):
        part = slice(c0, min(n_cells, c0 + chunk))
        r = part.stop - part.start
        ivs = []
        for site in rsites:
            heads = torch.zeros(model.dims.n_heads, dtype=torch.bool)
            heads[[h for L, h in recv if site.layer == L]] = True
            ivs.append(Lambda(site, fn=_put(caught[site.name][part].to(model.device), heads.to(model.device))))
        ids = setup.ids_for(target).repeat(r, 1)
        positions = None if setup.metric.full_logits else setup.answer_pos.repeat(r)
        res = forward_from(model, ids, setup.attention_mask.repeat(r, 1), start_layer=start,
                           resid=base.repeat(r, 1, 1), interventions=ivs, positions=positions)
        assert res.logits is not None
        out[part] = setup.metric(res.logits.view(r, n, *res.logits.shape[1:])).cpu()
    return out


def _put(values: torch.Tensor, heads: torch.Tensor) -> Any:
    """Replace the selected heads of a ``[runs*n, pos, head, d_head]`` activation by ``values [runs, n, ...]``."""
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        view = act.view(values.shape)
        return torch.where(heads.view(1, 1, 1, -1, 1), values.to(act.dtype), view).view_as(act)

    return fn


__all__ = ["path_patching"]
