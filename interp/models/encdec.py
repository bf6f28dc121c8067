"""Encoder–decoder models (T5 / mT5, BART / mBART, Marian): hook points on both stacks, cross-attention included.

An encoder–decoder has two stacks of blocks, and its decoder reads the encoder's output through cross-attention.
:class:`EncoderDecoder` wraps one, with a table per family (:data:`ENCDEC_TABLES`) from hook points to the Hugging
Face modules. Its hook points are the one vocabulary of :mod:`interp.sites` with a stack prefix: the full name
``encoder.blocks.3.hook_resid_post``, the short form ``encoder.resid_post.3`` (``encoder.resid_post``: every
encoder layer; ``decoder.resid_post.-1``: the decoder's last), globs (``decoder.blocks.*.hook_cross_attn_out``).
``docs/models.md`` has the table:

====================================================  ==============================================================
``{stack}.resid_pre.L`` / ``{stack}.resid_post.L``    the residual stream entering / leaving block ``L``
``{stack}.attn_out.L``                                 the self-attention output (before the residual add)
``{stack}.q.L k.L v.L z.L`` ``[batch, pos, head, d_head]``  self-attention query/key/value, z (before the output proj.)
``{stack}.pattern.L`` ``[batch, head, q_pos, k_pos]``  self-attention pattern (causal in the decoder)
``decoder.cross_attn_out.L``                           the cross-attention output (queries: decoder, keys: encoder)
``decoder.cross_q.L cross_z.L``                        cross-attention query and z, over target positions
``decoder.cross_k.L cross_v.L``                        cross-attention key and value, over *source* positions
``decoder.cross_pattern.L``                            ``[batch, head, q_pos (target), k_pos (source)]``
``{stack}.mlp_out.L``                                  the feed-forward output (before the residual add)
``{stack}.ln_final``                                   the stack's output (after its final norm, if any): the
                                                       encoder's is what the decoder reads
``logits``                                             the LM head's output
====================================================  ==============================================================

In the post-norm families (BART, Marian) a block's output is re-normalised after each sublayer, so
``resid_post = LN_ff(LN_cross(LN_attn(resid_pre + attn_out) + cross_attn_out) + mlp_out)``; in the pre-norm ones
(T5, mBART) it is the plain sum ``resid_pre + attn_out (+ cross_attn_out) + mlp_out``.

:meth:`EncoderDecoder.run` returns an :class:`EncDecRunResult`: the logits and two :class:`~interp.trace.Trace`
objects, ``encoder`` (the source tokens and the encoder's activations) and ``decoder`` (the target tokens, the
decoder's activations, cross-attention included, and ``logits``): each stack has its own token axis. Interventions
are the :mod:`interp.hooks` ones (``Ablate``, ``Add``, ``Patch``, ``Scale``...), named at these sites.

Example:
    >>> import torch
    >>> from transformers import T5Config, T5ForConditionalGeneration
    >>> from interp.models.encdec import EncoderDecoder
    >>> hf = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24, num_layers=2,
    ...                                          num_heads=4, decoder_start_token_id=0)).eval()
    >>> ed = EncoderDecoder(hf)
    >>> run = ed.run(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 9]]), capture=["encoder.ln_final",
    ...              "decoder.cross_attn_out.1"])
    >>> run.logits.shape, run.encoder.names, run.decoder.names
    (torch.Size([1, 2, 32]), ['encoder.ln_final.hook_normalized'], ['decoder.blocks.1.hook_cross_attn_out'])
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError, unknown_name
from interp.models.adapters.base import HFModule
from interp.models.model import Model
from interp.sites import STACKS, Component, Site, SiteSpec, resolve

if TYPE_CHECKING:
    from interp.hooks import Intervention
    from interp.models.encdec_view import DecoderView
    from interp.trace import Trace



@dataclass(frozen=True)
class EncDecTable:
    """One family's module paths (``{L}``: the block index); a sublayer path's output (or its first element) is
    the hook's value.

    Attributes:
        family / model_types: the family and the ``config.model_type`` values it serves.
        stacks: ``{stack: path of the encoder / decoder module}`` (its output: the ``ln_final`` hook point).
        blocks: ``{stack: path of the ModuleList of blocks}``.
        sublayers: ``{stack: {component: path template}}`` for ``attn_out``, ``cross_attn_out``, ``mlp_out``.
        norms: ``{stack: {component: path template of the norm after that sublayer}}`` (post-norm families only).
        encoder_norm / decoder_norm: each stack's final norm (pre-norm families), or ``None``.
        pre_norm: True when blocks add sublayer outputs to an un-normalised stream.
        lm_head / logits_bias: the LM head module and the buffer of a bias added to its output (``None``: none).
        rescale_decoder: the decoder's output is multiplied by ``d_model ** -0.5`` before the LM head when the
            config says so (T5 with tied embeddings: ``scale_decoder_outputs``, before that ``tie_word_embeddings``).
    """

    family: str
    model_types: tuple[str, ...]
    stacks: dict[str, str]
    blocks: dict[str, str]
    sublayers: dict[str, dict[str, str]]
    norms: dict[str, dict[str, str]] = field(default_factory=dict)
    encoder_norm: str | None = None
    pre_norm: bool = True
    decoder_norm: str | None = None
    lm_head: str = "lm_head"
    logits_bias: str | None = None
    rescale_decoder: bool = False


_T5 = EncDecTable(
    family="t5", model_types=("t5", "mt5"),
    stacks={"encoder": "encoder", "decoder": "decoder"},
    blocks={"encoder": "encoder.block", "decoder": "decoder.block"},
    sublayers={"encoder": {"attn_out": "encoder.block.{L}.layer.0.SelfAttention",
                           "mlp_out": "encoder.block.{L}.layer.1.DenseReluDense"},
               "decoder": {"attn_out": "decoder.block.{L}.layer.0.SelfAttention",
                           "cross_attn_out": "decoder.block.{L}.layer.1.EncDecAttention",
                           "mlp_out": "decoder.block.{L}.layer.2.DenseReluDense"}},
    encoder_norm="encoder.final_layer_norm", decoder_norm="decoder.final_layer_norm", rescale_decoder=True,
)


def _bart_like(family: str, types: tuple[str, ...], pre_norm: bool, prefix: str = "model") -> EncDecTable:
    e, d = f"{prefix}.encoder.layers.{{L}}", f"{prefix}.decoder.layers.{{L}}"
    return EncDecTable(
        family=family, model_types=types,
        stacks={"encoder": f"{prefix}.encoder", "decoder": f"{prefix}.decoder"},
        blocks={"encoder": f"{prefix}.encoder.layers", "decoder": f"{prefix}.decoder.layers"},
        sublayers={"encoder": {"attn_out": f"{e}.self_attn", "mlp_out": f"{e}.fc2"},
                   "decoder": {"attn_out": f"{d}.self_attn", "cross_attn_out": f"{d}.encoder_attn",
                               "mlp_out": f"{d}.fc2"}},
        norms={} if pre_norm else {
            "encoder": {"attn_out": f"{e}.self_attn_layer_norm", "mlp_out": f"{e}.final_layer_norm"},
            "decoder": {"attn_out": f"{d}.self_attn_layer_norm", "cross_attn_out": f"{d}.encoder_attn_layer_norm",
                        "mlp_out": f"{d}.final_layer_norm"}},
        encoder_norm=f"{prefix}.encoder.layer_norm" if pre_norm else None,
        decoder_norm=f"{prefix}.decoder.layer_norm" if pre_norm else None,
        pre_norm=pre_norm, logits_bias="final_logits_bias",
    )


ENCDEC_TABLES: dict[str, EncDecTable] = {}
for _t in (_T5, _bart_like("bart", ("bart",), pre_norm=False), _bart_like("mbart", ("mbart",), pre_norm=True),
           _bart_like("marian", ("marian",), pre_norm=False)):
    for _mt in _t.model_types:
        ENCDEC_TABLES[_mt] = _t


def encdec_table(model_type: str) -> EncDecTable:
    """The table of a ``config.model_type`` (``t5``, ``mt5``, ``bart``, ``mbart``, ``marian``).

    Example:
        >>> encdec_table("mt5").family
        't5'
    """
    if model_type not in ENCDEC_TABLES:
        raise unknown_name("encoder-decoder model_type", model_type, sorted(ENCDEC_TABLES))
    return ENCDEC_TABLES[model_type]


@dataclass(frozen=True)
class EncDecRunResult:
    """One teacher-forced forward of an encoder–decoder.

    Attributes:
        logits: ``[batch, target_pos, vocab]``.
        encoder: a :class:`~interp.trace.Trace` over the source tokens with the captured ``encoder.*`` activations.
        decoder: a :class:`~interp.trace.Trace` over the decoder's input tokens with the captured ``decoder.*``
            activations (cross-attention keys/values and the cross pattern's key axis run over the source) and
            ``logits`` when captured.
    """

    logits: torch.Tensor
    encoder: Trace
    decoder: Trace

    @property
    def acts(self) -> dict[str, torch.Tensor]:
        """Both traces' activations by hook name."""
        return {**self.encoder.activations, **self.decoder.activations}

    def __repr__(self) -> str:
        return (f"EncDecRunResult(logits=[{', '.join(map(str, self.logits.shape))}], encoder={self.encoder!r}, "
                f"decoder={self.decoder!r})")


EncDecRun = EncDecRunResult  # the name before issue 25's integration


_SELF_ATTN = (Component.Q, Component.K, Component.V, Component.PATTERN, Component.Z)
_CROSS_ATTN = (Component.CROSS_Q, Component.CROSS_K, Component.CROSS_V, Component.CROSS_PATTERN, Component.CROSS_Z)


class EncoderDecoder:
    """An encoder–decoder Hugging Face model with named hook points on both stacks.

    Args:
        hf: a ``T5ForConditionalGeneration`` / ``MT5...`` / ``BartForConditionalGeneration`` /
            ``MBartForConditionalGeneration`` / ``MarianMTModel`` (put in eval mode here).
        tokenizer: its tokenizer, if any.
        name: a name for results and trace manifests.
        source: where its weights came from.
    """

    def __init__(self, hf: HFModule, tokenizer: Any = None, name: str = "", source: str = "") -> None:
        self.hf: HFModule = hf
        hf.eval()
        self.tokenizer = tokenizer
        self.config: Any = self.hf.config
        self.table = encdec_table(str(self.config.model_type))
        self.name = name or self.config.model_type
        self.source = source
        self.n_layers = {s: len(self.hf.get_submodule(self.table.blocks[s])) for s in STACKS}

    # -- what it is ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the architecture and the weights (as :attr:`interp.models.Model.fingerprint`)."""
        return Model.fingerprint.func(self)  # type: ignore[attr-defined]  # the same function, duck-typed

    def block_path(self, stack: str, layer: int) -> str:
        """The module path of block ``layer`` of ``stack``."""
        return f"{self.table.blocks[stack]}.{layer}"

    def sublayer_path(self, stack: str, component: str, layer: int) -> str:
        """The module path of a sublayer (``attn_out``: the self-attention module, ``cross_attn_out``: the
        cross-attention module, ``mlp_out``: the feed-forward output projection)."""
        return self.table.sublayers[stack][component].format(L=layer)

    def stack_of(self, site: Site) -> str:
        """The stack whose tokens a site's positions run over: its prefix; for ``hf:`` sites, the encoder for
        modules inside the encoder, else the decoder; ``logits``: the decoder."""
        if site.stack is not None:
            return site.stack
        enc = self.table.stacks["encoder"]
        inside = site.module is not None and (site.module == enc or site.module.startswith(enc + "."))
        return "encoder" if inside else "decoder"

    def sites(self) -> list[Site]:
        """Every named hook point, in forward order (encoder blocks, its output, decoder blocks, its output, logits)."""
        out: list[Site] = []
        for s in STACKS:
            comps = [Component.RESID_PRE, *_SELF_ATTN, Component.ATTN_OUT]
            if s == "decoder":
                comps += [*_CROSS_ATTN, Component.CROSS_ATTN_OUT]
            comps += [Component.MLP_OUT, Component.RESID_POST]
            out += [Site(c, L, stack=s) for L in range(self.n_layers[s]) for c in comps]
            out.append(Site(Component.LN_FINAL, stack=s))
        return [*out, Site(Component.LOGITS)]

    def hook_names(self) -> list[str]:
        """Every hook point's name, in forward order."""
        return [s.name for s in self.sites()]

    def resolve(self, capture: SiteSpec | Sequence[SiteSpec]) -> list[Site]:
        """Sites from any spelling: names, short forms (``encoder.resid_post.-1``), globs
        (``decoder.blocks.*.hook_cross_attn_out``)."""
        return resolve(capture, self.sites())

    # -- inputs -------------------------------------------------------------------------------------
    def encode(self, inputs: Any, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Source (or, with ``target``, decoder-input) ``(ids, mask)`` ``[batch, pos]`` from a text, texts, ids
        ``[batch, pos]``, ``(ids, mask)`` or a Trace. Target texts are tokenized as labels and shifted right behind
        the decoder start token (teacher forcing); target ids are the decoder's input as given."""
        if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, torch.Tensor) for x in inputs):
            ids, mask = inputs
        elif isinstance(inputs, torch.Tensor):
            if inputs.dim() not in (1, 2):
                raise BadInputError(f"token ids must be [pos] or [batch, pos], got shape {tuple(inputs.shape)}")
            ids = inputs if inputs.dim() == 2 else inputs[None]
            mask = torch.ones_like(ids)
        elif hasattr(inputs, "input_ids") and hasattr(inputs, "attention_mask"):  # a Trace
            ids, mask = inputs.input_ids, inputs.attention_mask
        elif isinstance(inputs, str) or (isinstance(inputs, Sequence) and inputs and
                                         all(isinstance(t, str) for t in inputs)):
            if self.tokenizer is None:
                raise BadInputError(f"{self.name!r} has no tokenizer; pass token ids instead of text")
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            if target:
                lab = self.tokenizer(text_target=texts, padding=True, return_tensors="pt")
                ids = self.hf.prepare_decoder_input_ids_from_labels(labels=lab.input_ids)  # type: ignore[operator]
                mask = torch.cat([torch.ones_like(lab.attention_mask[:, :1]), lab.attention_mask[:, :-1]], 1)
            else:
                enc = self.tokenizer(texts, padding=True, return_tensors="pt")
                ids, mask = enc.input_ids, enc.attention_mask
        else:
            raise BadInputError(f"inputs must be a str, a list of str, token ids, (ids, mask) or a Trace; got "
                            f"{type(inputs).__name__}")
        if ids.numel() == 0:
            raise BadInputError("no input tokens")
        return ids.to(self.device), mask.to(self.device)

    def encode_decoder(self, decoder_inputs: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's input ``(ids, mask)`` ``[n, pos]`` for ``n`` sources: target texts (teacher-forced: shifted
        right behind the start token), ids as the decoder reads them, ``(ids, mask)``, or ``None`` (the decoder
        start token alone, what generation's first step reads)."""
        if decoder_inputs is None:
            start = int(self.config.decoder_start_token_id)
            decoder_inputs = torch.full((n, 1), start, dtype=torch.long)
        dec, dmask = self.encode(decoder_inputs, target=True)
        if dec.shape[0] != n:
            raise BadInputError(f"{n} source sequences but {dec.shape[0]} decoder inputs; give one per source")
        return dec, dmask

    def to_str_tokens(self, input_ids: torch.Tensor) -> list[list[str]]:
        """Token strings per sequence."""
        if self.tokenizer is None:
            return [[str(i) for i in row] for row in input_ids.tolist()]
        return [self.tokenizer.convert_ids_to_tokens(row) for row in input_ids.tolist()]

    # -- running ------------------------------------------------------------------------------------
    def run(self, inputs: Any, decoder_inputs: Any = None, *, capture: SiteSpec | Sequence[SiteSpec] = (),
            interventions: Sequence[Intervention] = (), attention_mask: torch.Tensor | None = None,
            decoder_attention_mask: torch.Tensor | None = None) -> EncDecRunResult:
        """One teacher-forced forward with captures and interventions on both stacks.

        Args:
            inputs: the source: a text, texts, ids ``[batch, pos]`` (with ``attention_mask``), ``(ids, mask)`` or a
                Trace.
            decoder_inputs: the decoder's input: target texts (tokenized and shifted right behind the start token),
                ids ``[batch, pos]`` as the decoder reads them, ``(ids, mask)``, or ``None`` (the start token alone).
            capture: hook points to keep, in any spelling (``"encoder.resid_post"``, ``"decoder.cross_pattern.0"``,
                ``"logits"``).
            interventions: :mod:`interp.hooks` interventions at these hook points, applied in order.
            attention_mask / decoder_attention_mask: masks for ids given as tensors.

        Returns:
            :class:`EncDecRunResult` (``logits``, ``encoder`` and ``decoder`` traces).

        Example:
            >>> import torch
            >>> from transformers import BartConfig, BartForConditionalGeneration
            >>> from interp.hooks import Ablate
            >>> ed = EncoderDecoder(BartForConditionalGeneration(BartConfig(vocab_size=40, d_model=16,
            ...     encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            ...     encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)))
            >>> res = ed.run(torch.tensor([[5, 6, 7, 2]]), torch.tensor([[2, 8]]), capture="encoder.resid_post",
            ...              interventions=[Ablate("encoder.mlp_out.0", positions=-1)])
            >>> res.encoder.stack("resid_post").shape
            torch.Size([2, 1, 4, 16])
        """
        from interp.hooks.encdec import EncDecHookedRun, encdec_plans
        from interp.trace import Manifest, Trace
        from interp.trace.trace import command_line, dtype_name

        if attention_mask is not None and isinstance(inputs, torch.Tensor):
            inputs = (inputs, attention_mask)
        ids, mask = self.encode(inputs)
        if decoder_attention_mask is not None and isinstance(decoder_inputs, torch.Tensor):
            decoder_inputs = (decoder_inputs, decoder_attention_mask)
        dec, dmask = self.encode_decoder(decoder_inputs, ids.shape[0])
        plans = encdec_plans(self, capture, interventions)
        hooked = EncDecHookedRun(self, plans, mask.sum(-1).cpu(), dmask.sum(-1).cpu())
        extra = {} if bool(dmask.all()) else {"decoder_attention_mask": dmask}  # as a plain call without padding
        with torch.no_grad(), hooked:
            out = self.hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False, **extra)
        acts = hooked.activations
        texts = [inputs] if isinstance(inputs, str) else list(inputs) if isinstance(inputs, list) else None
        targets = ([decoder_inputs] if isinstance(decoder_inputs, str) else list(decoder_inputs)
                   if isinstance(decoder_inputs, list) else None)

        def trace(which: str, t_ids: torch.Tensor, t_mask: torch.Tensor, meta: list[dict[str, Any]]) -> Trace:
            held = {k: v for k, v in acts.items() if self.stack_of(Site.parse(k)) == which}
            dtype = next(iter(held.values())).dtype if held else self.dtype
            manifest = Manifest(model_id=self.name, model_fingerprint=self.fingerprint, dtype=dtype_name(dtype),
                                hooks={k: list(v.shape) for k, v in held.items()}, command=command_line(),
                                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            return Trace(input_ids=t_ids.cpu(), attention_mask=t_mask.cpu(),
                         tokens=tuple(tuple(r) for r in self.to_str_tokens(t_ids)), activations=held,
                         manifest=manifest, metadata=tuple({**m, "stack": which} for m in meta))

        n = ids.shape[0]
        src_meta = [{"text": t} for t in texts] if texts and len(texts) == n else [{} for _ in range(n)]
        tgt_meta = [{**m, **({"target": targets[i]} if targets and len(targets) == n else {})}
                    for i, m in enumerate(src_meta)]
        return EncDecRunResult(logits=out.logits, encoder=trace("encoder", ids, mask, src_meta),
                               decoder=trace("decoder", dec, dmask, tgt_meta))

    @contextmanager
    def hooks(self, capture: SiteSpec | Sequence[SiteSpec] = (), interventions: Sequence[Intervention] = ()
              ) -> Iterator[Any]:
        """Hooks around forwards you call yourself (``ed.hf.generate`` too; positions then count over every row).

        Example:
            >>> import torch
            >>> from transformers import T5Config, T5ForConditionalGeneration
            >>> from interp.hooks import Scale
            >>> ed = EncoderDecoder(T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4,
            ...     d_ff=24, num_layers=2, num_heads=4, decoder_start_token_id=0)))
            >>> with ed.hooks(interventions=[Scale("encoder.ln_final", 0.0)]):
            ...     out = ed.hf.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
            >>> out.shape
            torch.Size([1, 4])
        """
        from interp.hooks.encdec import encdec_hooks

        with encdec_hooks(self, capture, interventions) as run:
            yield run

    def decoder_view(self) -> DecoderView:
        """The decoder as a one-stack model for the readers of one residual stream (logit and tuned lens); see
        :class:`~interp.models.encdec_view.DecoderView`."""
        from interp.models.encdec_view import DecoderView

        return DecoderView(self)

    # -- the encoder read at one layer (DecoderLens) ---------------------------------------------------
    def encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``n_layers + 1`` tensors ``[batch, pos, d_model]``: what the decoder would read if the encoder stopped
        after block ``L`` (its ``resid_post`` through the encoder's final norm, as DecoderLens does); entry 0 is
        the embeddings. The last is exactly the encoder's output."""
        from interp.hooks.encdec import encdec_hooks

        names = [f"encoder.blocks.{L}.hook_resid_post" for L in range(self.n_layers["encoder"])]
        with torch.no_grad(), encdec_hooks(self, ["encoder.blocks.0.hook_resid_pre", *names]) as hooked:
            enc = self.hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)  # type: ignore[operator]
        acts = hooked.activations
        states = [acts["encoder.blocks.0.hook_resid_pre"], *(acts[n] for n in names)]
        norm = self.hf.get_submodule(self.table.encoder_norm) if self.table.encoder_norm else None
        with torch.no_grad():
            out = [norm(h) if norm is not None else h for h in states]
        out[-1] = enc.last_hidden_state  # identical to norm(last) by construction; take the encoder's own tensor
        return out

    def generate_from(self, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                      max_new_tokens: int = 16) -> torch.Tensor:
        """Greedy generation with the decoder cross-attending to ``encoder_hidden`` ``[batch, pos, d_model]``:
        ``[batch, steps]`` token ids (the decoder start token left out)."""
        from transformers.modeling_outputs import BaseModelOutput

        if max_new_tokens < 1:
            raise BadInputError(f"bad max_new_tokens {max_new_tokens}; valid: an int >= 1")
        with torch.no_grad():
            out = self.hf.generate(  # type: ignore[operator]
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden), attention_mask=attention_mask,
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return out[:, 1:]  # type: ignore[no-any-return]

    def token_loss_from(self, encoder_hidden: torch.Tensor, labels: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, label_pos]`` cross-entropy of each reference token (``-100``: ignored, NaN) with the decoder
        teacher-forced on ``labels`` and cross-attending to ``encoder_hidden``."""
        from transformers.modeling_outputs import BaseModelOutput

        with torch.no_grad():
            out = self.hf(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                          attention_mask=attention_mask, labels=labels)
        logp = out.logits.float().log_softmax(-1)
        ok = labels != -100
        ce = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return ce.masked_fill(~ok, float("nan"))

    def __repr__(self) -> str:
        return (f"EncoderDecoder({self.name!r}, {self.table.family}, {self.n_layers['encoder']} encoder + "
                f"{self.n_layers['decoder']} decoder blocks)")


__all__ = ["ENCDEC_TABLES", "STACKS", "EncDecRun", "EncDecRunResult", "EncDecTable", "EncoderDecoder", "encdec_table"]
