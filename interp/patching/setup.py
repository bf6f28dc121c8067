"""The inputs of a patching experiment: a clean run, a corrupted run, answers, and cached activations.

Corruptions (Zhang & Nanda 2023):
- ``corrupted="..."``: symmetric token replacement — the user gives the corrupted prompt(s); each
  pair must have the same token count (checked, the error shows both tokenizations);
- ``noise=Noise(...)``: causal tracing (Meng et al. 2022) — Gaussian noise of ``scale`` x the
  embedding std added to the subject tokens' embeddings, seeded, one corrupted run per sample
  (the metric averages the samples);
- ``ablation=Ablation("mean" | "resample", reference)``: the corrupted activations come from a
  reference :class:`~interp.trace.Trace` (mean over its sequences, or a seeded random one); there
  is no corrupted *run*, so only noising sweeps apply and normalised values are undefined.

Example:
    >>> import interp
    >>> from interp.patching import prepare
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             "When Mary and John went to the store, Mary gave a drink to",
    ...             answer=" Mary", wrong=" John")  # doctest: +SKIP
    >>> round(s.clean_value, 2) > round(s.corrupted_value, 2)  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from interp.errors import BadInputError
from interp.hooks import Intervention, Lambda, run_with_hooks
from interp.hooks.partial import PrefixKV, record_kv
from interp.patching.metrics import Metric
from interp.sites import Component, Site

Answer = str | int | Sequence[str] | Sequence[int] | torch.Tensor


@dataclass(frozen=True)
class Noise:
    """Gaussian noise on the subject tokens' embeddings (causal tracing).

    Args:
        subject: positions to corrupt (ints), or a substring of the prompt whose tokens are corrupted.
        scale: the noise std in units of the embedding matrix's std (3 as in Meng et al. 2022).
        n_samples: corrupted runs averaged.
        seed: generator seed.
    """

    subject: str | Sequence[int]
    scale: float = 3.0
    n_samples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise BadInputError(f"n_samples must be >= 1, got {self.n_samples}")
        if not self.scale > 0:
            raise BadInputError(f"scale must be > 0, got {self.scale}")


@dataclass(frozen=True)
class Ablation:
    """Mean or resample ablation from a reference trace (the corrupted activations of every site).

    Args:
        method: ``"mean"`` (mean over the reference's sequences, per position) or ``"resample"``
            (a seeded random reference sequence).
        reference: a :class:`~interp.trace.Trace` (or a mapping of hook names to ``[n, pos, ...]``
            tensors) with the swept hooks, on prompts of the clean prompt's length.
    """

    method: Literal["mean", "resample"]
    reference: Any
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("mean", "resample"):
            raise BadInputError(f"ablation method must be 'mean' or 'resample', got {self.method!r}")


def _encode(model: Any, prompts: str | Sequence[str] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        ids = prompts if prompts.dim() == 2 else prompts.unsqueeze(0)
        return ids.to(model.device), torch.ones_like(ids, device=model.device)
    ids, mask = model.tokenize(prompts)
    return ids.to(model.device), mask.to(model.device)


def token_ids(model: Any, answer: Answer, n: int, what: str) -> torch.Tensor:
    """``[n]`` token ids from a single-token string, an id, or one of those per sequence."""
    items: list[Any]
    if isinstance(answer, torch.Tensor):
        items = answer.reshape(-1).tolist()
    elif isinstance(answer, (str, int)):
        items = [answer]
    else:
        items = list(answer)
    if len(items) not in (1, n):
        raise BadInputError(f"{what} has {len(items)} entries but there are {n} prompts (give 1 or {n})")
    out = []
    for a in items:
        if isinstance(a, str):
            if model.tokenizer is None:
                raise BadInputError(f"{what}={a!r} is text but the model has no tokenizer; give token ids")
            toks = model.tokenizer(a, add_special_tokens=False)["input_ids"]
            if len(toks) != 1:
                pieces = model.tokenizer.convert_ids_to_tokens(toks)
                raise BadInputError(f"{what}={a!r} is {len(toks)} tokens {pieces}; it must be exactly one token")
            a = toks[0]
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < model.dims.d_vocab:
            raise BadInputError(f"{what} token id {a!r} is not in [0, {model.dims.d_vocab})")
        out.append(a)
    t = torch.tensor(out, dtype=torch.long)
    return t.expand(n).clone() if len(out) == 1 else t


def _check_pairs(model: Any, ci: torch.Tensor, cm: torch.Tensor, xi: torch.Tensor, xm: torch.Tensor) -> None:
    if ci.shape[0] != xi.shape[0]:
        raise BadInputError(f"{ci.shape[0]} clean prompts but {xi.shape[0]} corrupted prompts; give one per clean prompt")
    for i in range(ci.shape[0]):
        nc, nx = int(cm[i].sum()), int(xm[i].sum())
        if nc != nx:
            ct = model.to_str_tokens(ci[i, :nc])[0]
            xt = model.to_str_tokens(xi[i, :nx])[0]
            raise BadInputError(f"prompt pair {i} has different token counts: clean {nc} tokens {ct} vs corrupted "
                             f"{nx} tokens {xt}; patching needs aligned positions (symmetric token replacement)")


@dataclass
class PatchingSetup:
    """A clean and a corrupted run of a model, with their activations cached on demand.

    Build it with :func:`prepare`. ``[n]`` below is the number of sequences per run (prompt pairs,
    or noise samples).

    Attributes:
        model: the model.
        input_ids / attention_mask: ``[n, pos]`` clean token ids (noise: the clean prompt repeated).
        corrupt_ids: ``[n, pos]`` corrupted token ids.
        answer_pos: ``[n]`` position read by the metric (each sequence's last real token).
        metric: the metric.
        clean_logits / corrupt_logits: ``[n, vocab]`` at ``answer_pos``.
        tokens: the clean prompt's token strings (first sequence).
        corruption: ``"prompt"``, ``"noise"``, ``"mean"`` or ``"resample"``.
    """

    model: Any
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    corrupt_ids: torch.Tensor
    answer_pos: torch.Tensor
    metric: Metric
    tokens: list[str]
    corruption: str
    corrupt_interventions: tuple[Intervention, ...] = ()
    ablation: Ablation | None = None
    clean_logits: torch.Tensor | None = None
    corrupt_logits: torch.Tensor | None = None
    clean_full: torch.Tensor | None = None
    corrupt_full: torch.Tensor | None = None
    _acts: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: {"clean": {}, "corrupted": {}})
    _kv: dict[str, PrefixKV] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[1])

    def _value(self, full: torch.Tensor | None, at: torch.Tensor | None) -> float:
        if self.metric.full_logits:
            return float("nan") if full is None else float(self.metric(full.unsqueeze(0))[0])
        return float("nan") if at is None else float(self.metric(at.unsqueeze(0))[0])

    @property
    def clean_value(self) -> float:
        """The metric on the clean run."""
        return self._value(self.clean_full, self.clean_logits)

    @property
    def corrupted_value(self) -> float:
        """The metric on the corrupted run (NaN under mean/resample ablation)."""
        return self._value(self.corrupt_full, self.corrupt_logits)

    def ids_for(self, which: str) -> torch.Tensor:
        return self.input_ids if which == "clean" else self.corrupt_ids

    def interventions_for(self, which: str) -> tuple[Intervention, ...]:
        return () if which == "clean" else self.corrupt_interventions

    def acts(self, which: Literal["clean", "corrupted"], sites: Sequence[Site]) -> dict[str, torch.Tensor]:
        """Activations ``[n, ...]`` of the clean or corrupted run at ``sites`` (run once, then cached)."""
        cache = self._acts[which]
        missing = [s for s in sites if s.name not in cache]
        if missing and which == "corrupted" and self.ablation is not None:
            for s in missing:
                cache[s.name] = self._ablated(s)
        elif missing:
            out = run_with_hooks(self.model, self.ids_for(which), self.attention_mask, capture=missing,
                                 interventions=self.interventions_for(which), stop_early=True)
            cache.update(out.activations)
        return {s.name: cache[s.name] for s in sites}

    def packed_kv(self, which: Literal["clean", "corrupted"]) -> PrefixKV:
        """The run's attention keys/values at every layer, its ``n`` sequences packed into one (run once,
        then cached; for :func:`interp.patching.batched.run_cells`)."""
        if which not in self._kv:
            self._kv[which] = record_kv(self.model, self.ids_for(which), self.interventions_for(which)).packed()
        return self._kv[which]

    def stream(self, which: Literal["clean", "corrupted"], layer: int) -> torch.Tensor:
        """The residual stream entering block ``layer`` (``n_layers``: leaving the last block)."""
        n_layers = self.model.dims.n_layers
        site = Site(Component.RESID_PRE, layer) if layer < n_layers else Site(Component.RESID_POST, n_layers - 1)
        return self.acts(which, [site])[site.name]

    def _ablated(self, site: Site) -> torch.Tensor:
        assert self.ablation is not None
        ref = self.ablation.reference
        names = [site.name]  # the residual stream between two blocks has two names
        if site.component is Component.RESID_PRE and site.layer:
            names.append(f"blocks.{site.layer - 1}.hook_resid_post")
        if site.component is Component.RESID_POST and site.layer is not None and site.layer + 1 < self.model.dims.n_layers:
            names.append(f"blocks.{site.layer + 1}.hook_resid_pre")
        for name in names:
            try:
                t = ref[name]
                break
            except (KeyError, TypeError):
                continue
        else:
            raise BadInputError(f"the ablation reference holds no {' or '.join(names)}; capture it (e.g. "
                             f"model.run(prompts, capture='{site.name}'))")
        shape = self.acts("clean", [site])[site.name].shape
        if t.shape[1:] != shape[1:]:
            raise BadInputError(f"ablation reference {site.name} has shape {tuple(t.shape)}; need [n, *{tuple(shape[1:])}] "
                             "(reference prompts of the clean prompt's token count)")
        t = t.to(self.model.device, self.model.dtype)
        if self.ablation.method == "mean":
            return t.mean(0, keepdim=True).expand(shape).clone()
        g = torch.Generator().manual_seed(self.ablation.seed)
        return t[torch.randint(0, t.shape[0], (shape[0],), generator=g).to(t.device)]


def _subject_positions(model: Any, prompt: str, ids: torch.Tensor, subject: str | Sequence[int]) -> list[int]:
    n = ids.shape[-1]
    if not isinstance(subject, str):
        pos = [int(p) for p in subject]
        bad = [p for p in pos if not 0 <= p < n]
        if bad or not pos:
            raise BadInputError(f"subject positions {pos} must be a non-empty list in [0, {n})")
        return pos
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise BadInputError(f"subject {subject!r} does not occur in the prompt {prompt!r}")
    enc = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    pos = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < start + len(subject) and b > start]
    return pos


def prepare(
    model: Any,
    clean: str | Sequence[str] | torch.Tensor,
    corrupted: str | Sequence[str] | torch.Tensor | None = None,
    *,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: str | Callable[[torch.Tensor], torch.Tensor] = "logit_diff",
    noise: Noise | None = None,
    ablation: Ablation | None = None,
) -> PatchingSetup:
    """Tokenize, check and run the clean and corrupted inputs of a patching experiment.

    Args:
        model: a causal language model (``interp.load_model`` / ``interp.from_hf``).
        clean: prompt(s) or token ids ``[n, pos]``.
        corrupted: the corrupted prompt(s), one per clean prompt with the same token count; or
            ``None`` with ``noise=`` or ``ablation=``.
        answer: the correct next token (one-token string or id), one for all or one per prompt.
        wrong: the competing token (``logit_diff``).
        metric: ``"logit_diff"``, ``"prob"``, ``"logprob"``, ``"kl"`` (KL(clean || run) at the answer
            position), or ``fn(logits [n, pos, vocab]) -> scalar tensor``.
        noise: corrupt by Gaussian noise on the subject embeddings (see :class:`Noise`).
        ablation: corrupt by mean/resample ablation from a reference (see :class:`Ablation`).

    Returns:
        A :class:`PatchingSetup`.

    Raises:
        ValueError: no or several corruptions, token counts that differ (both tokenizations are
            shown), multi-token answers.
    """
    given = [x for x in (corrupted, noise, ablation) if x is not None]
    if len(given) != 1:
        raise BadInputError("give exactly one corruption: corrupted= prompt(s), noise=Noise(...) or ablation=Ablation(...)")
    if not model.adapter.is_causal:
        raise BadInputError(f"patching needs a causal language model; {model.name!r} is an encoder")
    ids, mask = _encode(model, clean)
    ivs: tuple[Intervention, ...] = ()
    kind = "prompt"
    if corrupted is not None:
        xids, xmask = _encode(model, corrupted)
        _check_pairs(model, ids, mask, xids, xmask)
        if xids.shape[1] != ids.shape[1]:
            raise BadInputError(f"clean prompts pad to {ids.shape[1]} tokens but corrupted ones to {xids.shape[1]}")
    elif noise is not None:
        if ids.shape[0] != 1:
            raise BadInputError("noise= corrupts one clean prompt; give a single prompt")
        text = clean if isinstance(clean, str) else clean[0] if not isinstance(clean, torch.Tensor) else None
        if isinstance(noise.subject, str) and text is None:
            raise BadInputError("a subject string needs a text prompt; give subject positions for token ids")
        pos = _subject_positions(model, text or "", ids, noise.subject)
        ids, mask = ids.expand(noise.n_samples, -1).clone(), mask.expand(noise.n_samples, -1).clone()
        xids = ids
        std = float(model.weights.W_E.float().std())
        g = torch.Generator().manual_seed(noise.seed)
        eps = torch.zeros(noise.n_samples, ids.shape[1], model.dims.d_model)
        eps[:, pos] = torch.randn(noise.n_samples, len(pos), model.dims.d_model, generator=g) * noise.scale * std
        eps = eps.to(model.device, model.dtype)
        ivs = (Lambda("hook_embed", fn=lambda act, site: (act.view(-1, *eps.shape) + eps).view_as(act)),)
        kind = "noise"
    else:
        assert ablation is not None
        xids = ids
        kind = ablation.method
    n = ids.shape[0]
    answer_pos = (mask.sum(1) - 1).long()
    ans = token_ids(model, answer, n, "answer") if answer is not None else None
    wr = token_ids(model, wrong, n, "wrong") if wrong is not None else None
    rows = torch.arange(n)
    with torch.no_grad():
        clean_full = run_with_hooks(model, ids, mask).logits
        assert clean_full is not None
        clean_at = clean_full[rows, answer_pos.to(clean_full.device)]
        m = Metric.build(metric, ans, wr, reference=clean_at if metric == "kl" else None)
        corrupt_full = corrupt_at = None
        if ablation is None:
            corrupt_full = run_with_hooks(model, xids, mask, interventions=ivs).logits
            assert corrupt_full is not None
            corrupt_at = corrupt_full[rows, answer_pos.to(corrupt_full.device)]
    keep_full = m.full_logits
    return PatchingSetup(
        model=model, input_ids=ids, attention_mask=mask, corrupt_ids=xids, answer_pos=answer_pos, metric=m,
        tokens=model.to_str_tokens(ids[0])[0], corruption=kind, corrupt_interventions=ivs, ablation=ablation,
        clean_logits=clean_at, corrupt_logits=corrupt_at,
        clean_full=clean_full if keep_full else None, corrupt_full=corrupt_full if keep_full else None,
    )



__all__ = ["Ablation", "Noise", "PatchingSetup", "prepare", "token_ids"]
