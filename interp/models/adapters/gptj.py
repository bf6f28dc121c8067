"""GPT-J: parallel attention and MLP on one LayerNorm, partial interleaved rotary, biased MLP and LM head.

``resid_post = resid_pre + attn(ln_1(resid_pre)) + mlp(ln_1(resid_pre))``: there is no ``hook_resid_mid``,
and ``ln1_w``/``ln2_w`` are both ``ln_1``'s. Rotary acts on the first ``rotary_dim`` dimensions of each
head, rotating pairs of neighbours (``rotate_every_two``); ``hook_q``/``hook_k`` are after it. The eager
kernel computes scores in float32 (interp's kernel does too, :data:`interp.hooks.attention.SCORES_IN_FLOAT32`).
CodeGen shares the block but fuses q/k/v in a permuted layout and is not served here.

Example:
    >>> import interp
    >>> from transformers import GPTJConfig, GPTJForCausalLM
    >>> m = interp.from_hf(GPTJForCausalLM(GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
    ...     vocab_size=64, n_positions=16)))
    >>> "blocks.0.hook_resid_mid" in m.hook_names(), m.weights.b_U.shape
    (False, torch.Size([64]))
"""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import Adapter, AttnInputs, Dims, HFModule, Tap, WeightViews, split_heads_in
from interp.sites import Component


def _dims(c: Any) -> Dims:
    return Dims(
        n_layers=c.n_layer,
        n_heads=c.n_head,
        n_kv_heads=c.n_head,
        d_model=c.n_embd,
        d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        d_vocab=c.vocab_size,
        n_ctx=c.n_positions,
    )


def _weights(model: HFModule, d: Dims) -> WeightViews:
    blocks = model.transformer.h
    like = blocks[0].attn.q_proj.weight

    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=like.dtype, device=like.device)

    ln1_w = torch.stack([b.ln_1.weight.detach() for b in blocks])
    ln1_b = torch.stack([b.ln_1.bias.detach() for b in blocks])
    return WeightViews(
        W_E=model.transformer.wte.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        b_U=model.lm_head.bias.detach() if model.lm_head.bias is not None else None,
        W_Q=torch.stack([split_heads_in(b.attn.q_proj.weight.detach(), d.n_heads) for b in blocks]),
        W_K=torch.stack([split_heads_in(b.attn.k_proj.weight.detach(), d.n_heads) for b in blocks]),
        W_V=torch.stack([split_heads_in(b.attn.v_proj.weight.detach(), d.n_heads) for b in blocks]),
        b_Q=zeros(d.n_layers, d.n_heads, d.d_head), b_K=zeros(d.n_layers, d.n_heads, d.d_head),
        b_V=zeros(d.n_layers, d.n_heads, d.d_head),
        W_O=torch.stack([b.attn.out_proj.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model) for b in blocks]),
        b_O=zeros(d.n_layers, d.d_model),
        W_in=torch.stack([b.mlp.fc_in.weight.detach().T for b in blocks]),
        W_out=torch.stack([b.mlp.fc_out.weight.detach().T for b in blocks]),
        b_in=torch.stack([b.mlp.fc_in.bias.detach() for b in blocks]),
        b_out=torch.stack([b.mlp.fc_out.bias.detach() for b in blocks]),
        ln1_w=ln1_w, ln1_b=ln1_b, ln2_w=ln1_w, ln2_b=ln1_b,
        ln_final_w=model.transformer.ln_f.weight.detach(),
        ln_final_b=model.transformer.ln_f.bias.detach(),
        norm="layer",
    )


ADAPTER = Adapter(
    family="gptj",
    model_types=("gptj",),
    layers="transformer.h",
    attn="transformer.h.{L}.attn",
    taps={
        Component.EMBED: Tap("transformer.wte", "out"),
        Component.RESID_PRE: Tap("transformer.h.{L}", "in"),
        Component.ATTN_OUT: Tap("transformer.h.{L}.attn", "out"),
        Component.MLP_OUT: Tap("transformer.h.{L}.mlp", "out"),
        Component.RESID_POST: Tap("transformer.h.{L}", "out"),
        Component.Z: Tap("transformer.h.{L}.attn.out_proj", "in", split_heads=True),
        Component.MLP_PRE: Tap("transformer.h.{L}.mlp.fc_in", "out"),
        Component.MLP_POST: Tap("transformer.h.{L}.mlp.fc_out", "in"),
        Component.LN_FINAL: Tap("transformer.ln_f", "out"),
        Component.LOGITS: Tap("lm_head", "out"),
    },
    dims=_dims,
    weights=_weights,
    attn_inputs=AttnInputs("transformer.h.{L}.ln_1", "transformer.h.{L}.attn.q_proj", "transformer.h.{L}.attn.k_proj",
                           "transformer.h.{L}.attn.v_proj"),
)
