"""GPT-NeoX / Pythia: pre-LayerNorm, partial rotary, fused per-head QKV, optional parallel residual."""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import Adapter, AttnInputs, Dims, HFModule, Tap, WeightViews, zeros_if_none
from interp.sites import Component


def _dims(c: Any) -> Dims:
    return Dims(
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_kv_heads=c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        n_ctx=getattr(c, "max_position_embeddings", None),
    )


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.gpt_neox.layers
    Ws, Bs = [], []
    for b in layers:
        qkv = b.attention.query_key_value
        # rows are grouped per head as [q | k | v] blocks of d_head
        w = qkv.weight.detach().reshape(d.n_heads, 3, d.d_head, d.d_model)
        Ws.append(w.permute(1, 0, 3, 2))  # [3, head, d_model, d_head]
        bias = zeros_if_none(qkv.bias, 3 * d.d_model, like=qkv.weight)  # config.attention_bias=False: no biases
        Bs.append(bias.reshape(d.n_heads, 3, d.d_head).permute(1, 0, 2))
    W, B = torch.stack(Ws), torch.stack(Bs)
    g = model.gpt_neox
    return WeightViews(
        W_E=g.embed_in.weight.detach(),
        W_U=model.get_output_embeddings().weight.detach().T,
        W_Q=W[:, 0], W_K=W[:, 1], W_V=W[:, 2],
        b_Q=B[:, 0], b_K=B[:, 1], b_V=B[:, 2],
        W_O=torch.stack([b.attention.dense.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model) for b in layers]),
        b_O=torch.stack([zeros_if_none(b.attention.dense.bias, d.d_model, like=b.attention.dense.weight) for b in layers]),
        W_in=torch.stack([b.mlp.dense_h_to_4h.weight.detach().T for b in layers]),
        W_out=torch.stack([b.mlp.dense_4h_to_h.weight.detach().T for b in layers]),
        b_in=torch.stack([b.mlp.dense_h_to_4h.bias.detach() for b in layers]),
        b_out=torch.stack([b.mlp.dense_4h_to_h.bias.detach() for b in layers]),
        ln1_w=torch.stack([b.input_layernorm.weight.detach() for b in layers]),
        ln1_b=torch.stack([b.input_layernorm.bias.detach() for b in layers]),
        ln2_w=torch.stack([b.post_attention_layernorm.weight.detach() for b in layers]),
        ln2_b=torch.stack([b.post_attention_layernorm.bias.detach() for b in layers]),
        ln_final_w=g.final_layer_norm.weight.detach(),
        ln_final_b=g.final_layer_norm.bias.detach(),
        norm="layer",
    )


def _unavailable(c: Any) -> frozenset[Component]:
    # With the parallel residual, attention and MLP both read resid_pre: there is no resid_mid.
    return frozenset({Component.RESID_MID}) if getattr(c, "use_parallel_residual", False) else frozenset()


_QKV = "gpt_neox.layers.{L}.attention.query_key_value"

ADAPTER = Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    attn="gpt_neox.layers.{L}.attention",
    taps={
        Component.EMBED: Tap("gpt_neox.embed_in", "out"),
        Component.RESID_PRE: Tap("gpt_neox.layers.{L}", "in"),
        Component.ATTN_OUT: Tap("gpt_neox.layers.{L}.attention", "out"),
        Component.RESID_MID: Tap("gpt_neox.layers.{L}.post_attention_layernorm", "in"),
        Component.MLP_OUT: Tap("gpt_neox.layers.{L}.mlp", "out"),
        Component.RESID_POST: Tap("gpt_neox.layers.{L}", "out"),
        Component.Z: Tap("gpt_neox.layers.{L}.attention.dense", "in", split_heads=True),
        Component.MLP_PRE: Tap("gpt_neox.layers.{L}.mlp.dense_h_to_4h", "out"),
        Component.MLP_POST: Tap("gpt_neox.layers.{L}.mlp.dense_4h_to_h", "in"),
        Component.LN_FINAL: Tap("gpt_neox.final_layer_norm", "out"),
        Component.LOGITS: Tap("lm_head", "out"),
    },
    mid_delta="gpt_neox.layers.{L}.mlp",
    dims=_dims,
    weights=_weights,
    unavailable=_unavailable,
    # one fused projection laid out [head, (q, k, v), d_head]
    attn_inputs=AttnInputs("gpt_neox.layers.{L}.input_layernorm", _QKV, _QKV, _QKV, layout="per_head"),
)
