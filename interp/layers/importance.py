"""Head importance and head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").

Every head's output is multiplied by a mask ``xi_h`` (:class:`~interp.hooks.HeadMask`); the importance of a head is
``I_h = E_x |dL(x)/dxi_h|`` at ``xi = 1``. The mask carries one row per sequence of a batch, so one backward pass
of the batch's summed per-sequence losses gives every sequence's gradient for every head at once.

Example:
    >>> import interp
    >>> from interp.layers import head_importance
    >>> m = interp.load_model("smollm2-135m")
    >>> res = head_importance(m, ["The capital of France is Paris."], progress=False)
    >>> res.importance.shape
    torch.Size([30, 9])
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import HeadMask, HookedRun, forward, make_plans
from interp.layers.results import HeadImportanceResult, PruningResult
from interp.layers.tasks import Task, load_task, score
from interp.models import Model
from interp.models.model import Inputs
from interp.progress import progress as progress_bar

PRUNE_BY = ("importance", "random", "entropy")


def _ids(model: Model, inputs: Inputs | Task) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(inputs, Task):
        texts = ([it.prompt + it.choices[it.answer] for it in inputs.items] if inputs.kind == "choice"
                 else list(inputs.texts))
        return model.encode(texts)
    return model.encode(inputs)


def _seq_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].to(lp.dtype)
    return -(lp * m).sum(-1) / m.sum(-1).clamp_min(1)


def head_importance(model: Model, inputs: Inputs | Task, *, batch_size: int = 8, scales: torch.Tensor | None = None,
                    progress: bool | None = None) -> HeadImportanceResult:
    """Michel et al.'s importance of every head: the mean over sequences of ``|d loss / d xi_h|``.

    Args:
        model: the model.
        inputs: texts, ids or a trace (the loss is each sequence's mean next-token loss), or a :class:`Task`
            (its prompts with their right answers).
        batch_size: sequences per forward + backward.
        scales: the mask ``[n_layers, n_heads]`` the gradient is taken at (default all ones; pruned heads at 0 for
            iterative pruning).
        progress: show a progress bar.
    """
    ids, mask = _ids(model, inputs)
    if ids.shape[1] < 2:
        raise BadInputError("head importance needs sequences of at least two tokens (a next-token loss)")
    L, H = model.dims.n_layers, model.dims.n_heads
    base = torch.ones(L, H) if scales is None else scales.detach().float()
    if tuple(base.shape) != (L, H):
        raise BadInputError(f"scales must be [n_layers, n_heads] = {[L, H]}, got {list(base.shape)}")
    total = torch.zeros(L, H)
    n_seq, n_tok = 0, 0
    for s in progress_bar(range(0, ids.shape[0], batch_size), desc="head importance", enabled=progress):
        b_ids, b_mask = ids[s:s + batch_size], mask[s:s + batch_size]
        xi = base.expand(b_ids.shape[0], L, H).clone().requires_grad_(True)
        with torch.enable_grad(), HookedRun(model, make_plans(model, interventions=[HeadMask(scales=xi)])):
            losses = _seq_losses(forward(model, b_ids, b_mask), b_ids, b_mask)
            (grad,) = torch.autograd.grad(losses.sum(), [xi])
        total += grad.abs().sum(0)
        n_seq += b_ids.shape[0]
        n_tok += int(b_mask[:, 1:].sum())
    return HeadImportanceResult(importance=total / n_seq, n_sequences=n_seq, n_tokens=n_tok, model_id=model.name)


def attention_entropy(model: Model, inputs: Inputs | Task) -> torch.Tensor:
    """``[n_layers, n_heads]`` mean entropy (nats) of each head's attention over real query positions."""
    from interp.hooks import run_with_hooks

    ids, mask = _ids(model, inputs)
    out = run_with_hooks(model, ids, mask, capture="pattern")
    m = mask.bool()
    rows = []
    for layer in range(model.dims.n_layers):
        p = out.activations[f"blocks.{layer}.attn.hook_pattern"].double()  # [batch, head, q, k]
        ent = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [batch, head, q]
        rows.append((ent * m[:, None]).sum((0, 2)) / m.sum())
    return torch.stack(rows).float()


def prune_heads(model: Model, inputs: Task | str, *, by: Sequence[str] = PRUNE_BY, shares: Sequence[float] | None = None,
                calibration: Inputs | Task | None = None, iterative: bool = True, seed: int = 0, batch_size: int = 32,
                progress: bool | None = None) -> PruningResult:
    """Accuracy on ``task`` as a growing share of heads is masked to zero, per pruning order.

    Args:
        model: the model.
        inputs: the task, the evaluation set.
        by: ``importance`` (least important first; with ``iterative`` recomputed on the pruned model after each
            step, as Michel et al.), ``random`` (seeded), ``entropy`` (the most diffuse attention first).
        shares: shares of heads pruned at each step (default ``0, 0.1, ..., 0.9``).
        calibration: the texts importance and entropy are measured on (default: the task).
        iterative: recompute importance after each step.
        seed: the random order's seed.
        batch_size, progress: as for :func:`~interp.layers.score`.
    """
    from interp.layers.edits import head_mask

    task = load_task(inputs) if isinstance(inputs, str) else inputs
    bad = [b for b in by if b not in PRUNE_BY]
    if bad or not by:
        raise bad_value("by", bad[0] if bad else by, ", ".join(PRUNE_BY))
    shares = [i / 10 for i in range(10)] if shares is None else list(shares)
    if any(not 0 <= s < 1 for s in shares) or shares != sorted(shares):
        raise BadInputError(f"shares must rise within [0, 1) (pruning every head leaves no attention), got {shares}")
    L, H = model.dims.n_layers, model.dims.n_heads
    calib = task if calibration is None else calibration
    counts = [round(s * L * H) for s in shares]
    acc = torch.zeros(len(by), len(shares))
    ll = torch.zeros(len(by), len(shares))
    pruned_all: list[tuple[tuple[str, ...], ...]] = []
    bar = progress_bar(total=len(by) * len(shares), desc="prune_heads", enabled=progress)
    for r, method in enumerate(by):
        scales = torch.ones(L, H)
        pruned: list[int] = []
        static: list[int] = []
        if method == "random":
            static = list(range(L * H))
            random.Random(seed).shuffle(static)
        elif method == "entropy":
            static = [int(i) for i in attention_entropy(model, calib).flatten().argsort(descending=True, stable=True)]
        elif not iterative:
            static = [int(i) for i in head_importance(model, calib, scales=scales).importance.flatten().argsort(stable=True)]
        rows: list[tuple[str, ...]] = []
        for c, k in enumerate(counts):
            if k > len(pruned):
                if method == "importance" and iterative:
                    imp = head_importance(model, calib, scales=scales).importance.flatten()
                    imp[pruned] = float("inf")
                    new = [int(i) for i in imp.argsort(stable=True)[:k - len(pruned)]]
                else:
                    new = [i for i in static if i not in pruned][:k - len(pruned)]
                pruned += new
                scales.view(-1)[new] = 0.0
            s = score(model, task, interventions=head_mask(model, scales=scales), batch_size=batch_size, progress=False)
            acc[r, c], ll[r, c] = s.accuracy, s.loglik
            rows.append(tuple(f"L{i // H}H{i % H}" for i in pruned))
            chance = s.chance
            bar.update(1)
        pruned_all.append(tuple(rows))
    bar.close()
    return PruningResult(accuracy=acc, loglik=ll, methods=tuple(by), shares=tuple(float(s) for s in shares),
                         pruned=tuple(pruned_all), task=task.name, chance=chance, model_id=model.name)
