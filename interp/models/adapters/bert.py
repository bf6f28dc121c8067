"""BERT-style encoders (BERT, MiniLM): post-LayerNorm blocks, bidirectional attention, no LM head.

In a post-norm block the residual stream is re-normalised after each sublayer, so
``hook_resid_mid`` is the attention block's normalised output and ``hook_resid_post`` the layer's
output; ``hook_attn_out`` and ``hook_mlp_out`` are the sublayer outputs before the add-and-norm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from interp.models.adapters.base import Adapter, AttnInputs, Dims, HFModule, Tap, WeightViews, split_heads_in
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
        n_ctx=c.max_position_embeddings,
    )


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.encoder.layer

    def heads(lin: nn.Linear) -> torch.Tensor:
        return split_heads_in(lin.weight.detach(), d.n_heads)

    def hbias(lin: nn.Linear) -> torch.Tensor:
        return lin.bias.detach().reshape(d.n_heads, d.d_head)

    s = [b.attention.self for b in layers]
    return WeightViews(
        W_E=model.embeddings.word_embeddings.weight.detach(),
        W_pos=model.embeddings.position_embeddings.weight.detach(),
        W_U=None,
        W_Q=torch.stack([heads(a.query) for a in s]),
        W_K=torch.stack([heads(a.key) for a in s]),
        W_V=torch.stack([heads(a.value) for a in s]),
        b_Q=torch.stack([hbias(a.query) for a in s]),
        b_K=torch.stack([hbias(a.key) for a in s]),
        b_V=torch.stack([hbias(a.value) for a in s]),
        W_O=torch.stack([b.attention.output.dense.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model) for b in layers]),
        b_O=torch.stack([b.attention.output.dense.bias.detach() for b in layers]),
        W_in=torch.stack([b.intermediate.dense.weight.detach().T for b in layers]),
        W_out=torch.stack([b.output.dense.weight.detach().T for b in layers]),
        b_in=torch.stack([b.intermediate.dense.bias.detach() for b in layers]),
        b_out=torch.stack([b.output.dense.bias.detach() for b in layers]),
        ln1_w=torch.stack([b.attention.output.LayerNorm.weight.detach() for b in layers]),
        ln1_b=torch.stack([b.attention.output.LayerNorm.bias.detach() for b in layers]),
        ln2_w=torch.stack([b.output.LayerNorm.weight.detach() for b in layers]),
        ln2_b=torch.stack([b.output.LayerNorm.bias.detach() for b in layers]),
        ln_final_w=None,
        norm="layer",
    )


ADAPTER = Adapter(
    family="bert",
    model_types=("bert",),
    layers="encoder.layer",
    attn="encoder.layer.{L}.attention.self",
    taps={
        Component.EMBED: Tap("embeddings.word_embeddings", "out"),
        Component.RESID_PRE: Tap("encoder.layer.{L}", "in"),
        Component.ATTN_OUT: Tap("encoder.layer.{L}.attention.output.dense", "out"),
        Component.RESID_MID: Tap("encoder.layer.{L}.attention", "out"),
        Component.MLP_OUT: Tap("encoder.layer.{L}.output.dense", "out"),
        Component.RESID_POST: Tap("encoder.layer.{L}", "out"),
        Component.Z: Tap("encoder.layer.{L}.attention.output.dense", "in", split_heads=True),
        Component.MLP_PRE: Tap("encoder.layer.{L}.intermediate.dense", "out"),
        Component.MLP_POST: Tap("encoder.layer.{L}.output.dense", "in"),
    },
    mid_delta=None,
    is_causal=False,
    dims=_dims,
    weights=_weights,
    # post-norm: the projections read the block's input directly
    attn_inputs=AttnInputs(None, "encoder.layer.{L}.attention.self.query", "encoder.layer.{L}.attention.self.key",
                           "encoder.layer.{L}.attention.self.value"),
)
