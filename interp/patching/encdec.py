"""Activation patching on an encoder–decoder (T5 / BART / Marian): sweeps over either stack, cross-attention included.

:func:`~interp.patching.activation_patching` hands an :class:`~interp.models.EncoderDecoder` to this module. The
clean and corrupted runs share the decoder's input (target texts teacher-forced, ids as the decoder reads them, or
the start token alone: ``decoder_inputs=``) and differ in the *source*: ``corrupt=`` is the corrupted source
prompt(s), one per clean prompt with its token count. The metric reads the logits at each sequence's last real
decoder position (the next target token).

The component names its stack: ``"encoder.resid_pre"``, ``"decoder.mlp_out"``, ``"decoder.cross_attn_out"``, per
head ``"encoder.z"``, ``"decoder.cross_k"``... (:data:`ENCDEC_COMPONENTS`). Positions count over the tokens the
component's activation runs over: the source for ``encoder.*`` and the cross-attention keys/values
(``decoder.cross_k`` / ``decoder.cross_v``), the decoder's input for the other ``decoder.*`` components (for
``decoder.cross_pattern``: query rows). Every patched run is one forward of the whole model with the cell's values
written by an :mod:`interp.hooks` intervention; runs are stacked in the batch.

Example:
    >>> import torch
    >>> from transformers import T5Config, T5ForConditionalGeneration
    >>> from interp.models import EncoderDecoder
    >>> from interp.patching import activation_patching
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> ed = EncoderDecoder(T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24,
    ...     num_layers=2, num_heads=4, decoder_start_token_id=0)))
    >>> res = activation_patching(ed, torch.tensor([[5, 6, 7]]), corrupt=torch.tensor([[5, 9, 7]]),
    ...                           decoder_inputs=torch.tensor([[0, 11]]), answer=3, wrong=4,
    ...                           component="encoder.resid_pre", layers=[0], progress=False)
    >>> res.values.shape, res.component
    (torch.Size([1, 3]), 'encoder.resid_pre')
    >>> bool(torch.isclose(res.normalized[0, 1], torch.tensor(1.0)))  # the one differing token restores the clean run
    True
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.errors import BadInputError, ModelMismatchError, unknown_name
from interp.hooks import Intervention, Lambda
from interp.models import EncoderDecoder, Inputs
from interp.patching.activation import (
    CROSS_HEADS,
    HEADS,
    Direction,
    HeadsSelection,
    Layers,
    plan_sweep_over,
    sweep_cells,
)
from interp.patching.batched import DEFAULT_BUDGET, Edit, _edit_mask, _site_edit
from interp.patching.metrics import Metric
from interp.patching.result import PatchingResult
from interp.patching.setup import Ablation, Answer, Corruption, MetricSpec, Noise, RunValues, token_ids
from interp.progress import progress as progress_bar
from interp.sites import Component, Positions, Site, split_stack
from interp.trace import Trace, TraceStore

_STREAM = (Component.RESID_PRE, Component.RESID_POST, Component.ATTN_OUT, Component.MLP_OUT)
_SELF = (Component.Z, Component.Q, Component.K, Component.V, Component.PATTERN)
_CROSS = (Component.CROSS_ATTN_OUT, Component.CROSS_Z, Component.CROSS_Q, Component.CROSS_K, Component.CROSS_V,
          Component.CROSS_PATTERN)
_ALLOWED = {"encoder": (*_STREAM, *_SELF), "decoder": (*_STREAM, *_SELF, *_CROSS)}
ENCDEC_COMPONENTS = tuple(f"{s}.{c.short}" for s, comps in _ALLOWED.items() for c in comps)
"""The components activation patching sweeps on an encoder–decoder, with their stack."""
_WINDOWED = (Component.ATTN_OUT, Component.MLP_OUT, Component.CROSS_ATTN_OUT)


def parse_encdec_component(component: str) -> tuple[str, Component]:
    """``(stack, component)`` of a swept encoder–decoder component (``"encoder.resid_pre"``, ``"decoder.cross_k"``).

    Raises:
        UnknownNameError: a name without a stack or not swept there (the message lists :data:`ENCDEC_COMPONENTS`).

    Example:
        >>> parse_encdec_component("decoder.cross_k")
        ('decoder', <Component.CROSS_K: 'cross_attn.hook_k'>)
    """
    stack, rest = split_stack(component) if isinstance(component, str) else (None, "")
    comp: Component | None = None
    if stack is not None:
        try:
            comp = Component.parse(rest)
        except BadInputError:
            comp = None
    if stack is None or comp not in _ALLOWED[stack]:
        raise unknown_name("encoder-decoder component", str(component), ENCDEC_COMPONENTS,
                           hint="(the stack first: encoder.* or decoder.*)")
    assert comp is not None
    return stack, comp


@dataclass
class EncDecPatchingSetup(RunValues):
    """A clean and a corrupted run of an encoder–decoder (two sources, one decoder input), activations cached.

    Build it with :func:`prepare_encdec` and pass it as ``inputs`` to several
    :func:`~interp.patching.activation_patching` sweeps to reuse both runs.

    Attributes:
        model: the encoder–decoder.
        input_ids / attention_mask: ``[n, src_pos]`` clean source tokens (the corrupted ones share the mask).
        corrupt_ids: ``[n, src_pos]`` corrupted source tokens.
        decoder_ids / decoder_mask: ``[n, tgt_pos]`` the decoder's input, the same in both runs.
        answer_pos: ``[n]`` decoder position the metric reads (each sequence's last real one).
        metric: the metric.
        clean_logits / corrupt_logits: ``[n, vocab]`` at ``answer_pos``.
        clean_full / corrupt_full: ``[n, tgt_pos, vocab]``, kept only for user metrics.
    """

    model: EncoderDecoder
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    corrupt_ids: torch.Tensor
    decoder_ids: torch.Tensor
    decoder_mask: torch.Tensor
    answer_pos: torch.Tensor
    metric: Metric
    clean_logits: torch.Tensor
    corrupt_logits: torch.Tensor
    clean_full: torch.Tensor | None = None
    corrupt_full: torch.Tensor | None = None
    corruption: str = "prompt"
    _acts: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: {"clean": {}, "corrupted": {}},
                                                      repr=False)

    def __repr__(self) -> str:
        return (f"EncDecPatchingSetup({self.model.name!r}, n={self.n}, src={self.input_ids.shape[1]}, "
                f"tgt={self.decoder_ids.shape[1]}, metric={self.metric.name!r}, clean={self.clean_value:.4g}, "
                f"corrupted={self.corrupted_value:.4g})")

    @property
    def n(self) -> int:
        """Sequences per run."""
        return int(self.input_ids.shape[0])

    def over_source(self, stack: str, comp: Component) -> bool:
        """Whether a component's positions are the source's (encoder sites, cross-attention keys/values)."""
        return stack == "encoder" or comp.over_source

    def axis(self, stack: str, comp: Component) -> tuple[torch.Tensor, int, tuple[str, ...]]:
        """``(lengths [n], padded length, first sequence's real token strings)`` of a component's position axis."""
        if self.over_source(stack, comp):
            ids, mask = self.input_ids, self.attention_mask
        else:
            ids, mask = self.decoder_ids, self.decoder_mask
        lengths = mask.sum(1).long().cpu()
        return lengths, int(ids.shape[1]), tuple(self.model.to_str_tokens(ids[:1, :int(lengths[0])])[0])

    def run(self, which: str, interventions: Sequence[Intervention] = (), copies: int = 1,
            capture: Sequence[Site] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The ``"clean"`` or ``"corrupted"`` run on ``copies`` stacked copies of its batch: ``(logits
        [copies * n, tgt_pos, vocab], captured activations)``."""
        ids = self.input_ids if which == "clean" else self.corrupt_ids
        rep = (copies, 1)
        res = self.model.run((ids.repeat(rep), self.attention_mask.repeat(rep)),
                             (self.decoder_ids.repeat(rep), self.decoder_mask.repeat(rep)),
                             capture=list(capture), interventions=interventions)
        return res.logits, res.acts

    def acts(self, which: str, sites: Sequence[Site]) -> dict[str, torch.Tensor]:
        """Activations ``[n, ...]`` of the clean or corrupted run at ``sites`` (run once, then cached)."""
        cache = self._acts[which]
        missing = [s for s in sites if s.name not in cache]
        if missing:
            cache.update(self.run(which, capture=missing)[1])
        return {s.name: cache[s.name] for s in sites}

    def metric_of(self, logits: torch.Tensor, copies: int) -> torch.Tensor:
        """``[copies]`` metric values of ``copies`` stacked runs' logits ``[copies * n, tgt_pos, vocab]``."""
        full = logits.view(copies, self.n, *logits.shape[1:])
        if self.metric.full_logits:
            return self.metric(full).cpu()
        at = full[:, torch.arange(self.n, device=full.device), self.answer_pos.to(full.device)]
        return self.metric(at).cpu()


def _encode(ed: EncoderDecoder, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(inputs, (Trace, TraceStore)):
        inputs.check_model(ed)  # type: ignore[arg-type]  # reads .name and .fingerprint, which it has
        if isinstance(inputs, TraceStore):
            return ed.encode(inputs.tokens())
    return ed.encode(inputs)


def prepare_encdec(model: EncoderDecoder, inputs: Inputs, *, corrupt: Corruption | None = None,
                   decoder_inputs: Any = None, answer: Answer | None = None, wrong: Answer | None = None,
                   metric: MetricSpec | None = None) -> EncDecPatchingSetup:
    """Tokenize, check and run the clean and corrupted sources of an encoder–decoder patching experiment, once.

    Args:
        model: the encoder–decoder.
        inputs: the clean source(s): a text, texts, ids ``[n, src_pos]``, ``(ids, mask)``, or the encoder trace of
            an earlier run.
        corrupt: the corrupted source(s), one per clean source with its token count.
        decoder_inputs: the decoder's input in both runs: target texts (teacher-forced: tokenized and shifted
            right behind the decoder start token), ids ``[n, tgt_pos]`` as the decoder reads them, ``(ids, mask)``,
            or ``None`` (the start token alone: the metric reads the first generated token).
        answer / wrong / metric: as :func:`~interp.patching.prepare` (default ``logit_diff``), read at each
            sequence's last real decoder position.

    Raises:
        BadInputError: no ``corrupt``, ``Noise``/``Ablation`` (not supported on an encoder–decoder), sources of
            different token counts (both tokenizations shown), bad answers.

    Example:
        >>> import torch
        >>> from transformers import BartConfig, BartForConditionalGeneration
        >>> ed = EncoderDecoder(BartForConditionalGeneration(BartConfig(vocab_size=40, d_model=16,
        ...     encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        ...     encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)))
        >>> s = prepare_encdec(ed, torch.tensor([[5, 6, 7, 2]]), corrupt=torch.tensor([[5, 8, 7, 2]]),
        ...                    decoder_inputs=torch.tensor([[2, 9]]), answer=10, metric="logprob")
        >>> s.answer_pos.tolist(), s.clean_value != s.corrupted_value
        ([1], True)
    """
    ed = model
    if corrupt is None:
        raise BadInputError("activation patching needs corrupt= (the corrupted source prompt(s))")
    if isinstance(corrupt, (Noise, Ablation)):
        raise BadInputError(f"corrupt={type(corrupt).__name__}(...) is not supported on an encoder-decoder; give "
                            "corrupted source prompt(s), one per clean prompt with its token count")
    ids, mask = _encode(ed, inputs)
    xids, xmask = _encode(ed, corrupt)
    if xids.shape[0] != ids.shape[0]:
        raise BadInputError(f"{ids.shape[0]} clean sources but {xids.shape[0]} corrupted sources; give one per "
                            "clean source")
    for i in range(ids.shape[0]):
        nc, nx = int(mask[i].sum()), int(xmask[i].sum())
        if nc != nx or xids.shape[1] != ids.shape[1]:
            raise BadInputError(f"source pair {i} has different token counts: clean {nc} tokens "
                                f"{ed.to_str_tokens(ids[i:i + 1, :nc])[0]} vs corrupted {nx} tokens "
                                f"{ed.to_str_tokens(xids[i:i + 1, :nx])[0]} (padded to {ids.shape[1]} and "
                                f"{xids.shape[1]}); patching needs aligned source positions")
    dec, dmask = ed.encode_decoder(decoder_inputs, ids.shape[0])
    n = ids.shape[0]
    answer_pos = (dmask.sum(1) - 1).long().cpu()
    ans = token_ids(ed, answer, n, "answer") if answer is not None else None
    wr = token_ids(ed, wrong, n, "wrong") if wrong is not None else None
    metric = "logit_diff" if metric is None else metric
    rows = torch.arange(n)
    with torch.no_grad():
        clean_full = ed.run((ids, mask), (dec, dmask)).logits
        corrupt_full = ed.run((xids, mask), (dec, dmask)).logits
    clean_at = clean_full[rows, answer_pos.to(clean_full.device)]
    m = Metric.build(metric, ans, wr, reference=clean_at if metric == "kl" else None)
    keep = m.full_logits
    setup = EncDecPatchingSetup(
        model=ed, input_ids=ids, attention_mask=mask, corrupt_ids=xids, decoder_ids=dec, decoder_mask=dmask,
        answer_pos=answer_pos, metric=m, clean_logits=clean_at,
        corrupt_logits=corrupt_full[rows, answer_pos.to(corrupt_full.device)],
        clean_full=clean_full if keep else None, corrupt_full=corrupt_full if keep else None)
    if keep:
        _ = setup.clean_value  # a user metric that does not return a scalar fails here, not in a sweep
    return setup


def _bytes_per_run(setup: EncDecPatchingSetup) -> int:
    """A rough upper bound of the live activation bytes of one patched run (all its sequences)."""
    cfg = setup.model.config
    d = int(getattr(cfg, "d_model", 0) or getattr(cfg, "hidden_size", 1))
    src, tgt = setup.input_ids.shape[1], setup.decoder_ids.shape[1]
    heads = int(getattr(cfg, "num_heads", 0) or getattr(cfg, "encoder_attention_heads", 1))
    per_seq = 16 * d * (src + tgt) + heads * (src * src + tgt * tgt + 2 * tgt * src)
    return 4 * setup.n * (per_seq + tgt * int(cfg.vocab_size))


def run_encdec_cells(setup: EncDecPatchingSetup, cells: Sequence[tuple[Edit, ...]], target: str, source: str, *,
                     memory_budget: int = DEFAULT_BUDGET, progress: bool | None = None,
                     desc: str = "patching") -> torch.Tensor:
    """The metric of every cell's patched run (``target`` with ``source``'s values at the cell's edits):
    ``[len(cells)]``; runs stacked in the batch, as many per forward as ``memory_budget`` bytes allow."""
    sites = sorted({e.site for cell in cells for e in cell if e.site is not None}, key=lambda s: s.name)
    values = setup.acts(source, sites)
    chunk = max(1, memory_budget // _bytes_per_run(setup))
    out = torch.full((len(cells),), float("nan"))
    bar = progress_bar(total=len(cells), desc=desc, enabled=progress, leave=False)
    for c0 in range(0, len(cells), chunk):
        part = cells[c0:c0 + chunk]
        r = len(part)
        by_site: dict[Site, list[tuple[int, Edit]]] = defaultdict(list)
        for ri, cell in enumerate(part):
            for e in cell:
                assert e.site is not None
                by_site[e.site].append((ri, e))
        ivs: list[Intervention] = []
        for site, entries in by_site.items():
            src = values[site.name]
            m = torch.zeros(r, *src.shape[:-1], 1, dtype=torch.bool)
            for ri, e in entries:
                m[ri] |= _edit_mask(site, e, src.shape)
            ivs.append(Lambda(site, fn=_site_edit(src, m.to(src.device), r)))
        with torch.no_grad():
            logits, _ = setup.run(target, ivs, copies=r)
        out[c0:c0 + r] = setup.metric_of(logits, r)
        bar.update(r)
    bar.close()
    return out


def encdec_activation_patching(
    model: EncoderDecoder, inputs: Inputs | EncDecPatchingSetup, *, corrupt: Corruption | None = None,
    decoder_inputs: Any = None, answer: Answer | None = None, wrong: Answer | None = None,
    metric: MetricSpec | None = None, component: str = "encoder.resid_pre", layers: Layers = None,
    positions: Positions = None, heads: HeadsSelection | None = None, direction: Direction = "denoising",
    per_position: bool = False, window: int = 1, memory_budget: int = DEFAULT_BUDGET, progress: bool | None = None,
) -> PatchingResult:
    """:func:`~interp.patching.activation_patching` of an encoder–decoder (the arguments are its own; see the
    module docstring for the components and their positions)."""
    if isinstance(inputs, EncDecPatchingSetup):
        given = [k for k, v in (("corrupt", corrupt), ("decoder_inputs", decoder_inputs), ("answer", answer),
                                ("wrong", wrong), ("metric", metric)) if v is not None]
        if given:
            raise BadInputError(f"{', '.join(given)} given with a prepared EncDecPatchingSetup, which already holds "
                                "them; pass them to prepare_encdec(), or pass the prompts instead of the setup")
        if not isinstance(model, EncoderDecoder) or (inputs.model is not model
                                                     and inputs.model.fingerprint != model.fingerprint):
            raise ModelMismatchError(f"this setup was prepared with {inputs.model.name!r}, not "
                                     f"{getattr(model, 'name', model)!r}")
        setup = inputs
    else:
        setup = prepare_encdec(model, inputs, corrupt=corrupt, decoder_inputs=decoder_inputs, answer=answer,
                               wrong=wrong, metric=metric)
    ed = setup.model
    stack, comp = parse_encdec_component(component)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise BadInputError(f"bad window {window!r}; valid: an int >= 1")
    if window > 1 and comp not in _WINDOWED:
        raise BadInputError(f"window= applies to attn_out, mlp_out and cross_attn_out, not {comp.short!r}")
    if direction not in ("denoising", "noising"):
        raise BadInputError(f"bad direction {direction!r}; valid: 'denoising' (clean values into the corrupted run) "
                            "or 'noising' (corrupted values into the clean run)")
    target, source = ("corrupted", "clean") if direction == "denoising" else ("clean", "corrupted")
    n_layers = ed.n_layers[stack]
    n_heads = 0
    if comp in HEADS | CROSS_HEADS:  # the head count, read off a captured activation
        probe = Site(comp, 0, stack=stack)
        t = setup.acts("clean", [probe])[probe.name]
        n_heads = int(t.shape[comp.axes.index("head")])
    lengths, n_pos, tokens = setup.axis(stack, comp)
    sweep = plan_sweep_over(comp, n_layers, n_heads, lengths, n_pos, layers=layers, positions=positions,
                            heads=heads, per_position=per_position)
    cells, index = sweep_cells(sweep, n_layers, window, stack=stack)
    vals = run_encdec_cells(setup, [edits for _, edits in cells], target, source, memory_budget=memory_budget,
                            progress=progress, desc=f"patching {stack}.{comp.short}")
    grid = torch.full(sweep.shape, float("nan"))
    grid.view(-1)[torch.tensor(index, dtype=torch.long)] = vals
    meta: dict[str, Any] = {"window": window, "corruption": setup.corruption, "n_seqs": setup.n, "stack": stack,
                            "positions_over": "source" if setup.over_source(stack, comp) else "target"}
    if "pos" not in sweep.axes and sweep.positions != (None,):
        meta["positions"] = [p if isinstance(p, int) else list(p or ()) for p in sweep.positions]
    return PatchingResult(values=grid, axes=sweep.axes, coords=dict(sweep.coords), tokens=tokens,
                          component=f"{stack}.{comp.short}", method="exact", direction=direction,
                          metric=setup.metric.name, clean_value=setup.clean_value,
                          corrupted_value=setup.corrupted_value, meta=meta)


__all__ = ["ENCDEC_COMPONENTS", "EncDecPatchingSetup", "encdec_activation_patching", "parse_encdec_component",
           "prepare_encdec", "run_encdec_cells"]
