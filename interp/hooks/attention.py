"""interp's attention kernel: eager attention with hook points for q, k, v and the pattern.

Registered with ``transformers`` under the name ``"interp"`` (lazily, the first time a run asks for
an attention-internal hook) and selected through ``config._attn_implementation`` only for the
duration of such a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from interp.sites import Component

ATTN_IMPL = "interp"


def interp_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with hook points for q, k, v (``[batch, head, pos, d_head]`` in, per query head)
    and the pattern. Registered with ``transformers`` under the name ``"interp"``."""
    hook: Callable[[Component, torch.Tensor], torch.Tensor] | None = getattr(module, "_interp_attn_hook", None)
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if hook is not None:
        query = hook(Component.Q, query.transpose(1, 2)).transpose(1, 2)
        key = hook(Component.K, key.transpose(1, 2)).transpose(1, 2)
        value = hook(Component.V, value.transpose(1, 2)).transpose(1, 2)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None:
        if getattr(module, "is_causal", False) and q_len > 1:
            causal = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :k_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., :k_len]
    # softmax in at least float32 (bf16/fp16 models), but never below the model's own precision (float64)
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    if hook is not None:
        probs = hook(Component.PATTERN, probs)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def register_attention() -> None:
    """Make ``"interp"`` a valid ``config._attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if ATTN_IMPL not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPL, interp_attention)
    if ATTN_IMPL not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(ATTN_IMPL, eager_mask)
