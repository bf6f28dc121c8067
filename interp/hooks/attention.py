"""interp's attention kernel: eager attention with hook points for q, k, v and the pattern.

Registered with ``transformers`` under the name ``"interp"`` (lazily, the first time a run asks for
an attention-internal hook) and selected through ``config._attn_implementation`` only for the
duration of such a run.

It reproduces the eager attention of every family that calls ``transformers``' attention interface, so
that capturing q, k, v or the pattern does not change the logits (bit for bit against the family's own
eager kernel in float32; tests/test_architectures.py checks each family):

- ``scaling`` as the attention module passes it (Gemma's ``query_pre_attn_scalar``);
- ``softcap``: Gemma 2's attention-logit soft-capping ``c * tanh(scores / c)``, before the mask;
- sliding windows and padding: already in ``attention_mask`` (interp registers ``transformers``' eager mask
  under its name, so ``create_sliding_window_causal_mask`` builds the windowed mask for it);
- q/k norms and rotary: applied by the attention module before the kernel, so ``hook_q``/``hook_k`` are
  what the scores see;
- scores in float32 for the families whose eager kernel computes them there (GPT-J; :data:`SCORES_IN_FLOAT32`),
  softmax in at least float32 everywhere, as ``transformers``' eager kernels do.

Families whose attention does not call the interface (Falcon) get their q/k/v/pattern from an adapter
:class:`~interp.models.adapters.Kernel` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from interp.sites import Component

ATTN_IMPL = "interp"

SCORES_IN_FLOAT32 = frozenset({"GPTJAttention", "CodeGenAttention"})
"""Attention classes whose eager kernel computes ``q @ k^T`` in float32 even in bf16/fp16 models."""


def interp_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with hook points for q, k, v (``[batch, head, pos, d_head]`` in, per query head)
    and the pattern. Registered with ``transformers`` under the name ``"interp"``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> q = k = v = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(0))
        >>> mod = nn.Module()
        >>> mod.is_causal = True
        >>> out, pattern = interp_attention(mod, q, k, v, None, scaling=0.5, softcap=1.0)
        >>> out.shape, pattern.shape  # [batch, pos, head, d_head], [batch, head, q_pos, k_pos]
        (torch.Size([1, 3, 2, 4]), torch.Size([1, 2, 3, 3]))
        >>> bool(pattern[0, 0].triu(1).eq(0).all()), bool(torch.allclose(pattern.sum(-1), torch.ones(1, 2, 3)))
        (True, True)
    """
    hook: Callable[[Component, torch.Tensor], torch.Tensor] | None = getattr(module, "_interp_attn_hook", None)
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:  # as transformers' repeat_kv does it (a view where it can be one): the same matmul kernels
        key = _repeat_kv(key, n_rep)
        value = _repeat_kv(value, n_rep)
    if hook is not None:
        query = hook(Component.Q, query.transpose(1, 2)).transpose(1, 2)
        key = hook(Component.K, key.transpose(1, 2)).transpose(1, 2)
        value = hook(Component.V, value.transpose(1, 2)).transpose(1, 2)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if type(module).__name__ in SCORES_IN_FLOAT32:
        up = torch.promote_types(query.dtype, torch.float32)
        scores = torch.matmul(query.to(up), key.to(up).transpose(-1, -2)) * scale
    else:
        scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
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
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(value.dtype)
    if hook is not None:
        probs = hook(Component.PATTERN, probs)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def _repeat_kv(t: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[batch, kv_head, pos, d_head]`` → ``[batch, kv_head * n_rep, pos, d_head]``, each key/value head repeated
    for the ``n_rep`` query heads of its group (``repeat_interleave`` along heads)."""
    b, n_kv, pos, d = t.shape
    return t[:, :, None].expand(b, n_kv, n_rep, pos, d).reshape(b, n_kv * n_rep, pos, d)


def register_attention() -> None:
    """Make ``"interp"`` a valid ``config._attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if ATTN_IMPL not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPL, interp_attention)
    if ATTN_IMPL not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(ATTN_IMPL, eager_mask)
