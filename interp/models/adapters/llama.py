"""Llama-family decoders (Llama, Mistral, Qwen2/3, SmolLM): pre-RMSNorm, rotary, gated MLP, GQA.

``attn.hook_q``/``hook_k`` are what the attention scores see (after rotary, and after Qwen3's
per-head q/k RMSNorm); the weight views ``W_Q``/``W_K`` are the plain projections, before rotary
and before that norm.
"""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import (
    Adapter,
    Dims,
    HFModule,
    WeightViews,
    expand_kv,
    llama_attn_inputs,
    llama_layout_taps,
    split_heads_in,
    zeros_if_none,
)


def _dims(c: Any) -> Dims:
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Dims(
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=d_head,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        n_ctx=getattr(c, "max_position_embeddings", None),
    )


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    W_Q: list[torch.Tensor] = []
    W_K: list[torch.Tensor] = []
    W_V: list[torch.Tensor] = []
    W_O: list[torch.Tensor] = []
    b_Q: list[torch.Tensor] = []
    b_K: list[torch.Tensor] = []
    b_V: list[torch.Tensor] = []
    for blk in layers:
        a = blk.self_attn
        W_Q.append(split_heads_in(a.q_proj.weight.detach(), d.n_heads))
        W_K.append(expand_kv(split_heads_in(a.k_proj.weight.detach(), d.n_kv_heads), d.n_rep))
        W_V.append(expand_kv(split_heads_in(a.v_proj.weight.detach(), d.n_kv_heads), d.n_rep))
        W_O.append(a.o_proj.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model))
        like = a.q_proj.weight
        b_Q.append(zeros_if_none(a.q_proj.bias, d.n_heads * d.d_head, like=like).reshape(d.n_heads, d.d_head))
        for bias, acc in ((a.k_proj.bias, b_K), (a.v_proj.bias, b_V)):
            b = zeros_if_none(bias, d.n_kv_heads * d.d_head, like=like).reshape(d.n_kv_heads, d.d_head)
            acc.append(expand_kv(b, d.n_rep))
    b_O = torch.stack([zeros_if_none(b.self_attn.o_proj.bias, d.d_model, like=b.self_attn.o_proj.weight) for b in layers])
    W_E = model.model.embed_tokens.weight.detach()
    return WeightViews(
        W_E=W_E,
        W_U=model.lm_head.weight.detach().T,
        W_Q=torch.stack(W_Q), W_K=torch.stack(W_K), W_V=torch.stack(W_V), W_O=torch.stack(W_O),
        b_Q=torch.stack(b_Q), b_K=torch.stack(b_K), b_V=torch.stack(b_V), b_O=b_O,
        W_in=torch.stack([b.mlp.up_proj.weight.detach().T for b in layers]),
        W_gate=torch.stack([b.mlp.gate_proj.weight.detach().T for b in layers]),
        W_out=torch.stack([b.mlp.down_proj.weight.detach().T for b in layers]),
        b_in=torch.stack([zeros_if_none(b.mlp.up_proj.bias, d.d_mlp, like=b.mlp.up_proj.weight) for b in layers]),
        b_out=torch.stack([zeros_if_none(b.mlp.down_proj.bias, d.d_model, like=b.mlp.down_proj.weight) for b in layers]),
        ln1_w=torch.stack([b.input_layernorm.weight.detach() for b in layers]),
        ln2_w=torch.stack([b.post_attention_layernorm.weight.detach() for b in layers]),
        ln_final_w=model.model.norm.weight.detach(),
        norm="rms",
    )


ADAPTER = Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
    layers="model.layers",
    attn="model.layers.{L}.self_attn",
    taps=llama_layout_taps(),
    attn_inputs=llama_attn_inputs(),
    mid_delta="model.layers.{L}.mlp",
    dims=_dims,
    weights=_weights,
)
