"""Interchange intervention training (IIT; Geiger et al. 2022) and strict IIT (SIIT; Gupta et al. 2024,
InterpBench): train a network so that an alignment holds.

Every step draws base/source pairs for one aligned variable (in turn) and runs, in one forward of the bases,
three copies of the batch: unedited (task loss against the base answers), with the variable's sites taken
from the source run (IIT loss against the counterfactual answers) and — strict IIT — with every non-aligned
site resample-ablated from the source run (loss against the base answers: those sites must not matter). The
source run keeps its graph, so the sites learn to hold the variable and the rest of the network learns to
read it from them.

Example:
    >>> from interp.causal import Alignment, hierarchical_equality, toy_transformer, train_iit
    >>> task = hierarchical_equality(n_symbols=4)
    >>> model = toy_transformer(vocab=7, n_ctx=5, d_model=32, seed=0)
    >>> res = train_iit(model, task, alignment={"WX": ("mlp_out.0", 1)}, steps=5, batch_size=16, eval_every=5,
    ...                 eval_n=32, progress=False)
    >>> res.loss.shape, res.strict
    (torch.Size([1, 3]), False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from interp.causal.alignment import Alignment, ResolvedSite, SiteLike, as_site, resolve_alignment, resolve_site
from interp.causal.engine import all_logits, encode_prompts, interchange_edits, source_activations
from interp.causal.iia import _ids, evaluate, task_accuracy
from interp.causal.results import IITResult
from interp.causal.task import CausalTask, answer_ids
from interp.errors import BadInputError
from interp.models import Model, from_hf
from interp.progress import progress as progress_bar

log = logging.getLogger(__name__)


def toy_transformer(vocab: int, n_ctx: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                    d_mlp: int | None = None, seed: int = 0, name: str = "toy") -> Model:
    """A small GPT-2 (learned positions, LayerNorm, MLPs, no dropout, tied embeddings) with random weights, as a
    :class:`~interp.models.Model` without a tokenizer (token ids only), for interchange intervention training.

    Example:
        >>> m = toy_transformer(vocab=12, n_ctx=4, d_model=32)
        >>> m.dims.n_layers, m.dims.d_model, m.dims.d_vocab
        (2, 32, 12)
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if d_model % n_heads:
        raise BadInputError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     n_inner=d_mlp or 4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return from_hf(GPT2LMHeadModel(cfg).eval(), name=name)


def _check_int(name: str, v: object, low: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BadInputError(f"bad {name} {v!r}; valid: an int >= {low}")


def train_iit(model: Model, inputs: CausalTask, *, alignment: Alignment | Mapping[str, Any],
              non_aligned: Sequence[SiteLike] = (), strict: bool | None = None, steps: int = 2000,
              batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
              loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0), aux: Mapping[str, int] | None = None,
              seed: int = 0, eval_every: int = 100, eval_n: int = 256, progress: bool | None = None) -> IITResult:
    """Train ``model`` (in place) so that ``alignment`` abstracts it to ``inputs``' causal model.

    Args:
        model: the network to train (its weights change).
        inputs: the task; fresh base/source pairs are drawn from it every step (half of them changing the answer).
        alignment: ``{variable: sites}`` the variables must live in.
        non_aligned: sites that must not matter (strict IIT): each an :class:`AlignedSite`, a hook name or
            ``(hook, positions)``, e.g. ``AlignedSite("z.0", heads=[2, 3])``, ``("mlp_out.0", [0, 2])``.
        strict: train the non-aligned sites to be irrelevant (default: when ``non_aligned`` is given).
        steps, batch_size, lr, weight_decay: AdamW on every weight (the learning rate decays linearly to
            ``lr / 10``); pairs per step.
        loss_weights: weights of the task, IIT and strict losses.
        aux: auxiliary targets ``{variable: position}``: the unedited network is also trained to emit the
            variable's answer token at that position (a curriculum for outputs that are an XOR of hidden
            variables, like hierarchical equality, which plain training leaves on a plateau at chance).
        seed: seeds the pairs and the order of the variables.
        eval_every: steps between evaluations on held-out pairs (``eval_n`` per variable).
        progress: show a progress bar (``None``: the library switch).

    Returns:
        :class:`IITResult`: curves, final task accuracy, IIA per variable and, for strict IIT, the task
        accuracy with every non-aligned site resample-ablated.

    Example (a few steps; ~300 steps of batch 64 reach task accuracy and IIA 1.0 on this task):
        >>> from interp.causal import toy_ioi, train_iit
        >>> from interp.causal.iit import toy_transformer
        >>> net = toy_transformer(6, 3, d_model=32, n_layers=2, n_heads=2, seed=0)
        >>> res = train_iit(net, toy_ioi(6), alignment={"IO": ("resid_post.0", 2)}, steps=20, batch_size=16,
        ...                 eval_every=10, eval_n=32, progress=False)
        >>> res.variables, tuple(res.iia.shape)  # the IIA curve: one row per evaluation
        (('IO',), (2, 1))
    """
    al = alignment if isinstance(alignment, Alignment) else Alignment(alignment)
    variables = list(al)
    resolved = resolve_alignment(model, al, variables)
    non = [r for s in non_aligned for r in resolve_site(model, s)]
    strict = bool(non) if strict is None else strict
    if strict and not non:
        raise BadInputError("strict IIT needs non_aligned= sites (the sites that must not matter)")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every), ("eval_n", eval_n)):
        _check_int(name, value)
    for v in variables:
        if v not in inputs.causal_model.variables:
            raise BadInputError(f"the alignment names {v!r}, which {inputs.name}'s causal model lacks "
                                f"(it has {', '.join(inputs.causal_model.variables)})")
    held = {v: inputs.sample(eval_n, variables=[v], seed=seed + 7919 * (i + 1)) for i, v in enumerate(variables)}
    held_task = inputs.sample(eval_n, seed=seed + 104729)
    params = [p for p in model.hf.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - 0.9 * t / steps)  # linear decay to lr / 10
    w_task, w_iit, w_strict = loss_weights
    steps_done: list[int] = []
    losses: list[list[float]] = []
    accs: list[float] = []
    iias: list[list[float]] = []
    running = torch.zeros(3)
    count = 0
    t0 = time.perf_counter()
    for step in progress_bar(range(1, steps + 1), enabled=progress, desc="IIT" if not strict else "strict IIT"):
        v = variables[(step - 1) % len(variables)]
        data = inputs.sample(batch_size, variables=[v], seed=seed * 1_000_003 + step)
        labels, cfs, cand = _ids(model, data)
        base = encode_prompts(model, data.base)
        src = encode_prompts(model, data.sources[v])
        sites = [rs.site for rs in resolved[v]] + ([rs.site for rs in non] if strict else [])
        acts = source_activations(model, {v: src}, sites, grad=True)
        chunks = [{v: resolved[v]}] + ([{v: non}] if strict else [])
        b = base[0].shape[0]
        edits = interchange_edits(chunks, base, {v: src}, acts, first_row=b)
        reps = 1 + len(chunks)
        full = all_logits(model, base[0].repeat(reps, 1), base[1].repeat(reps, 1), edits, grad=True)
        logits = full[torch.arange(full.shape[0]), (base[1].sum(1) - 1).repeat(reps)]
        targets = torch.cat([labels, cfs] + ([labels] if strict else []))
        if cand is not None:
            logits = logits[:, cand.to(logits.device)]
            targets = _index_in(targets, cand)
        per = nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="none")
        parts = [per[i * b:(i + 1) * b].mean() for i in range(reps)] + ([] if strict else [per.new_zeros(())])
        loss = w_task * parts[0] + w_iit * parts[1] + w_strict * parts[2]
        for var_aux, pos in (aux or {}).items():
            values = [inputs.causal_model.run(x)[var_aux] for x in data.base_inputs]
            tgt = answer_ids(model.dims.d_vocab, model.tokenizer, [inputs.answer(x) for x in values], "aux target")
            lg = full[:b, pos]
            if cand is not None:
                lg, tgt = lg[:, cand.to(lg.device)], _index_in(tgt, cand)
            loss = loss + w_task * nn.functional.cross_entropy(lg.float(), tgt.to(lg.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += torch.tensor([float(p.detach()) for p in parts])
        count += 1
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                steps_done.append(step)
                losses.append((running / count).tolist())
                running.zero_()
                count = 0
                accs.append(task_accuracy(model, held_task))
                iias.append([float(evaluate(model, held[u], [{u: resolved[u]}], progress=False)[0].float().mean())
                             for u in variables])
    seconds = time.perf_counter() - t0
    for p in params:
        p.requires_grad_(False)
    final_n = 2 * eval_n
    with torch.no_grad():
        final = [float(evaluate(model, inputs.sample(final_n, variables=[u], seed=seed + 31 * (i + 1) + 1),
                                [{u: resolved[u]}], progress=False)[0].float().mean()) for i, u in enumerate(variables)]
        acc = task_accuracy(model, inputs.sample(final_n, seed=seed + 17))
        ablated = ablated_accuracy(model, inputs, sites=non, variable=variables[0], n=final_n, seed=seed + 23) if non else None
    log.info("IIT on %s: %d steps in %.0f s, accuracy %.3f, IIA %s", inputs.name, steps, seconds, acc, final)
    return IITResult(loss=torch.tensor(losses), accuracy=torch.tensor(accs), iia=torch.tensor(iias),
                     steps=tuple(steps_done), variables=tuple(variables), task=inputs.name, alignment=al.to_dict(),
                     non_aligned=tuple(rs.label for rs in non), strict=strict, task_accuracy=acc,
                     final_iia=tuple(final), ablated_accuracy=ablated, seconds=seconds,
                     config={"steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                             "loss_weights": list(loss_weights), "aux": dict(aux or {}), "seed": seed})


def _index_in(tokens: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The index of each token among ``candidates``."""
    return (tokens[:, None] == candidates[None, :]).float().argmax(1)


def ablated_accuracy(model: Model, inputs: CausalTask, *, sites: Sequence[SiteLike | ResolvedSite],
                     variable: str | None = None,
                     n: int = 512, seed: int = 0, batch_size: int = 64) -> float:
    """Task accuracy with every one of ``sites`` resample-ablated at once (each base takes those sites from a
    random other input): what strict IIT keeps unchanged.

    Example:
        >>> from interp.causal import AlignedSite, ablated_accuracy, load_iit_model
        >>> shipped = load_iit_model("iit-equality")
        >>> ablated_accuracy(shipped.model, shipped.task, sites=shipped.non_aligned, n=128) >= 0.98
        True
    """
    resolved = [r for s in sites for r in ([s] if isinstance(s, ResolvedSite) else resolve_site(model, s))]
    if not resolved:
        raise BadInputError("no sites to ablate")
    var = variable or inputs.causal_model.order[-1]
    data = inputs.sample(n, variables=[var], seed=seed, changed=None)
    correct, _ = evaluate(model, data, [{var: resolved}], batch_size=batch_size, target="label", progress=False)
    return float(correct.float().mean())


def site_labels(sites: Sequence[SiteLike]) -> list[str]:
    """Labels of aligned sites (``mlp_out.0@1``)."""
    return [as_site(s).label() for s in sites]


__all__ = ["ablated_accuracy", "site_labels", "toy_transformer", "train_iit"]
