"""Phi-3 / Phi-4-mini: a Llama-style block with fused projections.

``qkv_proj`` packs ``[q | k | v]`` (query heads, then the key/value heads of grouped-query attention) and
``gate_up_proj`` packs ``[gate | up]``: the weight views split them (``W_Q/W_K/W_V``, ``W_gate``/``W_in``).
``mlp.hook_pre`` is the gate half, read at the activation function's input (the fused projection's output
holds both halves); ``mlp.hook_post`` is ``up * act(gate)``. Long-context variants (``rope_scaling``
``longrope``) change only the rotary tables, which the attention module applies before interp's kernel.

Example:
    >>> import interp
    >>> from transformers import Phi3Config, Phi3ForCausalLM
    >>> m = interp.from_hf(Phi3ForCausalLM(Phi3Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
    ...     num_attention_heads=4, num_key_value_heads=2, vocab_size=64, pad_token_id=0, bos_token_id=1,
    ...     eos_token_id=2)))
    >>> m.weights.W_K.shape, m.weights.W_gate.shape
    (torch.Size([2, 4, 32, 8]), torch.Size([2, 32, 48]))
"""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import (
    Adapter,
    AttnInputs,
    Dims,
    HFModule,
    Tap,
    WeightViews,
    decoder_dims,
    expand_kv,
    llama_layout_taps,
    split_heads_in,
    zeros_if_none,
)
from interp.sites import Component


def _dims(c: Any) -> Dims:
    return decoder_dims(c)


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    nq, nkv = d.n_heads * d.d_head, d.n_kv_heads * d.d_head
    W_Q, W_K, W_V, b_Q, b_K, b_V = [], [], [], [], [], []
    for blk in layers:
        lin = blk.self_attn.qkv_proj
        w = lin.weight.detach()
        b = zeros_if_none(lin.bias, nq + 2 * nkv, like=lin.weight)
        W_Q.append(split_heads_in(w[:nq], d.n_heads))
        W_K.append(expand_kv(split_heads_in(w[nq:nq + nkv], d.n_kv_heads), d.n_rep))
        W_V.append(expand_kv(split_heads_in(w[nq + nkv:], d.n_kv_heads), d.n_rep))
        b_Q.append(b[:nq].reshape(d.n_heads, d.d_head))
        b_K.append(expand_kv(b[nq:nq + nkv].reshape(d.n_kv_heads, d.d_head), d.n_rep))
        b_V.append(expand_kv(b[nq + nkv:].reshape(d.n_kv_heads, d.d_head), d.n_rep))
    gate_up = [blk.mlp.gate_up_proj.weight.detach() for blk in layers]  # [2*d_mlp, d_model]: gate rows first
    o = [blk.self_attn.o_proj for blk in layers]
    down = [blk.mlp.down_proj for blk in layers]
    return WeightViews(
        W_E=model.model.embed_tokens.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        W_Q=torch.stack(W_Q), W_K=torch.stack(W_K), W_V=torch.stack(W_V),
        b_Q=torch.stack(b_Q), b_K=torch.stack(b_K), b_V=torch.stack(b_V),
        W_O=torch.stack([lin.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model) for lin in o]),
        b_O=torch.stack([zeros_if_none(lin.bias, d.d_model, like=lin.weight) for lin in o]),
        W_gate=torch.stack([w[:d.d_mlp].T for w in gate_up]),
        W_in=torch.stack([w[d.d_mlp:].T for w in gate_up]),
        W_out=torch.stack([lin.weight.detach().T for lin in down]),
        b_in=torch.zeros(d.n_layers, d.d_mlp, dtype=gate_up[0].dtype, device=gate_up[0].device),
        b_out=torch.stack([zeros_if_none(lin.bias, d.d_model, like=lin.weight) for lin in down]),
        ln1_w=torch.stack([blk.input_layernorm.weight.detach() for blk in layers]),
        ln2_w=torch.stack([blk.post_attention_layernorm.weight.detach() for blk in layers]),
        ln_final_w=model.model.norm.weight.detach(),
        norm="rms",
    )


_QKV = "model.layers.{L}.self_attn.qkv_proj"

ADAPTER = Adapter(
    family="phi3",
    model_types=("phi3",),
    layers="model.layers",
    attn="model.layers.{L}.self_attn",
    taps=llama_layout_taps({Component.MLP_PRE: Tap("model.layers.{L}.mlp.activation_fn", "in")}),
    mid_delta="model.layers.{L}.mlp",
    attn_inputs=AttnInputs("model.layers.{L}.input_layernorm", _QKV, _QKV, _QKV),  # [q | k | v], k/v per kv head
    dims=_dims,
    weights=_weights,
)
