"""Falcon: fused query/key/value (multi-query, grouped or per-head layouts), parallel attention and MLP.

Three layouts, read from the config:

- Falcon-7B (``multi_query``, ``parallel_attn``): one key/value head shared by all query heads; attention and
  MLP both read ``input_layernorm(resid_pre)``: no ``hook_resid_mid``;
- Falcon-40B/180B (``new_decoder_architecture``): grouped key/value heads (``num_kv_heads``), fused rows grouped
  per key/value head ``[q_0 .. q_{r-1}, k, v]``, parallel attention and MLP with their own norms
  (``ln_attn``/``ln_mlp``) or one (``num_ln_in_parallel_attn=1``);
- sequential blocks (``parallel_attn=False``) have ``hook_resid_mid``.

Falcon's attention does not call ``transformers``' attention interface, so its ``hook_q/k/v/pattern`` come from
a :class:`~interp.models.adapters.Kernel`: while a run asks for them, the attention module runs
:func:`_attention` (Falcon's own computation with the hook points; keys/values expanded to one per query head).
Rotary models and ALiBi models (the ALiBi bias rides in the attention mask, as in Falcon's SDPA path, the
default) are both served. For ALiBi models ``transformers``' own eager path disagrees with its SDPA path (it adds
the bias to the scores and again through the mask: logits differ by O(1) on a tiny model); interp follows SDPA. In the parallel block the model adds the attention output into the MLP output in place; the
``hook_mlp_out`` tap hands the model a copy, so a capture keeps the MLP's own output.

Example:
    >>> import interp
    >>> from transformers import FalconConfig, FalconForCausalLM
    >>> m = interp.from_hf(FalconForCausalLM(FalconConfig(hidden_size=32, num_hidden_layers=2,
    ...     num_attention_heads=4, vocab_size=64)))
    >>> m.dims.n_kv_heads, m.weights.W_K.shape  # multi-query: one key head, viewed per query head
    (1, torch.Size([2, 4, 32, 8]))
"""

from __future__ import annotations

import math
from typing import Any

import torch

from interp.models.adapters.base import (
    Adapter,
    Dims,
    HFModule,
    Kernel,
    KernelHook,
    Tap,
    WeightViews,
    expand_kv,
    zeros_if_none,
)
from interp.sites import Component


def _n_kv(c: Any) -> int:
    if c.new_decoder_architecture:
        return int(c.num_kv_heads)
    return 1 if c.multi_query else int(c.num_attention_heads)


def _parallel(c: Any) -> bool:
    return bool(c.new_decoder_architecture or c.parallel_attn)


def _dims(c: Any) -> Dims:
    return Dims(
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_kv_heads=_n_kv(c),
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        d_mlp=c.ffn_hidden_size,
        d_vocab=c.vocab_size,
        n_ctx=None if c.alibi else getattr(c, "max_position_embeddings", None),
    )


def _split_qkv(t: torch.Tensor, c: Any, d: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused rows ``[n_out, ...]`` → per-head ``q [n_heads, d_head, ...]``, ``k, v [n_kv, d_head, ...]``."""
    rest = t.shape[1:]
    if c.new_decoder_architecture:
        g = t.reshape(d.n_kv_heads, d.n_rep + 2, d.d_head, *rest)
        return g[:, :-2].reshape(d.n_heads, d.d_head, *rest), g[:, -2], g[:, -1]
    if c.multi_query:
        g = t.reshape(d.n_heads + 2, d.d_head, *rest)
        return g[:-2], g[-2:-1], g[-1:]
    g = t.reshape(d.n_heads, 3, d.d_head, *rest)
    return g[:, 0], g[:, 1], g[:, 2]


def _weights(model: HFModule, d: Dims) -> WeightViews:
    c = model.config
    blocks = model.transformer.h
    Ws: dict[str, list[torch.Tensor]] = {n: [] for n in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V")}
    for b in blocks:
        lin = b.self_attention.query_key_value
        q, k, v = _split_qkv(lin.weight.detach(), c, d)  # [heads, d_head, d_model]
        Ws["W_Q"].append(q.transpose(1, 2))
        Ws["W_K"].append(expand_kv(k.transpose(1, 2), d.n_heads // k.shape[0]))
        Ws["W_V"].append(expand_kv(v.transpose(1, 2), d.n_heads // v.shape[0]))
        bias = zeros_if_none(lin.bias, lin.weight.shape[0], like=lin.weight)
        bq, bk, bv = _split_qkv(bias, c, d)
        Ws["b_Q"].append(bq)
        Ws["b_K"].append(expand_kv(bk, d.n_heads // bk.shape[0]))
        Ws["b_V"].append(expand_kv(bv, d.n_heads // bv.shape[0]))

    def norms(b: HFModule) -> tuple[HFModule, HFModule]:
        if c.new_decoder_architecture and c.num_ln_in_parallel_attn == 2:
            return b.ln_attn, b.ln_mlp
        if _parallel(c):
            return b.input_layernorm, b.input_layernorm
        return b.input_layernorm, b.post_attention_layernorm

    ln = [norms(b) for b in blocks]
    dense = [b.self_attention.dense for b in blocks]
    mlps = [b.mlp for b in blocks]
    return WeightViews(
        W_E=model.transformer.word_embeddings.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        **{n: torch.stack(ts) for n, ts in Ws.items()},  # type: ignore[arg-type]
        W_O=torch.stack([lin.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model) for lin in dense]),
        b_O=torch.stack([zeros_if_none(lin.bias, d.d_model, like=lin.weight) for lin in dense]),
        W_in=torch.stack([m.dense_h_to_4h.weight.detach().T for m in mlps]),
        W_out=torch.stack([m.dense_4h_to_h.weight.detach().T for m in mlps]),
        b_in=torch.stack([zeros_if_none(m.dense_h_to_4h.bias, d.d_mlp, like=m.dense_h_to_4h.weight) for m in mlps]),
        b_out=torch.stack([zeros_if_none(m.dense_4h_to_h.bias, d.d_model, like=m.dense_4h_to_h.weight) for m in mlps]),
        ln1_w=torch.stack([a.weight.detach() for a, _ in ln]), ln1_b=torch.stack([a.bias.detach() for a, _ in ln]),
        ln2_w=torch.stack([m.weight.detach() for _, m in ln]), ln2_b=torch.stack([m.bias.detach() for _, m in ln]),
        ln_final_w=model.transformer.ln_f.weight.detach(),
        ln_final_b=model.transformer.ln_f.bias.detach(),
        norm="layer",
    )


def _attention(module: HFModule, hook: KernelHook, hidden_states: torch.Tensor, alibi: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
               layer_past: Any = None, use_cache: bool = False, output_attentions: bool = False,
               position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``FalconAttention.forward`` with hook points for q, k, v (``[batch, pos, head, d_head]``, one per query head)
    and the pattern; the scores are ``q @ k^T / sqrt(d_head) + attention_mask`` (which carries ALiBi's bias)."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    n_heads, d_head = module.num_heads, module.head_dim
    fused = module.query_key_value(hidden_states)
    q, k, v = module._split_heads(fused)
    b, s = q.shape[:2]
    n_kv = n_heads if module.new_decoder_architecture else module.num_kv_heads
    q = q.transpose(1, 2).reshape(b, n_heads, s, d_head)
    k = k.transpose(1, 2).reshape(b, n_kv, s, d_head)
    v = v.transpose(1, 2).reshape(b, n_kv, s, d_head)
    if alibi is None:
        assert position_embeddings is not None
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    if layer_past is not None:
        k, v = layer_past.update(k, v, module.layer_idx)
    if k.shape[1] != n_heads:  # one key/value head (multi-query): broadcast, as Falcon's matmul does
        k = k.expand(b, n_heads, *k.shape[2:])
        v = v.expand(b, n_heads, *v.shape[2:])
    q = hook(Component.Q, q.transpose(1, 2)).transpose(1, 2)
    k = hook(Component.K, k.transpose(1, 2)).transpose(1, 2)
    v = hook(Component.V, v.transpose(1, 2)).transpose(1, 2)
    scores = q @ k.transpose(-1, -2)
    scores = scores / math.sqrt(d_head)
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None:
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :k_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., :k_len]
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
    probs = hook(Component.PATTERN, probs)
    out = (probs @ v).permute(0, 2, 1, 3).reshape(b, q_len, n_heads * d_head)
    return module.dense(out), probs


def _unavailable(c: Any) -> frozenset[Component]:
    return frozenset({Component.RESID_MID}) if _parallel(c) else frozenset()


ADAPTER = Adapter(
    family="falcon",
    model_types=("falcon",),
    layers="transformer.h",
    attn="transformer.h.{L}.self_attention",
    taps={
        Component.EMBED: Tap("transformer.word_embeddings", "out"),
        Component.RESID_PRE: Tap("transformer.h.{L}", "in"),
        Component.ATTN_OUT: Tap("transformer.h.{L}.self_attention", "out"),
        Component.RESID_MID: Tap("transformer.h.{L}.post_attention_layernorm", "in"),
        Component.MLP_OUT: Tap("transformer.h.{L}.mlp", "out", copy=True),
        Component.RESID_POST: Tap("transformer.h.{L}", "out"),
        Component.Z: Tap("transformer.h.{L}.self_attention.dense", "in", split_heads=True),
        Component.MLP_PRE: Tap("transformer.h.{L}.mlp.dense_h_to_4h", "out"),
        Component.MLP_POST: Tap("transformer.h.{L}.mlp.dense_4h_to_h", "in"),
        Component.LN_FINAL: Tap("transformer.ln_f", "out"),
        Component.LOGITS: Tap("lm_head", "out"),
    },
    mid_delta="transformer.h.{L}.mlp",
    kernels=(Kernel("transformer.h.{L}.self_attention",
                    frozenset({Component.Q, Component.K, Component.V, Component.PATTERN}), _attention),),
    dims=_dims,
    weights=_weights,
    unavailable=_unavailable,
)
