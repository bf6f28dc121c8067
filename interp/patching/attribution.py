"""Attribution patching (Nanda 2023) and the AtP* corrections (Kramár et al. 2024).

Attribution patching estimates every cell of an activation-patching sweep at once, linearly:
``metric(patched) - metric(target) ≈ (source - target activation) · ∂metric/∂activation``, from one
forward of each run and one backward of the target run.

AtP* options:
- ``qk_fix``: where the patched activation feeds an attention softmax through queries/keys (the
  ``q``/``k`` of a head; the residual stream entering a layer, for that layer's heads), the pattern
  is recomputed exactly with the patched queries/keys and only its effect *downstream* of the
  softmax is linearised: the q/k part of the linear estimate is replaced by
  ``(pattern' - pattern) · ∂metric/∂pattern``. This fixes false negatives of saturated softmaxes.
- ``grad_drop``: for each layer ``l``, the estimate with the gradient through layer ``l``'s
  attention and MLP outputs set to zero; the score is the mean over layers of their absolute values
  (a magnitude, ``>= 0``, that resists cancellation between paths). All layers' variants come from
  one stacked forward and one backward.

Example:
    >>> import interp
    >>> from interp.patching import activation_patching, attribution_patching, prepare
    >>> m = interp.load_model("smollm2-135m")
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
    >>> exact = activation_patching(m, s, layers=[0, 10, 20], progress=False)
    >>> atp = attribution_patching(m, s, layers=[0, 10, 20], exact=exact)
    >>> atp.values.shape, atp.correlation() > 0.5
    (torch.Size([3, 14]), True)
"""

from __future__ import annotations

from typing import Any

import torch

from interp.errors import BadInputError
from interp.hooks import Lambda, run_with_hooks
from interp.models import Inputs, Model
from interp.patching.activation import (
    STREAM,
    Direction,
    HeadsSelection,
    Layers,
    Sweep,
    make_result,
    plan_sweep,
    runs_for,
)
from interp.patching.batched import DEFAULT_BUDGET, Cell, Edit, EditFn, Pos, capture_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import Answer, Corruption, MetricSpec, PatchingSetup, setup_for
from interp.sites import Component, Positions, Site


def _drop_fn(rows: torch.Tensor) -> EditFn:
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        m = rows.to(act.device).view(-1, *([1] * (act.dim() - 1)))
        return torch.where(m, act.detach(), act)

    return fn


def _grad_run(setup: PatchingSetup, target: str, sites: list[Site], drop: bool,
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Activations and gradients ``[copies, n, ...]`` of the target run; copy ``l`` drops layer ``l``
    (with ``drop``), else one copy."""
    model, n = setup.model, setup.n
    copies = model.dims.n_layers if drop else 1
    ids = setup.ids_for(target).repeat(copies, 1)
    mask = setup.attention_mask.repeat(copies, 1)
    ivs = list(setup.interventions_for(target, copies))
    if drop:
        for layer in range(copies):
            rows = torch.zeros(copies, n, dtype=torch.bool)
            rows[layer] = True
            for comp in (Component.ATTN_OUT, Component.MLP_OUT):
                ivs.append(Lambda(Site(comp, layer), fn=_drop_fn(rows.flatten())))
    pos = setup.answer_pos.repeat(copies)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        vals = [setup.metric.differentiable(logits[c * n:(c + 1) * n], pos[c * n:(c + 1) * n]) for c in range(copies)]
        return torch.stack(vals).sum()

    out = run_with_hooks(model, ids, mask, capture=sites, grads=sites, metric=metric, interventions=ivs)

    def view(t: torch.Tensor) -> torch.Tensor:
        return t.view(copies, n, *t.shape[1:])

    return ({k: view(v) for k, v in out.activations.items()}, {k: view(v) for k, v in out.grads.items()})


def _at(per: torch.Tensor, p: Pos) -> torch.Tensor:
    """``[c, n, pos, ...]`` -> ``[c, ...]``: summed over sequences at cell position ``p`` (``None``: all)."""
    if p is None:
        return per.sum((1, 2))
    if isinstance(p, tuple):
        rows = torch.arange(per.shape[1], device=per.device)
        return per[:, rows, torch.tensor(p, device=per.device)].sum(1)
    return per[:, :, p].sum(1)


def _reduce(prod: torch.Tensor, sweep: Sweep) -> torch.Tensor:
    """``[copies, n, *site axes]`` products -> ``[copies, pos]`` (stream), ``[copies, head(, pos)]`` (heads)."""
    per = prod.sum(-1)  # [c, n, pos] / [c, n, pos, head] / pattern [c, n, head, q]
    if sweep.component is Component.PATTERN:
        per = per.transpose(2, 3)
    cols = torch.stack([_at(per, p) for p in sweep.positions], -1)  # [c, (head,) P]
    if sweep.component in STREAM:
        return cols
    cols = cols[:, list(sweep.coords["head"])]
    return cols if "pos" in sweep.axes else cols.sum(-1)


def attribution_patching(
    model: Model,
    inputs: Inputs | PatchingSetup,
    *,
    corrupt: Corruption | None = None,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: MetricSpec | None = None,
    component: str | Component = "resid_pre",
    layers: Layers = None,
    positions: Positions = None,
    heads: HeadsSelection | None = None,
    direction: Direction = "denoising",
    per_position: bool = False,
    qk_fix: bool = False,
    grad_drop: bool = False,
    exact: PatchingResult | None = None,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> PatchingResult:
    """Estimate an activation-patching sweep of ``component`` (every cell at once, from one backward).

    Args:
        model: a causal language model.
        inputs: the clean prompt(s), or a :class:`~interp.patching.PatchingSetup` (then leave ``corrupt``,
            ``answer``, ``wrong`` and ``metric`` out).
        corrupt / answer / wrong / metric: see :func:`~interp.patching.prepare`.
        component / layers / positions / heads / direction / per_position: the sweep, as in
            :func:`~interp.patching.activation_patching`.
        qk_fix: AtP*'s exact softmax recomputation for ``q``, ``k``, ``resid_pre`` and ``resid_post``.
        grad_drop: AtP*'s GradDrop; the values are then magnitudes ``>= 0`` of the effect.
        exact: the exact sweep of the same cells, kept in the result to compare (``.correlation()``).
        memory_budget / progress: for the q/k recomputation.

    Returns:
        A :class:`~interp.patching.PatchingResult` whose ``values`` are the estimated patched metric
        (``target value + estimate``), or with ``grad_drop`` the estimated ``|effect|``.

    Raises:
        BadInputError: as :func:`~interp.patching.activation_patching`; an ``exact`` of another shape.

    Example:
        >>> import interp
        >>> from interp.patching import attribution_patching
        >>> m = interp.load_model("smollm2-135m")
        >>> heads = attribution_patching(m, "When Mary and John went to the store, John gave a drink to",
        ...                              corrupt="When Mary and John went to the store, Mary gave a drink to",
        ...                              answer=" Mary", wrong=" John", component="z")
        >>> heads.axes, str(heads.top(1)[0][0])
        (('layer', 'head'), 'L23H3')
    """
    setup = setup_for(model, inputs, corrupt=corrupt, answer=answer, wrong=wrong, metric=metric)
    if setup.corruption == "none":
        raise BadInputError("attribution patching needs corrupt= (corrupted prompts, Noise(...) or Ablation(...))")
    target, source = runs_for(direction, setup)
    sweep = plan_sweep(setup, component, layers=layers, positions=positions, heads=heads, per_position=per_position)
    comp = sweep.component
    n_layers = setup.model.dims.n_layers
    Ls = list(sweep.coords["layer"])
    sites = [Site(comp, L) for L in Ls]
    qk_layers: list[int] = []
    if qk_fix and comp in (Component.RESID_PRE, Component.RESID_POST, Component.Q, Component.K):
        qk_layers = sorted({L + (comp is Component.RESID_POST) for L in Ls} - {n_layers})
    qk_sites = [Site(c, L) for L in qk_layers for c in (Component.Q, Component.K, Component.PATTERN)]
    all_sites = list(dict.fromkeys(sites + qk_sites))
    acts, grads = _grad_run(setup, target, all_sites, grad_drop)
    src = setup.acts(source, sites)
    base = setup.clean_value if target == "clean" else setup.corrupted_value
    est = []
    for L, site in zip(Ls, sites, strict=True):
        delta = src[site.name].unsqueeze(0) - acts[site.name]
        e = _reduce(delta * grads[site.name], sweep)
        if qk_layers:
            e = _qk_correction(setup, sweep, e, L, acts, grads, target, source, memory_budget, progress)
        est.append(e)
    stacked = torch.stack(est, 1)  # [copies, layer, ...]
    if grad_drop:
        values, method = stacked.abs().mean(0), "atp*" if qk_fix else "atp+graddrop"
    else:
        values, method = stacked[0] + base, "atp*" if qk_fix else "attribution"
    values = values.detach().float().cpu()
    if sweep.wanted is not None:
        keep = torch.tensor([[sweep.runs(L, h) for h in sweep.coords["head"]] for L in Ls])
        values = values.masked_fill(~keep.view(*keep.shape, *([1] * (values.dim() - 2))), float("nan"))
    if exact is not None and exact.values.shape != values.shape:
        raise BadInputError(f"exact has shape {tuple(exact.values.shape)}, the estimate {tuple(values.shape)}: "
                            "give the exact sweep of the same component, layers, positions and heads")
    return make_result(setup, sweep, values, method=method, direction=direction,
                       meta={"qk_fix": qk_fix, "grad_drop": grad_drop, "magnitude": grad_drop,
                             "corruption": setup.corruption, "baseline": base},
                       exact=None if exact is None else exact.values)


def _qk_correction(setup: PatchingSetup, sweep: Sweep, e: torch.Tensor, L: int, acts: dict[str, torch.Tensor],
                   grads: dict[str, torch.Tensor], target: str, source: str, memory_budget: int,
                   progress: bool | None) -> torch.Tensor:
    """Replace the linear q/k part of the estimate by ``(pattern' - pattern) · ∂metric/∂pattern``."""
    comp = sweep.component
    layer = L + 1 if comp is Component.RESID_POST else L
    if layer >= setup.model.dims.n_layers:
        return e
    q, k, pat = (Site(c, layer) for c in (Component.Q, Component.K, Component.PATTERN))
    Hs, P = sweep.coords.get("head", ()), sweep.positions
    slots: list[tuple[int, ...]] = []  # where each cell's correction goes in e[:, ...]
    cells: list[Cell] = []
    if comp in (Component.RESID_PRE, Component.RESID_POST):
        cells = [(layer, (Edit(None, p),)) for p in P]
        slots = [(j,) for j in range(len(P))]
    else:
        site = Site(comp, layer)
        for i, h in enumerate(Hs):
            if "pos" in sweep.axes:
                cells += [(layer, (Edit(site, p, h),)) for p in P]
                slots += [(i, j) for j in range(len(P))]
            else:
                cells.append((layer, tuple(Edit(site, p, h) for p in P)))
                slots.append((i,))
    new = capture_cells(setup, cells, target, source, [q, k, pat], memory_budget=memory_budget, progress=False)
    # new[...]: [cells, n, ...]; acts/grads: [copies, n, ...]
    out = e.clone()
    for ci, slot in enumerate(slots):
        dq = new[q.name][ci].unsqueeze(0) - acts[q.name]
        dk = new[k.name][ci].unsqueeze(0) - acts[k.name]
        dp = new[pat.name][ci].unsqueeze(0) - acts[pat.name]
        lin = (dq * grads[q.name]).sum((1, 2, 3, 4)) + (dk * grads[k.name]).sum((1, 2, 3, 4))
        exact_pat = (dp * grads[pat.name]).sum((1, 2, 3, 4))
        index: tuple[Any, ...] = (slice(None), *slot)
        out[index] += exact_pat - lin
    return out


__all__ = ["attribution_patching"]
