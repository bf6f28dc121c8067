"""Path patching (Wang et al. 2022, as used for IOI): the effect of sender heads on receivers only
through a given path.

For each sender head ``(l, h)``:

1. run the target input with the sender's output (``z``, all positions) taken from the source
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
    >>> m = interp.load_model("smollm2-135m")
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
    >>> res = path_patching(m, s, senders="L20H0,L21H4,L22H1", receivers="L23H3", receiver_input="q", progress=False)
    >>> [str(h) for h, _ in res.top(3)], res.meta["receivers"]
    (['L20H0', 'L22H1', 'L21H4'], ['L23H3'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import Lambda
from interp.hooks.partial import forward_from
from interp.models import Inputs, Model
from interp.patching.activation import Direction, runs_for
from interp.patching.batched import DEFAULT_BUDGET, Cell, Edit, EditFn, bytes_per_sequence, capture_cells, run_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import Answer, Corruption, MetricSpec, PatchingSetup, setup_for
from interp.progress import progress as progress_bar
from interp.sites import Component, HeadRef, HeadSpec, Site, parse_heads

_INPUTS = (Component.Q, Component.K, Component.V)
Heads = HeadSpec | Sequence[HeadSpec]


def _receiver_components(x: str | Sequence[str]) -> list[Component]:
    items = [x] if isinstance(x, str) else list(x)
    out: list[Component] = []
    for c in items:
        try:
            comp = Component.parse(c)
        except (BadInputError, TypeError):
            comp = None
        if comp not in _INPUTS:
            raise bad_value("receiver_input", c, "'q', 'k', 'v' or a list of them")
        assert comp is not None
        out.append(comp)
    if not out:
        raise bad_value("receiver_input", x, "'q', 'k', 'v' or a list of them")
    return list(dict.fromkeys(out))


def _sender_cell(ls: int, hs: int, last: int, freeze_mlps: bool, target: str) -> Cell:
    edits = [Edit(Site(Component.Z, ls), None, hs)]
    for layer in range(ls + 1, last + 1):
        edits.append(Edit(Site(Component.Z, layer), None, None, run=target))
        if freeze_mlps:
            edits.append(Edit(Site(Component.MLP_OUT, layer), None, None, run=target))
    if freeze_mlps:
        edits.append(Edit(Site(Component.MLP_OUT, ls), None, None, run=target))
    return (ls, tuple(edits))


def path_patching(
    model: Model,
    inputs: Inputs | PatchingSetup,
    *,
    corrupt: Corruption | None = None,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: MetricSpec | None = None,
    senders: Heads | None = None,
    receivers: Heads | Literal["logits"] = "logits",
    receiver_input: str | Sequence[str] = ("q", "k", "v"),
    direction: Direction = "noising",
    freeze_mlps: bool = False,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> PatchingResult:
    """Path-patch every sender head (or the given ones) into ``receivers``.

    Args:
        model: a causal language model.
        inputs: the clean prompt(s), or a :class:`~interp.patching.PatchingSetup` (then leave ``corrupt``,
            ``answer``, ``wrong`` and ``metric`` out).
        corrupt / answer / wrong / metric: see :func:`~interp.patching.prepare`.
        senders: heads ``(layer, head)`` / ``"L5H1"`` (default: every head below the first receiver layer).
        receivers: heads, or ``"logits"`` for the direct path to the output.
        receiver_input: which inputs of the receivers carry the path: ``"q"``, ``"k"``, ``"v"`` or several
            (default all three).
        direction: ``"noising"`` (senders take corrupted values in the clean run, as in IOI) or
            ``"denoising"``.
        freeze_mlps: also freeze MLP outputs after the sender (by default MLPs recompute).
        memory_budget / progress: as for :func:`~interp.patching.activation_patching`.

    Returns:
        A :class:`~interp.patching.PatchingResult` with axes ``(layer, head)`` over senders (NaN for
        heads that are not senders); ``meta["receivers"]`` names the receivers (``"L5H1"`` strings or
        ``"logits"``); its ``paths`` view draws the strongest senders.

    Raises:
        BadInputError: a malformed or out-of-range head, senders not before the first receiver.
    Example (noising: the sender takes its value from the corrupted prompt, only along the path to the logits):
        >>> import interp
        >>> from interp.patching import path_patching
        >>> m = interp.load_model("smollm2-135m")
        >>> res = path_patching(m, "When Mary and John went to the store, John gave a drink to",
        ...                     corrupt="When Alice and Bob went to the store, Bob gave a drink to",
        ...                     answer=" Mary", wrong=" John", senders=["L20H0", "L23H3"], progress=False)
        >>> round(res.clean_value, 2), round(float(res.values[20, 0]), 2), round(float(res.values[23, 3]), 2)
        (6.12, 6.18, 2.87)
    """
    setup = setup_for(model, inputs, corrupt=corrupt, answer=answer, wrong=wrong, metric=metric)
    if setup.corruption == "none":
        raise BadInputError("path patching needs corrupt= (corrupted prompts, Noise(...) or Ablation(...))")
    target, source = runs_for(direction, setup)
    d = setup.model.dims
    if isinstance(receivers, str) and receivers == "logits":
        recv: list[HeadRef] = []
        last = d.n_layers - 1
    else:
        recv = parse_heads(receivers, n_layers=d.n_layers, n_heads=d.n_heads)
        last = max(h.layer for h in recv)
    first_recv = min((h.layer for h in recv), default=d.n_layers)
    if senders is None:
        send = [HeadRef(L, h) for L in range(first_recv) for h in range(d.n_heads)]
    else:
        send = parse_heads(senders, n_layers=d.n_layers, n_heads=d.n_heads)
        bad = [str(h) for h in send if h.layer >= first_recv]
        if bad:
            raise BadInputError(f"senders {', '.join(bad)} are not before the first receiver layer {first_recv}")
    if not send:
        raise BadInputError("no sender heads lie before the receivers")
    comps = _receiver_components(receiver_input)
    cells = [_sender_cell(h.layer, h.head, last, freeze_mlps, target) for h in send]
    if not recv:
        vals = run_cells(setup, cells, target, source, memory_budget=memory_budget, progress=progress,
                         desc="path patching")
    else:
        rsites = sorted({Site(c, h.layer) for h in recv for c in comps}, key=lambda s: (s.layer, s.component.value))
        caught = capture_cells(setup, cells, target, source, rsites, memory_budget=memory_budget, progress=progress)
        vals = _receive(setup, recv, rsites, caught, target, memory_budget, progress)
    grid = torch.full((d.n_layers, d.n_heads), float("nan"))
    for h, v in zip(send, vals.tolist(), strict=True):
        grid[h.layer, h.head] = v
    return PatchingResult(
        values=grid, axes=("layer", "head"), coords={"layer": tuple(range(d.n_layers)), "head": tuple(range(d.n_heads))},
        tokens=tuple(setup.tokens), component="z", method="path", direction=direction, metric=setup.metric.name,
        clean_value=setup.clean_value, corrupted_value=setup.corrupted_value,
        meta={"receivers": "logits" if not recv else [str(h) for h in recv], "receiver_input": [c.short for c in comps],
              "freeze_mlps": freeze_mlps, "corruption": setup.corruption},
    )


def _receive(setup: PatchingSetup, recv: list[HeadRef], rsites: list[Site], caught: dict[str, torch.Tensor],
             target: str, memory_budget: int, progress: bool | None) -> torch.Tensor:
    """Metric of the target run with the receivers' inputs replaced, per sender: ``[senders]``."""
    n_cells = next(iter(caught.values())).shape[0]
    n, model = setup.n, setup.model
    start = min(s.layer for s in rsites if s.layer is not None)
    chunk = max(1, memory_budget // (n * bytes_per_sequence(model, setup.n_pos, setup.metric.full_logits)))
    base = setup.stream(target, start)
    out = torch.empty(n_cells)
    for c0 in progress_bar(range(0, n_cells, chunk), desc="receivers", enabled=progress, leave=False):
        part = slice(c0, min(n_cells, c0 + chunk))
        r = part.stop - part.start
        ivs = []
        for site in rsites:
            heads = torch.zeros(model.dims.n_heads, dtype=torch.bool)
            heads[[h.head for h in recv if site.layer == h.layer]] = True
            ivs.append(Lambda(site, fn=_put(caught[site.name][part].to(model.device), heads.to(model.device))))
        ids = setup.ids_for(target).repeat(r, 1)
        positions = None if setup.metric.full_logits else setup.answer_pos.repeat(r)
        res = forward_from(model, ids, setup.attention_mask.repeat(r, 1), start_layer=start,
                           resid=base.repeat(r, 1, 1), interventions=ivs, positions=positions)
        assert res.logits is not None
        out[part] = setup.metric(res.logits.view(r, n, *res.logits.shape[1:])).cpu()
    return out


def _put(values: torch.Tensor, heads: torch.Tensor) -> EditFn:
    """Replace the selected heads of a ``[runs*n, pos, head, d_head]`` activation by ``values [runs, n, ...]``."""
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        view = act.view(values.shape)
        return torch.where(heads.view(1, 1, 1, -1, 1), values.to(act.dtype), view).view_as(act)

    return fn


__all__ = ["path_patching"]
