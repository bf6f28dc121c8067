"""Gemma 2 and Gemma 3 (text): sandwich-normed blocks, soft-capping and sliding-window layers.

Each block normalises its sublayers' inputs *and* outputs::

    resid_mid  = resid_pre + post_attention_layernorm(attn(input_layernorm(resid_pre)))
    resid_post = resid_mid + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(resid_mid)))

so ``hook_attn_out`` / ``hook_mlp_out`` are what each sublayer *adds* to the residual stream (after its
post-norm), and the extra hook points ``hook_attn_raw`` / ``hook_mlp_raw`` (``[batch, pos, d_model]``) are
the sublayer outputs before the post-norm: ``z @ W_O == attn_raw`` and ``mlp.hook_post @ W_out == mlp_raw``.

- Gemma 2 soft-caps attention scores (``attn_logit_softcapping``: interp's attention kernel applies it, so
  capturing the pattern leaves the logits unchanged) and the final logits (``final_logit_softcapping``):
  the ``logits`` hook reads the model's output, after the cap (``WeightViews.logit_softcap`` records it;
  ``Adapter.unembed`` applies it).
- Sliding-window layers (``config.layer_types``) see a windowed mask; the pattern hook shows it.
- Gemma 3 normalises each head's q and k (``q_norm``/``k_norm``, ``(1 + w)`` RMSNorm) before rotary, with a
  different rotary base on local and global layers: ``hook_q``/``hook_k`` are what the scores see.
- Embedding scale and ``(1 + w)`` norm views as in :mod:`interp.models.adapters.gemma`.
"""

from __future__ import annotations

from typing import Any

import torch

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
)
from interp.models.adapters.gemma import one_plus, scaled_embedding
from interp.sites import Component


def _dims(c: Any) -> Dims:
    return decoder_dims(c)


def _softcap(c: Any) -> float | None:
    cap = getattr(c, "final_logit_softcapping", None)
    return float(cap) if cap else None


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    return WeightViews(
        W_E=scaled_embedding(model.model.embed_tokens),
        W_U=model.lm_head.weight.detach().T,
        **attention_views([b.self_attn for b in layers], d),
        **gated_mlp_views([b.mlp for b in layers], d),
        ln1_w=torch.stack([one_plus(b.input_layernorm) for b in layers]),
        ln2_w=torch.stack([one_plus(b.pre_feedforward_layernorm) for b in layers]),
        ln_final_w=one_plus(model.model.norm),
        norm="rms",
        logit_softcap=_softcap(model.config),
    )


ADAPTER = Adapter(
    family="gemma2",
    model_types=("gemma2", "gemma3_text"),
    layers="model.layers",
    attn="model.layers.{L}.self_attn",
    taps=llama_layout_taps({
        Component.ATTN_RAW: Tap("model.layers.{L}.self_attn", "out"),
        Component.ATTN_OUT: Tap("model.layers.{L}.post_attention_layernorm", "out"),
        Component.RESID_MID: Tap("model.layers.{L}.pre_feedforward_layernorm", "in"),
        Component.MLP_RAW: Tap("model.layers.{L}.mlp", "out"),
        Component.MLP_OUT: Tap("model.layers.{L}.post_feedforward_layernorm", "out"),
        Component.LOGITS: Tap("", "out"),  # after the final soft-cap, which the model applies past lm_head
    }),
    # an edit of resid_mid reaches the MLP through pre_feedforward_layernorm's input and the residual
    # stream through the MLP branch's last output
    mid_delta="model.layers.{L}.post_feedforward_layernorm",
    attn_inputs=llama_attn_inputs(),
    dims=_dims,
    weights=_weights,
    final_softcap=_softcap,
)
