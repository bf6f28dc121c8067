"""The hook engine: captured activations against independent recomputations, bit-identical
logits, gradients against finite differences, hook removal, ``hooks()`` around ``generate`` and
the errors for bad input.

Oracles: the plain Hugging Face forward; raw PyTorch forward hooks written here; hand recomputation
from the weights (``ln1(resid_pre) @ W_Q + b_Q`` then HF's own rotary function, ``z @ W_O + b_O``...);
HF's eager attention weights (``output_attentions=True``); central finite differences in float64.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import pytest
import torch
from conftest import DECODERS, FAMILIES, N_CTX, VOCAB, randomize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.gpt_neox import modeling_gpt_neox
from transformers.models.llama import modeling_llama

import interp
from interp.errors import BadInputError
from interp.hooks import Ablate, Add, Lambda, Patch, Scale, forward, hooks, run_with_hooks
from interp.models import Model
from interp.sites import Component, Site, UnknownHookError, all_sites, resolve

AVAILABLE_SITES = all_sites(4, [c for c in Component if c is not Component.HF])

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def family_of(m: Model) -> str:
    """The fixture family name: the adapter family, with GPT-NeoX split by its residual layout."""
    fam = m.adapter.family
    if fam == "gpt_neox":
        return "neox_parallel" if m.config.use_parallel_residual else "neox_sequential"
    return fam


# --- oracle helpers -------------------------------------------------------------------------------

LAYOUT = {  # where the raw oracle hooks go (tests may know HF module names)
    "llama": dict(layers="model.layers", attn="self_attn", mlp="mlp", embed="model.embed_tokens",
                  ln_final="model.norm", ln1="input_layernorm", ln2="post_attention_layernorm", act="mlp.act_fn"),
    "gpt2": dict(layers="transformer.h", attn="attn", mlp="mlp", embed="transformer.wte", ln_final="transformer.ln_f",
                 ln1="ln_1", ln2="ln_2", act="mlp.act"),
    "neox": dict(layers="gpt_neox.layers", attn="attention", mlp="mlp", embed="gpt_neox.embed_in",
                 ln_final="gpt_neox.final_layer_norm", ln1="input_layernorm", ln2="post_attention_layernorm",
                 act="mlp.act"),
    "bert": dict(layers="encoder.layer", attn="attention.output.dense", mlp="output.dense",
                 embed="embeddings.word_embeddings", ln_final=None, ln1="attention.output.LayerNorm",
                 ln2="output.LayerNorm", act="intermediate.intermediate_act_fn"),
}


def layout(m: Model) -> dict[str, str | None]:
    fam = family_of(m)
    return LAYOUT["neox" if fam.startswith("neox") else fam]


def block(m: Model, L: int) -> nn.Module:
    return m.hf.get_submodule(layout(m)["layers"])[L]  # type: ignore[index,arg-type]


def sub(m: Model, L: int, key: str) -> nn.Module:
    return block(m, L).get_submodule(layout(m)[key])  # type: ignore[arg-type]


def plain_forward(m: Model, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        out = m.hf(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def first(x: object) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x  # type: ignore[return-value,index]


def raw_capture(m: Model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer inputs/outputs, sublayer outputs, embedding and final norm from plain torch hooks."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    lay = layout(m)

    def save(name: str, pre: bool = False) -> Callable[..., None]:
        if pre:
            return lambda mod, args: got.__setitem__(name, args[0].detach().clone())
        return lambda mod, args, out: got.__setitem__(name, first(out).detach().clone())

    try:
        handles.append(m.hf.get_submodule(lay["embed"]).register_forward_hook(save("hook_embed")))  # type: ignore[arg-type]
        if lay["ln_final"]:
            handles.append(m.hf.get_submodule(lay["ln_final"]).register_forward_hook(save("ln_final.hook_normalized")))
        for L in range(m.dims.n_layers):
            b = block(m, L)
            handles.append(b.register_forward_pre_hook(save(f"blocks.{L}.hook_resid_pre", pre=True)))
            handles.append(b.register_forward_hook(save(f"blocks.{L}.hook_resid_post")))
            handles.append(sub(m, L, "attn").register_forward_hook(save(f"blocks.{L}.hook_attn_out")))
            handles.append(sub(m, L, "mlp").register_forward_hook(save(f"blocks.{L}.hook_mlp_out")))
        got["logits"] = plain_forward(m, ids, mask)
    finally:
        for h in handles:
            h.remove()
    return got


@contextlib.contextmanager
def eager(m: Model) -> Iterator[None]:
    saved = m.config._attn_implementation
    m.config._attn_implementation = "eager"
    try:
        yield
    finally:
        m.config._attn_implementation = saved


def eager_patterns(m: Model, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    with eager(m), torch.no_grad():
        return list(m.hf(input_ids=ids, attention_mask=mask, output_attentions=True).attentions)


def rotate(m: Model, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the model's rotary embedding with HF's own functions (q, k: [batch, pos, head, d_head])."""
    fam = family_of(m)
    if fam in ("gpt2", "bert"):
        return q, k
    position_ids = torch.arange(pos)[None]
    if fam == "llama":
        cos, sin = m.hf.model.rotary_emb(q, position_ids)
        fn = modeling_llama.apply_rotary_pos_emb
    else:
        cos, sin = m.hf.gpt_neox.rotary_emb(q, position_ids)
        fn = modeling_gpt_neox.apply_rotary_pos_emb
    qr, kr = fn(q.transpose(1, 2), k.transpose(1, 2), cos.to(q.dtype), sin.to(q.dtype))
    return qr.transpose(1, 2), kr.transpose(1, 2)


def expected_activations(m: Model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every hook point of the model, recomputed from raw hooks, weights and eager attention weights."""
    fam = family_of(m)
    w = m.weights
    exp = raw_capture(m, ids, mask)
    pats = eager_patterns(m, ids, mask)
    pos = ids.shape[1]
    if fam == "bert":
        del exp["logits"]  # an encoder has no logits hook; its "logits" are the last hidden state
    with torch.no_grad():
        for L in range(m.dims.n_layers):
            x, a = exp[f"blocks.{L}.hook_resid_pre"], exp[f"blocks.{L}.hook_attn_out"]
            ln1, ln2 = sub(m, L, "ln1"), sub(m, L, "ln2")
            if fam == "bert":
                mid = ln1(a + x)
                attn_in, mlp_in = x, mid
            elif fam == "neox_parallel":
                mid = None
                attn_in, mlp_in = ln1(x), ln2(x)
            else:
                mid = x + a
                attn_in, mlp_in = ln1(x), ln2(mid)
            if mid is not None:
                exp[f"blocks.{L}.hook_resid_mid"] = mid
            q = torch.einsum("bpd,hde->bphe", attn_in, w.W_Q[L]) + w.b_Q[L]
            k = torch.einsum("bpd,hde->bphe", attn_in, w.W_K[L]) + w.b_K[L]
            v = torch.einsum("bpd,hde->bphe", attn_in, w.W_V[L]) + w.b_V[L]
            q, k = rotate(m, q, k, pos)
            exp[f"blocks.{L}.attn.hook_q"], exp[f"blocks.{L}.attn.hook_k"], exp[f"blocks.{L}.attn.hook_v"] = q, k, v
            exp[f"blocks.{L}.attn.hook_pattern"] = pats[L]
            exp[f"blocks.{L}.attn.hook_z"] = torch.einsum("bhqk,bkhe->bqhe", pats[L], v)
            # per-head points: each head's output in d_model; each head's q / k / v input (pre-norm stream, per kv head)
            exp[f"blocks.{L}.attn.hook_result"] = torch.einsum("bphe,hed->bphd", exp[f"blocks.{L}.attn.hook_z"], w.W_O[L])
            for name, n in (("q", m.dims.n_heads), ("k", m.dims.n_kv_heads), ("v", m.dims.n_kv_heads)):
                exp[f"blocks.{L}.hook_{name}_input"] = x[:, :, None, :].expand(-1, -1, n, -1)
            act = sub(m, L, "act")
            if fam == "llama":
                pre = mlp_in @ w.W_gate[L]
                post = act(pre) * (mlp_in @ w.W_in[L])
            else:
                pre = mlp_in @ w.W_in[L] + w.b_in[L]
                post = act(pre)
            exp[f"blocks.{L}.mlp.hook_pre"], exp[f"blocks.{L}.mlp.hook_post"] = pre, post
    return exp


def assert_clean(m: Model, impl: str | None = "sdpa") -> None:
    """No hook of interp's (or of these tests') is left on any module, and the attention implementation
    is restored. (Hooks transformers installs itself, e.g. for output_attentions, are allowed.)"""
    for name, mod in m.hf.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            for fn in getattr(mod, attr, {}).values():
                origin = getattr(fn, "__module__", "") or ""
                assert not origin.startswith(("interp", "test_", "tests")), f"{attr} {fn} left on {name or 'model'}"
        assert not getattr(mod, "_forward_hooks_with_kwargs", {}) and not getattr(mod, "_forward_pre_hooks_with_kwargs", {})
        assert not hasattr(mod, "_interp_attn_hook"), f"attention hook left on {name}"
    assert m.config._attn_implementation == impl


TIGHT = dict(rtol=2e-5, atol=2e-5)


# --- captures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_module_level_captures_leave_logits_bit_identical(tiny_models: dict[str, Model], family: str,
                                                          batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_models[family]
    ids, mask = batch
    plain = plain_forward(m, ids, mask)
    names = [s.name for s in m.sites() if not s.component.inside_attention]
    out = run_with_hooks(m, ids, mask, capture=names)
    assert torch.equal(out.logits, plain)
    assert set(out.activations) == set(names)
    assert torch.equal(forward(m, ids, mask), plain)
    assert_clean(m)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hook_equals_its_independent_recomputation(tiny_models: dict[str, Model], family: str,
                                                        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_models[family]
    ids, mask = batch
    exp = expected_activations(m, ids, mask)
    out = run_with_hooks(m, ids, mask, capture=m.hook_names())
    assert set(out.activations) == set(exp) == set(m.hook_names())
    for name, want in exp.items():
        got = out.activations[name]
        assert got.shape == want.shape, name
        assert not got.requires_grad, name
        torch.testing.assert_close(got, want, **TIGHT, msg=lambda s, n=name: f"{n}: {s}")
    # switching to interp's attention kernel changes the logits by rounding only
    torch.testing.assert_close(out.logits, plain_forward(m, ids, mask), **TIGHT)
    assert_clean(m)


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_satisfy_the_block_equations(tiny_models: dict[str, Model], family: str,
                                           batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """z @ W_O + b_O == attn_out; mlp.hook_post @ W_out + b_out == mlp_out; the residual sums."""
    m = tiny_models[family]
    ids, mask = batch
    acts = run_with_hooks(m, ids, mask, capture=m.hook_names()).activations
    w = m.weights
    for L in range(m.dims.n_layers):
        def a(s: str, L: int = L) -> torch.Tensor:
            return acts[f"blocks.{L}.{s}"]

        torch.testing.assert_close(torch.einsum("bphe,hed->bpd", a("attn.hook_z"), w.W_O[L]) + w.b_O[L],
                                   a("hook_attn_out"), **TIGHT)
        torch.testing.assert_close(a("mlp.hook_post") @ w.W_out[L] + w.b_out[L], a("hook_mlp_out"), **TIGHT)
        if family == "neox_parallel":
            torch.testing.assert_close(a("hook_resid_pre") + a("hook_attn_out") + a("hook_mlp_out"),
                                       a("hook_resid_post"), **TIGHT)
        elif family != "bert":
            torch.testing.assert_close(a("hook_resid_pre") + a("hook_attn_out"), a("hook_resid_mid"), **TIGHT)
            torch.testing.assert_close(a("hook_resid_mid") + a("hook_mlp_out"), a("hook_resid_post"), **TIGHT)
        if f"blocks.{L + 1}.hook_resid_pre" in acts:
            assert torch.equal(a("hook_resid_post"), acts[f"blocks.{L + 1}.hook_resid_pre"])
        pat = a("attn.hook_pattern")
        torch.testing.assert_close(pat.sum(-1), torch.ones(pat.shape[:-1]), **TIGHT)
        if family != "bert":  # causal: nothing attends to the future
            assert not pat.triu(1).any()
        assert not pat[1, :, :, 5:].any()  # nothing attends to the padding of row 1


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "mistral", "smollm3"])
def test_other_model_types_served_by_the_llama_adapter(model_type: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Bit-identical logits, patterns equal to eager attention, z @ W_O + b_O == attn_out."""
    cfg = AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=128,
                               max_position_embeddings=N_CTX, pad_token_id=0)
    m = interp.from_hf(randomize(AutoModelForCausalLM.from_config(cfg), seed=4))
    assert m.adapter.family == "llama"
    ids, mask = batch
    plain = plain_forward(m, ids, mask)
    names = [s.name for s in m.sites() if not s.component.inside_attention]
    assert torch.equal(run_with_hooks(m, ids, mask, capture=names).logits, plain)
    acts = run_with_hooks(m, ids, mask, capture=m.hook_names()).activations
    pats = eager_patterns(m, ids, mask)
    w = m.weights
    for L in range(2):
        torch.testing.assert_close(acts[f"blocks.{L}.attn.hook_pattern"], pats[L], **TIGHT)
        torch.testing.assert_close(torch.einsum("bphe,hed->bpd", acts[f"blocks.{L}.attn.hook_z"], w.W_O[L]) + w.b_O[L],
                                   acts[f"blocks.{L}.hook_attn_out"], rtol=1e-5, atol=1e-5)
    assert_clean(m)


def test_gqa_hooks_are_expanded_per_query_head(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    acts = run_with_hooks(tiny_llama, *batch, capture=["blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
                                                       "blocks.0.attn.hook_q"]).activations
    k, v, q = acts["blocks.0.attn.hook_k"], acts["blocks.0.attn.hook_v"], acts["blocks.0.attn.hook_q"]
    assert k.shape == v.shape == q.shape == (3, 8, 4, 16)
    for t in (k, v):
        assert torch.equal(t[:, :, 0], t[:, :, 1]) and torch.equal(t[:, :, 2], t[:, :, 3])
        assert not torch.equal(t[:, :, 1], t[:, :, 2])


def test_capture_of_an_intervened_site_is_the_edited_value(tiny_gpt2: Model,
                                                           batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    clean = run_with_hooks(tiny_gpt2, *batch, capture="blocks.0.hook_mlp_out").activations["blocks.0.hook_mlp_out"]
    out = run_with_hooks(tiny_gpt2, *batch, capture="blocks.0.hook_mlp_out",
                         interventions=[Scale("blocks.0.hook_mlp_out", factor=3.0)])
    torch.testing.assert_close(out.activations["blocks.0.hook_mlp_out"], 3 * clean)


def test_capture_with_glob_patterns(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    out = run_with_hooks(tiny_llama, *batch, capture=["blocks.*.attn.hook_pattern", "logits"])
    assert sorted(out.activations) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "logits"]
    assert torch.equal(out.activations["logits"], out.logits)


def test_unmasked_run_equals_all_ones_mask(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids = batch[0][[0, 2]]
    a = run_with_hooks(tiny_llama, ids, None, capture="blocks.1.attn.hook_pattern")
    b = run_with_hooks(tiny_llama, ids, torch.ones_like(ids), capture="blocks.1.attn.hook_pattern")
    torch.testing.assert_close(a.activations["blocks.1.attn.hook_pattern"], b.activations["blocks.1.attn.hook_pattern"])
    torch.testing.assert_close(a.logits, plain_forward(tiny_llama, ids, None), **TIGHT)


# --- gradients against finite differences ---------------------------------------------------------

GRAD_HOOKS = {
    "llama": ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.1.hook_attn_out", "blocks.0.attn.hook_z",
              "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_k", "blocks.0.mlp.hook_post", "hook_embed",
              "ln_final.hook_normalized"],
    "gpt2": ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.0.hook_attn_out", "blocks.1.attn.hook_z",
             "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_q", "blocks.1.mlp.hook_pre"],
}


def make_metric(vocab: int) -> Callable[[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    weights = torch.randn(3, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, vocab, (3, 8), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        lp = logits.log_softmax(-1).gather(-1, target[..., None])[..., 0]
        return (lp * weights).sum()

    return metric


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_gradients_match_central_finite_differences(tiny_llama64: Model, tiny_gpt2_64: Model,
                                                    family: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_llama64 if family == "llama" else tiny_gpt2_64
    ids, mask = batch
    metric = make_metric(m.dims.d_vocab)
    names = GRAD_HOOKS[family]
    out = run_with_hooks(m, ids, mask, capture=names, grads=names, metric=metric)
    g = torch.Generator().manual_seed(11)
    eps = 1e-5
    for name in names:
        act, grad = out.activations[name], out.grads[name]
        assert grad.shape == act.shape and grad.dtype == torch.float64 and not grad.requires_grad
        assert grad.abs().sum() > 0, name
        for _ in range(2):
            d = torch.randn(act.shape, generator=g, dtype=torch.float64)
            f = [float(metric(run_with_hooks(m, ids, mask, interventions=[Patch(name, source=act + s * eps * d)]).logits))
                 for s in (1, -1)]
            fd = (f[0] - f[1]) / (2 * eps)
            an = float((grad * d).sum())
            assert an == pytest.approx(fd, rel=1e-5, abs=1e-7), name
    assert_clean(m)


def test_gradients_do_not_need_parameter_grads_or_grad_mode(tiny_llama64: Model,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    names = ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"]
    metric = make_metric(tiny_llama64.dims.d_vocab)
    ref = run_with_hooks(tiny_llama64, *batch, grads=names, metric=metric).grads
    frozen = interp.from_hf(copy.deepcopy(tiny_llama64.hf).requires_grad_(False))
    with torch.no_grad():
        got = run_with_hooks(frozen, *batch, grads=names, metric=metric).grads
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in tiny_llama64.hf.parameters())  # no parameter gradients accumulate


def test_gradients_are_zero_where_an_intervention_cuts_the_path(tiny_llama64: Model,
                                                                batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    src = torch.zeros(3, 8, 64, dtype=torch.float64)
    out = run_with_hooks(tiny_llama64, *batch, grads=["blocks.0.hook_resid_pre"], metric=make_metric(128),
                         interventions=[Patch("blocks.1.hook_resid_pre", source=src)])
    assert not out.grads["blocks.0.hook_resid_pre"].any()


# --- stop_early -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"])
def test_stop_early_returns_the_same_activations_and_skips_the_rest(tiny_llama: Model, name: str,
                                                                    batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    full = run_with_hooks(tiny_llama, *batch, capture=[name, "blocks.0.hook_resid_pre"])
    calls = []
    h = tiny_llama.hf.model.layers[1].register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        out = run_with_hooks(tiny_llama, *batch, capture=[name, "blocks.0.hook_resid_pre"], stop_early=True)
    finally:
        h.remove()
    assert out.logits is None and not calls
    for n, t in full.activations.items():
        assert torch.equal(out.activations[n], t)
    assert_clean(tiny_llama)


def test_stop_early_is_ignored_with_interventions(tiny_llama: Model,
                                                  batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With an intervention after the last captured hook, stop_early must not cut the forward short: the
    run's logits are those of the full edited forward (which differ from the unedited ones) and the capture is
    the unedited value before the edit."""
    ivs = [Scale("blocks.1.hook_mlp_out", factor=0.5)]
    out = run_with_hooks(tiny_llama, *batch, capture="blocks.0.hook_resid_post", stop_early=True, interventions=ivs)
    full = run_with_hooks(tiny_llama, *batch, capture="blocks.0.hook_resid_post", interventions=ivs)
    plain = run_with_hooks(tiny_llama, *batch, capture="blocks.0.hook_resid_post")
    assert out.logits is not None and full.logits is not None and plain.logits is not None
    torch.testing.assert_close(out.logits, full.logits, rtol=0, atol=0)
    assert not torch.allclose(out.logits, plain.logits)  # the edit at layer 1 ran
    torch.testing.assert_close(out.activations["blocks.0.hook_resid_post"],
                               plain.activations["blocks.0.hook_resid_post"], rtol=0, atol=0)


# --- hooks are always removed -----------------------------------------------------------------------

class BoomError(Exception):
    pass


def _raise(exc: BaseException) -> Callable[..., None]:
    def fn(act: torch.Tensor, site: object) -> None:
        raise exc
    return fn


@pytest.mark.parametrize("site", ["blocks.1.hook_mlp_out", "blocks.0.attn.hook_pattern", "blocks.0.hook_resid_mid",
                                  "blocks.0.attn.hook_z"])
@pytest.mark.parametrize("exc", [BoomError("boom"), KeyboardInterrupt()])
def test_hooks_removed_after_an_exception_inside_a_lambda(fresh_llama: Model, site: str,
                                                         exc: BaseException,
                                                         batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(type(exc)):
        run_with_hooks(fresh_llama, *batch, capture=fresh_llama.hook_names(),
                       interventions=[Lambda(site, fn=_raise(exc))])
    assert_clean(fresh_llama)
    torch.testing.assert_close(run_with_hooks(fresh_llama, *batch).logits, plain_forward(fresh_llama, *batch))


def test_hooks_removed_after_bad_positions_and_in_hooks_context(fresh_llama: Model,
                                                                batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(BadInputError, match="position 8 is outside sequence 0"):
        run_with_hooks(fresh_llama, *batch, capture="blocks.0.attn.hook_q",
                       interventions=[Ablate("blocks.1.attn.hook_v", positions=[8])])
    assert_clean(fresh_llama)
    with pytest.raises(BoomError), hooks(fresh_llama, {"blocks.*.attn.hook_pattern": lambda a, s: None}):
        assert fresh_llama.config._attn_implementation == "interp"
        raise BoomError
    assert_clean(fresh_llama)


def test_attention_implementation_restored_even_when_it_was_none(fresh_llama: Model,
                                                                 batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    fresh_llama.config._attn_implementation = None  # HF then falls back to eager attention
    run_with_hooks(fresh_llama, *batch, capture="blocks.0.attn.hook_pattern")
    assert_clean(fresh_llama, impl=None)
    fresh_llama.config._attn_implementation = "eager"
    run_with_hooks(fresh_llama, *batch, capture="blocks.0.attn.hook_pattern", stop_early=True)
    assert_clean(fresh_llama, impl="eager")


def test_failed_resolution_installs_nothing(fresh_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(UnknownHookError):
        run_with_hooks(fresh_llama, *batch, capture=["blocks.0.attn.hook_q", "blocks.7.hook_resid_post"])
    assert_clean(fresh_llama)


# --- hooks() around calls you make yourself ---------------------------------------------------------

def raw_add_hook(m: Model, L: int, vec: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    return block(m, L).register_forward_hook(lambda mod, args, out: first(out) + vec)


def test_hooks_context_around_model_hf(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, mask = batch
    vec = torch.linspace(-1, 1, 64)
    h = raw_add_hook(tiny_llama, 0, vec)
    try:
        want = plain_forward(tiny_llama, ids, mask)
    finally:
        h.remove()
    seen = []

    def steer(act: torch.Tensor, site: object) -> torch.Tensor:
        seen.append(str(site))
        return act + vec

    with torch.no_grad(), hooks(tiny_llama, {"blocks.0.hook_resid_post": steer}, capture="blocks.1.hook_resid_pre") as run:
        got = tiny_llama.hf(input_ids=ids, attention_mask=mask).logits
    assert seen == ["blocks.0.hook_resid_post"]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert set(run.activations) == {"blocks.1.hook_resid_pre"}
    assert_clean(tiny_llama)
    # the Model method is the same thing
    with torch.no_grad(), tiny_llama.hooks(interventions=[Add("blocks.0.hook_resid_post", vec)]):
        got2 = tiny_llama.hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got2, want, rtol=0, atol=0)
    assert_clean(tiny_llama)


@pytest.mark.parametrize("family", DECODERS)
def test_hooks_context_around_generate(tiny_models: dict[str, Model], family: str,
                                       batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_models[family]
    prompt = batch[0][:1, :4]
    vec = 3 * torch.sin(torch.arange(m.dims.d_model, dtype=torch.float32))
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = m.hf.generate(prompt, **kw)
        h = raw_add_hook(m, 1, vec)
        try:
            want = m.hf.generate(prompt, **kw)
        finally:
            h.remove()
        with hooks(m, interventions=[Add("blocks.1.hook_resid_post", vec)]):
            got = m.hf.generate(prompt, **kw)
        # attention-internal hooks run through interp's kernel, also with a KV cache
        with hooks(m, {"blocks.0.attn.hook_pattern": lambda a, s: None}, capture="blocks.0.attn.hook_k") as run:
            same = m.hf.generate(prompt, **kw)
    assert torch.equal(got, want)
    assert not torch.equal(want, plain)  # the steering vector does change the continuation
    assert torch.equal(same, plain)
    assert run.activations["blocks.0.attn.hook_k"].shape[1] == plain.shape[1] - 1  # last step sees the cache
    assert_clean(m)


def test_a_block_called_with_keywords_only_is_hooked_on_its_hidden_states(tiny_llama: Model) -> None:
    layer = tiny_llama.hf.model.layers[0]
    h = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(5)[None]
    rope = tiny_llama.hf.model.rotary_emb(h, pos)
    with torch.no_grad():
        want = layer(2 * h, position_embeddings=rope, position_ids=pos)
        with hooks(tiny_llama, interventions=[Scale("blocks.0.hook_resid_pre", factor=2.0)],
                   capture="blocks.0.hook_resid_pre") as run:
            got = layer(position_ids=pos, hidden_states=h, position_embeddings=rope)  # a tensor keyword comes first
    assert torch.equal(got, want)
    assert torch.equal(run.activations["blocks.0.hook_resid_pre"], 2 * h)
    assert_clean(tiny_llama)


# --- bad input --------------------------------------------------------------------------------------

def test_unknown_hook_names_list_close_matches(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(UnknownHookError) as e:
        run_with_hooks(tiny_llama, *batch, capture="blocks.1.hook_resid_psot")
    assert "hook_resid_post" in str(e.value)
    with pytest.raises(UnknownHookError) as e:
        run_with_hooks(tiny_llama, *batch, capture="blocks.1.hook_resid_mix*")
    assert "blocks.1.hook_resid_mid" in str(e.value)
    with pytest.raises(UnknownHookError, match="2 layers"):
        run_with_hooks(tiny_llama, *batch, capture="blocks.2.hook_resid_post")
    with pytest.raises(UnknownHookError):
        run_with_hooks(tiny_llama, *batch, capture="blocks.*.hook_nonsense")
    with pytest.raises(UnknownHookError):
        run_with_hooks(tiny_llama, *batch, grads="blocks.9.hook_resid_pre", metric=lambda x: x.sum())
    with pytest.raises(UnknownHookError):
        run_with_hooks(tiny_llama, *batch, interventions=[Scale("blocks.5.hook_mlp_out", factor=2.0)])
    with pytest.raises(TypeError):
        run_with_hooks(tiny_llama, *batch, capture=[3])  # type: ignore[list-item]


def test_misspelt_name_suggests_the_same_layer(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(UnknownHookError) as e:
        run_with_hooks(tiny_llama, *batch, capture="blocks.1.hook_resid_psot")
    assert "blocks.1.hook_resid_post" in str(e.value)


def test_resid_mid_does_not_exist_under_parallel_residual(tiny_neox_parallel: Model,
                                                          batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_neox_parallel
    with pytest.raises(UnknownHookError):
        run_with_hooks(m, *batch, capture="blocks.0.hook_resid_mid")
    with pytest.raises(UnknownHookError):
        run_with_hooks(m, *batch, interventions=[Ablate("blocks.1.hook_resid_mid")])
    with pytest.raises(UnknownHookError):
        run_with_hooks(m, *batch, grads="blocks.1.hook_resid_mid", metric=lambda x: x.sum())
    assert "hook_resid_mid" not in " ".join(m.hook_names())
    assert "resid_mid" not in " ".join(s.name for s in interp.sites.resolve("blocks.*", m.sites()))


@pytest.mark.parametrize(("ids", "exc", "match"), [
    (torch.tensor([[1.0, 2.0]]), TypeError, "integer tensor"),
    ([[1, 2]], TypeError, "integer tensor"),
    (torch.tensor([1, 2]), ValueError, r"\[batch, pos\]"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "at least one token"),
    (torch.zeros(0, 3, dtype=torch.long), ValueError, "at least one token"),
    (torch.tensor([[1, 128]]), ValueError, r"\[0, 128\)"),
    (torch.tensor([[-1, 2]]), ValueError, r"\[0, 128\)"),
    (torch.zeros(1, N_CTX + 1, dtype=torch.long), ValueError, "exceeds the model's context of 32"),
])
def test_bad_token_ids(tiny_llama: Model, ids: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        run_with_hooks(tiny_llama, ids, None)  # type: ignore[arg-type]
    assert_clean(tiny_llama)


def test_full_context_is_accepted(tiny_gpt2: Model) -> None:
    assert run_with_hooks(tiny_gpt2, torch.zeros(1, N_CTX, dtype=torch.long)).logits.shape == (1, N_CTX, 100)


def test_mask_shape_must_match(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="attention_mask shape"):
        run_with_hooks(tiny_llama, batch[0], batch[1][:, :4])


@pytest.mark.parametrize(("metric", "exc", "match"), [
    (lambda lg: lg[:, -1].sum(-1), ValueError, "scalar"),
    (lambda lg: lg.sum().item(), TypeError, "torch.Tensor"),
    (lambda lg: lg.sum().detach(), ValueError, "does not depend"),
    (None, ValueError, "needs metric"),
])
def test_bad_metrics(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor], metric: object,
                     exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        run_with_hooks(tiny_llama, *batch, grads="blocks.0.hook_resid_post", metric=metric)  # type: ignore[arg-type]
    assert_clean(tiny_llama)


def test_interventions_must_be_interventions(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(TypeError, match="Intervention"):
        run_with_hooks(tiny_llama, *batch, interventions=[lambda a: a])  # type: ignore[list-item]


@pytest.mark.parametrize(("inputs", "exc"), [("", ValueError), ([], ValueError), (["w1", 3], TypeError),
                                             (3.5, TypeError), (["w1", ""], ValueError)])
def test_bad_text_inputs_to_run(tiny_llama: Model, inputs: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        tiny_llama.run(inputs)  # type: ignore[arg-type]


def test_text_run_matches_token_run(tiny_llama: Model) -> None:
    res = tiny_llama.run(["w1 w2 w3 w4", "w7 w8"], capture="blocks.1.hook_resid_post")
    ids, mask = tiny_llama.tokenize(["w1 w2 w3 w4", "w7 w8"])
    assert torch.equal(res.logits, plain_forward(tiny_llama, ids, mask))
    assert res.trace["blocks.1.hook_resid_post"].shape == (2, 4, 64)


_GARBAGE_FRAGMENTS = ["blocks", ".", "0", "1", "7", "attn", "mlp", "hook_", "resid_mid", "q", "z", "*", "?", "[",
                      "]", "!", "ln_final", "logits", " ", "\t", "é"]
garbage_names = st.one_of(st.text(max_size=30),
                          st.lists(st.sampled_from(_GARBAGE_FRAGMENTS), max_size=7).map("".join))
garbage_objects = st.one_of(st.integers(), st.floats(), st.none(), st.binary(max_size=5), st.booleans())


@FAST
@given(st.lists(st.one_of(garbage_names, garbage_objects), min_size=1, max_size=3))
def test_garbage_hook_names_raise_only_unknown_hook_or_type_errors(tiny_neox_parallel: Model, names: list) -> None:
    ids = torch.tensor([[1, 2, 3]])
    try:
        out = run_with_hooks(tiny_neox_parallel, ids, capture=names)
    except (UnknownHookError, TypeError):
        pass
    else:  # only names (or patterns) of real hooks get through
        assert set(out.activations) <= set(tiny_neox_parallel.hook_names())
    assert_clean(tiny_neox_parallel)


@FAST
@given(garbage_names)
def test_garbage_intervention_sites_raise_only_unknown_hook_errors(name: str) -> None:
    try:
        iv = Scale(name, factor=2.0)
    except UnknownHookError:
        return
    site = iv.site
    if isinstance(site, Site):
        assert site.name
        return
    with contextlib.suppress(UnknownHookError):  # a pattern is resolved against the model when it runs
        assert all(s.name for s in resolve(site, AVAILABLE_SITES))


@FAST
@given(garbage_objects)
def test_non_string_intervention_sites_raise_type_error(obj: object) -> None:
    with pytest.raises(TypeError):
        Scale(obj, factor=2.0)  # type: ignore[arg-type]


def test_vocab_constant_is_valid_for_every_family(tiny_models: dict[str, Model]) -> None:
    assert min(m.dims.d_vocab for m in tiny_models.values()) == VOCAB


# --- the bundled SmolLM2 (slow) ---------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_run_is_bit_identical_to_the_plain_forward(smollm2: Model) -> None:
    texts = ["The capital of France is", "Hello"]
    ids, mask = smollm2.tokenize(texts)
    assert mask[1].sum() < mask.shape[1]  # the second row is right-padded
    plain = plain_forward(smollm2, ids, mask)
    assert torch.equal(smollm2.run(texts).logits, plain)
    res = smollm2.run(texts, capture=["blocks.*.hook_resid_post", "blocks.*.hook_attn_out", "logits"])
    assert torch.equal(res.logits, plain)
    assert res.trace["blocks.29.hook_resid_post"].shape == (2, ids.shape[1], 576)
    assert_clean(smollm2)


@pytest.mark.slow
def test_smollm2_attention_hooks_match_eager_attention(smollm2: Model) -> None:
    ids, mask = smollm2.tokenize(["The capital of France is", "Hello"])
    L = 7
    acts = run_with_hooks(smollm2, ids, mask, capture=[f"blocks.{L}.attn.hook_pattern", f"blocks.{L}.attn.hook_k",
                                                       f"blocks.{L}.hook_resid_pre"]).activations
    pats = eager_patterns(smollm2, ids, mask)
    torch.testing.assert_close(acts[f"blocks.{L}.attn.hook_pattern"], pats[L], rtol=1e-5, atol=1e-6)
    w = smollm2.weights
    with torch.no_grad():
        x = smollm2.hf.model.layers[L].input_layernorm(acts[f"blocks.{L}.hook_resid_pre"])
        q = torch.einsum("bpd,hde->bphe", x, w.W_Q[L])
        k = torch.einsum("bpd,hde->bphe", x, w.W_K[L])
        _, k = rotate(smollm2, q, k, ids.shape[1])
    torch.testing.assert_close(acts[f"blocks.{L}.attn.hook_k"], k, rtol=1e-4, atol=1e-4)
    assert_clean(smollm2)
