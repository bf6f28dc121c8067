"""Distributed alignment search: learn the subspace of a site that carries a high-level variable.

DAS (Geiger et al. 2023) learns an orthogonal rotation of the site's activation space such that interchanging
the first ``k`` rotated dimensions from the source run gives the counterfactual answer; Boundless DAS (Wu et
al. 2023) learns how many dimensions with a soft boundary whose temperature is annealed; low-rank DAS
learns the ``k`` orthonormal directions directly. The network stays frozen; only the rotation (and the
boundary) train, with Adam, seeded. The rotations are initialised and parametrised as pyvene's
(``torch.nn.init.orthogonal_`` under ``torch.nn.utils.parametrizations.orthogonal``), so the same seed starts
both at the same point.

The sources' values at the site do not change while the rotation trains, so they are computed once, before
training; each step runs only the bases, and only from the site's layer on (the residual stream entering that
layer is recorded once too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, cast

import torch
from torch import nn

from interp.causal.alignment import SiteLike, as_site, last_dim, resolve_site
from interp.causal.engine import RowPatch, encode_prompts, interchange_edits, source_activations, tail_logits
from interp.causal.iia import _ids, evaluate
from interp.causal.results import SubspaceResult, wilson
from interp.causal.task import InterchangeData
from interp.errors import BadInputError, unknown_name
from interp.hooks import run_with_hooks
from interp.models import Model
from interp.progress import progress as progress_bar
from interp.sites import Component

log = logging.getLogger(__name__)
Method = Literal["das", "lowrank", "boundless"]
METHODS = ("das", "lowrank", "boundless")


class Rotation(nn.Module):
    """``x @ weight`` with ``weight`` ``[d, m]`` orthonormal columns (``m = d``: a rotation), initialised by
    ``torch.nn.init.orthogonal_`` and kept orthogonal by ``torch.nn.utils.parametrizations.orthogonal``."""

    def __init__(self, d: int, m: int | None = None) -> None:
        super().__init__()
        weight = torch.empty(d, d if m is None else m)
        torch.nn.init.orthogonal_(weight)
        self.weight = nn.Parameter(weight, requires_grad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.to(self.weight.dtype), self.weight)


def sigmoid_boundary(pop: torch.Tensor, lo: float, hi: torch.Tensor, temperature: float) -> torch.Tensor:
    """Boundless DAS's soft mask: about 1 on ``lo < i < hi``, 0 elsewhere, sharper as ``temperature`` falls."""
    return torch.sigmoid((pop - lo) / temperature) * torch.sigmoid((hi - pop) / temperature)


@contextmanager
def frozen(model: Model) -> Iterator[None]:
    """The model's parameters without gradients for the duration (restored after)."""
    saved = [(p, p.requires_grad) for p in model.hf.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, rg in saved:
            p.requires_grad_(rg)


def das(model: Model, inputs: InterchangeData, *, site: SiteLike, variable: str | None = None, k: int = 1,
        method: Method = "das", steps: int = 200, lr: float = 1e-3, batch_size: int = 32,
        test: InterchangeData | float = 0.2, seed: int = 0, eval_every: int = 10, boundary_lr: float = 1e-2,
        temperature: tuple[float, float] = (50.0, 0.1), tail: bool = True, progress: bool | None = None
        ) -> SubspaceResult:
    """Learn a ``k``-dimensional subspace of ``site`` that carries ``variable``, and score it on held-out pairs.

    Args:
        model: the network (frozen while the subspace trains).
        inputs: base/source pairs interchanging ``variable``.
        site: one hook point with positions and heads: an :class:`AlignedSite`, ``"resid_post.3"`` or
            ``("resid_post.3", -1)``.
        variable: the variable (default: the data's only one).
        k: the subspace dimension (``method="boundless"`` learns it; ``k`` is then ignored).
        method: ``"das"`` (a full rotation, the first ``k`` dims swapped), ``"lowrank"`` (``k`` orthonormal
            directions), ``"boundless"`` (a rotation and a learned soft boundary).
        steps: optimisation steps (Adam at ``lr``; ``boundary_lr`` for Boundless DAS's boundary).
        batch_size: pairs per step.
        test: held-out pairs, or the share of ``inputs`` held out (seeded split).
        seed: seeds the initialisation, the split and the batch order.
        eval_every: steps between points of the training curve.
        temperature: Boundless DAS's start and end temperatures (annealed linearly).
        tail: start each step's forward at the site's layer from the bases' residual stream there (recorded once;
            exact, as the blocks before the site never change); ``False`` runs the whole model every step.
        progress: show a progress bar (``None``: the library switch).

    Returns:
        :class:`SubspaceResult` with the basis, the training curve and the held-out IIA.

    Raises:
        BadInputError: a site naming several hook points, a subspace larger than the site, an unknown method.

    Example:
        >>> from interp.causal import das, load_iit_model
        >>> shipped = load_iit_model("iit-equality")
        >>> data = shipped.task.sample(256, variables="WX", seed=3)
        >>> res = das(shipped.model, data, site=("mlp_out.0", 1), k=2, steps=60, lr=1e-2, progress=False)
        >>> res.k, res.iia >= 0.95
        (2, True)
    """
    if method not in METHODS:
        raise unknown_name("DAS method", str(method), METHODS)
    var = _variable(inputs, variable)
    s = as_site(site)
    if isinstance(s.positions, slice):
        raise BadInputError("DAS positions must be an int or a list of ints, not a slice")
    resolved = resolve_site(model, s)
    if len(resolved) != 1:
        raise BadInputError(f"{s.hook!r} names {len(resolved)} hook points; DAS learns a subspace of one")
    rs = resolved[0]
    for name, v in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BadInputError(f"bad {name} {v!r}; valid: an int >= 1")
    train, held = inputs.split(test, seed) if isinstance(test, (int, float)) else (inputs, test)
    _, cfs, cand = _ids(model, train)
    # every training pair's source values at the site, once
    base_ids, base_mask = encode_prompts(model, train.base)
    src_ids, src_mask = encode_prompts(model, train.sources[var])
    acts = {var: {rs.site.name: torch.cat([source_activations(
        model, {var: (src_ids[i:i + 256], src_mask[i:i + 256])}, [rs.site])[var][rs.site.name]
        for i in range(0, len(train), 256)])}}
    d = last_dim(model, rs.site) or int(acts[var][rs.site.name].shape[-1])
    k_requested = k
    if method != "boundless" and not 1 <= k <= d:
        raise BadInputError(f"a subspace of {k} dimensions does not fit {rs.site.short}, whose last axis has {d}")
    (edit,) = interchange_edits({var: [rs]}, (base_ids, base_mask), {var: (src_ids, src_mask)}, acts)
    start = rs.site.layer if tail and rs.site.layer is not None and rs.site.component is not Component.HF else 0
    resid = None
    if start and not model.adapter.is_causal:
        start = 0
    if start:
        name = f"blocks.{start}.hook_resid_pre"
        resid = torch.cat([run_with_hooks(model, base_ids[i:i + 256], base_mask[i:i + 256], capture=name,
                                          stop_early=True).activations[name] for i in range(0, len(train), 256)])
    vals, where = edit.source, edit.where  # type: ignore[attr-defined]
    assert where is not None
    torch.manual_seed(seed)
    rot = nn.utils.parametrizations.orthogonal(Rotation(d, k if method == "lowrank" else None)).to(model.device)
    params = [{"params": rot.parameters(), "lr": lr}]
    bound = nn.Parameter(torch.tensor([0.5], device=model.device)) if method == "boundless" else None
    if bound is not None:
        params.append({"params": [bound], "lr": boundary_lr})
    opt = torch.optim.Adam(params)
    pop = torch.arange(d, dtype=torch.float32, device=model.device)
    temps = torch.linspace(temperature[0], temperature[1], steps)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    cursor = 0
    curve_steps: list[int] = []
    curve_loss: list[float] = []
    curve_iia: list[float] = []
    target = cfs if cand is None else (cfs[:, None] == cand[None, :]).float().argmax(1)
    t0 = time.perf_counter()
    with frozen(model):
        for step in progress_bar(range(1, steps + 1), enabled=progress, desc=f"{method} {rs.site.short}"):
            if cursor + batch_size > len(train):
                order, cursor = torch.randperm(len(train), generator=g), 0
            idx = order[cursor:cursor + batch_size]
            cursor += batch_size
            w = cast(torch.Tensor, rot.weight)
            weights = None
            if method == "das":
                basis = w[:, :k].T
            elif method == "lowrank":
                basis = w.T
            else:
                assert bound is not None
                b = torch.clamp(bound, 1e-3, 1.0)
                weights = sigmoid_boundary(pop, 0.0, b[0] * d, float(temps[step - 1]))
                basis = w.T
            dev = model.device
            edits = [RowPatch(edit.site, source=vals[idx.to(vals.device)], where=where[idx], heads=edit.heads,
                              basis=basis, weights=weights)]
            logits = tail_logits(model, base_ids[idx.to(dev)], base_mask[idx.to(dev)], edits, start_layer=start,
                                 resid=None if resid is None else resid[idx.to(resid.device)], grad=True)
            if cand is not None:
                logits = logits[:, cand.to(dev)]
            loss = nn.functional.cross_entropy(logits.float(), target[idx].to(dev))
            if bound is not None:
                loss = loss + bound.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % eval_every == 0 or step == steps:
                curve_steps.append(step)
                curve_loss.append(float(loss.detach()))
                curve_iia.append(float((logits.argmax(-1).cpu() == target[idx]).float().mean()))
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        w = cast(torch.Tensor, rot.weight).detach()
        if method == "boundless":
            assert bound is not None
            k = max(1, min(d, round(float(torch.clamp(bound, 1e-3, 1.0)) * d)))
        basis = (w.T if method == "lowrank" else w[:, :k].T).contiguous().float().cpu()
    result_site = as_site(s)
    held_site = type(result_site)(result_site.hook, positions=result_site.positions,
                                  source_positions=result_site.source_positions, heads=result_site.heads, basis=basis)
    res_resolved = [{var: resolve_site(model, held_site)}]
    correct, _ = evaluate(model, held, res_resolved, batch_size=max(batch_size, 64), progress=False)
    rate, lo, hi = wilson(correct[0])
    return SubspaceResult(
        basis=basis, curve_loss=torch.tensor(curve_loss), curve_iia=torch.tensor(curve_iia),
        curve_steps=tuple(curve_steps), hook=rs.site.name,
        positions=s.positions if not isinstance(s.positions, tuple) else tuple(s.positions),  # type: ignore[arg-type]
        heads=rs.heads, variable=var, method=method, task=inputs.task, iia=float(rate), lower=float(lo),
        upper=float(hi), n_test=len(held), train_iia=curve_iia[-1] if curve_iia else float("nan"), steps=steps,
        lr=lr, seed=seed, boundary=None if bound is None else float(bound.detach().clamp(1e-3, 1.0)),
        config={"batch_size": batch_size, "k_requested": k_requested, "temperature": list(temperature),
                "seconds_per_step": train_seconds / steps, "tail_from_layer": start})


def _variable(inputs: InterchangeData, variable: str | None) -> str:
    if variable is not None and variable not in inputs.variables:
        raise unknown_name("variable", variable, inputs.variables, hint="(the variables the data interchanges)")
    if len(inputs.variables) != 1:
        raise BadInputError(f"DAS learns the subspace of one variable, but the data interchanges "
                            f"{list(inputs.variables)} at once; sample pairs for one (task.sample(n, variables=[...]))")
    return inputs.variables[0]


__all__ = ["METHODS", "Rotation", "das", "frozen", "sigmoid_boundary"]
