"""Real model sizes without weights: the published ``config.json`` of nine models, built on the ``meta`` device.

For each: the adapter serves it, the dimensions and parameter count match the published model (an independent
check that the config dicts below are the real ones), a forward on ``meta`` tensors captures every hook point
(so every tap, kernel and attention hook resolves on the real module tree) with the shape the memory estimate
predicts (``interp.models.memory`` and the store writer's ``_trailing_shape`` / ``_fit_batch``), and the weight
views have the documented shapes. No weight is downloaded or allocated.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import interp
from interp.hooks.engine import HookedRun, forward, make_plans
from interp.models import Model
from interp.models.adapters import NotApplicable
from interp.models.memory import activation_shape, capture_bytes
from interp.sites import Component
from interp.trace.writer import _fit_batch, _trailing_shape

# config.json of each model as published on the Hugging Face hub (fields transformers reads; written out here)
REAL: dict[str, dict[str, Any]] = {
    'gemma-2-2b': {'architectures': ['Gemma2ForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'attn_logit_softcapping': 50.0, 'bos_token_id': 2, 'cache_implementation': 'hybrid', 'eos_token_id': 1, 'final_logit_softcapping': 30.0, 'head_dim': 256, 'hidden_act': 'gelu_pytorch_tanh', 'hidden_activation': 'gelu_pytorch_tanh', 'hidden_size': 2304, 'initializer_range': 0.02, 'intermediate_size': 9216, 'max_position_embeddings': 8192, 'model_type': 'gemma2', 'num_attention_heads': 8, 'num_hidden_layers': 26, 'num_key_value_heads': 4, 'pad_token_id': 0, 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06, 'rope_theta': 10000.0, 'sliding_window': 4096, 'torch_dtype': 'float32', 'vocab_size': 256000},
    'gemma-3-1b': {'architectures': ['Gemma3ForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'attn_logit_softcapping': None, 'bos_token_id': 2, 'cache_implementation': 'hybrid', 'eos_token_id': 1, 'final_logit_softcapping': None, 'head_dim': 256, 'hidden_activation': 'gelu_pytorch_tanh', 'hidden_size': 1152, 'initializer_range': 0.02, 'intermediate_size': 6912, 'max_position_embeddings': 32768, 'model_type': 'gemma3_text', 'num_attention_heads': 4, 'num_hidden_layers': 26, 'num_key_value_heads': 1, 'pad_token_id': 0, 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06, 'rope_local_base_freq': 10000, 'rope_scaling': None, 'rope_theta': 1000000, 'sliding_window': 512, 'sliding_window_pattern': 6, 'torch_dtype': 'bfloat16', 'use_cache': True, 'vocab_size': 262144},
    'llama-3.2-1b': {'architectures': ['LlamaForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'bos_token_id': 128000, 'eos_token_id': 128001, 'head_dim': 64, 'hidden_act': 'silu', 'hidden_size': 2048, 'initializer_range': 0.02, 'intermediate_size': 8192, 'max_position_embeddings': 131072, 'mlp_bias': False, 'model_type': 'llama', 'num_attention_heads': 32, 'num_hidden_layers': 16, 'num_key_value_heads': 8, 'pretraining_tp': 1, 'rms_norm_eps': 1e-05, 'rope_scaling': {'factor': 32.0, 'high_freq_factor': 4.0, 'low_freq_factor': 1.0, 'original_max_position_embeddings': 8192, 'rope_type': 'llama3'}, 'rope_theta': 500000.0, 'tie_word_embeddings': True, 'torch_dtype': 'bfloat16', 'use_cache': True, 'vocab_size': 128256},
    'llama-3.1-8b': {'architectures': ['LlamaForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'bos_token_id': 128000, 'eos_token_id': 128001, 'hidden_act': 'silu', 'hidden_size': 4096, 'initializer_range': 0.02, 'intermediate_size': 14336, 'max_position_embeddings': 131072, 'mlp_bias': False, 'model_type': 'llama', 'num_attention_heads': 32, 'num_hidden_layers': 32, 'num_key_value_heads': 8, 'pretraining_tp': 1, 'rms_norm_eps': 1e-05, 'rope_scaling': {'factor': 8.0, 'high_freq_factor': 4.0, 'low_freq_factor': 1.0, 'original_max_position_embeddings': 8192, 'rope_type': 'llama3'}, 'rope_theta': 500000.0, 'tie_word_embeddings': False, 'torch_dtype': 'bfloat16', 'use_cache': True, 'vocab_size': 128256},
    'qwen2.5-7b': {'architectures': ['Qwen2ForCausalLM'], 'attention_dropout': 0.0, 'bos_token_id': 151643, 'eos_token_id': 151643, 'hidden_act': 'silu', 'hidden_size': 3584, 'initializer_range': 0.02, 'intermediate_size': 18944, 'max_position_embeddings': 131072, 'max_window_layers': 28, 'model_type': 'qwen2', 'num_attention_heads': 28, 'num_hidden_layers': 28, 'num_key_value_heads': 4, 'rms_norm_eps': 1e-06, 'rope_theta': 1000000.0, 'sliding_window': 131072, 'tie_word_embeddings': False, 'torch_dtype': 'bfloat16', 'use_cache': True, 'use_sliding_window': False, 'vocab_size': 152064},
    'olmo-2-1b': {'architectures': ['Olmo2ForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'eos_token_id': 100257, 'hidden_act': 'silu', 'hidden_size': 2048, 'initializer_range': 0.02, 'intermediate_size': 8192, 'max_position_embeddings': 4096, 'model_type': 'olmo2', 'num_attention_heads': 16, 'num_hidden_layers': 16, 'num_key_value_heads': 16, 'pad_token_id': 100277, 'rms_norm_eps': 1e-06, 'rope_scaling': None, 'rope_theta': 500000, 'tie_word_embeddings': False, 'torch_dtype': 'float32', 'use_cache': True, 'vocab_size': 100352},
    'phi-3-mini': {'architectures': ['Phi3ForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0, 'bos_token_id': 1, 'embd_pdrop': 0.0, 'eos_token_id': 32000, 'hidden_act': 'silu', 'hidden_size': 3072, 'initializer_range': 0.02, 'intermediate_size': 8192, 'max_position_embeddings': 4096, 'model_type': 'phi3', 'num_attention_heads': 32, 'num_hidden_layers': 32, 'num_key_value_heads': 32, 'original_max_position_embeddings': 4096, 'pad_token_id': 32000, 'resid_pdrop': 0.0, 'rms_norm_eps': 1e-05, 'rope_scaling': None, 'rope_theta': 10000.0, 'sliding_window': 2047, 'tie_word_embeddings': False, 'torch_dtype': 'bfloat16', 'use_cache': True, 'vocab_size': 32064},
    'mixtral-8x7b': {'architectures': ['MixtralForCausalLM'], 'attention_dropout': 0.0, 'bos_token_id': 1, 'eos_token_id': 2, 'hidden_act': 'silu', 'hidden_size': 4096, 'initializer_range': 0.02, 'intermediate_size': 14336, 'max_position_embeddings': 32768, 'model_type': 'mixtral', 'num_attention_heads': 32, 'num_experts_per_tok': 2, 'num_hidden_layers': 32, 'num_key_value_heads': 8, 'num_local_experts': 8, 'output_router_logits': False, 'rms_norm_eps': 1e-05, 'rope_theta': 1000000.0, 'router_aux_loss_coef': 0.02, 'sliding_window': None, 'tie_word_embeddings': False, 'torch_dtype': 'bfloat16', 'use_cache': True, 'vocab_size': 32000},
    'pythia-1.4b': {'architectures': ['GPTNeoXForCausalLM'], 'bos_token_id': 0, 'eos_token_id': 0, 'hidden_act': 'gelu', 'hidden_size': 2048, 'initializer_range': 0.02, 'intermediate_size': 8192, 'layer_norm_eps': 1e-05, 'max_position_embeddings': 2048, 'model_type': 'gpt_neox', 'num_attention_heads': 16, 'num_hidden_layers': 24, 'rotary_emb_base': 10000, 'rotary_pct': 0.25, 'tie_word_embeddings': False, 'torch_dtype': 'float16', 'use_cache': True, 'use_parallel_residual': True, 'vocab_size': 50304},
}

# name -> (adapter family, parameter count of the published checkpoint, dtype it ships in)
EXPECTED = {
    "gemma-2-2b": ("gemma2", 2_614_341_888, torch.float32),
    "gemma-3-1b": ("gemma2", 999_885_952, torch.bfloat16),
    "llama-3.2-1b": ("llama", 1_235_814_400, torch.bfloat16),
    "llama-3.1-8b": ("llama", 8_030_261_248, torch.bfloat16),
    "qwen2.5-7b": ("llama", 7_615_616_512, torch.bfloat16),
    "olmo-2-1b": ("olmo2", 1_484_916_736, torch.float32),
    "phi-3-mini": ("phi3", 3_821_079_552, torch.bfloat16),
    "mixtral-8x7b": ("mixtral", 46_702_792_704, torch.bfloat16),
    "pythia-1.4b": ("gpt_neox", 1_414_647_808, torch.float16),
}
BATCH, SEQ = 2, 16


def build(name: str) -> Model:
    kw = dict(REAL[name])
    cfg = AutoConfig.for_model(kw.pop("model_type"), **kw)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=EXPECTED[name][2])
    if hasattr(hf.config, "_experts_implementation") and getattr(hf.config, "num_local_experts", None):
        # grouped_mm calls torch.nonzero, which has no meta implementation; batched_mm computes the same
        hf.config._experts_implementation = "batched_mm"
    return interp.from_hf(hf, name=name)


@pytest.fixture(scope="module", params=list(REAL))
def real(request: pytest.FixtureRequest) -> tuple[str, Model]:
    return request.param, build(request.param)


def test_config_dicts_are_the_published_models(real: tuple[str, Model]) -> None:
    name, m = real
    family, n_params, dtype = EXPECTED[name]
    assert m.adapter.family == family
    assert sum(p.numel() for p in m.hf.parameters()) == n_params
    assert all(p.is_meta and p.dtype == dtype for p in m.hf.parameters())
    c, d = m.config, m.dims
    assert (d.n_layers, d.n_heads, d.d_model, d.d_vocab) == (c.num_hidden_layers, c.num_attention_heads,
                                                             c.hidden_size, c.vocab_size)
    assert d.n_kv_heads == getattr(c, "num_key_value_heads", None) or c.num_attention_heads


def test_every_hook_point_resolves_with_the_estimated_shape(real: tuple[str, Model]) -> None:
    """A forward over meta tensors with every named hook captured: each activation has the shape that
    interp.models.memory predicts, the bytes add up to capture_bytes, and the store writer's estimate agrees."""
    _, m = real
    names = m.hook_names()
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long, device="meta")
    mask = torch.zeros(BATCH, 1, SEQ, SEQ, device="meta", dtype=m.dtype)  # a 4-D mask: no data-dependent checks
    with torch.no_grad(), HookedRun(m, make_plans(m, capture=names)) as run:
        logits = forward(m, ids, mask)
    assert logits.shape == (BATCH, SEQ, m.dims.d_vocab)
    assert set(run.activations) == set(names)
    sites = m.sites()
    total = 0
    for site in sites:
        got = run.activations[site.name]
        assert tuple(got.shape) == activation_shape(m.dims, site, BATCH, SEQ), site.name
        assert got.dtype == m.dtype, site.name  # captured in the model's dtype
        total += got.numel() * got.element_size()
        if "expert" not in site.component.axes:  # the writer's estimate (its axis table has no experts yet)
            trailing = _trailing_shape(m, site, SEQ)
            per_seq = math.prod(trailing) * (1 if site.component is Component.PATTERN else SEQ)
            assert per_seq * BATCH == got.numel(), site.name
    assert capture_bytes(m.dims, sites, BATCH, SEQ, m.dtype) == total
    # the batch a store capture picks to stay within a budget: resid_post of every layer at 2048 tokens
    resid = [s for s in sites if s.component is Component.RESID_POST]
    per_seq = capture_bytes(m.dims, resid, 1, 2048, m.dtype)
    shapes = {s.name: _trailing_shape(m, s, 2048) for s in resid}
    assert _fit_batch(shapes, 64, 2048, m.dtype, 4 * per_seq) == 4
    assert _fit_batch(shapes, 2, 2048, m.dtype, 4 * per_seq) == 2


def test_weight_views_have_the_documented_shapes(real: tuple[str, Model]) -> None:
    name, m = real
    d = m.dims
    w = m.weights
    L, H, D, dh, V = d.n_layers, d.n_heads, d.d_model, d.d_head, d.d_vocab
    assert w.W_E.shape == (V, D) and w.W_U is not None and w.W_U.shape == (D, V)
    for t in (w.W_Q, w.W_K, w.W_V):
        assert t.shape == (L, H, D, dh)
    assert w.W_O.shape == (L, H, dh, D)
    for t in (w.b_Q, w.b_K, w.b_V):
        assert t.shape == (L, H, dh)
    assert w.b_O.shape == (L, D)
    assert w.ln1_w.shape == w.ln2_w.shape == (L, D)
    assert w.ln_final_w is not None and w.ln_final_w.shape == (D,)
    assert w.W_QK.shape == w.W_OV.shape == (L, H, D, D)
    if d.n_experts:
        assert isinstance(w.W_in, NotApplicable) and isinstance(w.W_out, NotApplicable)
        assert w.W_router is not None and w.W_router.shape == (L, D, d.n_experts)
        assert w.W_in_experts is not None and w.W_in_experts.shape == (L, d.n_experts, D, d.d_mlp)
        assert w.W_out_experts is not None and w.W_out_experts.shape == (L, d.n_experts, d.d_mlp, D)
    else:
        assert w.W_in.shape == (L, D, d.d_mlp) and w.W_out.shape == (L, d.d_mlp, D)
        assert w.b_in is not None and w.b_in.shape == (L, d.d_mlp)
        assert w.b_out is not None and w.b_out.shape == (L, D)
        if w.W_gate is not None:
            assert w.W_gate.shape == (L, D, d.d_mlp)
    if name == "gemma-2-2b":
        assert w.logit_softcap == 30.0
    else:
        assert w.logit_softcap is None


def test_real_attention_layouts(real: tuple[str, Model]) -> None:
    """What the published configs make of attention: grouped heads, head widths decoupled from d_model, Gemma's
    alternating sliding windows, Gemma 2's soft-caps (read by interp's attention kernel from the modules)."""
    name, m = real
    d = m.dims
    want = {"gemma-2-2b": (8, 4, 256), "gemma-3-1b": (4, 1, 256), "llama-3.2-1b": (32, 8, 64),
            "llama-3.1-8b": (32, 8, 128), "qwen2.5-7b": (28, 4, 128), "olmo-2-1b": (16, 16, 128),
            "phi-3-mini": (32, 32, 96), "mixtral-8x7b": (32, 8, 128), "pythia-1.4b": (16, 16, 128)}[name]
    assert (d.n_heads, d.n_kv_heads, d.d_head) == want
    if name.startswith("gemma"):
        kinds = m.config.layer_types
        assert "sliding_attention" in kinds and "full_attention" in kinds
        attn = m.hf.model.layers[0].self_attn
        assert attn.sliding_window == m.config.sliding_window and attn.scaling == 256 ** -0.5
        assert (attn.attn_logit_softcapping is not None) == (name == "gemma-2-2b")
