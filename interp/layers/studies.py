"""Layer studies on a task suite: dropping blocks and sublayers (Gromov et al.; He et al.), and the Painters
experiments (Sun et al.).

Example:
    >>> import interp
    >>> from interp.layers import drop_layers, load_task
    >>> m = interp.load_model("smollm2-135m")
    >>> res = drop_layers(m, load_task("capitals").head(4), methods=("angular",), max_drop=1, progress=False)
    >>> res.accuracy.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import Intervention, LayerPlan, run_with_hooks
from interp.layers.edits import skip
from interp.layers.results import LayerDropResult, PaintersResult
from interp.layers.tasks import Task, load_task, score
from interp.models import Model
from interp.models.model import Inputs
from interp.progress import progress as progress_bar

METHODS = ("angular", "attn", "mlp", "skip_loss", "random")
VARIANTS = ("skip", "shuffle", "reverse", "repeat", "parallel")


def _calibration(model: Model, task: Task, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [it.prompt for it in task.items[:n]] if task.kind == "choice" else list(task.texts[:n])
    return model.encode(texts)


def _last(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(-1) - 1


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def residual_states(model: Model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``resid_pre`` / ``resid_mid`` of every block and the last ``resid_post`` (one run)."""
    out = run_with_hooks(model, ids, mask, capture=["resid_pre", "resid_mid", f"resid_post.{model.dims.n_layers - 1}"])
    return out.activations


def angular_choice(model: Model, inputs: Inputs, *, n: int) -> list[int]:
    """The ``n`` consecutive blocks whose input and output residual streams are closest in angle at each
    sequence's last token: ``argmin_l mean arccos(cos(x_l, x_{l+n})) / pi`` (Gromov et al. 2024)."""
    ids, mask = model.encode(inputs)
    acts = residual_states(model, ids, mask)
    L = model.dims.n_layers
    rows = torch.arange(ids.shape[0])
    last = _last(mask)
    states = [acts[f"blocks.{i}.hook_resid_pre"][rows, last] for i in range(L)]
    states.append(acts[f"blocks.{L - 1}.hook_resid_post"][rows, last])
    d = [float(torch.arccos(_cos(states[i], states[i + n]).clamp(-1, 1)).mean() / torch.pi) for i in range(L - n + 1)]
    start = min(range(len(d)), key=d.__getitem__)
    return list(range(start, start + n))


def sublayer_similarity(model: Model, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``[layer]`` mean over real tokens of ``cos(resid_pre, resid_mid)`` (attention) and
    ``cos(resid_mid, resid_post)`` (MLP): He et al.'s similarity of a sublayer's input and output."""
    ids, mask = model.encode(inputs)
    acts = residual_states(model, ids, mask)
    L = model.dims.n_layers
    m = mask.bool()
    pre = [acts[f"blocks.{i}.hook_resid_pre"] for i in range(L)]
    mid = [acts[f"blocks.{i}.hook_resid_mid"] for i in range(L)]
    post = [*pre[1:], acts[f"blocks.{L - 1}.hook_resid_post"]]
    attn = torch.stack([_cos(pre[i], mid[i])[m].mean() for i in range(L)]).float()
    mlp = torch.stack([_cos(mid[i], post[i])[m].mean() for i in range(L)]).float()
    return attn, mlp


def skip_losses(model: Model, inputs: Inputs) -> torch.Tensor:
    """``[layer]`` the rise in mean next-token loss when that block alone is skipped."""
    ids, mask = model.encode(inputs)

    def loss(ivs: Sequence[Intervention]) -> float:
        logits = run_with_hooks(model, ids, mask, interventions=ivs).logits
        assert logits is not None
        lp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, 1:].bool()
        return float(-lp[m].mean())

    with torch.no_grad():
        base = loss([])
        return torch.tensor([loss([LayerPlan(drop=(i,))]) - base for i in range(model.dims.n_layers)])


def drop_layers(model: Model, inputs: Task | str, *, methods: Sequence[str] = METHODS, max_drop: int | None = None,
                calibration: Task | None = None, seed: int = 0, batch_size: int = 32,
                heal: str | None = None, heal_texts: Inputs | None = None, heal_steps: int = 30,
                heal_options: Mapping[str, Any] | None = None, progress: bool | None = None) -> LayerDropResult:
    """Score ``task`` with ``n = 0 .. max_drop`` blocks (or sublayers) dropped, chosen by each method.

    Args:
        model: the model.
        inputs: the task, the evaluation set (a :class:`Task` or a shipped suite's name).
        methods: any of ``angular`` (the consecutive blocks closest in angle), ``attn`` / ``mlp`` (the sublayers
            most similar to their input), ``skip_loss`` (the blocks whose removal alone costs least), ``random``.
        max_drop: the most dropped (default ``n_layers - 1``; for ``attn``/``mlp`` up to ``n_layers``).
        calibration: the texts the choices are computed on (default: the task's first 32 prompts / texts).
        seed: the random baseline's seed (and the healing's).
        batch_size: sequences per forward when scoring.
        heal: also score each cell after healing (:func:`~interp.layers.heal`): ``"norm"`` (fine-tune the final
            norm only) or ``"lora"`` (LoRA adapters on the remaining blocks); ``None``: no healing.
        heal_texts: the fine-tune texts (default: 64 paragraphs of the shipped corpus, not the heldout ones).
        heal_steps: optimiser steps per healing; heal_options: further :func:`~interp.layers.heal` options
            (``rank``, ``lr``, ``batch_size``, ``max_tokens``).
        progress: show a progress bar.

    Raises:
        BadInputError: an unknown method, or ``max_drop`` outside ``0 .. n_layers - 1``.
    """
    task = load_task(inputs) if isinstance(inputs, str) else inputs
    L = model.dims.n_layers
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise bad_value("methods", bad[0] if bad else methods, ", ".join(METHODS))
    max_drop = L - 1 if max_drop is None else max_drop
    if not isinstance(max_drop, int) or not 0 <= max_drop < L:
        raise BadInputError(f"max_drop must be in 0..{L - 1} (dropping all {L} blocks leaves nothing to run), "
                            f"got {max_drop!r}")
    ids, mask = _calibration(model, calibration or task)
    with torch.no_grad():
        sims = sublayer_similarity(model, (ids, mask)) if {"attn", "mlp"} & set(methods) else None
        skl = skip_losses(model, (ids, mask)) if "skip_loss" in methods else None
    order_random = list(range(L))
    random.Random(seed).shuffle(order_random)
    base = score(model, task, batch_size=batch_size, progress=False)
    acc = torch.zeros(len(methods), max_drop + 1)
    ll = torch.zeros(len(methods), max_drop + 1)
    dropped: list[tuple[tuple[str, ...], ...]] = []
    if heal is not None:
        from interp.layers.heal import TRAIN, corpus_texts
        from interp.layers.heal import heal as heal_fn

        if heal not in TRAIN:
            raise bad_value("heal", heal, ", ".join(TRAIN))
        h_texts = corpus_texts() if heal_texts is None else heal_texts
        h_opts = dict(heal_options or {})
        taken = sorted(set(h_opts) & {"interventions", "train", "steps", "seed", "progress"})
        if taken:
            raise bad_value("heal_options", taken, "heal()'s other options (rank, lr, batch_size...); train, steps "
                            "and seed come from drop_layers' heal=, heal_steps= and seed=")
    h_acc = torch.zeros(len(methods), max_drop + 1)
    h_ll = torch.zeros(len(methods), max_drop + 1)
    h_loss = torch.zeros(len(methods), max_drop + 1, 2)
    description = ""

    def healed(r: int, n: int, ivs: Sequence[Intervention]) -> None:
        nonlocal description
        assert heal is not None
        h = heal_fn(model, h_texts, interventions=ivs, train=heal, steps=heal_steps, seed=seed, progress=False,
                    **h_opts)
        s = score(model, task, interventions=h.interventions, batch_size=batch_size, progress=False)
        h_acc[r, n], h_ll[r, n] = s.accuracy, s.loglik
        h_loss[r, n, 0], h_loss[r, n, 1] = h.loss_before, h.loss_after
        description = h.description

    bar = progress_bar(total=len(methods) * max_drop, desc="drop_layers", enabled=progress)
    for r, method in enumerate(methods):
        acc[r, 0], ll[r, 0] = base.accuracy, base.loglik
        if heal is not None:
            if r == 0:
                healed(0, 0, [])
            else:  # nothing dropped: the same healing for every method
                h_acc[r, 0], h_ll[r, 0], h_loss[r, 0] = h_acc[0, 0], h_ll[0, 0], h_loss[0, 0]
        rows: list[tuple[str, ...]] = [()]
        for n in range(1, max_drop + 1):
            if method == "angular":
                chosen = angular_choice(model, (ids, mask), n=n)
                ivs, names = skip(model, blocks=chosen), tuple(map(str, chosen))
            elif method in ("attn", "mlp"):
                assert sims is not None
                sim = sims[0] if method == "attn" else sims[1]
                chosen = sorted(int(i) for i in sim.argsort(descending=True, stable=True)[:n])
                ivs = skip(model, **{method: chosen})
                names = tuple(f"{method}.{i}" for i in chosen)
            elif method == "skip_loss":
                assert skl is not None
                chosen = sorted(int(i) for i in skl.argsort(stable=True)[:n])
                ivs, names = skip(model, blocks=chosen), tuple(map(str, chosen))
            else:
                chosen = sorted(order_random[:n])
                ivs, names = skip(model, blocks=chosen), tuple(map(str, chosen))
            s = score(model, task, interventions=ivs, batch_size=batch_size, progress=False)
            acc[r, n], ll[r, n] = s.accuracy, s.loglik
            if heal is not None:
                healed(r, n, ivs)
            rows.append(names)
            bar.update(1)
        dropped.append(tuple(rows))
    bar.close()
    if heal is not None:
        return LayerDropResult(accuracy=acc, loglik=ll, methods=tuple(methods), dropped=tuple(dropped),
                               task=task.name, chance=base.chance, model_id=model.name, healed_accuracy=h_acc,
                               healed_loglik=h_ll, heal_loss=h_loss,
                               healed=description)
    return LayerDropResult(accuracy=acc, loglik=ll, methods=tuple(methods), dropped=tuple(dropped), task=task.name,
                           chance=base.chance, model_id=model.name)


def painters_plan(model: Model, *, variant: str, start: int, stop: int, seed: int = 0) -> list[Intervention]:
    """The edit of one Painters experiment on blocks ``start..stop-1``: ``skip`` them, ``shuffle`` (seeded) or
    ``reverse`` their order, ``repeat`` (run the span's middle block ``stop - start`` times in its place), or run
    them in ``parallel`` (outputs averaged)."""
    L = model.dims.n_layers
    if variant not in VARIANTS:
        raise bad_value("variant", variant, ", ".join(VARIANTS))
    if not 0 <= start <= stop <= L:
        raise BadInputError(f"span must satisfy 0 <= start <= stop <= {L}, got ({start}, {stop})")
    if start == stop:
        return []
    head, mid, tail = list(range(start)), list(range(start, stop)), list(range(stop, L))
    if variant == "skip":
        return [LayerPlan(drop=tuple(mid))]
    if variant == "shuffle":
        random.Random(seed).shuffle(mid)
        return [LayerPlan(order=(*head, *mid, *tail))]
    if variant == "reverse":
        return [LayerPlan(order=(*head, *reversed(mid), *tail))]
    if variant == "repeat":
        centre = mid[len(mid) // 2]
        return [LayerPlan(order=(*head, *[centre] * len(mid), *tail))]
    return [LayerPlan(order=(*head, tuple(mid), *tail))]


def painters(model: Model, inputs: Task | str, *, variants: Sequence[str] = VARIANTS, widths: Sequence[int] | None = None,
             seed: int = 0, batch_size: int = 32, progress: bool | None = None) -> PaintersResult:
    """The Painters experiments: edit a span of middle blocks, centred, for each width; the first and last
    blocks always run as they are (the paper's "keep the first and last layers").

    Args:
        model: the model.
        inputs: the task, the evaluation set.
        variants: any of ``skip``, ``shuffle``, ``reverse``, ``repeat``, ``parallel``.
        widths: span widths (default ``0 .. n_layers - 2``).
        seed: the shuffle's seed.
        batch_size, progress: as for :func:`~interp.layers.score`.
    """
    task = load_task(inputs) if isinstance(inputs, str) else inputs
    L = model.dims.n_layers
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise bad_value("variants", bad[0] if bad else variants, ", ".join(VARIANTS))
    widths = list(range(L - 1)) if widths is None else list(widths)
    if any(not isinstance(w, int) or not 0 <= w <= L - 2 for w in widths):
        raise BadInputError(f"widths must be in 0..{L - 2} (the first and last blocks stay), got {widths}")
    spans = [((L - w) // 2, (L - w) // 2 + w) for w in widths]
    acc = torch.zeros(len(variants), len(widths))
    ll = torch.zeros(len(variants), len(widths))
    base = score(model, task, batch_size=batch_size, progress=False)
    bar = progress_bar(total=len(variants) * len(widths), desc="painters", enabled=progress)
    for r, v in enumerate(variants):
        for c, (a, b) in enumerate(spans):
            ivs = painters_plan(model, variant=v, start=a, stop=b, seed=seed)
            s = base if not ivs else score(model, task, interventions=ivs, batch_size=batch_size, progress=False)
            acc[r, c], ll[r, c] = s.accuracy, s.loglik
            bar.update(1)
    bar.close()
    return PaintersResult(accuracy=acc, loglik=ll, variants=tuple(variants), spans=tuple(spans), task=task.name,
                          chance=base.chance, model_id=model.name)
