"""GPT-2: pre-LayerNorm, learned positions, Conv1D weights stored ``[in, out]``."""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import Adapter, AttnInputs, Dims, HFModule, Tap, WeightViews
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
    qkv_w, qkv_b = [], []
    for b in blocks:
        w = b.attn.c_attn.weight.detach()  # [d_model, 3*d_model]
        qkv_w.append(w.reshape(d.d_model, 3, d.n_heads, d.d_head).permute(1, 2, 0, 3))  # [3, head, d_model, d_head]
        qkv_b.append(b.attn.c_attn.bias.detach().reshape(3, d.n_heads, d.d_head))
    W = torch.stack(qkv_w)  # [layer, 3, head, d_model, d_head]
    B = torch.stack(qkv_b)
    tf = model.transformer
    return WeightViews(
        W_E=tf.wte.weight.detach(),
        W_pos=tf.wpe.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        W_Q=W[:, 0], W_K=W[:, 1], W_V=W[:, 2],
        b_Q=B[:, 0], b_K=B[:, 1], b_V=B[:, 2],
        W_O=torch.stack([b.attn.c_proj.weight.detach().reshape(d.n_heads, d.d_head, d.d_model) for b in blocks]),
        b_O=torch.stack([b.attn.c_proj.bias.detach() for b in blocks]),
        W_in=torch.stack([b.mlp.c_fc.weight.detach() for b in blocks]),
        W_out=torch.stack([b.mlp.c_proj.weight.detach() for b in blocks]),
        b_in=torch.stack([b.mlp.c_fc.bias.detach() for b in blocks]),
        b_out=torch.stack([b.mlp.c_proj.bias.detach() for b in blocks]),
        ln1_w=torch.stack([b.ln_1.weight.detach() for b in blocks]),
        ln1_b=torch.stack([b.ln_1.bias.detach() for b in blocks]),
        ln2_w=torch.stack([b.ln_2.weight.detach() for b in blocks]),
        ln2_b=torch.stack([b.ln_2.bias.detach() for b in blocks]),
        ln_final_w=tf.ln_f.weight.detach(),
        ln_final_b=tf.ln_f.bias.detach(),
        norm="layer",
    )


_QKV = "transformer.h.{L}.attn.c_attn"

ADAPTER = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    attn="transformer.h.{L}.attn",
    taps={
        Component.EMBED: Tap("transformer.wte", "out"),
        Component.RESID_PRE: Tap("transformer.h.{L}", "in"),
        Component.ATTN_OUT: Tap("transformer.h.{L}.attn", "out"),
        Component.RESID_MID: Tap("transformer.h.{L}.ln_2", "in"),
        Component.MLP_OUT: Tap("transformer.h.{L}.mlp", "out"),
        Component.RESID_POST: Tap("transformer.h.{L}", "out"),
        Component.Z: Tap("transformer.h.{L}.attn.c_proj", "in", split_heads=True),
        Component.MLP_PRE: Tap("transformer.h.{L}.mlp.c_fc", "out"),
        Component.MLP_POST: Tap("transformer.h.{L}.mlp.c_proj", "in"),
        Component.LN_FINAL: Tap("transformer.ln_f", "out"),
        Component.LOGITS: Tap("lm_head", "out"),
    },
    mid_delta="transformer.h.{L}.mlp",
    dims=_dims,
    weights=_weights,
    attn_inputs=AttnInputs("transformer.h.{L}.ln_1", _QKV, _QKV, _QKV),  # one projection: [q | k | v]
)
