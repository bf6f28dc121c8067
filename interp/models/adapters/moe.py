"""Mixture-of-experts decoders: Mixtral, OLMoE, Qwen2-MoE (Qwen1.5-MoE) and Qwen3-MoE.

Attention and the residual stream are Llama's (OLMoE adds OLMo's whole-projection q/k norm and ``clip_qkv``,
Qwen3-MoE Qwen3's per-head q/k norm). The MLP of each block is a sparse mixture: a router scores the experts
per token, the top ``k`` run, and their outputs are summed with the router's weights (Qwen2-MoE adds a
shared expert behind a sigmoid gate). In ``transformers`` 5 the experts of a layer are fused 3-D parameters
(``experts.gate_up_proj [expert, 2*d_mlp, d_model]``, ``experts.down_proj [expert, d_model, d_mlp]``), not a
list of modules, so no submodule's output is "one expert's output"; these hook points come from a
:class:`~interp.models.adapters.Kernel` on the MoE block (``model.layers.{L}.mlp``):

=================================  ===========================  ================================================
hook point                         shape                        what
=================================  ===========================  ================================================
``blocks.L.mlp.hook_router_logits``  ``[batch, pos, expert]``     the router's logits; an edit re-routes (softmax,
                                                                top-k and renormalisation are recomputed)
``blocks.L.mlp.hook_router_weights`` ``[batch, pos, expert]``     the weight each expert's output gets: the top-k
                                                                softmax weights, zero for the experts not chosen
                                                                (the chosen experts are its non-zeros); an edit
                                                                runs the experts it makes non-zero with its weights
``blocks.L.mlp.hook_expert_out``     ``[batch, pos, expert, d_model]``  each expert's weighted output (zero where
                                                                not chosen); ``hook_mlp_out`` is their sum (plus
                                                                the shared expert in Qwen2-MoE)
=================================  ===========================  ================================================

A run that asks for none of them never touches the block; one that only reads them gets the model's own MLP
output (bit-identical logits); one that edits them sums the experts itself (equal up to float rounding).
``expert_out`` costs ``batch * pos * n_experts * d_model`` values: ask for the layers you need.
Per-expert ablation is :class:`interp.hooks.experts.AblateExperts`. ``mlp.hook_pre``/``hook_post`` do not exist
(there is no single MLP), and ``WeightViews.W_in/W_gate/W_out`` raise, naming why; the experts' weights are
``W_gate_experts``/``W_in_experts [layer, expert, d_model, d_mlp]``, ``W_out_experts``, the router's
``W_router [layer, d_model, expert]``.

Example:
    >>> import interp, torch
    >>> from transformers import MixtralConfig, MixtralForCausalLM
    >>> m = interp.from_hf(MixtralForCausalLM(MixtralConfig(hidden_size=32, intermediate_size=48,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
    ...     num_experts_per_tok=2, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)))
    >>> out = m.run(torch.tensor([[1, 5, 9]]), capture=["router_weights.0", "expert_out.0", "mlp_out.0"])
    >>> w = out.trace["blocks.0.mlp.hook_router_weights"]
    >>> w.shape, (w != 0).sum(-1).tolist()  # two experts chosen per token
    (torch.Size([1, 3, 4]), [[2, 2, 2]])
    >>> bool(torch.allclose(out.trace["blocks.0.mlp.hook_expert_out"].sum(-2), out.trace["blocks.0.hook_mlp_out"],
    ...                     atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional

from interp.errors import BadInputError
from interp.models.adapters.base import (
    Adapter,
    Dims,
    HFModule,
    Kernel,
    KernelHook,
    WeightViews,
    attention_views,
    decoder_dims,
    llama_attn_inputs,
    llama_layout_taps,
    materialized,
    not_applicable,
)
from interp.sites import Component

MOE_COMPONENTS = frozenset({Component.ROUTER_LOGITS, Component.ROUTER_WEIGHTS, Component.EXPERT_OUT})


def _n_experts(c: Any) -> int:
    return int(getattr(c, "num_local_experts", None) or c.num_experts)


def _dims(c: Any) -> Dims:
    d_mlp = getattr(c, "moe_intermediate_size", None) or c.intermediate_size
    return decoder_dims(c, d_mlp=d_mlp, n_experts=_n_experts(c), n_experts_per_tok=int(c.num_experts_per_tok))


def _is_sparse(block_mlp: HFModule) -> bool:
    return hasattr(block_mlp, "gate") and hasattr(block_mlp, "experts") and hasattr(block_mlp.experts, "down_proj")


def _route(gate: HFModule, logits: torch.Tensor, cast_weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What the family's router does after its logits: softmax (at least float32), top-k, renormalise the top-k
    (Mixtral always; the others when ``norm_topk_prob``), cast back to the logits' dtype (all but Mixtral).
    Returns ``(weights, indices)``, both ``[tokens, k]``."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    top, idx = torch.topk(probs, gate.top_k, dim=-1)
    if getattr(gate, "norm_topk_prob", True):
        top = top / top.sum(dim=-1, keepdim=True)
    return (top.to(logits.dtype) if cast_weights else top), idx


def _expert_forward(experts: HFModule, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e`` of a fused experts module on tokens ``x [n, d_model]`` (unweighted), as its eager forward."""
    transposed = bool(getattr(experts, "is_transposed", False))
    bias = bool(getattr(experts, "has_bias", False))

    def lin(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return h @ w if transposed else functional.linear(h, w)

    if getattr(experts, "has_gate", True):
        h = lin(x, experts.gate_up_proj[e])
        if bias:
            h = h + experts.gate_up_proj_bias[e]
        h = experts._apply_gate(h)
    else:
        h = lin(x, experts.up_proj[e])
        if bias:
            h = h + experts.up_proj_bias[e]
        h = experts.act_fn(h)
    out = lin(h, experts.down_proj[e])
    return out + experts.down_proj_bias[e] if bias else out


def _experts_weighted(experts: HFModule, x: torch.Tensor, weights: torch.Tensor, keep: bool) -> torch.Tensor:
    """Every expert on the tokens that give it a non-zero weight (``weights [n, expert]``), times that weight:
    ``[n, expert, d_model]`` with ``keep``, else their sum ``[n, d_model]``.

    When ``weights`` needs a gradient every expert runs on every token: the output is linear in each weight,
    also in those that are zero, and the gradient with respect to a zero weight is that expert's output.
    (Also on the ``meta`` device, where no value tells which tokens chose an expert.)"""
    n, n_exp = weights.shape
    out = x.new_zeros((n, n_exp, x.shape[-1]) if keep else (n, x.shape[-1]))
    every = weights.requires_grad or x.is_meta  # on the meta device (shape checks) no value says which run
    active = range(n_exp) if every else (weights != 0).any(0).nonzero().flatten().tolist()
    with materialized(experts):
        for e in active:
            rows = torch.arange(n, device=x.device) if every else (weights[:, e] != 0).nonzero().flatten()
            y = (_expert_forward(experts, e, x[rows]) * weights[rows, e, None]).to(x.dtype)
            if keep:
                out[rows, e] = y
            else:
                out.index_add_(0, rows, y)
    return out


def _changed(new: torch.Tensor, seen: torch.Tensor) -> bool:
    """Whether the rest of the block must be computed from the hook's value: it was edited, or a gradient is
    taken at it (the model's own path starts from the tensor the hook point was read from, not from the hook point)."""
    return new is not seen or (torch.is_grad_enabled() and new.requires_grad)


def _moe_kernel(cast_weights: bool) -> Callable[..., torch.Tensor]:
    """The MoE block's forward with the router and expert hook points (``cast_weights``: the router casts its
    top-k weights back to the model's dtype, as all but Mixtral's do)."""

    def forward(block: HFModule, hook: KernelHook, hidden_states: torch.Tensor) -> torch.Tensor:
        if not _is_sparse(block):
            raise BadInputError(
                f"this layer's MLP is dense ({type(block).__name__}), not a mixture of experts: it has no "
                "router_logits, router_weights or expert_out; name the sparse layers (see the config's "
                "mlp_only_layers / decoder_sparse_step)")
        B, T, D = hidden_states.shape
        flat = hidden_states.view(-1, D)
        shared = block.shared_expert(flat) if hasattr(block, "shared_expert") else None
        gate, experts = block.gate, block.experts
        logits, weights, idx = gate(flat)
        n_exp = logits.shape[-1]
        if hook.wants(Component.ROUTER_LOGITS):
            seen = logits.view(B, T, n_exp)
            new = hook(Component.ROUTER_LOGITS, seen)
            if _changed(new, seen):
                weights, idx = _route(gate, new.reshape(-1, n_exp), cast_weights)
        dense: torch.Tensor | None = None
        edited = False
        if hook.wants(Component.ROUTER_WEIGHTS) or hook.wants(Component.EXPERT_OUT):
            dense = torch.zeros(flat.shape[0], n_exp, dtype=weights.dtype, device=weights.device).scatter(1, idx, weights)
        if hook.wants(Component.ROUTER_WEIGHTS):
            assert dense is not None
            seen = dense.to(flat.dtype).view(B, T, n_exp)
            new = hook(Component.ROUTER_WEIGHTS, seen)
            if _changed(new, seen):
                dense, edited = new.reshape(-1, n_exp), True
        if hook.wants(Component.EXPERT_OUT):
            assert dense is not None
            per = _experts_weighted(experts, flat, dense, keep=True).view(B, T, n_exp, D)
            new = hook(Component.EXPERT_OUT, per)
            out = new.sum(-2).reshape(-1, D) if (_changed(new, per) or edited) else experts(flat, idx, weights)
        elif edited:
            assert dense is not None
            out = _experts_weighted(experts, flat, dense, keep=False)
        else:
            out = experts(flat, idx, weights)
        if shared is not None:
            out = out + torch.sigmoid(block.shared_expert_gate(flat)) * shared
        return out.reshape(B, T, D)

    return forward


def _weights(model: HFModule, d: Dims) -> WeightViews:
    layers = model.model.layers
    family = model.config.model_type
    why = (f"{family}'s MLP is a mixture of {d.n_experts} experts ({d.n_experts_per_tok} per token), which has no "
           "single [d_model, d_mlp] matrix; use W_gate_experts / W_in_experts / W_out_experts (per expert) or "
           "the hook points router_weights / expert_out")
    sparse = [_is_sparse(b.mlp) for b in layers]
    expert_views: dict[str, Any] = {}
    if all(sparse):
        ex = [b.mlp.experts for b in layers]
        gu = [e.gate_up_proj.detach() for e in ex]  # [expert, 2*d_mlp, d_model] (or transposed)
        if getattr(ex[0], "is_transposed", False):
            gu = [w.transpose(1, 2) for w in gu]
            down = [e.down_proj.detach() for e in ex]  # [expert, d_mlp, d_model]
        else:
            down = [e.down_proj.detach().transpose(1, 2) for e in ex]
        expert_views = {
            "W_router": torch.stack([b.mlp.gate.weight.detach().T for b in layers]),
            "W_gate_experts": torch.stack([w[:, :d.d_mlp].transpose(1, 2) for w in gu]),
            "W_in_experts": torch.stack([w[:, d.d_mlp:].transpose(1, 2) for w in gu]),
            "W_out_experts": torch.stack(down),
        }
    else:
        dense = [i for i, s in enumerate(sparse) if not s]
        why += f" (layers {dense} are dense MLPs, so the expert views are not stacked either)"
        expert_views = {k: not_applicable(k, why) for k in ("W_router", "W_gate_experts", "W_in_experts", "W_out_experts")}
    return WeightViews(
        W_E=model.model.embed_tokens.weight.detach(),
        W_U=model.lm_head.weight.detach().T,
        **attention_views([b.self_attn for b in layers], d),
        W_in=not_applicable("W_in", why),
        W_gate=not_applicable("W_gate", why),
        W_out=not_applicable("W_out", why),
        ln1_w=torch.stack([b.input_layernorm.weight.detach() for b in layers]),
        ln2_w=torch.stack([b.post_attention_layernorm.weight.detach() for b in layers]),
        ln_final_w=model.model.norm.weight.detach(),
        norm="rms",
        **expert_views,
    )


def _adapter(family: str, model_types: tuple[str, ...], cast_weights: bool) -> Adapter:
    return Adapter(
        family=family,
        model_types=model_types,
        layers="model.layers",
        attn="model.layers.{L}.self_attn",
        taps=llama_layout_taps({Component.MLP_PRE: None, Component.MLP_POST: None}),
        mid_delta="model.layers.{L}.mlp",
        attn_inputs=llama_attn_inputs(),
        kernels=(Kernel("model.layers.{L}.mlp", MOE_COMPONENTS, _moe_kernel(cast_weights)),),
        dims=_dims,
        weights=_weights,
    )


MIXTRAL = _adapter("mixtral", ("mixtral",), cast_weights=False)
OLMOE = _adapter("olmoe", ("olmoe",), cast_weights=True)
QWEN2_MOE = _adapter("qwen2_moe", ("qwen2_moe",), cast_weights=True)
QWEN3_MOE = _adapter("qwen3_moe", ("qwen3_moe",), cast_weights=True)
ADAPTERS = (MIXTRAL, OLMOE, QWEN2_MOE, QWEN3_MOE)
