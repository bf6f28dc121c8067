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
    >>> from interp.patching import attribution_patching, prepare
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             "When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")  # doctest: +SKIP
    >>> atp = attribution_patching(s, "resid_pre", qk_fix=True)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from interp.errors import BadInputError
from interp.hooks import Lambda, run_with_hooks
from interp.patching.activation import HEADS, STREAM, Direction, runs_for
from interp.patching.batched import DEFAULT_BUDGET, Edit, capture_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import PatchingSetup
from interp.sites import Component, Site


def _drop_fn(rows: torch.Tensor) -> Any:
    def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
        m = rows.to(act.device).view(-1, *([1] * (act.dim() - 1)))
        return torch.where(m, act.detach(), act)

    return fn


def _grad_run(setup: PatchingSetup, target: str, sites: list[Site], drop: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Activations and gradients ``[copies, n, ...]`` of the target run; copy ``l`` drops layer ``l``
    (with ``drop``), else one copy."""
    model, n = setup.model, setup.n
    copies = model.dims.n_layers if drop else 1
    ids = setup.ids_for(target).repeat(copies, 1)
    mask = setup.attention_mask.repeat(copies, 1)
    ivs = list(setup.interventions_for(target))
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
    view = lambda t: t.view(copies, n, *t.shape[1:])  # noqa: E731
    return ({k: view(v) for k, v in out.activations.items()}, {k: view(v) for k, v in out.grads.items()})


def _reduce(prod: torch.Tensor, comp: Component, per_position: bool) -> torch.Tensor:
    """``[copies, n, *site axes]`` products → ``[copies, pos]`` (stream), ``[copies, head(, pos)]`` (heads)."""
    if comp in STREAM.values():
        return prod.sum((1, 3))
    if comp is Component.PATTERN:  # [c, n, head, q, k]
        return prod.sum((1, 4)) if per_position else prod.sum((1, 3, 4))
    # [c, n, pos, head, d_head]
    return prod.sum((1, 4)).transpose(1, 2) if per_position else prod.sum((1, 2, 4))


def attribution_patching(
    setup: PatchingSetup,
    component: str = "resid_pre",
    *,
    direction: Direction = "denoising",
    per_position: bool = False,
    qk_fix: bool = False,
    grad_drop: bool = False,
    exact: PatchingResult | None = None,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool = True,
) -> PatchingResult:
    """Estimate an activation-patching sweep of ``component`` over all layers, positions (and heads).

    Args:
        setup: from :func:`~interp.patching.prepare`.
        component: as in :func:`~interp.patching.activation_patching`.
        direction: ``"denoising"`` or ``"noising"``.
        per_position: for head components, one estimate per (head, position).
        qk_fix: AtP*'s exact softmax recomputation for ``q``, ``k``, ``resid_pre`` and ``resid_post``.
        grad_drop: AtP*'s GradDrop; the values are then magnitudes ``>= 0`` of the effect.
        exact: the exact sweep of the same cells, kept in the result to compare (``.correlation()``).
        memory_budget / progress: for the q/k recomputation.

    Returns:
        A :class:`~interp.patching.PatchingResult` whose ``values`` are the estimated patched metric
        (``target value + estimate``), or with ``grad_drop`` the estimated ``|effect|``.
    """
    target, source = runs_for(direction, setup)
    if component in STREAM:
        comp = STREAM[component]
    elif component in HEADS:
        comp = HEADS[component]
    else:
        raise BadInputError(f"unknown component {component!r}; use one of {', '.join([*STREAM, *HEADS])}")
    d = setup.model.dims
    n_layers = d.n_layers
    sites = [Site(comp, L) for L in range(n_layers)]
    qk_layers: list[int] = []
    if qk_fix and comp in (Component.RESID_PRE, Component.RESID_POST, Component.Q, Component.K):
        qk_layers = [L + (comp is Component.RESID_POST) for L in range(n_layers)]
        qk_layers = [x for x in qk_layers if x < n_layers]
    qk_sites = [Site(c, L) for L in sorted(set(qk_layers)) for c in (Component.Q, Component.K, Component.PATTERN)]
    all_sites = list(dict.fromkeys(sites + qk_sites))
    acts, grads = _grad_run(setup, target, all_sites, grad_drop)
    src = setup.acts(source, sites)
    base = setup.clean_value if target == "clean" else setup.corrupted_value
    est = []
    for L, site in enumerate(sites):
        delta = src[site.name].unsqueeze(0) - acts[site.name]
        e = _reduce(delta * grads[site.name], comp, per_position)
        if qk_layers:
            e = _qk_correction(setup, e, comp, L, acts, grads, target, source, per_position, memory_budget, progress)
        est.append(e)
    stacked = torch.stack(est, 1)  # [copies, layer, ...]
    if grad_drop:
        values, method = stacked.abs().mean(0), "atp*" if qk_fix else "atp+graddrop"
    else:
        values, method = stacked[0] + base, "atp*" if qk_fix else "attribution"
    if comp in STREAM.values():
        axes: tuple[str, ...] = ("layer", "pos")
    else:
        axes = ("layer", "head", "pos") if per_position else ("layer", "head")
    coords = {"layer": tuple(range(n_layers)), "head": tuple(range(d.n_heads)), "pos": tuple(range(setup.n_pos))}
    if exact is not None and exact.values.shape != values.shape:
        raise BadInputError(f"exact has shape {tuple(exact.values.shape)}, the estimate {tuple(values.shape)}: "
                         "give the exact sweep of the same component over all layers, positions and heads")
    return PatchingResult(
        values=values.detach().float().cpu(), axes=axes, coords={a: coords[a] for a in axes}, tokens=tuple(setup.tokens),
        component=component, method=method, direction=direction, metric=setup.metric.name,
        clean_value=setup.clean_value, corrupted_value=setup.corrupted_value,
        meta={"qk_fix": qk_fix, "grad_drop": grad_drop, "magnitude": grad_drop, "corruption": setup.corruption,
              "baseline": base},
        exact=None if exact is None else exact.values.float(),
    )


def _qk_correction(setup: PatchingSetup, e: torch.Tensor, comp: Component, L: int, acts: dict[str, torch.Tensor],
                   grads: dict[str, torch.Tensor], target: str, source: str, per_position: bool,
                   memory_budget: int, progress: bool) -> torch.Tensor:
    """Replace the linear q/k part of the estimate by ``(pattern' - pattern) · ∂metric/∂pattern``."""
    d = setup.model.dims
    layer = L + 1 if comp is Component.RESID_POST else L
    if layer >= d.n_layers:
        return e
    q, k, pat = (Site(c, layer) for c in (Component.Q, Component.K, Component.PATTERN))
    if comp in (Component.RESID_PRE, Component.RESID_POST):
        cells = [(layer, (Edit(None, p),)) for p in range(setup.n_pos)]
        keys = list(range(setup.n_pos))
    else:
        site = Site(comp, layer)
        if per_position:
            cells = [(layer, (Edit(site, p, h),)) for h in range(d.n_heads) for p in range(setup.n_pos)]
        else:
            cells = [(layer, (Edit(site, None, h),)) for h in range(d.n_heads)]
        keys = list(range(len(cells)))
    new = capture_cells(setup, cells, target, source, [q, k, pat], memory_budget=memory_budget, progress=False)
    # new[...]: [cells, n, ...]; acts/grads: [copies, n, ...]
    out = e.clone()
    for ci in keys:
        dq = new[q.name][ci].unsqueeze(0) - acts[q.name]
        dk = new[k.name][ci].unsqueeze(0) - acts[k.name]
        dp = new[pat.name][ci].unsqueeze(0) - acts[pat.name]
        lin = (dq * grads[q.name]).sum((1, 2, 3, 4)) + (dk * grads[k.name]).sum((1, 2, 3, 4))
        exact_pat = (dp * grads[pat.name]).sum((1, 2, 3, 4))
        corr = exact_pat - lin
        if comp in (Component.RESID_PRE, Component.RESID_POST):
            out[:, ci] += corr
        elif per_position:
            h, p = divmod(ci, setup.n_pos)
            out[:, h, p] += corr
        else:
            out[:, ci] += corr
    return out


__all__ = ["attribution_patching"]
