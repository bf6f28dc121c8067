"""Encoder–decoder models (T5 / mT5, BART / mBART, Marian): hook points on both stacks, cross-attention included.

interp's :class:`~interp.models.Model` and its adapters describe one stack of blocks. An encoder–decoder has two,
and its decoder reads the encoder's output through cross-attention, so it gets its own small wrapper,
:class:`EncoderDecoder`, with one table per family (:data:`ENCDEC_TABLES`) from hook names to the Hugging Face
modules. The hook names (``docs/models.md``):

=====================================  =============================================================
``encoder.blocks.{L}.hook_resid_pre``  the residual stream entering encoder block ``L``
``encoder.blocks.{L}.hook_attn_out``   its self-attention output (before the residual add)
``encoder.blocks.{L}.hook_mlp_out``    its feed-forward output (before the residual add)
``encoder.blocks.{L}.hook_resid_post`` the block's output
``encoder.hook_out``                   the encoder's output (after its final norm): what the decoder reads
``decoder.blocks.{L}.hook_resid_pre``  the residual stream entering decoder block ``L``
``decoder.blocks.{L}.hook_attn_out``   its causal self-attention output
``decoder.blocks.{L}.hook_cross_attn_out``  its cross-attention output (queries: decoder, keys/values: encoder)
``decoder.blocks.{L}.hook_mlp_out``    its feed-forward output
``decoder.blocks.{L}.hook_resid_post`` the block's output
``logits``                             the LM head's output
=====================================  =============================================================

In the post-norm families (BART, Marian) a block's output is re-normalised after each sublayer, so
``resid_post = LN_ff(LN_cross(LN_attn(resid_pre + attn_out) + cross_attn_out) + mlp_out)``; in the pre-norm ones
(T5, mBART) it is the plain sum ``resid_pre + attn_out (+ cross_attn_out) + mlp_out``.

Example:
    >>> import torch
    >>> from transformers import T5Config, T5ForConditionalGeneration
    >>> from interp.models.encdec import EncoderDecoder
    >>> hf = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24, num_layers=2,
    ...                                          num_heads=4, decoder_start_token_id=0)).eval()
    >>> ed = EncoderDecoder(hf)
    >>> run = ed.run(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 9]]), capture=["encoder.hook_out",
    ...              "decoder.blocks.1.hook_cross_attn_out"])
    >>> run.logits.shape, sorted(run.acts)
    (torch.Size([1, 2, 32]), ['decoder.blocks.1.hook_cross_attn_out', 'encoder.hook_out'])
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.errors import BadInputError, unknown_name
from interp.models.adapters.base import HFModule

STACKS = ("encoder", "decoder")


@dataclass(frozen=True)
class EncDecTable:
    """One family's module paths (``{L}``: the block index); a sublayer path's output (or its first element) is
    the hook's value.

    Attributes:
        family / model_types: the family and the ``config.model_type`` values it serves.
        blocks: ``{stack: path of the ModuleList of blocks}``.
        sublayers: ``{stack: {component: path template}}`` for ``attn_out``, ``cross_attn_out``, ``mlp_out``.
        norms: ``{stack: {component: path template of the norm after that sublayer}}`` (post-norm families only).
        encoder_norm: the encoder's final norm (pre-norm families), or ``None``.
        pre_norm: True when blocks add sublayer outputs to an un-normalised stream.
    """

    family: str
    model_types: tuple[str, ...]
    blocks: dict[str, str]
    sublayers: dict[str, dict[str, str]]
    norms: dict[str, dict[str, str]] = field(default_factory=dict)
    encoder_norm: str | None = None
    pre_norm: bool = True


_T5 = EncDecTable(
    family="t5", model_types=("t5", "mt5"),
    blocks={"encoder": "encoder.block", "decoder": "decoder.block"},
    sublayers={"encoder": {"attn_out": "encoder.block.{L}.layer.0.SelfAttention",
                           "mlp_out": "encoder.block.{L}.layer.1.DenseReluDense"},
               "decoder": {"attn_out": "decoder.block.{L}.layer.0.SelfAttention",
                           "cross_attn_out": "decoder.block.{L}.layer.1.EncDecAttention",
                           "mlp_out": "decoder.block.{L}.layer.2.DenseReluDense"}},
    encoder_norm="encoder.final_layer_norm",
)


def _bart_like(family: str, types: tuple[str, ...], pre_norm: bool, prefix: str = "model") -> EncDecTable:
    e, d = f"{prefix}.encoder.layers.{{L}}", f"{prefix}.decoder.layers.{{L}}"
    return EncDecTable(
        family=family, model_types=types,
        blocks={"encoder": f"{prefix}.encoder.layers", "decoder": f"{prefix}.decoder.layers"},
        sublayers={"encoder": {"attn_out": f"{e}.self_attn", "mlp_out": f"{e}.fc2"},
                   "decoder": {"attn_out": f"{d}.self_attn", "cross_attn_out": f"{d}.encoder_attn",
                               "mlp_out": f"{d}.fc2"}},
        norms={} if pre_norm else {
            "encoder": {"attn_out": f"{e}.self_attn_layer_norm", "mlp_out": f"{e}.final_layer_norm"},
            "decoder": {"attn_out": f"{d}.self_attn_layer_norm", "cross_attn_out": f"{d}.encoder_attn_layer_norm",
                        "mlp_out": f"{d}.final_layer_norm"}},
        encoder_norm=f"{prefix}.encoder.layer_norm" if pre_norm else None,
        pre_norm=pre_norm,
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


@dataclass
class EncDecRun:
    """One forward: ``logits [batch, dec_pos, vocab]`` and the captured activations by hook name."""

    logits: torch.Tensor
    acts: dict[str, torch.Tensor]


def _first(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else x[0]  # a tuple or a ModelOutput: its first tensor


class EncoderDecoder:
    """An encoder–decoder Hugging Face model with named hook points on both stacks.

    Args:
        hf: a ``T5ForConditionalGeneration`` / ``MT5...`` / ``BartForConditionalGeneration`` /
            ``MBartForConditionalGeneration`` / ``MarianMTModel`` (put in eval mode here).
        tokenizer: its tokenizer, if any.
        name: a name for results.
    """

    def __init__(self, hf: HFModule, tokenizer: Any = None, name: str = "") -> None:
        self.hf: HFModule = hf
        hf.eval()
        self.tokenizer = tokenizer
        self.config: Any = self.hf.config
        self.table = encdec_table(str(self.config.model_type))
        self.name = name or self.config.model_type
        self.n_layers = {s: len(self.hf.get_submodule(self.table.blocks[s])) for s in STACKS}

    def hook_names(self) -> list[str]:
        """Every hook point, in forward order."""
        names = []
        for s in STACKS:
            comps = ["resid_pre", *self.table.sublayers[s], "resid_post"]
            names += [f"{s}.blocks.{L}.hook_{c}" for L in range(self.n_layers[s]) for c in comps]
            if s == "encoder":
                names.append("encoder.hook_out")
        return [*names, "logits"]

    def resolve(self, capture: str | Sequence[str]) -> list[str]:
        """Hook names from names and globs (``"decoder.blocks.*.hook_cross_attn_out"``)."""
        pats = [capture] if isinstance(capture, str) else list(capture)
        every = self.hook_names()
        out: list[str] = []
        for p in pats:
            hit = [n for n in every if fnmatch.fnmatchcase(n, p)]
            if not hit:
                raise unknown_name("hook", p, every)
            out += [n for n in hit if n not in out]
        return out

    @contextmanager
    def _hooks(self, names: Sequence[str], acts: dict[str, torch.Tensor]) -> Iterator[None]:
        handles = []
        want = set(names)

        def save(name: str, value: torch.Tensor) -> None:
            if name in want:
                acts[name] = value.detach()

        def add(path: str, fn: Any, pre: bool = False) -> None:
            mod = self.hf.get_submodule(path)
            handles.append(mod.register_forward_pre_hook(fn, with_kwargs=True) if pre
                           else mod.register_forward_hook(fn))

        for s in STACKS:
            for L in range(self.n_layers[s]):
                block = f"{self.table.blocks[s]}.{L}"
                pre, post = f"{s}.blocks.{L}.hook_resid_pre", f"{s}.blocks.{L}.hook_resid_post"
                if pre in want:
                    add(block, lambda m, a, k, n=pre: save(n, a[0] if a else k["hidden_states"]), pre=True)
                if post in want:
                    add(block, lambda m, a, o, n=post: save(n, _first(o)))
                for comp, path in self.table.sublayers[s].items():
                    name = f"{s}.blocks.{L}.hook_{comp}"
                    if name in want:
                        add(path.format(L=L), lambda m, a, o, n=name: save(n, _first(o)))
        if "encoder.hook_out" in want:
            enc = self.hf.get_encoder()  # type: ignore[operator]
            handles.append(enc.register_forward_hook(lambda m, a, o: save("encoder.hook_out", _first(o))))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def run(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
            capture: str | Sequence[str] = ()) -> EncDecRun:
        """One teacher-forced forward with the activations at ``capture`` (names or globs) kept."""
        names = self.resolve(capture) if capture else []
        acts: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self._hooks(names, acts):
            out = self.hf(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        if "logits" in names:
            acts["logits"] = out.logits
        return EncDecRun(logits=out.logits, acts=acts)

    # -- the encoder read at one layer (DecoderLens) ---------------------------------------------------
    def encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``n_layers + 1`` tensors ``[batch, pos, d_model]``: what the decoder would read if the encoder stopped
        after block ``L`` (its ``resid_post`` through the encoder's final norm, as DecoderLens does); entry 0 is
        the embeddings. The last is exactly the encoder's output."""
        names = [f"encoder.blocks.{L}.hook_resid_post" for L in range(self.n_layers["encoder"])]
        acts: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self._hooks(["encoder.blocks.0.hook_resid_pre", *names], acts):
            enc = self.hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)  # type: ignore[operator]
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


__all__ = ["ENCDEC_TABLES", "EncDecRun", "EncDecTable", "EncoderDecoder", "encdec_table"]
