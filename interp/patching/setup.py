"""The inputs of a patching experiment: a clean run, a corrupted run, answers, and cached activations.

Every patching tool takes the clean inputs and ``corrupt=``, the one parameter for what the corrupted run
is (Zhang & Nanda 2023):

- prompts (any ``Inputs``: text(s), token ids, a ``Trace``): symmetric token replacement; each corrupted
  prompt must have the token count of its clean prompt (checked, the error shows both tokenizations);
- ``Noise(...)``: causal tracing (Meng et al. 2022) — Gaussian noise of ``scale`` x the embedding std added
  to the subject tokens' embeddings, seeded, one corrupted run per sample (the metric averages the samples);
- ``Ablation("mean" | "resample", reference)``: the corrupted activations come from a reference
  :class:`~interp.trace.Trace` (mean over its sequences, or a seeded random one); there is no corrupted
  *run*, so only noising sweeps apply and normalised values are undefined.

:func:`prepare` runs the clean and corrupted inputs once; the :class:`PatchingSetup` it returns caches both
runs' activations, so passing it as ``inputs`` to several sweeps (``activation_patching(model, setup,
component="z")``) reuses them.

Example:
    >>> import interp
    >>> from interp.patching import prepare
    >>> m = interp.load_model("smollm2-135m")
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             corrupt="When Mary and John went to the store, Mary gave a drink to",
    ...             answer=" Mary", wrong=" John")
    >>> s.clean_value > 2 > -2 > s.corrupted_value
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from interp.errors import BadInputError, ModelMismatchError
from interp.hooks import Intervention, Patch, run_with_hooks
from interp.hooks.partial import PrefixKV, record_kv
from interp.models import EncoderDecoder, Inputs, Model
from interp.patching.metrics import Metric
from interp.sites import Component, Positions, Site, resolve_positions
from interp.trace import Trace, TraceStore

Answer = str | int | Sequence[str] | Sequence[int] | torch.Tensor
MetricSpec = str | Callable[[torch.Tensor], torch.Tensor]
Run = Literal["clean", "corrupted"]


@dataclass(frozen=True)
class Noise:
    """Gaussian noise on the subject tokens' embeddings (causal tracing): pass as ``corrupt=Noise(...)``.

    Args:
        subject: the positions to corrupt (ints, negative from the end, or a slice), or a substring of the
            prompt whose tokens are corrupted.
        scale: the noise std in units of the embedding matrix's std (3 as in Meng et al. 2022).
        n_samples: corrupted runs averaged.
        seed: generator seed.

    Example:
        >>> Noise(subject=" Eiffel Tower", n_samples=5).scale
        3.0
    """

    subject: str | Positions
    scale: float = 3.0
    n_samples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise BadInputError(f"bad n_samples {self.n_samples!r}; valid: an int >= 1")
        if not self.scale > 0:
            raise BadInputError(f"bad noise scale {self.scale!r}; valid: a number > 0")


@dataclass(frozen=True)
class Ablation:
    """Mean or resample ablation from a reference: pass as ``corrupt=Ablation(...)``.

    Args:
        method: ``"mean"`` (mean over the reference's sequences, per position) or ``"resample"``
            (a seeded random reference sequence).
        reference: a :class:`~interp.trace.Trace` of this model (or a mapping of hook names to
            ``[n, pos, ...]`` tensors) holding the swept hooks, on prompts of the clean prompt's length.
        seed: generator seed of ``"resample"``.

    Example:
        >>> Ablation("mean", {}).method
        'mean'
    """

    method: Literal["mean", "resample"]
    reference: Trace | Mapping[str, torch.Tensor]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("mean", "resample"):
            raise BadInputError(f"bad ablation method {self.method!r}; valid: 'mean', 'resample'")


Corruption = Inputs | Noise | Ablation


def token_ids(model: Model | EncoderDecoder, answer: Answer, n: int, what: str) -> torch.Tensor:
    """``[n]`` token ids from a single-token string, an id, or one of those per sequence."""
    d_vocab = model.dims.d_vocab if isinstance(model, Model) else int(model.config.vocab_size)
    items: list[str | int]
    if isinstance(answer, torch.Tensor):
        items = [int(x) for x in answer.reshape(-1).tolist()]
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
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < d_vocab:
            raise BadInputError(f"bad {what} token id {a!r}; valid: 0..{d_vocab - 1}")
        out.append(a)
    t = torch.tensor(out, dtype=torch.long)
    return t.expand(n).clone() if len(out) == 1 else t


def _encode(model: Model, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(inputs, (Trace, TraceStore)):
        inputs.check_model(model)
    return model.encode(inputs)


def _check_pairs(model: Model, ci: torch.Tensor, cm: torch.Tensor, xi: torch.Tensor, xm: torch.Tensor) -> None:
    if ci.shape[0] != xi.shape[0]:
        raise BadInputError(f"{ci.shape[0]} clean prompts but {xi.shape[0]} corrupted prompts; give one per clean prompt")
    for i in range(ci.shape[0]):
        nc, nx = int(cm[i].sum()), int(xm[i].sum())
        if nc != nx:
            ct = model.to_str_tokens(ci[i, :nc])[0]
            xt = model.to_str_tokens(xi[i, :nx])[0]
            raise BadInputError(f"prompt pair {i} has different token counts: clean {nc} tokens {ct} vs corrupted "
                                f"{nx} tokens {xt}; patching needs aligned positions (symmetric token replacement)")


def _noise_edits(noised: torch.Tensor | None, copies: int) -> tuple[Intervention, ...]:
    """The corrupted run's embeddings under noise, as a patch of ``copies`` stacked copies of its batch."""
    if noised is None:
        return ()
    return (Patch(Site(Component.EMBED), source=noised.repeat(copies, 1, 1)),)


class RunValues:
    """The metric on a setup's clean and corrupted runs (shared by :class:`PatchingSetup` and the
    encoder–decoder setup): read from the answer-position logits, or from the full logits for a metric that
    reads every position (NaN where a run's logits were not kept)."""

    metric: Metric
    clean_logits: torch.Tensor | None
    corrupt_logits: torch.Tensor | None
    clean_full: torch.Tensor | None
    corrupt_full: torch.Tensor | None

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


@dataclass
class PatchingSetup(RunValues):
    """A clean and a corrupted run of a model, with their activations cached on demand.

    Build it with :func:`prepare` and pass it as ``inputs`` to any number of sweeps: the clean and corrupted
    runs, their activations and attention keys/values are computed once. ``[n]`` below is the number of
    sequences per run (prompt pairs, or noise samples); batches are right-padded.

    Attributes:
        model: the model.
        input_ids / attention_mask: ``[n, pos]`` clean token ids (noise: the clean prompt repeated).
        corrupt_ids: ``[n, pos]`` corrupted token ids.
        answer_pos: ``[n]`` position read by the metric (each sequence's last real token).
        metric: the metric.
        tokens: the first clean sequence's token strings (its real tokens).
        corruption: ``"prompt"``, ``"noise"``, ``"mean"``, ``"resample"`` or ``"none"`` (no ``corrupt=``:
            the corrupted run is the clean one; for back-patching).
        noised_embed: ``[n, pos, d_model]`` the corrupted run's embeddings under noise, else ``None``.
        ablation: the :class:`Ablation` (mean/resample), else ``None``.
        clean_logits / corrupt_logits: ``[n, vocab]`` at ``answer_pos`` (``corrupt_logits``: ``None`` under
            ablation).
        clean_full / corrupt_full: ``[n, pos, vocab]``, kept only for user metrics (they read every position).
    """

    model: Model
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    corrupt_ids: torch.Tensor
    answer_pos: torch.Tensor
    metric: Metric
    tokens: list[str]
    corruption: str
    noised_embed: torch.Tensor | None = None
    ablation: Ablation | None = None
    clean_logits: torch.Tensor | None = None
    corrupt_logits: torch.Tensor | None = None
    clean_full: torch.Tensor | None = None
    corrupt_full: torch.Tensor | None = None
    _acts: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: {"clean": {}, "corrupted": {}}, repr=False)
    _kv: dict[str, PrefixKV] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"PatchingSetup({self.model.name!r}, n={self.n}, pos={self.n_pos}, corruption={self.corruption!r}, "
                f"metric={self.metric.name!r}, clean={self.clean_value:.4g}, corrupted={self.corrupted_value:.4g})")

    @property
    def n(self) -> int:
        """Sequences per run."""
        return int(self.input_ids.shape[0])

    @property
    def n_pos(self) -> int:
        """Padded length."""
        return int(self.input_ids.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """``[n]`` real tokens of each sequence."""
        return self.attention_mask.sum(1).long().cpu()

    def ids_for(self, which: str) -> torch.Tensor:
        """Token ids of the ``"clean"`` or ``"corrupted"`` run."""
        return self.input_ids if which == "clean" else self.corrupt_ids

    def interventions_for(self, which: str, copies: int = 1) -> tuple[Intervention, ...]:
        """The edits that make the run (the noised embeddings, for the corrupted run under noise), for a batch
        of ``copies`` stacked copies of its sequences."""
        return () if which == "clean" else _noise_edits(self.noised_embed, copies)

    def acts(self, which: Run | str, sites: Sequence[Site]) -> dict[str, torch.Tensor]:
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

    def packed_kv(self, which: Run | str) -> PrefixKV:
        """The run's attention keys/values at every layer, its ``n`` sequences packed into one (run once,
        then cached; for :func:`interp.patching.batched.run_cells`)."""
        if which not in self._kv:
            self._kv[which] = record_kv(self.model, self.ids_for(which), self.interventions_for(which)).packed()
        return self._kv[which]

    def stream(self, which: Run | str, layer: int) -> torch.Tensor:
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
            if name in ref:
                t = ref[name]
                break
        else:
            raise BadInputError(f"the ablation reference holds no {' or '.join(names)}; capture it (e.g. "
                                f"model.run(prompts, capture='{site.short}'))")
        shape = self.acts("clean", [site])[site.name].shape
        if t.shape[1:] != shape[1:]:
            raise BadInputError(f"ablation reference {site.name} has shape {tuple(t.shape)}; need [n, *{tuple(shape[1:])}] "
                                "(reference prompts of the clean prompt's token count)")
        t = t.to(self.model.device, self.model.dtype)
        if self.ablation.method == "mean":
            return t.mean(0, keepdim=True).expand(shape).clone()
        g = torch.Generator().manual_seed(self.ablation.seed)
        return t[torch.randint(0, t.shape[0], (shape[0],), generator=g).to(t.device)]


def _subject_positions(model: Model, prompt: str | None, n_pos: int, subject: str | Positions) -> list[int]:
    if not isinstance(subject, str):
        pos = resolve_positions(subject, n_pos, "subject position")
        if not pos:
            raise BadInputError(f"subject {subject!r} selects no position of the {n_pos}-token prompt")
        return pos
    if prompt is None:
        raise BadInputError("a subject string needs a text prompt; give subject positions for token ids")
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise BadInputError(f"subject {subject!r} does not occur in the prompt {prompt!r}")
    enc = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    return [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < start + len(subject) and b > start]


def prepare(
    model: Model,
    inputs: Inputs,
    *,
    corrupt: Corruption | None = None,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: MetricSpec | None = None,
) -> PatchingSetup:
    """Tokenize, check and run the clean and corrupted inputs of a patching experiment, once.

    Pass the result as ``inputs`` to :func:`~interp.patching.activation_patching`,
    :func:`~interp.patching.attribution_patching`, :func:`~interp.patching.path_patching` or
    :func:`~interp.patching.back_patching` to reuse both runs across sweeps.

    Args:
        model: a causal language model (``interp.load_model`` / ``interp.from_hf``).
        inputs: the clean prompt(s): a text, texts, token ids ``[n, pos]``, ``(ids, mask)``, a Trace or a
            TraceStore of this model.
        corrupt: the corrupted prompt(s) (one per clean prompt, with its token count), ``Noise(...)`` or
            ``Ablation(...)``; ``None`` (back-patching only) makes the corrupted run the clean one.
        answer: the correct next token (one-token string or id), one for all or one per prompt.
        wrong: the competing token (``logit_diff``).
        metric: ``"logit_diff"`` (default), ``"prob"``, ``"logprob"``, ``"kl"`` (KL(clean || run) at the
            answer position), or ``fn(logits [n, pos, vocab]) -> scalar tensor``.

    Returns:
        A :class:`PatchingSetup`.

    Raises:
        BadInputError: token counts that differ (both tokenizations are shown), multi-token answers, a
            metric without the answers it needs, an encoder model.
        ModelMismatchError: a Trace/TraceStore (inputs or ablation reference) of another model.

    Example:
        >>> import interp, torch
        >>> from interp.patching import Noise, prepare
        >>> m = interp.load_model("smollm2-135m")
        >>> s = prepare(m, "The Eiffel Tower is in the city of", corrupt=Noise(subject="The Eiffel Tower", n_samples=3),
        ...             answer=" Paris", metric="prob")
        >>> s.n, s.corruption, s.clean_value > s.corrupted_value
        (3, 'noise', True)
    """
    if not model.adapter.is_causal:
        raise BadInputError(f"patching needs a causal language model; {model.name!r} is an encoder")
    ids, mask = _encode(model, inputs)
    noised: torch.Tensor | None = None
    ablation: Ablation | None = None
    kind = "prompt"
    if isinstance(corrupt, Noise):
        if ids.shape[0] != 1:
            raise BadInputError(f"Noise corrupts one clean prompt; got {ids.shape[0]}: give a single prompt")
        text = inputs if isinstance(inputs, str) else (
            inputs[0] if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str) else None)
        n_real = int(mask[0].sum())
        pos = _subject_positions(model, text, n_real, corrupt.subject)
        ids, mask = ids.expand(corrupt.n_samples, -1).clone(), mask.expand(corrupt.n_samples, -1).clone()
        xids = ids
        std = float(model.weights.W_E.float().std())
        g = torch.Generator().manual_seed(corrupt.seed)
        eps = torch.zeros(corrupt.n_samples, ids.shape[1], model.dims.d_model)
        eps[:, pos] = torch.randn(corrupt.n_samples, len(pos), model.dims.d_model, generator=g) * corrupt.scale * std
        embed = run_with_hooks(model, ids, mask, capture=[Site(Component.EMBED)], stop_early=True).activations
        noised = embed[Component.EMBED.value] + eps.to(model.device, model.dtype)
        kind = "noise"
    elif isinstance(corrupt, Ablation):
        if isinstance(corrupt.reference, (Trace, TraceStore)):
            corrupt.reference.check_model(model)
        ablation, xids, kind = corrupt, ids, corrupt.method
    elif corrupt is None:
        xids, kind = ids, "none"
    else:
        xids, xmask = _encode(model, corrupt)
        _check_pairs(model, ids, mask, xids, xmask)
    n = ids.shape[0]
    answer_pos = (mask.sum(1) - 1).long()
    ans = token_ids(model, answer, n, "answer") if answer is not None else None
    wr = token_ids(model, wrong, n, "wrong") if wrong is not None else None
    metric = "logit_diff" if metric is None else metric
    rows = torch.arange(n)
    with torch.no_grad():
        clean_full = run_with_hooks(model, ids, mask).logits
        assert clean_full is not None
        clean_at = clean_full[rows, answer_pos.to(clean_full.device)]
        m = Metric.build(metric, ans, wr, reference=clean_at if metric == "kl" else None)
        corrupt_full = corrupt_at = None
        if kind == "none":
            corrupt_full, corrupt_at = clean_full, clean_at
        elif ablation is None:
            corrupt_full = run_with_hooks(model, xids, mask, interventions=_noise_edits(noised, 1)).logits
            assert corrupt_full is not None
            corrupt_at = corrupt_full[rows, answer_pos.to(corrupt_full.device)]
    keep = m.full_logits
    setup = PatchingSetup(
        model=model, input_ids=ids, attention_mask=mask, corrupt_ids=xids, answer_pos=answer_pos, metric=m,
        tokens=model.to_str_tokens(ids[0, :int(mask[0].sum())])[0], corruption=kind, noised_embed=noised,
        ablation=ablation, clean_logits=clean_at, corrupt_logits=corrupt_at,
        clean_full=clean_full if keep else None, corrupt_full=corrupt_full if keep else None)
    if keep:
        _ = setup.clean_value  # a user metric that does not return a scalar fails here, not in a sweep
    return setup


def setup_for(model: Model, inputs: Inputs | PatchingSetup, *, corrupt: Corruption | None = None,
              answer: Answer | None = None, wrong: Answer | None = None, metric: MetricSpec | None = None,
              ) -> PatchingSetup:
    """``inputs`` itself when it is a :class:`PatchingSetup` of ``model`` (then the other arguments must be
    left out: the setup holds them), else :func:`prepare` of them."""
    if isinstance(inputs, PatchingSetup):
        given = [k for k, v in (("corrupt", corrupt), ("answer", answer), ("wrong", wrong), ("metric", metric))
                 if v is not None]
        if given:
            raise BadInputError(f"{', '.join(given)} given with a prepared PatchingSetup, which already holds them; "
                                "pass them to prepare(), or pass the prompts instead of the setup")
        if inputs.model is not model and inputs.model.fingerprint != model.fingerprint:
            raise ModelMismatchError(f"this PatchingSetup was prepared with {inputs.model.name!r}, not {model.name!r}")
        return inputs
    return prepare(model, inputs, corrupt=corrupt, answer=answer, wrong=wrong, metric=metric)


__all__ = ["Ablation", "Answer", "Corruption", "MetricSpec", "Noise", "PatchingSetup", "prepare", "setup_for",
           "token_ids"]
