"""The adapters of issue 19 (Gemma 1/2/3, OLMo 2, Phi-3, Qwen3, GPT-J, Falcon, Mixtral, OLMoE, Qwen2-MoE,
Qwen3-MoE) on tiny random models built from the real ``transformers`` config classes.

For each family: logits bit-identical to the plain Hugging Face forward when hooks only read; every hook point
recomputed by hand from the HF modules (this file's own reading of each block, not the adapter's table);
capturing q/k/v/pattern leaves the logits of the family's eager kernel bit-identical (interp's attention
function reproduces soft-capping, sliding windows, q/k norms and scaling); the weight views satisfy the block
equations; zero-ablation and patching of every component equal hand-written PyTorch hooks; gradients at hook
points match central finite differences in float64; grouped-query heads are expanded per query head.
Mixture-of-experts: router logits / weights / expert outputs against a hand-written router and experts,
per-expert ablation against a raw hook on the experts module, re-routing against a raw hook on the router.

Tolerances: float32 comparisons of two different computations of one value use rtol = atol = 2e-5 (TIGHT);
the same computation in the same order is compared exactly; finite differences in float64 use rel 1e-5.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from conftest import N_CTX, VOCAB, randomize, requires
from torch import nn
from torch.nn import functional
from transformers import AutoConfig, AutoModelForCausalLM

import interp
from interp.errors import BadInputError
from interp.hooks import Ablate, AblateExperts, Add, Patch, Scale, hooks, run_with_hooks
from interp.hooks.attention import ATTN_IMPL, register_attention
from interp.models import Model
from interp.models.adapters import NotApplicable
from interp.sites import UnknownHookError

TIGHT = dict(rtol=2e-5, atol=2e-5)
COMMON = dict(max_position_embeddings=N_CTX, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# family -> (model_type, config); dimensions differ within each model so a transposed view fails loudly
SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma": ("gemma", dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, vocab_size=112)),
    "gemma2": ("gemma2", dict(hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, vocab_size=120, sliding_window=3,
                              attn_logit_softcapping=2.0, final_logit_softcapping=10.0, query_pre_attn_scalar=20)),
    "gemma3": ("gemma3_text", dict(hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=1, head_dim=24, vocab_size=116, sliding_window=3,
                                   layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=24)),
    "olmo2": ("olmo2", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=124)),
    "phi3": ("phi3", dict(hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=108)),
    "qwen3": ("qwen3", dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=20, vocab_size=128)),
    "gptj": ("gptj", dict(n_embd=48, n_layer=2, n_head=4, n_inner=72, rotary_dim=4, vocab_size=104,
                          n_positions=N_CTX)),
    "falcon": ("falcon", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=96,
                              vocab_size=112, bias=True)),  # Falcon-7B: multi-query, parallel block
    "falcon40": ("falcon", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                                new_decoder_architecture=True, num_ln_in_parallel_attn=2, ffn_hidden_size=80,
                                vocab_size=112)),
    "falcon_seq": ("falcon", dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, multi_query=False,
                                  parallel_attn=False, ffn_hidden_size=72, vocab_size=112, bias=True)),
    "mixtral": ("mixtral", dict(hidden_size=64, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=112)),
    "olmoe": ("olmoe", dict(hidden_size=64, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, num_experts=5, num_experts_per_tok=2, vocab_size=112)),
    "qwen2_moe": ("qwen2_moe", dict(hidden_size=64, intermediate_size=88, moe_intermediate_size=40,
                                    shared_expert_intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=112)),
    "qwen3_moe": ("qwen3_moe", dict(hidden_size=64, intermediate_size=88, moe_intermediate_size=40,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                    num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, vocab_size=112)),
}
FAMILIES = tuple(SPECS)
MOE = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")
FALCONS = ("falcon", "falcon40", "falcon_seq")
SANDWICH = ("gemma2", "gemma3", "olmo2")  # sublayer outputs normalised before the residual add
PARALLEL = ("gptj", "falcon", "falcon40")


def make(family: str, seed: int = 5, **overrides: Any) -> nn.Module:
    model_type, kw = SPECS[family]
    kw = {**kw, **overrides}
    if model_type != "gptj":
        kw = {**COMMON, **kw}
    cfg = AutoConfig.for_model(model_type, **kw)
    return randomize(AutoModelForCausalLM.from_config(cfg), seed)


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    return {f: interp.from_hf(make(f), name=f"tiny-{f}") for f in FAMILIES}


@pytest.fixture(scope="module")
def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Another ``[3, 8]`` batch (the patch source), padded like ``batch``."""
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(3, VOCAB, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return ids, mask


# --- the test's own reading of each block (HF module names, independent of the adapters) -----------------

def layout(fam: str, m: Model) -> dict[str, Any]:
    c = m.config
    if fam in ("gptj",):
        return dict(layers="transformer.h", embed="transformer.wte", final="transformer.ln_f", attn="attn",
                    mlp="mlp", ln1="ln_1", ln2="ln_1", post_attn=None, post_mlp=None, o="out_proj", parallel=True)
    if fam in FALCONS:
        parallel = bool(c.new_decoder_architecture or c.parallel_attn)
        two = bool(c.new_decoder_architecture and c.num_ln_in_parallel_attn == 2)
        return dict(layers="transformer.h", embed="transformer.word_embeddings", final="transformer.ln_f",
                    attn="self_attention", mlp="mlp", ln1="ln_attn" if two else "input_layernorm",
                    ln2="ln_mlp" if two else ("input_layernorm" if parallel else "post_attention_layernorm"),
                    post_attn=None, post_mlp=None, o="dense", parallel=parallel)
    base = dict(layers="model.layers", embed="model.embed_tokens", final="model.norm", attn="self_attn",
                mlp="mlp", ln1="input_layernorm", ln2="post_attention_layernorm", post_attn=None, post_mlp=None,
                o="o_proj", parallel=False)
    if fam in ("gemma2", "gemma3"):
        base.update(ln2="pre_feedforward_layernorm", post_attn="post_attention_layernorm",
                    post_mlp="post_feedforward_layernorm")
    if fam == "olmo2":
        base.update(ln1=None, ln2=None, post_attn="post_attention_layernorm", post_mlp="post_feedforward_layernorm")
    return base


def blk(m: Model, fam: str, L: int) -> nn.Module:
    return m.hf.get_submodule(layout(fam, m)["layers"])[L]  # type: ignore[index]


def sub(m: Model, fam: str, L: int, key: str) -> nn.Module:
    return blk(m, fam, L).get_submodule(layout(fam, m)[key])


def first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x


def plain(m: Model, ids: torch.Tensor, mask: torch.Tensor | None, impl: str | None = None) -> torch.Tensor:
    with impl_of(m, impl), torch.no_grad():
        return m.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits


@contextlib.contextmanager
def impl_of(m: Model, impl: str | None) -> Iterator[None]:
    saved = m.config._attn_implementation
    if impl is not None:
        m.config._attn_implementation = impl
    try:
        yield
    finally:
        m.config._attn_implementation = saved


def modeling(m: Model) -> Any:
    mt = m.config.model_type
    return importlib.import_module(f"transformers.models.{'gemma3' if mt == 'gemma3_text' else mt}.modeling_"
                                   f"{'gemma3' if mt == 'gemma3_text' else mt}")


def raw_capture(m: Model, fam: str, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Module inputs/outputs from plain torch hooks (cloned: some blocks edit tensors in place afterwards)."""
    lay = layout(fam, m)
    got: dict[str, torch.Tensor] = {}
    handles = []

    def out(name: str) -> Callable[..., None]:
        return lambda mod, args, o: got.__setitem__(name, first(o).detach().clone())

    def inp(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            t = args[0] if args else kwargs["hidden_states"]
            got[name] = t.detach().clone()
        return hook

    try:
        handles.append(m.hf.get_submodule(lay["embed"]).register_forward_hook(out("hook_embed")))
        handles.append(m.hf.get_submodule(lay["final"]).register_forward_hook(out("ln_final.hook_normalized")))
        for L in range(m.dims.n_layers):
            b = blk(m, fam, L)
            handles.append(b.register_forward_pre_hook(inp(f"blocks.{L}.hook_resid_pre"), with_kwargs=True))
            handles.append(b.register_forward_hook(out(f"blocks.{L}.hook_resid_post")))
            raw_a, raw_m = ("hook_attn_raw", "hook_mlp_raw") if lay["post_attn"] else ("hook_attn_out", "hook_mlp_out")
            handles.append(sub(m, fam, L, "attn").register_forward_hook(out(f"blocks.{L}.{raw_a}")))
            handles.append(sub(m, fam, L, "mlp").register_forward_hook(out(f"blocks.{L}.{raw_m}")))
            if lay["post_attn"]:
                handles.append(sub(m, fam, L, "post_attn").register_forward_hook(out(f"blocks.{L}.hook_attn_out")))
                handles.append(sub(m, fam, L, "post_mlp").register_forward_hook(out(f"blocks.{L}.hook_mlp_out")))
        got["logits"] = plain(m, ids, mask)
    finally:
        for h in handles:
            h.remove()
    return got


def rotary_tables(m: Model, fam: str, L: int, x: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    position_ids = torch.arange(pos)[None]
    if fam == "gemma3":
        return m.hf.model.rotary_emb(x, position_ids, m.config.layer_types[L])
    root = m.hf.transformer if fam in (*FALCONS, "gptj") else m.hf.model
    return root.rotary_emb(x, position_ids)


def qkv_by_hand(m: Model, fam: str, L: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[batch, pos, head, d_head]`` (k/v repeated per query head) from the HF modules and functions."""
    a = sub(m, fam, L, "attn")
    d = m.dims
    b, pos = x.shape[:2]
    if fam in FALCONS:
        q, k, v = a._split_heads(a.query_key_value(x))  # [b, pos, heads | kv, d_head]
        cos, sin = rotary_tables(m, fam, L, x, pos)
        qr, kr = modeling(m).apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        q, k = qr.transpose(1, 2), kr.transpose(1, 2)
    elif fam == "gptj":
        q, k, v = (p(x).view(b, pos, d.n_heads, d.d_head) for p in (a.q_proj, a.k_proj, a.v_proj))
        sin, cos = rotary_tables(m, fam, L, x, pos)
        r = m.config.rotary_dim
        rot = modeling(m).apply_rotary_pos_emb
        q = torch.cat([rot(q[..., :r], sin, cos), q[..., r:]], -1)
        k = torch.cat([rot(k[..., :r], sin, cos), k[..., r:]], -1)
    else:
        if fam == "phi3":
            qkv = a.qkv_proj(x)
            nq, nkv = d.n_heads * d.d_head, d.n_kv_heads * d.d_head
            q, k, v = qkv[..., :nq], qkv[..., nq:nq + nkv], qkv[..., nq + nkv:]
        else:
            q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
        if fam in ("olmo2", "olmoe"):  # one norm over the whole projection
            q, k = a.q_norm(q), a.k_norm(k)
        q, k, v = (t.view(b, pos, -1, d.d_head) for t in (q, k, v))
        if fam in ("gemma3", "qwen3", "qwen3_moe"):  # one norm per head
            q, k = a.q_norm(q), a.k_norm(k)
        cos, sin = rotary_tables(m, fam, L, x, pos)
        qr, kr = modeling(m).apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        q, k = qr.transpose(1, 2), kr.transpose(1, 2)
    rep = d.n_heads // k.shape[2]
    return q, k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)


def router_by_hand(m: Model, fam: str, L: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits and dense weights ``[batch, pos, expert]``: softmax in float32, top-k, renormalise
    (Mixtral always, the others when ``norm_topk_prob``), the others cast back to the model's dtype."""
    gate = sub(m, fam, L, "mlp").gate
    logits = x @ gate.weight.T
    probs = logits.float().softmax(-1)
    top, idx = probs.topk(m.config.num_experts_per_tok, -1)
    if fam == "mixtral" or m.config.norm_topk_prob:
        top = top / top.sum(-1, keepdim=True)
    dense = torch.zeros_like(probs).scatter(-1, idx, top).to(x.dtype)
    return logits, dense


def experts_by_hand(m: Model, fam: str, L: int, x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``[batch, pos, expert, d_model]``: weight × (down @ (act(gate) * up)) of every expert, from the fused weights."""
    ex = sub(m, fam, L, "mlp").experts
    outs = []
    for e in range(dense.shape[-1]):
        gate_up = x @ ex.gate_up_proj[e].T
        g, u = gate_up.chunk(2, -1)
        outs.append((ex.act_fn(g) * u) @ ex.down_proj[e].T * dense[..., e:e + 1])
    return torch.stack(outs, -2)


def expected_activations(m: Model, fam: str, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    lay = layout(fam, m)
    exp = raw_capture(m, fam, ids, mask)
    with impl_of(m, "eager"), torch.no_grad():
        pats = m.hf(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False).attentions
    with torch.no_grad():
        for L in range(m.dims.n_layers):
            def s(n: str, L: int = L) -> str:
                return f"blocks.{L}.{n}"

            x = exp[s("hook_resid_pre")]
            attn_in = sub(m, fam, L, "ln1")(x) if lay["ln1"] else x
            if lay["parallel"]:
                mlp_in = sub(m, fam, L, "ln2")(x)
            else:
                mid = x + exp[s("hook_attn_out")]
                exp[s("hook_resid_mid")] = mid
                mlp_in = sub(m, fam, L, "ln2")(mid) if lay["ln2"] else mid
            q, k, v = qkv_by_hand(m, fam, L, attn_in)
            exp[s("attn.hook_q")], exp[s("attn.hook_k")], exp[s("attn.hook_v")] = q, k, v
            exp[s("attn.hook_pattern")] = pats[L]
            exp[s("attn.hook_z")] = torch.einsum("bhqk,bkhe->bqhe", pats[L], v)
            # each head's output: its z through its columns of the output projection's weight
            o = blk(m, fam, L).get_submodule(f"{lay['attn']}.{lay['o']}")
            w_o = o.weight.view(o.weight.shape[0], m.dims.n_heads, m.dims.d_head)
            exp[s("attn.hook_result")] = torch.einsum("bphe,dhe->bphd", exp[s("attn.hook_z")], w_o)
            if m.adapter.attn_inputs is not None:  # each head's q / k / v input: the stream, one copy per (kv) head
                for kind, n in (("q", m.dims.n_heads), ("k", m.dims.n_kv_heads), ("v", m.dims.n_kv_heads)):
                    exp[s(f"hook_{kind}_input")] = x[:, :, None].expand(-1, -1, n, -1)
            mlp = sub(m, fam, L, "mlp")
            if fam in MOE:
                logits, dense = router_by_hand(m, fam, L, mlp_in)
                exp[s("mlp.hook_router_logits")] = logits
                exp[s("mlp.hook_router_weights")] = dense
                exp[s("mlp.hook_expert_out")] = experts_by_hand(m, fam, L, mlp_in, dense)
            elif fam == "phi3":
                gate, up = mlp.gate_up_proj(mlp_in).chunk(2, -1)
                exp[s("mlp.hook_pre")], exp[s("mlp.hook_post")] = gate, up * mlp.activation_fn(gate)
            elif fam == "gptj":
                pre = mlp.fc_in(mlp_in)
                exp[s("mlp.hook_pre")], exp[s("mlp.hook_post")] = pre, mlp.act(pre)
            elif fam in FALCONS:
                pre = mlp.dense_h_to_4h(mlp_in)
                exp[s("mlp.hook_pre")], exp[s("mlp.hook_post")] = pre, mlp.act(pre)
            else:
                pre = mlp.gate_proj(mlp_in)
                exp[s("mlp.hook_pre")], exp[s("mlp.hook_post")] = pre, mlp.act_fn(pre) * mlp.up_proj(mlp_in)
    return exp


def real(t: torch.Tensor, mask: torch.Tensor, pos_axis: int = 1) -> torch.Tensor:
    """The rows of ``t`` at real (non-padding) positions. Queries at padding positions can have no key to attend to
    (a sliding window past the real tokens); attention kernels disagree about such empty rows, and nothing reads them."""
    return t.movedim(pos_axis, 1)[mask.bool()]


def close_real(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor, pos_axis: int = 1, what: str = "",
               **tol: float) -> None:
    torch.testing.assert_close(real(got, mask, pos_axis), real(want, mask, pos_axis), **(tol or TIGHT),
                               msg=lambda msg: f"{what}: {msg}")


def assert_clean(m: Model, impl: str | None = None) -> None:
    for name, mod in m.hf.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            for fn in getattr(mod, attr, {}).values():
                origin = getattr(fn, "__module__", "") or ""
                assert not origin.startswith(("interp", "test_", "tests")), f"{attr} {fn} left on {name or 'model'}"
        for attr in ("forward", "_old_forward"):  # accelerate keeps the module's own forward in _old_forward
            fwd = mod.__dict__.get(attr)
            origin = getattr(getattr(fwd, "func", None), "__module__", "") or ""
            assert not (isinstance(fwd, functools.partial) and origin.startswith("interp")), \
                f"a kernel's forward is left on {name}"
        assert not hasattr(mod, "_interp_attn_hook"), f"attention hook left on {name}"
    if impl is not None:
        assert m.config._attn_implementation == impl


def module_names(m: Model) -> list[str]:
    kernel_comps = {c for k in m.adapter.kernels for c in k.components}
    return [s.name for s in m.sites() if not s.component.inside_attention and s.component not in kernel_comps]


# --- reading ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_module_captures_leave_logits_bit_identical(models: dict[str, Model], fam: str,
                                                   batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    ids, mask = batch
    want = plain(m, ids, mask)
    names = module_names(m)
    out = run_with_hooks(m, ids, mask, capture=names)
    assert torch.equal(out.logits, want)
    assert set(out.activations) == set(names)
    assert torch.equal(out.activations["logits"], want)  # the logits hook is the model's output (soft-capped)
    assert_clean(m)


@pytest.mark.parametrize("fam", FAMILIES)
def test_every_hook_equals_its_recomputation_from_the_hf_modules(models: dict[str, Model], fam: str,
                                                                 batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    ids, mask = batch
    exp = expected_activations(m, fam, ids, mask)
    out = run_with_hooks(m, ids, mask, capture=m.hook_names())
    assert set(out.activations) == set(exp) == set(m.hook_names())
    for name, want in exp.items():
        got = out.activations[name]
        assert got.shape == want.shape, name
        close_real(got, want, mask, 2 if name.endswith("hook_pattern") else 1, what=f"{fam} {name}")
    close_real(out.logits, plain(m, ids, mask), mask)
    assert_clean(m)


@pytest.mark.parametrize("fam", FAMILIES)
def test_capturing_attention_internals_reproduces_the_eager_kernel_bit_for_bit(
        models: dict[str, Model], fam: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """interp's attention function (or Falcon's kernel) against the family's own eager attention: the same
    logits, exactly; against the default kernel (SDPA) up to rounding."""
    m = models[fam]
    ids, mask = batch
    with impl_of(m, "eager"):
        out = run_with_hooks(m, ids, mask, capture=["q", "k", "v", "pattern"])
        assert_clean(m, "eager")
    assert torch.equal(out.logits, plain(m, ids, mask, "eager")), fam
    close_real(run_with_hooks(m, ids, mask, capture="pattern").logits, plain(m, ids, mask), mask)


@pytest.mark.parametrize("fam", FAMILIES)
def test_block_equations_hold_for_the_weight_views(models: dict[str, Model], fam: str,
                                                   batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """z @ W_O + b_O is the attention sublayer's output, mlp.hook_post @ W_out + b_out the MLP's, the residual
    stream sums, and ln1(resid_pre) @ W_Q + b_Q is q before rotary (the views read the right rows)."""
    m = models[fam]
    ids, mask = batch
    acts = run_with_hooks(m, ids, mask, capture=m.hook_names()).activations
    w = m.weights
    lay = layout(fam, m)
    for L in range(m.dims.n_layers):
        def a(n: str, L: int = L) -> torch.Tensor:
            return acts[f"blocks.{L}.{n}"]

        attn_raw = a("hook_attn_raw") if lay["post_attn"] else a("hook_attn_out")
        torch.testing.assert_close(torch.einsum("bphe,hed->bpd", a("attn.hook_z"), w.W_O[L]) + w.b_O[L], attn_raw,
                                   **TIGHT)
        if fam in MOE:
            mlp_raw = a("mlp.hook_expert_out").sum(-2)
            if fam == "qwen2_moe":
                blk_mlp = sub(m, fam, L, "mlp")
                x = sub(m, fam, L, "ln2")(a("hook_resid_mid"))
                with torch.no_grad():
                    mlp_raw = mlp_raw + torch.sigmoid(blk_mlp.shared_expert_gate(x)) * blk_mlp.shared_expert(x)
            torch.testing.assert_close(mlp_raw, a("hook_mlp_out"), **TIGHT)
        else:
            want = a("hook_mlp_raw") if lay["post_mlp"] else a("hook_mlp_out")
            torch.testing.assert_close(a("mlp.hook_post") @ w.W_out[L] + w.b_out[L], want, **TIGHT)
        if lay["post_attn"]:
            with torch.no_grad():
                torch.testing.assert_close(sub(m, fam, L, "post_attn")(a("hook_attn_raw")), a("hook_attn_out"))
                torch.testing.assert_close(sub(m, fam, L, "post_mlp")(a("hook_mlp_raw")), a("hook_mlp_out"))
        if lay["parallel"]:
            torch.testing.assert_close(a("hook_resid_pre") + a("hook_attn_out") + a("hook_mlp_out"),
                                       a("hook_resid_post"), **TIGHT)
        else:
            torch.testing.assert_close(a("hook_resid_pre") + a("hook_attn_out"), a("hook_resid_mid"), **TIGHT)
            torch.testing.assert_close(a("hook_resid_mid") + a("hook_mlp_out"), a("hook_resid_post"), **TIGHT)
        # the attention projections: V has no rotary or norm anywhere, so ln1(x) @ W_V + b_V is v itself
        x = a("hook_resid_pre")
        attn_in = x * 1.0
        if lay["ln1"]:
            with torch.no_grad():
                attn_in = sub(m, fam, L, "ln1")(x)
        v = torch.einsum("bpd,hde->bphe", attn_in, w.W_V[L]) + w.b_V[L]
        torch.testing.assert_close(v, a("attn.hook_v"), **TIGHT)
        if fam in ("gemma", "phi3", "falcon", "falcon40", "falcon_seq", "mixtral", "qwen2_moe"):
            # no q/k norm: q and k are the rotary of the plain projections (rotation preserves norms per pair)
            q = torch.einsum("bpd,hde->bphe", attn_in, w.W_Q[L]) + w.b_Q[L]
            torch.testing.assert_close(q.norm(dim=-1), a("attn.hook_q").norm(dim=-1), **TIGHT)
        # the embedding view is what hook_embed reads per token (Gemma's sqrt(d_model) scale included)
    torch.testing.assert_close(w.W_E[ids], acts["hook_embed"], rtol=0, atol=0)
    if w.logit_softcap is None:
        torch.testing.assert_close(acts["ln_final.hook_normalized"] @ w.W_U + (0 if w.b_U is None else w.b_U),
                                   acts["logits"], **TIGHT)
    else:
        z = acts["ln_final.hook_normalized"] @ w.W_U
        torch.testing.assert_close(torch.tanh(z / w.logit_softcap) * w.logit_softcap, acts["logits"], **TIGHT)
        torch.testing.assert_close(m.adapter.unembed(m.hf, acts["ln_final.hook_normalized"]), acts["logits"], **TIGHT)
    if w.norm == "rms":  # final_norm_scale and ln_final_w reproduce the final norm (Gemma's (1 + w) included)
        xf = acts[f"blocks.{m.dims.n_layers - 1}.hook_resid_post"]
        torch.testing.assert_close(xf / m.final_norm_scale(xf) * w.ln_final_w, acts["ln_final.hook_normalized"],
                                   **TIGHT)


def test_qwen3_q_k_norm_is_per_head_and_before_rotary(models: dict[str, Model],
                                                       batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Qwen3 (served by the llama adapter): hook_q is rotary(q_norm(x @ W_Q) per head), not rotary(x @ W_Q),
    and the q_norm weight matters."""
    m = models["qwen3"]
    assert m.adapter.family == "llama"
    acts = run_with_hooks(m, *batch, capture=["q.0", "resid_pre.0"]).activations
    a = m.hf.model.layers[0].self_attn
    with torch.no_grad():
        x = m.hf.model.layers[0].input_layernorm(acts["blocks.0.hook_resid_pre"])
        q = torch.einsum("bpd,hde->bphe", x, m.weights.W_Q[0])
        normed = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + a.q_norm.variance_epsilon) * a.q_norm.weight
        cos, sin = m.hf.model.rotary_emb(x, torch.arange(8)[None])
        want, _ = modeling(m).apply_rotary_pos_emb(normed.transpose(1, 2), normed.transpose(1, 2), cos, sin)
    torch.testing.assert_close(acts["blocks.0.attn.hook_q"], want.transpose(1, 2), **TIGHT)
    assert not torch.allclose(a.q_norm.weight, torch.ones_like(a.q_norm.weight))


@pytest.mark.parametrize("fam", ["gemma", "gemma2", "gemma3", "olmo2", "phi3", "falcon40", "mixtral", "qwen3_moe"])
def test_grouped_query_heads_are_expanded_per_query_head(models: dict[str, Model], fam: str,
                                                         batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    d = m.dims
    assert d.n_kv_heads < d.n_heads
    acts = run_with_hooks(m, *batch, capture=["k.1", "v.1", "q.1"]).activations
    k, v, q = (acts[f"blocks.1.attn.hook_{n}"] for n in "kvq")
    assert k.shape == v.shape == q.shape == (3, 8, d.n_heads, d.d_head)
    for t in (k, v):
        groups = t.unflatten(2, (d.n_kv_heads, d.n_rep))
        assert torch.equal(groups, groups[:, :, :, :1].expand_as(groups))  # copies within a group
        if d.n_kv_heads > 1:
            assert not torch.equal(groups[:, :, 0], groups[:, :, 1])
    assert not torch.equal(q[:, :, 0], q[:, :, 1])
    # the weight views expand the same way
    wk = m.weights.W_K[1].unflatten(0, (d.n_kv_heads, d.n_rep))
    assert torch.equal(wk, wk[:, :1].expand_as(wk))


@pytest.mark.parametrize("fam", ["falcon", "gemma3"])
def test_multi_query_key_head_is_shared_by_every_query_head(models: dict[str, Model], fam: str,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    assert m.dims.n_kv_heads == 1
    k = run_with_hooks(m, *batch, capture="k.0").activations["blocks.0.attn.hook_k"]
    assert torch.equal(k, k[:, :, :1].expand_as(k))


# --- Gemma specifics ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", ["gemma2", "gemma3"])
def test_sliding_window_layers_attend_only_within_the_window(models: dict[str, Model], fam: str,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    window = m.config.sliding_window
    pats = run_with_hooks(m, *batch, capture="pattern").activations
    _, mask = batch
    for L, kind in enumerate(m.config.layer_types):
        pat = real(pats[f"blocks.{L}.attn.hook_pattern"], mask, 2)  # [query, head, k_pos] at real queries
        q_pos = torch.arange(8).expand(3, 8)[mask.bool()]
        dist = q_pos[:, None] - torch.arange(8)[None]  # q - k
        outside = (dist >= window) | (dist < 0)
        if kind == "sliding_attention":
            assert not pat.transpose(0, 1)[:, outside].any(), f"layer {L} attends beyond its window of {window}"
        else:
            assert pat.transpose(0, 1)[:, dist >= window].abs().sum() > 0  # a global layer does look far back


def test_gemma2_soft_capping_is_applied_to_scores_and_logits(models: dict[str, Model],
                                                              batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models["gemma2"]
    ids, mask = batch
    cap, final = m.config.attn_logit_softcapping, m.config.final_logit_softcapping
    out = run_with_hooks(m, ids, mask, capture=["q.0", "k.0", "pattern.0", "logits"])
    a = out.activations
    assert a["logits"].abs().max() <= final and torch.equal(a["logits"], out.logits)
    scores = torch.einsum("bqhe,bkhe->bhqk", a["blocks.0.attn.hook_q"], a["blocks.0.attn.hook_k"])
    scores = scores * m.config.query_pre_attn_scalar ** -0.5
    allowed = torch.ones(8, 8, dtype=torch.bool).tril() & ~torch.ones(8, 8, dtype=torch.bool).tril(-m.config.sliding_window)
    allowed = allowed & mask[:, None, None, :].bool()

    def pattern(s: torch.Tensor) -> torch.Tensor:
        return s.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num()

    close_real(a["blocks.0.attn.hook_pattern"], pattern(torch.tanh(scores / cap) * cap), mask, 2)
    assert not torch.allclose(real(a["blocks.0.attn.hook_pattern"], mask, 2), real(pattern(scores), mask, 2),
                              atol=1e-3)  # the cap is active
    # the logits hook can be edited: a patch of the (capped) logits is what the model returns
    src = torch.zeros_like(out.logits)
    assert torch.equal(run_with_hooks(m, ids, mask, interventions=[Patch("logits", source=src)]).logits, src)


def test_logit_lens_reads_through_the_final_soft_cap(models: dict[str, Model],
                                                     batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The lens decodes the last layer exactly as the model does (soft-capped logits): KL to the output ~ 0,
    the model's own top tokens and probabilities; an earlier layer's KL equals one computed from its capped
    logits by hand."""
    from interp.lens import logit_lens

    m = models["gemma2"]
    ids, mask = batch
    cap = m.config.final_logit_softcapping
    res = logit_lens(m, (ids, mask), hooks="resid_post", top_k=3)
    logits = run_with_hooks(m, ids, mask).logits
    assert logits is not None
    p_final = logits.double().softmax(-1)
    real_rows = mask.bool()
    assert float(res.kl_to_final[-1][real_rows].abs().max()) < 1e-4
    top_p, top_i = p_final.topk(3, dim=-1)
    assert torch.equal(res.top_ids[-1][real_rows], top_i[real_rows])
    torch.testing.assert_close(res.top_probs[-1][real_rows].double(), top_p[real_rows], rtol=1e-4, atol=1e-5)
    h = run_with_hooks(m, ids, mask, capture="resid_post.0").activations["blocks.0.hook_resid_post"]
    z = m.apply_final_norm(h).double() @ m.weights.W_U.double()
    z = cap * torch.tanh(z / cap)
    lp = z.log_softmax(-1)
    kl = (p_final * (p_final.clamp_min(1e-300).log() - lp)).sum(-1)
    torch.testing.assert_close(res.kl_to_final[0][real_rows].double(), kl[real_rows], rtol=1e-3, atol=1e-4)


# --- editing: each component against a hand-written PyTorch hook ---------------------------------------------

@contextlib.contextmanager
def hand_edit(m: Model, fam: str, comp: str, L: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace the activation ``comp`` of layer ``L`` by ``fn(act)`` with raw torch hooks on the HF modules."""
    lay = layout(fam, m)
    b = blk(m, fam, L)
    handles: list[Any] = []
    state: dict[str, torch.Tensor] = {}

    def on_out(mod: nn.Module, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        def hook(module: nn.Module, args: Any, out: Any) -> Any:
            return (f(out[0]), *out[1:]) if isinstance(out, tuple) else f(out)
        handles.append(mod.register_forward_hook(hook))

    def on_in(mod: nn.Module, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (f(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": f(kwargs["hidden_states"])}
        handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))

    attn_branch = sub(m, fam, L, "post_attn") if lay["post_attn"] else sub(m, fam, L, "attn")
    mlp_branch = sub(m, fam, L, "post_mlp") if lay["post_mlp"] else sub(m, fam, L, "mlp")
    d = m.dims
    try:
        if comp == "embed":
            on_out(m.hf.get_submodule(lay["embed"]), fn)
        elif comp == "resid_pre":
            on_in(b, fn)
        elif comp == "resid_post":
            on_out(b, fn)
        elif comp == "attn_out":
            on_out(attn_branch, fn)
        elif comp == "attn_raw":
            on_out(sub(m, fam, L, "attn"), fn)
        elif comp == "mlp_out":
            on_out(mlp_branch, fn)
        elif comp == "mlp_raw":
            on_out(sub(m, fam, L, "mlp"), fn)
        elif comp == "resid_mid":  # resid_mid = resid_pre + attn_out: edit the attention branch's contribution
            def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                state["pre"] = args[0] if args else kwargs["hidden_states"]
            handles.append(b.register_forward_pre_hook(keep, with_kwargs=True))
            on_out(attn_branch, lambda a: fn(state["pre"] + a) - state["pre"])
        elif comp == "z":
            on_in(sub(m, fam, L, "attn").get_submodule(lay["o"]), lambda z: fn(z.unflatten(-1, (d.n_heads, d.d_head))).flatten(-2))
        elif comp == "mlp_pre":
            mlp = sub(m, fam, L, "mlp")
            if fam == "phi3":
                on_out(mlp.gate_up_proj, lambda gu: torch.cat([fn(gu[..., :d.d_mlp]), gu[..., d.d_mlp:]], -1))
            else:
                on_out(mlp.fc_in if fam == "gptj" else mlp.dense_h_to_4h if fam in FALCONS else mlp.gate_proj, fn)
        elif comp == "mlp_post":
            mlp = sub(m, fam, L, "mlp")
            on_in(mlp.fc_out if fam == "gptj" else mlp.dense_4h_to_h if fam in FALCONS else mlp.down_proj, fn)
        elif comp == "ln_final":
            on_out(m.hf.get_submodule(lay["final"]), fn)
        else:
            raise AssertionError(comp)
        yield
    finally:
        for h in handles:
            h.remove()


MODULE_COMPONENTS = ("embed", "resid_pre", "attn_raw", "attn_out", "resid_mid", "z", "mlp_pre", "mlp_post", "mlp_raw",
                     "mlp_out", "resid_post", "ln_final")


def site_of(comp: str, L: int) -> str:
    return comp if comp in ("embed", "ln_final") else f"{comp}.{L}"


@pytest.mark.parametrize("fam", FAMILIES)
def test_zero_ablation_and_patching_equal_hand_written_hooks(models: dict[str, Model], fam: str,
                                                            batch: tuple[torch.Tensor, torch.Tensor],
                                                            source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    ids, mask = batch
    have = {s.component.short for s in m.sites()}
    comps = [c for c in MODULE_COMPONENTS if c in have]
    assert len(comps) >= (8 if fam in MOE else 9)
    src = run_with_hooks(m, *source_batch, capture=m.hook_names()).activations
    L = 1
    tested = 0
    for comp in comps:
        site = site_of(comp, L)
        name = interp.sites.resolve(site, m.sites())[0].name
        with hand_edit(m, fam, comp, L, torch.zeros_like):
            want = plain(m, ids, mask)
        got = run_with_hooks(m, ids, mask, interventions=[Ablate(site)]).logits
        close_real(got, want, mask, what=f"{fam} ablate {comp}")
        with hand_edit(m, fam, comp, L, lambda t, n=name: src[n].clone().view_as(t)):  # Falcon adds into it in place
            want = plain(m, ids, mask)
        got = run_with_hooks(m, ids, mask, interventions=[Patch(site, source=src[name])]).logits
        close_real(got, want, mask, what=f"{fam} patch {comp}")
        assert not torch.allclose(got, plain(m, ids, mask), atol=1e-4), f"{fam} {comp}: the edit changed nothing"
        tested += 1
    assert tested == len(comps)
    assert_clean(m)


@pytest.mark.parametrize("fam", FAMILIES)
def test_head_ablation_of_v_pattern_and_z_agree(models: dict[str, Model], fam: str,
                                                batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zeroing head h's v, its pattern or its z all zero that head's output: one hand-written o_proj hook.
    (Under the family's eager kernel, which interp's attention function reproduces exactly.)"""
    m = models[fam]
    with impl_of(m, "eager"):
        _head_ablations(m, fam, *batch)
    assert_clean(m)


def _head_ablations(m: Model, fam: str, ids: torch.Tensor, mask: torch.Tensor) -> None:
    d = m.dims

    def zero_head(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, :, 2] = 0
        return z

    with hand_edit(m, fam, "z", 0, zero_head):
        want = plain(m, ids, mask)
    for comp in ("z", "v", "pattern"):
        got = run_with_hooks(m, ids, mask, interventions=[Ablate(f"{comp}.0", heads=[2])]).logits
        close_real(got, want, mask, what=f"{fam} {comp}")
    # q = 0 gives every allowed key the same score (a soft-cap keeps 0 at 0): head 2 averages the allowed values
    acts = run_with_hooks(m, ids, mask, capture=["v.0", "pattern.0"]).activations
    allowed = (acts["blocks.0.attn.hook_pattern"] > 0).to(acts["blocks.0.attn.hook_v"].dtype)
    uniform = allowed / allowed.sum(-1, keepdim=True)  # the allowed keys (causal, padding, sliding window)

    def mean_head(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, :, 2] = torch.einsum("bqk,bke->bqe", uniform[:, 2], acts["blocks.0.attn.hook_v"][:, :, 2])
        return z

    with hand_edit(m, fam, "z", 0, mean_head):
        want = plain(m, ids, mask)
    got = run_with_hooks(m, ids, mask, interventions=[Ablate("q.0", heads=["L0H2"])]).logits
    close_real(got, want, mask, what=f"{fam} q")
    assert d.n_heads > 2


# --- gradients against finite differences ---------------------------------------------------------------------

GRAD_HOOKS = {
    "gemma2": ["hook_embed", "blocks.0.hook_attn_raw", "blocks.0.hook_resid_mid", "blocks.1.mlp.hook_post",
               "blocks.1.hook_mlp_raw", "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_q", "logits"],
    "gemma3": ["blocks.0.attn.hook_k", "blocks.1.hook_attn_out", "blocks.0.hook_mlp_raw", "blocks.1.hook_resid_pre"],
    "gemma": ["blocks.0.attn.hook_z", "blocks.1.hook_resid_mid", "blocks.0.mlp.hook_pre"],
    "olmo2": ["blocks.0.hook_resid_mid", "blocks.1.hook_attn_raw", "blocks.0.attn.hook_v", "blocks.1.hook_mlp_out"],
    "phi3": ["blocks.0.mlp.hook_pre", "blocks.1.hook_resid_mid", "blocks.0.attn.hook_q"],
    "gptj": ["blocks.0.hook_attn_out", "blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_pre", "ln_final.hook_normalized"],
    "falcon": ["blocks.0.hook_mlp_out", "blocks.1.attn.hook_k", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_pre"],
    "falcon_seq": ["blocks.0.hook_resid_mid", "blocks.1.attn.hook_v", "blocks.0.mlp.hook_post"],
    "mixtral": ["blocks.0.mlp.hook_router_logits", "blocks.1.mlp.hook_router_weights", "blocks.0.mlp.hook_expert_out",
                "blocks.0.hook_resid_mid", "blocks.1.attn.hook_q"],
    "qwen2_moe": ["blocks.1.mlp.hook_router_logits", "blocks.0.mlp.hook_router_weights", "blocks.1.mlp.hook_expert_out",
                  "blocks.1.hook_mlp_out"],
    "olmoe": ["blocks.0.mlp.hook_router_logits", "blocks.1.mlp.hook_expert_out", "blocks.0.attn.hook_q"],
}


def _rms_norm_f64(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    eps = getattr(self, "variance_epsilon", getattr(self, "eps", 1e-6))
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    w = self.weight
    return normed * (1.0 + w) if "Gemma" in type(self).__name__ else normed * w


def _router_f64(self: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = h.reshape(-1, self.weight.shape[1])
    logits = functional.linear(h, self.weight)
    top, idx = logits.softmax(-1).topk(self.top_k, -1)
    if getattr(self, "norm_topk_prob", True):
        top = top / top.sum(-1, keepdim=True)
    return logits, top, idx


def float64(fam: str) -> Model:
    """The family's tiny model in float64 with every float32 round trip of Hugging Face's modules removed
    (norms, router softmax computed in float32; eager kernels that upcast): central differences need it."""
    hf = make(fam).double()
    for mod in hf.modules():
        name = type(mod).__name__
        if name.endswith("RMSNorm"):
            mod.forward = types.MethodType(_rms_norm_f64, mod)
        if name.endswith("TopKRouter"):
            mod.forward = types.MethodType(_router_f64, mod)
    register_attention()
    hf.config._attn_implementation = ATTN_IMPL
    if hasattr(hf.config, "_experts_implementation") and fam in MOE:
        hf.config._experts_implementation = "eager"
    return interp.from_hf(hf, name=f"tiny-{fam}-f64")


def make_metric(vocab: int, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A weighted log-likelihood over the real tokens (a query at a padding position past a sliding window has no
    key: its scores sit at the dtype's minimum, where the function is flat in float but not in autograd)."""
    g = torch.Generator().manual_seed(7)
    weights = torch.randn(3, 8, generator=g, dtype=torch.float64) * mask
    target = torch.randint(0, vocab, (3, 8), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits.log_softmax(-1).gather(-1, target[..., None])[..., 0] * weights).sum()

    return metric


@pytest.mark.parametrize("fam", sorted(GRAD_HOOKS))
def test_gradients_match_central_finite_differences(fam: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = float64(fam)
    ids, mask = batch
    metric = make_metric(m.dims.d_vocab, mask)
    names = GRAD_HOOKS[fam]
    out = run_with_hooks(m, ids, mask, capture=names, grads=names, metric=metric)
    g = torch.Generator().manual_seed(11)
    eps = 1e-5
    for name in names:
        act, grad = out.activations[name], out.grads[name]
        assert grad.shape == act.shape and grad.dtype == torch.float64, name
        assert grad.abs().sum() > 0, name
        d = torch.randn(act.shape, generator=g, dtype=torch.float64)  # router_weights: unchosen experts too
        f = [float(metric(run_with_hooks(m, ids, mask, interventions=[Patch(name, source=act + s * eps * d)]).logits))
             for s in (1, -1)]
        fd = (f[0] - f[1]) / (2 * eps)
        assert float((grad * d).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-7), name
    assert_clean(m, ATTN_IMPL)


# --- mixture of experts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", MOE)
def test_moe_hooks_read_only_leave_the_logits_bit_identical(models: dict[str, Model], fam: str,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    ids, mask = batch
    out = run_with_hooks(m, ids, mask, capture=["router_logits", "router_weights", "expert_out", "mlp_out"])
    assert torch.equal(out.logits, plain(m, ids, mask))
    w = out.activations["blocks.1.mlp.hook_router_weights"]
    assert w.shape == (3, 8, m.dims.n_experts)
    assert ((w != 0).sum(-1) == m.dims.n_experts_per_tok).all()  # the chosen experts are the non-zeros
    eo = out.activations["blocks.1.mlp.hook_expert_out"]
    assert eo.shape == (3, 8, m.dims.n_experts, m.dims.d_model)
    assert torch.equal(eo != 0, (w != 0)[..., None].expand_as(eo))  # only the chosen experts have an output
    assert_clean(m)


def _raw_experts_hook(m: Model, fam: str, L: int, fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                      ) -> Any:
    """A pre-hook on the experts module replacing its (top_k_index, top_k_weights) arguments."""
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        x, idx, weights = args
        return (x, *fn(idx, weights))
    return sub(m, fam, L, "mlp").experts.register_forward_pre_hook(hook)


@pytest.mark.parametrize("fam", MOE)
def test_per_expert_ablation_equals_a_raw_hook_on_the_experts(models: dict[str, Model], fam: str,
                                                              batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """AblateExperts at router_weights / expert_out drops the experts' contributions (the others keep their
    weights): the same as zeroing their weights in the experts module's arguments."""
    m = models[fam]
    ids, mask = batch
    gone = [1, 3]

    def drop(idx: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return idx, weights.masked_fill(torch.isin(idx, torch.tensor(gone)), 0)

    h = _raw_experts_hook(m, fam, 1, drop)
    try:
        want = plain(m, ids, mask)
    finally:
        h.remove()
    for site in ("router_weights.1", "expert_out.1"):
        got = run_with_hooks(m, ids, mask, interventions=[AblateExperts(site, experts=gone)]).logits
        torch.testing.assert_close(got, want, **TIGHT, msg=lambda msg, s=site: f"{fam} {s}: {msg}")
    assert not torch.allclose(want, plain(m, ids, mask), atol=1e-4)
    # at one position only: the other positions keep every expert
    got = run_with_hooks(m, ids, mask, interventions=[AblateExperts("expert_out.1", experts=gone, positions=-1)])
    clean = plain(m, ids, mask)
    assert torch.equal(got.logits[0, :7], clean[0, :7])
    assert_clean(m)


@pytest.mark.parametrize("fam", MOE)
def test_rerouting_by_router_logits_equals_a_raw_hook_on_the_router(models: dict[str, Model], fam: str,
                                                                    batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """AblateExperts at router_logits masks the experts out of the router's choice (the next best are chosen):
    a raw hook on the router that recomputes top-k by hand from masked logits."""
    m = models[fam]
    ids, mask = batch
    gate = sub(m, fam, 0, "mlp").gate
    gone = [0]

    def reroute(module: nn.Module, args: Any, out: Any) -> Any:
        logits = out[0].masked_fill(torch.isin(torch.arange(logits_size := out[0].shape[-1]), torch.tensor(gone)),
                                    torch.finfo(out[0].dtype).min)
        assert logits_size == m.dims.n_experts
        probs = logits.float().softmax(-1)
        top, idx = probs.topk(m.config.num_experts_per_tok, -1)
        if fam == "mixtral" or m.config.norm_topk_prob:
            top = top / top.sum(-1, keepdim=True)
        return logits, (top if fam == "mixtral" else top.to(logits.dtype)), idx

    h = gate.register_forward_hook(reroute)
    try:
        want = plain(m, ids, mask)
    finally:
        h.remove()
    out = run_with_hooks(m, ids, mask, capture="router_weights.0",
                         interventions=[AblateExperts("router_logits.0", experts=gone)])
    torch.testing.assert_close(out.logits, want, **TIGHT)
    assert not out.activations["blocks.0.mlp.hook_router_weights"][..., 0].any()  # expert 0 is never chosen
    assert ((out.activations["blocks.0.mlp.hook_router_weights"] != 0).sum(-1) == m.dims.n_experts_per_tok).all()


@pytest.mark.parametrize("fam", ["mixtral", "qwen2_moe"])
def test_patching_the_routing_from_another_run(models: dict[str, Model], fam: str,
                                               batch: tuple[torch.Tensor, torch.Tensor],
                                               source_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Patch router_weights from a source run: this run's tokens go through the source run's experts with its
    weights; the same as a raw hook handing the experts module the source's (index, weight) arguments."""
    m = models[fam]
    ids, mask = batch
    routes: list[tuple[torch.Tensor, torch.Tensor]] = []
    keep = _raw_experts_hook(m, fam, 1, lambda idx, w: routes.append((idx, w)) or (idx, w))  # type: ignore[func-returns-value]
    try:
        plain(m, *source_batch)
    finally:
        keep.remove()
    h = _raw_experts_hook(m, fam, 1, lambda idx, w: routes[0])
    try:
        want = plain(m, ids, mask)
    finally:
        h.remove()
    src = run_with_hooks(m, *source_batch, capture="router_weights.1").activations["blocks.1.mlp.hook_router_weights"]
    got = run_with_hooks(m, ids, mask, interventions=[Patch("router_weights.1", source=src)]).logits
    torch.testing.assert_close(got, want, **TIGHT)


def test_moe_hooks_on_a_dense_layer_fail_clearly(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = interp.from_hf(make("qwen2_moe", mlp_only_layers=[0]))
    with pytest.raises(BadInputError, match=r"dense.*not a mixture of experts"):
        run_with_hooks(m, *batch, capture="router_logits.0")
    assert_clean(m)
    assert run_with_hooks(m, *batch, capture="router_logits.1").activations["blocks.1.mlp.hook_router_logits"].shape \
        == (3, 8, 4)
    with pytest.raises(BadInputError, match=r"layers \[0\] are dense"):
        m.weights.W_router[0]


@pytest.mark.parametrize("fam", MOE)
def test_moe_weight_views(models: dict[str, Model], fam: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The expert views reproduce each expert's output and the router's logits; the dense-MLP views refuse."""
    m = models[fam]
    w = m.weights
    d = m.dims
    assert w.W_router is not None and w.W_gate_experts is not None and w.W_in_experts is not None
    assert w.W_out_experts is not None
    assert w.W_router.shape == (d.n_layers, d.d_model, d.n_experts)
    assert w.W_in_experts.shape == w.W_gate_experts.shape == (d.n_layers, d.n_experts, d.d_model, d.d_mlp)
    assert w.W_out_experts.shape == (d.n_layers, d.n_experts, d.d_mlp, d.d_model)
    acts = run_with_hooks(m, *batch, capture=["resid_mid.0", "router_logits.0", "router_weights.0", "expert_out.0"]
                          ).activations
    with torch.no_grad():
        x = sub(m, fam, 0, "ln2")(acts["blocks.0.hook_resid_mid"])
    torch.testing.assert_close(x @ w.W_router[0], acts["blocks.0.mlp.hook_router_logits"], **TIGHT)
    act = sub(m, fam, 0, "mlp").experts.act_fn
    e = 2
    y = (act(x @ w.W_gate_experts[0, e]) * (x @ w.W_in_experts[0, e])) @ w.W_out_experts[0, e]
    weight = acts["blocks.0.mlp.hook_router_weights"][..., e:e + 1]
    torch.testing.assert_close(y * weight, acts["blocks.0.mlp.hook_expert_out"][..., e, :], **TIGHT)
    for name in ("W_in", "W_out", "W_gate"):
        with pytest.raises(BadInputError, match=f"{name} does not apply to this model: {fam}'s MLP is a mixture"):
            torch.einsum("ldm,d->lm", getattr(w, name), torch.ones(d.d_model))
    assert isinstance(w.W_in, NotApplicable)
    with pytest.raises(UnknownHookError):
        run_with_hooks(m, *batch, capture="mlp_pre.0")  # there is no single MLP


def test_ablate_experts_checks_its_arguments(models: dict[str, Model], batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(BadInputError, match="expert axis"):
        AblateExperts("mlp_out.0", experts=[1])
    with pytest.raises(BadInputError, match="experts= needs at least one"):
        AblateExperts("expert_out.0", experts=[])
    with pytest.raises(BadInputError, match=r"expert 9 is out of range.*4 experts"):
        run_with_hooks(models["mixtral"], *batch, interventions=[AblateExperts("expert_out.0", experts=[9])])


# --- runs around generate, stop_early, scaling a sublayer -----------------------------------------------------

@pytest.mark.parametrize("fam", ["gemma2", "falcon", "falcon40", "mixtral", "qwen2_moe", "gptj"])
def test_attention_and_expert_hooks_around_generate(models: dict[str, Model], fam: str,
                                                    batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With a KV cache: capturing through interp's kernels leaves generate's tokens unchanged."""
    m = models[fam]
    prompt = batch[0][:1, :4]
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    caps = ["k.0", "pattern.1"] + (["router_weights.0", "expert_out.1"] if fam in MOE else [])
    with torch.no_grad():
        want = m.hf.generate(prompt, **kw)
        with hooks(m, capture=caps) as run:
            got = m.hf.generate(prompt, **kw)
    assert torch.equal(got, want)
    assert run.activations["blocks.1.attn.hook_pattern"].shape[2] == 1  # the last step has one new query
    assert_clean(m)


@pytest.mark.parametrize("fam", ["falcon", "mixtral"])
def test_stop_early_at_a_kernel_hook(models: dict[str, Model], fam: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = models[fam]
    name = "blocks.0.attn.hook_pattern" if fam == "falcon" else "blocks.0.mlp.hook_router_logits"
    full = run_with_hooks(m, *batch, capture=name)
    calls: list[int] = []
    h = blk(m, fam, 1).register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        out = run_with_hooks(m, *batch, capture=name, stop_early=True)
    finally:
        h.remove()
    assert out.logits is None and not calls
    assert torch.equal(out.activations[name], full.activations[name])
    assert_clean(m)


def test_falcon_parallel_mlp_out_is_not_overwritten_by_the_in_place_add(
        models: dict[str, Model], batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Falcon's parallel block does ``mlp_output += attention_output``; the capture keeps the MLP's output, also
    under gradients (the model is handed a copy) and under an edit."""
    m = models["falcon"]
    acts = run_with_hooks(m, *batch, capture=["mlp_out.0", "mlp_post.0"]).activations
    torch.testing.assert_close(acts["blocks.0.mlp.hook_post"] @ m.weights.W_out[0] + m.weights.b_out[0],
                               acts["blocks.0.hook_mlp_out"], **TIGHT)
    scaled = run_with_hooks(m, *batch, capture="mlp_out.0", interventions=[Scale("mlp_out.0", 2.0)])
    torch.testing.assert_close(scaled.activations["blocks.0.hook_mlp_out"], 2 * acts["blocks.0.hook_mlp_out"])
    out = run_with_hooks(m, *batch, grads="mlp_out.0", metric=lambda x: x.sum())
    assert out.grads["blocks.0.hook_mlp_out"].abs().sum() > 0


def test_falcon_alibi_patterns_follow_sdpa(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """ALiBi Falcon: the bias rides in the attention mask (as in Falcon's SDPA path, the default kernel);
    capturing patterns leaves the logits unchanged, and the patterns are causal, skip padding and sum to 1."""
    m = interp.from_hf(make("falcon_seq", alibi=True))
    ids, mask = batch
    out = run_with_hooks(m, ids, mask, capture=["pattern", "q", "k"])
    torch.testing.assert_close(out.logits, plain(m, ids, mask), **TIGHT)
    pat = out.activations["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(pat.sum(-1), torch.ones(pat.shape[:-1]), **TIGHT)
    assert not pat.triu(1).any() and not pat[1, :, :, 5:].any()
    assert_clean(m)


# --- bf16 / fp16: captures in the model's dtype ------------------------------------------------------------

@pytest.mark.parametrize("fam", ["gemma2", "gptj", "mixtral", "falcon"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_captures_keep_the_model_dtype(fam: str, dtype: torch.dtype,
                                                      batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Captured in the model's dtype; module-level captures leave the logits bit-identical; the attention kernel
    stays within the dtype's rounding of the eager kernel (tolerance: 2 ulps of the logits' scale)."""
    m = interp.from_hf(make(fam).to(dtype))
    ids, mask = batch
    want = plain(m, ids, mask)
    out = run_with_hooks(m, ids, mask, capture=module_names(m))
    assert torch.equal(out.logits, want)
    assert all(t.dtype == dtype for t in out.activations.values() if t.is_floating_point())
    with impl_of(m, "eager"):
        eager = plain(m, ids, mask)
        got = run_with_hooks(m, ids, mask, capture=["pattern", "v"]).logits
    tol = {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}[dtype] * 2 * float(eager.abs().max())
    torch.testing.assert_close(got.float(), eager.float(), rtol=0, atol=tol)
    assert out.activations["blocks.0.hook_resid_post"].dtype == dtype


# --- hooks on a model whose layers accelerate dispatched ------------------------------------------------------

def test_kernels_respect_accelerate_dispatch_hooks(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A kernel replaces ``_old_forward`` under accelerate's hooks (keeping their device moves) and restores it."""
    accelerate = requires("accelerate")
    hf = make("mixtral")
    hf = accelerate.dispatch_model(hf, device_map={"": "cpu"}, force_hooks=True)
    m = interp.from_hf(hf)
    mlp = m.hf.model.layers[0].mlp
    assert hasattr(mlp, "_hf_hook")
    before = mlp.__dict__["forward"], mlp.__dict__["_old_forward"]
    ref = interp.from_hf(make("mixtral"))
    ids, mask = batch
    out = run_with_hooks(m, ids, mask, capture=["expert_out.0", "pattern.0"])
    want = run_with_hooks(ref, ids, mask, capture=["expert_out.0", "pattern.0"])
    torch.testing.assert_close(out.logits, want.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.activations["blocks.0.mlp.hook_expert_out"],
                               want.activations["blocks.0.mlp.hook_expert_out"], rtol=0, atol=0)
    assert (mlp.__dict__["forward"], mlp.__dict__["_old_forward"]) == before
    ablated = run_with_hooks(m, ids, mask, interventions=[AblateExperts("expert_out.0", experts=[0])]).logits
    want = run_with_hooks(ref, ids, mask, interventions=[AblateExperts("expert_out.0", experts=[0])]).logits
    torch.testing.assert_close(ablated, want, rtol=0, atol=0)


def test_copy_of_a_model_runs_the_same(models: dict[str, Model], batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A deep copy made while no run is active carries no interp state (kernels installed only during runs)."""
    m = models["falcon40"]
    c = interp.from_hf(copy.deepcopy(m.hf))
    torch.testing.assert_close(run_with_hooks(c, *batch, capture="pattern").logits,
                               run_with_hooks(m, *batch, capture="pattern").logits, rtol=0, atol=0)


# --- loading: unsupported types, config/weights mismatches, device maps ----------------------------------------

def _saved(fam: str, tmp: Any, **overrides: Any) -> str:
    from conftest import make_tokenizer

    make(fam, **overrides).save_pretrained(tmp)
    make_tokenizer().save_pretrained(tmp)
    return str(tmp)


def test_unsupported_model_type_names_the_supported_ones_and_the_guide(tmp_path: Any) -> None:
    from transformers import OPTConfig, OPTForCausalLM

    from interp.models.adapters import UnsupportedModelError

    opt = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                   vocab_size=64, max_position_embeddings=16, word_embed_proj_dim=16))
    opt.config.save_pretrained(tmp_path)  # the config alone: the adapter is looked up before any weight loads
    for load in (lambda: interp.load_model(str(tmp_path)), lambda: interp.from_hf(opt)):
        with pytest.raises(UnsupportedModelError) as e:
            load()
        msg = str(e.value)
        assert "'opt'" in msg and "docs/models.md" in msg and "ADAPTERS.register" in msg
        for t in ("gemma2", "gemma3_text", "olmo2", "phi3", "gptj", "falcon", "mixtral", "olmoe", "qwen2_moe",
                  "qwen3_moe", "llama", "gpt_neox"):
            assert t in msg
        assert isinstance(e.value, BadInputError)


def test_config_that_disagrees_with_its_weights_fails_at_load_naming_the_tensors(tmp_path: Any) -> None:
    import json

    from interp.models.registry import ConfigWeightsMismatchError

    d = _saved("phi3", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for change, match in (({"num_hidden_layers": 3}, r"missing from the checkpoint.*model\.layers\.2\."),
                          ({"num_hidden_layers": 1}, r"in the checkpoint but not in the model.*model\.layers\.1\."),
                          ({"intermediate_size": 64}, r"of another shape: model\.layers\.0\.mlp\.down_proj\.weight "
                                                      r"\(checkpoint \(64, 80\), config \(64, 64\)\)")):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ConfigWeightsMismatchError, match=match) as e:
            interp.load_model(d)
        assert isinstance(e.value, BadInputError) and "config.json" in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert interp.load_model(d).adapter.family == "phi3"


def test_device_map_with_layers_offloaded_to_disk(tmp_path: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A model spread by accelerate (here: layer 1 on disk, the rest on the CPU; one CPU, so "two devices" are the
    CPU and the disk): captures, patches, kernels and per-expert ablation equal those of the plain model, bit for bit."""
    requires("accelerate")
    d = _saved("mixtral", tmp_path / "model")
    ref = interp.load_model(d)
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
          "model.norm": "cpu", "lm_head": "cpu"}
    m = interp.load_model(d, device_map=dm, offload_folder=tmp_path / "offload")
    assert m.hf.hf_device_map["model.layers.1"] == "disk"
    ids, mask = batch
    src = run_with_hooks(ref, ids.flip(0), mask.flip(0), capture="resid_mid.1").activations["blocks.1.hook_resid_mid"]
    for caps, ivs in ((["resid_post", "pattern", "expert_out", "router_logits"], []),
                      (["mlp_out.1", "z.1"], [Ablate("z.1", heads=[1]), Patch("resid_mid.1", source=src),
                                              AblateExperts("router_weights.1", experts=[0])])):
        a, b = run_with_hooks(m, ids, mask, capture=caps, interventions=ivs), run_with_hooks(ref, ids, mask, capture=caps,
                                                                                            interventions=ivs)
        assert torch.equal(a.logits, b.logits)
        for k, v in b.activations.items():
            assert torch.equal(a.activations[k], v), k
    assert_clean(m)
    # "auto" with a budget too small for the CPU offloads everything to disk; still the same logits
    auto = interp.load_model(d, device_map="auto", max_memory={"cpu": "64KB"}, offload_folder=tmp_path / "off2")
    assert torch.equal(run_with_hooks(auto, ids, mask, capture="k.0").logits,
                       run_with_hooks(ref, ids, mask, capture="k.0").logits)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(device="cpu", device_map="auto"), "not both"),
    (dict(device_map="everywhere"), "'everywhere' is not a strategy"),
    (dict(device_map={}), "non-empty dict"),
    (dict(max_memory={"cpu": "1GB"}), "go with device_map"),
])
def test_bad_placement_arguments(tmp_path: Any, kw: dict[str, Any], match: str) -> None:
    make("gemma").config.save_pretrained(tmp_path)
    with pytest.raises(BadInputError, match=match):
        interp.load_model(str(tmp_path), **kw)


# --- interp report on a saved tiny model of each family ------------------------------------------------------

REPORT_ARGS = ["--fast", "--prompt", "w1 w2 w3 w4 w5 w6 w1 w2 w3", "--corrupt", "w1 w2 w3 w4 w9 w6 w1 w2 w3"]


@pytest.mark.slow
@pytest.mark.parametrize("fam", FAMILIES)
def test_interp_report_on_a_saved_model_of_each_family(fam: str, tmp_path: Any) -> None:
    """``interp report --model <dir>`` (the CLI entry, in this process) with the sections that depend most on the
    architecture: logit lens and direct logit attribution (unembedding, norms, soft-caps) and patching (partial
    forwards)."""
    import json

    from interp.cli import main

    d = _saved(fam, tmp_path / "model")
    out = tmp_path / "r.html"
    rc = main(["--quiet", "report", "--model", d, *REPORT_ARGS, "--sections", "lens,dla,patching", "--html", str(out)])
    assert rc == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert "Next-token prediction" in json.dumps(data)


@pytest.mark.slow
def test_interp_report_cli_subprocess_with_every_section(tmp_path: Any) -> None:
    """The real command line, every section, on a mixture-of-experts model saved to disk."""
    import subprocess
    import sys

    d = _saved("mixtral", tmp_path / "model")
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "interp.cli", "--quiet", "report", "--model", d, *REPORT_ARGS,
                           "--html", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 0 and out.with_suffix(".json").exists()


NO_QKV_INPUTS = ("falcon", "falcon40", "falcon_seq")  # Falcon's attention kernel has several layouts
# GPT-J's ln_1 also feeds its MLP (a parallel block), so an edit of the norm's input is no oracle for it
QKV_EDIT_FAMILIES = tuple(f for f in FAMILIES if f not in (*NO_QKV_INPUTS, "gptj"))


@pytest.mark.parametrize("fam", NO_QKV_INPUTS)
def test_families_without_per_head_inputs_do_not_offer_them(models: dict[str, Model], fam: str) -> None:
    m = models[fam]
    assert m.adapter.attn_inputs is None
    assert not any(n.endswith(("hook_q_input", "hook_k_input", "hook_v_input")) for n in m.hook_names())
    assert any(n.endswith("attn.hook_result") for n in m.hook_names())


@pytest.mark.parametrize("fam", QKV_EDIT_FAMILIES)
def test_editing_every_heads_qkv_input_equals_editing_what_the_projections_read(
        models: dict[str, Model], fam: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The same vector added to every head's q, k and v input (``hook_*_input``) equals it added to the input of the
    attention's norm (an ``hf:`` edit of the Hugging Face module), or of the projections where no norm is in front
    (OLMo 2): fused ``[q | k | v]`` projections (Phi-3) and grouped key/value heads included. Falcon offers no
    per-head inputs; GPT-J's ``ln_1`` also feeds its MLP, so its norm-input edit is not an oracle there."""
    m = models[fam]
    spec = m.adapter.attn_inputs
    assert spec is not None and not layout(fam, m)["parallel"]
    ids, mask = batch
    delta = torch.randn(m.dims.d_model, generator=torch.Generator().manual_seed(5)).to(m.dtype)
    targets = [spec.norm] if spec.norm is not None else sorted({spec.q, spec.k, spec.v})
    want = run_with_hooks(m, ids, mask, interventions=[Add(f"hf:{t.format(L=1)}:input", delta) for t in targets]).logits
    got = run_with_hooks(m, ids, mask, interventions=[Add(f"{c}.1", delta) for c in ("q_input", "k_input", "v_input")]).logits
    assert (want - plain(m, ids, mask)).abs().max() > 1e-3
    close_real(got, want, mask, what=fam)
