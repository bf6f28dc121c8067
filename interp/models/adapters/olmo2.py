"""OLMo 2: post-norm blocks (the sublayer outputs are normalised, not their inputs) and q/k norms.

::

    resid_mid  = resid_pre + post_attention_layernorm(attn(resid_pre))
    resid_post = resid_mid + post_feedforward_layernorm(mlp(resid_mid))

Attention and MLP read the residual stream without a norm in front: ``ln1_w``/``ln2_w`` are ones.
``hook_attn_out`` / ``hook_mlp_out`` are what each sublayer adds to the residual stream (after its norm);
``hook_attn_raw`` / ``hook_mlp_raw`` (``[batch, pos, d_model]``) are the outputs before it
(``z @ W_O == attn_raw``, ``mlp.hook_post @ W_out == mlp_raw``). ``q_norm``/``k_norm`` are RMSNorms over the
whole projection (all heads together), applied before rotary: ``hook_q``/``hook_k`` are what the scores see,
``W_Q``/``W_K`` the plain projections. OLMoE shares the q/k norm but is pre-norm (:mod:`.moe`).

Example:
    >>> import interp
    >>> from transformers import Olmo2Config, Olmo2ForCausalLM
    >>> m = interp.from_hf(Olmo2ForCausalLM(Olmo2Config(hidden_size=32, intermediate_size=48,
    ...     num_hidden_layers=2, num_attention_heads=4, vocab_size=64, pad_token_id=0, bos_token_id=1,
    ...     eos_token_id=2)))
    >>> [n for n in m.hook_names() if n.startswith("blocks.0.") and "raw" in n]
    ['blocks.0.hook_attn_raw', 'blocks.0.hook_mlp_raw']
"""

from __future__ import annotations

from typing import Any

from interp.models.adapters.base import (
    Adapter,
    Dims,
    HFModule,
    Tap,
    WeightViews,
    attention_views,
    decoder_dims,
    gated_mlp_views,
    llama_attn_inputs,
    llama_layout_taps,
    ones_like_norm,
)
from interp.sites import Component


def _dims(c: Any) -> Dims:
    return decoder_dims(c)


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    like = model.model.norm.weight
    return WeightViews(
        W_E=model.model.embed_tokens.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        **attention_views([b.self_attn for b in layers], d),
        **gated_mlp_views([b.mlp for b in layers], d),
        ln1_w=ones_like_norm(d, like),
        ln2_w=ones_like_norm(d, like),
        ln_final_w=model.model.norm.weight.detach(),
        norm="rms",
    )


ADAPTER = Adapter(
    family="olmo2",
    model_types=("olmo2",),
    layers="model.layers",
    attn="model.layers.{L}.self_attn",
    taps=llama_layout_taps({
        Component.ATTN_RAW: Tap("model.layers.{L}.self_attn", "out"),
        Component.ATTN_OUT: Tap("model.layers.{L}.post_attention_layernorm", "out"),
        Component.RESID_MID: Tap("model.layers.{L}.mlp", "in"),
        Component.MLP_RAW: Tap("model.layers.{L}.mlp", "out"),
        Component.MLP_OUT: Tap("model.layers.{L}.post_feedforward_layernorm", "out"),
    }),
    mid_delta="model.layers.{L}.post_feedforward_layernorm",
    attn_inputs=llama_attn_inputs(norm=None),  # no norm before attention
    dims=_dims,
    weights=_weights,
)
