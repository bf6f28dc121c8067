"""Knowledge conflicts: the heads that push the memorised answer or the context's, and cutting them off.

Jin et al. (2024), "Cutting Off the Head Ends the Conflict": when a prompt's context contradicts a fact the model
memorised ("The capital of France is Tokyo. The capital of France is"), some heads push the memorised answer
(" Paris") and others the context's (" Tokyo"). :func:`conflict_heads` scores every head by attribution patching
of the metric ``m = logit(memory) − logit(context)`` at the last token (the first-order effect of removing the head,
``∂m/∂z_h · z_h`` summed over positions, averaged over prompts): positive heads push the memorised answer
(*memory heads*), negative heads the context's (*context heads*). :func:`conflict_intervention` scales (``0``:
prunes) a head set on held-out prompts and reports how often each answer wins before and after, against the same
number of random heads (with intervals).

The shipped prompt sets (``data/conflicts/conflicts.json``, built offline by ``data/conflicts/build.py``) hold only
facts SmolLM2-135M answers correctly closed-book (the build measures and stores its accuracy), each with a
counterfactual context stating another known answer of the same relation; ``split`` is ``"train"`` (find heads)
or ``"heldout"`` (test interventions).

Example:
    >>> import interp
    >>> from interp.patching.conflicts import conflict_heads, conflict_intervention, load_conflicts
    >>> m = interp.load_model("smollm2-135m")
    >>> train, test = load_conflicts("train")[:8], load_conflicts("heldout")[:8]
    >>> found = conflict_heads(m, train, k=3)
    >>> res = conflict_intervention(m, test, heads=found.memory_heads, factor=0.0, n_random=2)
    >>> 0.0 <= res.after <= 1.0
    True
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import Scale
from interp.models import Model
from interp.plot import heatmap, scatter
from interp.sites import HeadRef, HeadSpec, parse_heads
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

DATA = Path(__file__).resolve().parents[2] / "data" / "conflicts" / "conflicts.json"
Item = dict[str, Any]


def load_conflicts(split: str | None = None, relation: str | None = None, path: str | Path | None = None) -> list[Item]:
    """The shipped conflict items (dicts with ``prompt``, ``base_prompt``, ``memory``, ``context``, ``relation``,
    ``subject``, ``split``), optionally one split (``"train"``/``"heldout"``) or one relation."""
    p = Path(path) if path is not None else DATA
    if not p.exists():
        raise BadInputError(f"no conflict prompt set at {p}; build it with data/conflicts/build.py")
    items = json.loads(p.read_text())["items"]
    if split is not None:
        if split not in ("train", "heldout"):
            raise bad_value("split", split, "'train' or 'heldout'")
        items = [it for it in items if it["split"] == split]
    if relation is not None:
        items = [it for it in items if it["relation"] == relation]
    return list(items)


def _batch(model: Model, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if not items:
        raise BadInputError("no conflict items given")
    tok = model.tokenizer
    if tok is None:
        raise BadInputError(f"{model.name} has no tokenizer; conflict items are texts")
    ids, mask = model.encode([it["prompt"] for it in items])
    mem = torch.tensor([tok.encode(it["memory"], add_special_tokens=False)[0] for it in items])
    ctx = torch.tensor([tok.encode(it["context"], add_special_tokens=False)[0] for it in items])
    if bool((mem == ctx).any()):
        raise BadInputError("an item's memory and context answers share their first token")
    return ids, mask, mem, ctx


def _margin(logits: torch.Tensor, mask: torch.Tensor, mem: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """``[batch]`` logit(memory) − logit(context) at each prompt's last real token."""
    last = logits[torch.arange(logits.shape[0]), mask.sum(-1).to(logits.device) - 1]
    return last.gather(-1, mem[:, None].to(last.device))[:, 0] - last.gather(-1, ctx[:, None].to(last.device))[:, 0]


def _total_margin(logits: torch.Tensor, *, mask: torch.Tensor, mem: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    return _margin(logits, mask, mem, ctx).sum()


@dataclass(frozen=True, repr=False)
class ConflictHeads(Result):
    """Every head's effect on ``logit(memory) − logit(context)`` on conflict prompts, and the head sets found.

    Views: ``"heatmap"`` (default; layer x head, red = toward the memorised answer, blue = toward the context's).

    Attributes:
        effects: ``[layer, head]`` mean attribution ``∂m/∂z_h · z_h`` (≈ the margin lost when the head is removed).
        memory_heads: the ``k`` heads with the largest positive effect.
        context_heads: the ``k`` heads with the most negative effect.
        margin: mean margin on the prompts.
        n_prompts: how many prompts.
        model_id: the model.
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"effects": ("layer", "head")}
    VIEWS: ClassVar[tuple[str, ...]] = ("heatmap",)

    effects: torch.Tensor
    memory_heads: tuple[str, ...]
    context_heads: tuple[str, ...]
    margin: float = 0.0
    n_prompts: int = 0
    model_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_heads", tuple(str(h) for h in self.memory_heads))
        object.__setattr__(self, "context_heads", tuple(str(h) for h in self.context_heads))

    def headline(self) -> dict[str, Any]:
        return {"memory_heads": ",".join(self.memory_heads), "context_heads": ",".join(self.context_heads),
                "margin": round(self.margin, 3)}

    def _view_heatmap(self) -> Figure:
        L, H = self.effects.shape
        return heatmap(self.effects, x_labels=[f"H{h}" for h in range(H)], y_labels=[f"L{la}" for la in range(L)],
                       signed=True, x_title="head", y_title="layer", colorbar_title="→ memory",
                       title="Head effects on logit(memory) − logit(context)")


def conflict_heads(model: Model, inputs: Sequence[Item], *, k: int = 5, batch_size: int = 16) -> ConflictHeads:
    """Score every head by attribution patching of ``logit(memory) − logit(context)`` on conflict prompts.

    Example:
        >>> import interp
        >>> from interp.patching.conflicts import conflict_heads, load_conflicts
        >>> res = conflict_heads(interp.load_model("smollm2-135m"), load_conflicts("train")[:4], k=2)
        >>> res.effects.shape, len(res.memory_heads)
        (torch.Size([30, 9]), 2)
    """
    items = list(inputs)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise bad_value("k", k, "an int >= 1")
    L, H = model.dims.n_layers, model.dims.n_heads
    total = torch.zeros(L, H, dtype=torch.float64)
    margins = []
    for start in range(0, len(items), batch_size):
        ids, mask, mem, ctx = _batch(model, items[start:start + batch_size])
        res = model.run((ids, mask), capture=["z"], grads=["z"], metric=partial(_total_margin, mask=mask, mem=mem, ctx=ctx))
        tr = res.trace
        for la in range(L):
            n = f"blocks.{la}.attn.hook_z"
            prod = (tr.grads[n].double() * tr[n].double()) * mask[:, :, None, None].to(tr[n].device)
            total[la] += prod.sum((0, 1, 3)).cpu()
        assert res.logits is not None
        margins.append(_margin(res.logits.detach(), mask, mem, ctx).double().cpu())
    eff = total / len(items)
    order = eff.flatten().argsort(descending=True).tolist()
    top = [HeadRef(i // H, i % H) for i in order[:k]]
    bottom = [HeadRef(i // H, i % H) for i in order[::-1][:k]]
    return ConflictHeads(effects=eff.float(), memory_heads=tuple(str(h) for h in top),
                         context_heads=tuple(str(h) for h in bottom), margin=float(torch.cat(margins).mean()),
                         n_prompts=len(items), model_id=model.name)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _margins(model: Model, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
             heads: Sequence[HeadRef], factors: Sequence[float]) -> torch.Tensor:
    """``[prompt]`` logit(memory) − logit(context) with each head of ``heads`` scaled by its factor (one run)."""
    ids, mask, mem, ctx = batch
    by_factor: dict[tuple[int, float], list[int]] = {}
    for h, f in zip(heads, factors, strict=True):
        by_factor.setdefault((h.layer, float(f)), []).append(h.head)
    edits = [Scale(f"z.{la}", f, heads=hs) for (la, f), hs in sorted(by_factor.items())]
    with torch.no_grad():
        logits = model.run((ids, mask), interventions=edits).logits
    assert logits is not None
    return _margin(logits, mask, mem, ctx).double().cpu()


def _bootstrap_mean(x: torch.Tensor, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% bootstrap interval of the mean of ``x`` (resampling prompts)."""
    if len(x) < 2:
        v = float(x.mean()) if len(x) else 0.0
        return (v, v)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n, len(x)), generator=g)
    means = x.double()[idx].mean(-1)
    return float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975))


@dataclass(frozen=True, repr=False)
class ConflictIntervention(Result):
    """How often the memorised answer beats the context's, before and after scaling a head set, vs random heads.

    Views: ``"rates"`` (default): before, after and each random draw, with intervals.

    Attributes:
        random_after: ``[draw]`` memory rate after scaling ``len(heads)`` random heads by the same factor.
        heads: the head set scaled.
        factor: the scale (0: pruned).
        before: memory rate without the edit (share of prompts where logit(memory) > logit(context)).
        after: memory rate with the head set scaled.
        before_ci, after_ci: Wilson 95% intervals of those rates.
        random_ci: the 2.5–97.5 percentile range of the random draws.
        n_prompts: held-out prompts.
        model_id: the model.
        factors: per head, its scale (empty: every head by ``factor``); the random sets get the same factors.
        margin_shift: mean over prompts of the change of ``logit(memory) − logit(context)`` (found heads).
        margin_shift_ci: its percentile-bootstrap 95% interval (prompts resampled).
        random_margin_shift: ``[draw]`` the same mean change for each random head set.
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"random_after": ("draw",), "random_margin_shift": ("draw",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("rates",)

    random_after: torch.Tensor
    heads: tuple[str, ...]
    factor: float
    before: float
    after: float
    before_ci: tuple[float, float]
    after_ci: tuple[float, float]
    random_ci: tuple[float, float]
    n_prompts: int = 0
    model_id: str = ""
    factors: tuple[float, ...] = ()
    margin_shift: float = 0.0
    margin_shift_ci: tuple[float, float] = (0.0, 0.0)
    random_margin_shift: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(str(h) for h in self.heads))
        object.__setattr__(self, "factors", tuple(float(x) for x in self.factors))
        object.__setattr__(self, "margin_shift_ci", tuple(float(x) for x in self.margin_shift_ci))
        object.__setattr__(self, "before_ci", tuple(float(x) for x in self.before_ci))
        object.__setattr__(self, "after_ci", tuple(float(x) for x in self.after_ci))
        object.__setattr__(self, "random_ci", tuple(float(x) for x in self.random_ci))

    @property
    def shift(self) -> float:
        """``after − before`` for the found heads."""
        return self.after - self.before

    @property
    def random_shift(self) -> float:
        """Mean ``after − before`` for the random head sets."""
        return float(self.random_after.double().mean()) - self.before

    def headline(self) -> dict[str, Any]:
        out = {"heads": len(self.heads), "factor": self.factor if not self.factors else "per head",
               "before": round(self.before, 3), "after": round(self.after, 3),
               "random_after": round(float(self.random_after.mean()), 3), "margin_shift": round(self.margin_shift, 3)}
        if len(self.random_margin_shift):
            out["random_margin_shift"] = round(float(self.random_margin_shift.mean()), 3)
        return out

    def _view_rates(self) -> Figure:
        xs = ["before", "found heads"] + ["random heads"] * len(self.random_after)
        ys = [self.before, self.after, *self.random_after.tolist()]
        return scatter(list(range(len(xs))), ys, color=xs, x_title="", y_title="memory rate",
                       title=f"Scaling {len(self.heads)} heads by {self.factor:g}: memory rate "
                             f"{self.before:.2f} → {self.after:.2f} (random: {float(self.random_after.mean()):.2f}, "
                             f"{self.random_ci[0]:.2f}–{self.random_ci[1]:.2f})")


def conflict_intervention(model: Model, inputs: Sequence[Item], *, heads: HeadSpec | Sequence[HeadSpec],
                          factor: float = 0.0, factors: Sequence[float] | None = None, n_random: int = 10,
                          seed: int = 0) -> ConflictIntervention:
    """Scale (``factor=0``: prune) ``heads`` on conflict prompts; memory rate before/after, vs random head sets.

    ``factors`` (one per head, in the order given) scales each head by its own factor in the same run (see
    :func:`dual_intervention`); each random set is as many random heads, given the same factors in order.

    Example:
        >>> import interp
        >>> from interp.patching.conflicts import conflict_intervention, load_conflicts
        >>> m = interp.load_model("smollm2-135m")
        >>> res = conflict_intervention(m, load_conflicts("heldout")[:4], heads="L20H1,L21H3", n_random=2)
        >>> res.random_after.shape
        torch.Size([2])
    """
    items = list(inputs)
    L, H = model.dims.n_layers, model.dims.n_heads
    parsed = parse_heads(heads, n_layers=L, n_heads=H)
    if factors is not None:
        fs = [float(f) for f in factors]
        if len(fs) != len(parsed):
            raise bad_value("factors", factors, f"one factor per head ({len(parsed)} heads)")
        if len(set(parsed)) != len(parsed):
            raise bad_value("heads", heads, "distinct heads when factors are given")
        hs = list(parsed)
    else:
        hs = list(dict.fromkeys(parsed))
        fs = [float(factor)] * len(hs)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise bad_value("n_random", n_random, "an int >= 1")
    batch = _batch(model, items)
    n = len(items)
    m0 = _margins(model, batch, [], [])
    m1 = _margins(model, batch, hs, fs)
    before, after = float((m0 > 0).double().mean()), float((m1 > 0).double().mean())
    rng = random.Random(seed)
    grid = [HeadRef(la, h) for la in range(L) for h in range(H)]
    rand_m = [_margins(model, batch, rng.sample(grid, len(hs)), fs) for _ in range(n_random)]
    rand = torch.tensor([float((m > 0).double().mean()) for m in rand_m])
    lo, hi = (float(torch.quantile(rand.double(), q)) for q in (0.025, 0.975))
    return ConflictIntervention(random_after=rand.float(), heads=tuple(str(h) for h in hs), factor=float(factor),
                                before=before, after=after, before_ci=_wilson(before, n), after_ci=_wilson(after, n),
                                random_ci=(lo, hi), n_prompts=n, model_id=model.name,
                                factors=tuple(fs) if factors is not None else (),
                                margin_shift=float((m1 - m0).mean()), margin_shift_ci=_bootstrap_mean(m1 - m0, seed=seed),
                                random_margin_shift=torch.tensor([float((m - m0).mean()) for m in rand_m]).float())


def dual_intervention(model: Model, inputs: Sequence[Item], *, heads: ConflictHeads | tuple[Sequence[HeadSpec],
                      Sequence[HeadSpec]], side: Literal["memory", "context"] = "context", up: float = 2.0,
                      down: float = 0.0,
                      n_random: int = 10, seed: int = 0) -> ConflictIntervention:
    """Scale memory heads and context heads in opposite directions in one run, toward ``side``.

    Jin et al. (2024) show that pruning memory heads moves answers toward the context and pruning context heads
    toward memory; the dual intervention does both at once and chooses the side: ``side="context"`` scales the
    context heads by ``up`` and the memory heads by ``down``; ``side="memory"`` the reverse. ``heads`` is a
    :class:`ConflictHeads` (its ``memory_heads``, ``context_heads``) or a pair ``(memory_heads, context_heads)``.
    The random control scales as many random heads with the same factors.

    Example:
        >>> import interp
        >>> from interp.patching.conflicts import conflict_heads, dual_intervention, load_conflicts
        >>> m = interp.load_model("smollm2-135m")
        >>> found = conflict_heads(m, load_conflicts("train")[:8], k=2)
        >>> res = dual_intervention(m, load_conflicts("heldout")[:8], heads=found, side="context", n_random=2)
        >>> len(res.heads), res.factors
        (4, (0.0, 0.0, 2.0, 2.0))
    """
    items = list(inputs)
    if side not in ("memory", "context"):
        raise bad_value("side", side, "'memory' or 'context'")
    for name_, v in (("up", up), ("down", down)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad_value(name_, v, "a finite number")
    L, H = model.dims.n_layers, model.dims.n_heads
    mem_spec, ctx_spec = (heads.memory_heads, heads.context_heads) if isinstance(heads, ConflictHeads) else heads
    mem = parse_heads(mem_spec, n_layers=L, n_heads=H)
    ctx = parse_heads(ctx_spec, n_layers=L, n_heads=H)
    if set(mem) & set(ctx):
        raise bad_value("heads", heads, "disjoint memory and context head sets")
    f_mem, f_ctx = (down, up) if side == "context" else (up, down)
    return conflict_intervention(model, items, heads=[str(h) for h in [*mem, *ctx]],
                                 factors=[f_mem] * len(mem) + [f_ctx] * len(ctx), n_random=n_random, seed=seed)


__all__ = ["ConflictHeads", "ConflictIntervention", "conflict_heads", "conflict_intervention", "dual_intervention",
           "load_conflicts"]
