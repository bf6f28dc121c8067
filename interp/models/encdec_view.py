"""``DecoderView``: the decoder of an encoder–decoder seen as a one-stack model, for the tools that read one residual
stream through the model's own head (the logit lens, the tuned lens).

The view names the decoder's hook points without the ``decoder.`` prefix (``blocks.3.hook_resid_post``,
``resid_post.-1``), has the decoder's size as :attr:`dims`, applies the decoder's final norm (T5, mBART; BART and
Marian have none: their blocks end normalised) and takes the LM head as the unembedding: ``W_U`` is the LM head's
weight, T5's rescaling of the decoder output by ``d_model ** -0.5`` folded in, and ``b_U`` BART's and Marian's
``final_logits_bias``. So ``apply_final_norm(h) @ W_U + b_U`` are the logits the model makes of a decoder output ``h``.

The decoder cannot run alone (it reads the source through cross-attention): :meth:`DecoderView.trace` runs the whole
model and returns the decoder's :class:`~interp.trace.Trace` under the view's names, which the one-stack tools take
as their ``inputs``.

Example:
    >>> import torch
    >>> from transformers import T5Config, T5ForConditionalGeneration
    >>> from interp.models import EncoderDecoder
    >>> ed = EncoderDecoder(T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24,
    ...     num_layers=2, num_heads=4, decoder_start_token_id=0)))
    >>> view = ed.decoder_view()
    >>> tr = view.trace(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 9]]), capture=["resid_post.-1", "logits"])
    >>> tr.names
    ['blocks.1.hook_resid_post', 'logits']
    >>> h = ed.run(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 9]]), capture="decoder.ln_final").decoder
    >>> logits = h["decoder.ln_final.hook_normalized"] @ view.weights.W_U  # the decoder's own output
    >>> torch.allclose(logits, tr["logits"], atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError
from interp.models.adapters.base import Dims
from interp.sites import Component, Site, SiteSpec, resolve, split_stack

if TYPE_CHECKING:
    from torch import nn

    from interp.models.encdec import EncoderDecoder
    from interp.trace import Trace


@dataclass(frozen=True)
class HeadWeights:
    """The unembedding of a decoder view: ``W_U [d_model, vocab]`` (rescaling folded in), ``b_U [vocab]`` or ``None``;
    no soft-cap."""

    W_U: torch.Tensor
    b_U: torch.Tensor | None = None
    logit_softcap: float | None = None


class DecoderView:
    """The decoder of ``ed`` as a one-stack model (see the module docstring).

    Attributes:
        ed: the encoder–decoder.
        hf / tokenizer / name / source / config: ``ed``'s.
        dims: the decoder's layers, heads and widths.
    """

    def __init__(self, ed: EncoderDecoder) -> None:
        self.ed = ed
        self.hf = ed.hf
        self.tokenizer = ed.tokenizer
        self.name = ed.name
        self.source = ed.source
        self.config = ed.config
        cfg = ed.config
        d_model = int(cfg.d_model)
        n_heads = int(getattr(cfg, "num_heads", 0) or cfg.decoder_attention_heads)
        self.dims = Dims(n_layers=ed.n_layers["decoder"], n_heads=n_heads, n_kv_heads=n_heads, d_model=d_model,
                         d_head=int(getattr(cfg, "d_kv", 0) or d_model // n_heads),
                         d_mlp=int(getattr(cfg, "d_ff", 0) or cfg.decoder_ffn_dim),
                         d_vocab=int(self.hf.get_submodule(ed.table.lm_head).weight.shape[0]))

    @property
    def device(self) -> torch.device:
        return self.ed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ed.dtype

    @property
    def fingerprint(self) -> str:
        """``ed``'s (a decoder trace of ``ed`` is this view's)."""
        return self.ed.fingerprint

    @cached_property
    def weights(self) -> HeadWeights:
        """The LM head as ``W_U`` / ``b_U`` (T5's ``d_model ** -0.5`` output rescaling folded into ``W_U``)."""
        t = self.ed.table
        W_U = self.hf.get_submodule(t.lm_head).weight.detach().T
        cfg = self.config
        if t.rescale_decoder and getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", False)):
            W_U = W_U * cfg.d_model ** -0.5
        b_U = None
        if t.logits_bias is not None and hasattr(self.hf, t.logits_bias):
            b_U = getattr(self.hf, t.logits_bias).detach().reshape(-1)
            b_U = b_U if bool(b_U.any()) else None
        return HeadWeights(W_U=W_U, b_U=b_U)

    def norm_module(self) -> nn.Module | None:
        """The decoder's final norm module, or ``None`` (BART, Marian)."""
        path = self.ed.table.decoder_norm
        return self.hf.get_submodule(path) if path else None

    def apply_final_norm(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """The decoder's final norm (its own module) on ``[..., d_model]``; the identity where it has none."""
        x = x.to(self.device, self.dtype)
        norm = self.norm_module()
        with torch.set_grad_enabled(grad):
            return norm(x) if norm is not None else x

    def sites(self) -> list[Site]:
        """The decoder's hook points without the stack prefix, then ``logits``."""
        return [*(Site(s.component, s.layer) for s in self.ed.sites() if s.stack == "decoder"), Site(Component.LOGITS)]

    def hook_names(self) -> list[str]:
        return [s.name for s in self.sites()]

    def to_str_tokens(self, input_ids: torch.Tensor) -> list[list[str]]:
        return self.ed.to_str_tokens(input_ids if input_ids.dim() == 2 else input_ids[None])

    def local(self, spec: SiteSpec | Sequence[SiteSpec]) -> list[Site]:
        """The view's sites from any spelling, with or without the ``decoder.`` prefix.

        Raises:
            BadInputError: an ``encoder.*`` site (the view reads the decoder only).
        """
        items = [spec] if isinstance(spec, (str, Site, tuple)) else list(spec)
        out: list[SiteSpec] = []
        for item in items:
            stack = item.stack if isinstance(item, Site) else split_stack(item)[0] if isinstance(item, str) else None
            if stack == "encoder":
                raise BadInputError(f"{item!r} is an encoder site; the decoder's head reads decoder layers only "
                                    "(to read the encoder's layers through the decoder, use decoder_lens)")
            if isinstance(item, Site):
                out.append(Site(item.component, item.layer) if item.stack else item)
            else:
                out.append(split_stack(item)[1] if isinstance(item, str) else item)
        return resolve(out, self.sites())

    def from_decoder(self, trace: Trace) -> Trace:
        """A decoder trace of ``ed`` (names ``decoder.*``) under the view's names."""
        trace.check_model(self)  # type: ignore[arg-type]  # it reads .name and .fingerprint
        acts = {_strip(k): v for k, v in trace.activations.items()}
        grads = {_strip(k): v for k, v in trace.grads.items()}
        man = replace(trace.manifest, hooks={_strip(k): v for k, v in trace.manifest.hooks.items()})
        return replace(trace, activations=acts, grads=grads, manifest=man)

    def trace(self, inputs: Any, decoder_inputs: Any = None, *, capture: SiteSpec | Sequence[SiteSpec] = "resid_post"
              ) -> Trace:
        """Run ``ed`` on a source and the decoder's input (as :meth:`EncoderDecoder.run`) and return the decoder's
        trace under the view's names."""
        sites = self.local(capture)
        full = [s if s.component is Component.LOGITS else Site(s.component, s.layer, stack="decoder") for s in sites]
        return self.from_decoder(self.ed.run(inputs, decoder_inputs, capture=full).decoder)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: the decoder reads a source. Make its trace with :meth:`trace` (or call the tool with the
        encoder–decoder itself, e.g. ``logit_lens(ed, sources, decoder_inputs=...)``)."""
        raise BadInputError(f"the decoder of {self.name!r} cannot run alone (it reads the source): make a trace "
                            "holding the hooks with ed.decoder_view().trace(sources, decoder_inputs, capture=...) or "
                            "pass the encoder-decoder itself to the tool")

    def __repr__(self) -> str:
        return f"DecoderView({self.name!r}, {self.dims.n_layers} decoder blocks)"


def _strip(name: str) -> str:
    stack, rest = split_stack(name)
    return rest if stack == "decoder" else name


__all__ = ["DecoderView", "HeadWeights"]
