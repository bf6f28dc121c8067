"""Gemma (1): a Llama-style pre-norm block with Gemma's conventions.

- the embedding is scaled by ``sqrt(d_model)`` inside the embedding module, so ``hook_embed`` and the
  ``W_E`` view include the scale (``W_E = embed_tokens.weight * sqrt(d_model)`` in the weights' dtype, as
  the forward computes it); ``W_U`` is the unscaled tied matrix;
- RMSNorm multiplies by ``(1 + w)``: the norm views ``ln1_w``, ``ln2_w``, ``ln_final_w`` are ``1 + w``;
- the MLP is gated (``gelu_pytorch_tanh``): ``mlp.hook_pre`` is the gate projection, ``mlp.hook_post``
  ``act(gate) * up``.

Example:
    >>> import interp
    >>> from transformers import GemmaConfig, GemmaForCausalLM
    >>> m = interp.from_hf(GemmaForCausalLM(GemmaConfig(hidden_size=32, intermediate_size=48,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=64,
    ...     pad_token_id=0, bos_token_id=1, eos_token_id=2)))
    >>> m.adapter.family, m.weights.W_Q.shape
    ('gemma', torch.Size([2, 4, 32, 8]))
"""

from __future__ import annotations

from typing import Any

import torch

from interp.models.adapters.base import (
    Adapter,
    Dims,
    HFModule,
    WeightViews,
    attention_views,
    decoder_dims,
    gated_mlp_views,
    llama_attn_inputs,
    llama_layout_taps,
)


def scaled_embedding(embed: HFModule) -> torch.Tensor:
    """What a Gemma ``*ScaledWordEmbedding`` returns per token: ``weight * embed_scale`` (in the weights' dtype)."""
    w = embed.weight.detach()
    scale = getattr(embed, "embed_scale", None)
    if scale is None:
        return w
    return w * scale.to(device=w.device, dtype=w.dtype) if isinstance(scale, torch.Tensor) else w * scale


def one_plus(norm: HFModule) -> torch.Tensor:
    """The effective scale ``1 + w`` of a Gemma RMSNorm (computed in float32, as its forward does, then cast)."""
    w = norm.weight.detach()
    return (1.0 + w.float()).to(w.dtype)


def _dims(c: Any) -> Dims:
    return decoder_dims(c)


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    return WeightViews(
        W_E=scaled_embedding(model.model.embed_tokens),
        W_U=model.lm_head.weight.detach().T,
        **attention_views([b.self_attn for b in layers], d),
        **gated_mlp_views([b.mlp for b in layers], d),
        ln1_w=torch.stack([one_plus(b.input_layernorm) for b in layers]),
        ln2_w=torch.stack([one_plus(b.post_attention_layernorm) for b in layers]),
        ln_final_w=one_plus(model.model.norm),
        norm="rms",
    )


ADAPTER = Adapter(
    family="gemma",
    model_types=("gemma",),
    layers="model.layers",
    attn="model.layers.{L}.self_attn",
    taps=llama_layout_taps(),
    attn_inputs=llama_attn_inputs(),
    mid_delta="model.layers.{L}.mlp",
    dims=_dims,
    weights=_weights,
)
