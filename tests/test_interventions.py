"""Interventions: Patch, Ablate, Add, Scale, Clamp, Lambda — on tensors, and in runs compared with
hand-edited recomputations (raw PyTorch hooks doing the same edit, or the block's math redone
from the HF modules and weights)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from conftest import VOCAB
from torch import nn

from interp.errors import BadInputError
from interp.hooks import Ablate, Add, Clamp, Intervention, Lambda, Patch, Scale, run_with_hooks
from interp.models import Model
from interp.sites import Component, Site, UnknownHookError

TIGHT = dict(rtol=2e-5, atol=2e-5)
Batch = tuple[torch.Tensor, torch.Tensor]


def capture(m: Model, batch: Batch, names: str | list[str], ivs: list[Intervention] | None = None
            ) -> dict[str, torch.Tensor]:
    out = run_with_hooks(m, *batch, capture=names, interventions=ivs or [])
    return {**out.activations, "_logits": out.logits}


@contextlib.contextmanager
def raw_hook(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], pre: bool = False) -> Iterator[None]:
    """A plain PyTorch hook replacing a module's output (or first input) by fn(it): the oracle."""
    if pre:
        h = module.register_forward_pre_hook(lambda mod, args: (fn(args[0]), *args[1:]))
    else:
        def out_hook(mod: nn.Module, args: object, out: object) -> object:
            if isinstance(out, tuple):
                return (fn(out[0]), *out[1:])
            return fn(out)  # type: ignore[arg-type]
        h = module.register_forward_hook(out_hook)
    try:
        yield
    finally:
        h.remove()


def plain_logits(m: Model, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        out = m.hf(input_ids=batch[0], attention_mask=batch[1])
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def other_batch(seed: int = 99) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 8), generator=g)
    return ids, torch.ones_like(ids)


# --- selections on plain tensors -------------------------------------------------------------------

def test_positions_select_the_pos_axis_and_query_positions_of_patterns() -> None:
    act = torch.zeros(2, 5, 3)
    out = Add("blocks.0.hook_resid_pre", torch.ones(3), positions=[1, -1]).apply(act)
    assert out[:, [1, 4]].eq(1).all() and out[:, [0, 2, 3]].eq(0).all()
    pat = torch.zeros(2, 4, 5, 5)  # [batch, head, q_pos, k_pos]
    out = Scale("blocks.0.attn.hook_pattern", factor=2.0, positions=2, heads=[1, 3]).apply(pat + 1)
    expect = torch.ones_like(pat)
    expect[:, [1, 3], 2, :] = 2
    assert torch.equal(out, expect)
    z = torch.ones(2, 5, 4, 3)  # [batch, pos, head, d_head]
    out = Ablate("blocks.0.attn.hook_z", heads=2, positions=slice(1, 3)).apply(z)
    expect = torch.ones_like(z)
    expect[:, 1:3, 2] = 0
    assert torch.equal(out, expect)


@pytest.mark.parametrize("positions", [np.array([1, 3]), torch.tensor([1, 3]), (p for p in (1, 3)), [np.int64(1), 3],
                                       range(1, 4, 2)])
def test_positions_accept_integer_sequences_of_any_kind(positions: object) -> None:
    iv = Add("blocks.0.hook_resid_pre", torch.ones(2), positions=positions)  # type: ignore[arg-type]
    out = iv.apply(torch.zeros(1, 5, 2))
    assert out[0, :, 0].tolist() == [0, 1, 0, 1, 0]
    assert iv.apply(torch.zeros(1, 5, 2))[0, :, 0].tolist() == [0, 1, 0, 1, 0]  # a generator is not used up


@pytest.mark.parametrize("bad", ["1", [1.0], [True], True, [[1]], {"a": 1}, 2.0, torch.tensor([0.5])])
def test_positions_and_heads_reject_non_integers_at_construction(bad: object) -> None:
    with pytest.raises(TypeError):
        Add("blocks.0.hook_resid_pre", torch.ones(2), positions=bad)  # type: ignore[arg-type]
    with pytest.raises((TypeError, BadInputError)):  # a string or a nested list is read as a head spelling
        Ablate("blocks.0.attn.hook_z", heads=bad)  # type: ignore[arg-type]


def test_out_of_range_positions_and_heads() -> None:
    z = torch.zeros(1, 4, 3, 2)
    with pytest.raises(BadInputError, match="position 4 is outside sequence 0, which has 4 real tokens"):
        Ablate("blocks.0.attn.hook_z", positions=[0, 4]).apply(z)
    with pytest.raises(BadInputError, match="position -5"):
        Ablate("blocks.0.attn.hook_z", positions=-5).apply(z)
    with pytest.raises(BadInputError, match="head 3 is out of range"):
        Ablate("blocks.0.attn.hook_z", heads=3).apply(z)
    assert torch.equal(Ablate("blocks.0.attn.hook_z", heads=[]).apply(z + 1), z + 1)  # empty selection: no-op


@pytest.mark.parametrize("name", ["blocks.0.hook_resid_pre", "blocks.0.mlp.hook_post", "logits", "hook_embed"])
def test_heads_on_a_site_without_heads(name: str) -> None:
    with pytest.raises(ValueError, match="no head axis"):
        Ablate(name, heads=[0])


def test_intervention_sites_are_parsed() -> None:
    iv = Scale("blocks.2.attn.hook_v", factor=0.5)
    assert iv.site == Site(Component.V, 2)
    with pytest.raises(UnknownHookError):
        Scale("blocks.2.attn.hook_vv", factor=0.5)
    with pytest.raises(TypeError):
        Scale(2, factor=0.5)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        Intervention("blocks.0.hook_resid_pre").apply(torch.zeros(1, 2, 3))


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda: Patch("blocks.0.hook_resid_pre"), ValueError, "needs source"),
    (lambda: Patch("blocks.0.hook_resid_pre", source=torch.tensor([[[0.0, math.nan]]])), ValueError, "NaN"),
    (lambda: Patch("blocks.0.hook_resid_pre", source=torch.tensor([[[0.0, math.inf]]])), ValueError, "NaN or inf"),
    (lambda: Patch("blocks.0.hook_resid_pre", source=[[1.0]]), TypeError, "Trace"),
    (lambda: Patch("blocks.0.hook_resid_pre", source=np.zeros((1, 2, 3))), TypeError, "Trace"),
    (lambda: Patch("blocks.0.hook_resid_pre", source={"blocks.1.hook_resid_pre": torch.zeros(1)}), KeyError,
     "blocks.0.hook_resid_pre"),
    (lambda: Patch("blocks.0.hook_resid_pre", source={"blocks.0.hook_resid_pre": [1.0]}), TypeError, "not a torch"),
    (lambda: Add("blocks.0.hook_resid_pre", torch.tensor([1.0, math.nan])), ValueError, "NaN"),
    (lambda: Add("blocks.0.hook_resid_pre", [1.0, 2.0]), TypeError, "torch.Tensor"),
    (lambda: Add("blocks.0.hook_resid_pre", torch.ones(2), scale=math.nan), ValueError, "finite"),
    (lambda: Scale("blocks.0.hook_resid_pre", factor=math.inf), ValueError, "finite"),
    (lambda: Scale("blocks.0.hook_resid_pre", factor="2"), TypeError, "number"),
    (lambda: Clamp("blocks.0.hook_resid_pre"), ValueError, "min= and/or max="),
    (lambda: Clamp("blocks.0.hook_resid_pre", min=1.0, max=0.0), ValueError, "greater than"),
    (lambda: Ablate("blocks.0.hook_resid_pre", method="median"), ValueError, "unknown ablation method"),
    (lambda: Ablate("blocks.0.hook_resid_pre", over="heads"), ValueError, "over must be"),
    (lambda: Ablate("blocks.0.hook_resid_pre", method="mean", reference=torch.full((2, 3, 4), math.nan)),
     ValueError, "NaN"),
    (lambda: Lambda("blocks.0.hook_resid_pre"), TypeError, "callable"),
    (lambda: Lambda("blocks.0.hook_resid_pre", fn=3), TypeError, "callable"),
])
def test_construction_errors(make: Callable[[], object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_lambda_must_return_a_tensor_of_the_same_shape_or_none() -> None:
    act = torch.ones(2, 3, 4)
    assert torch.equal(Lambda("blocks.0.hook_resid_pre", fn=lambda a, s: None).apply(act), act)
    with pytest.raises(TypeError, match=r"must return a torch\.Tensor"):
        Lambda("blocks.0.hook_resid_pre", fn=lambda a, s: 3.0).apply(act)
    with pytest.raises(ValueError, match="keep the activation's shape"):
        Lambda("blocks.0.hook_resid_pre", fn=lambda a, s: a[:, :1]).apply(act)
    seen = []
    Lambda("blocks.0.hook_resid_pre", fn=lambda a, s: seen.append(s)).apply(act)
    assert seen == [Site(Component.RESID_PRE, 0)]


def test_patch_shape_checks_and_batch_broadcast() -> None:
    act = torch.zeros(3, 4, 2)
    src = torch.arange(8.0).reshape(1, 4, 2)
    assert torch.equal(Patch("blocks.0.hook_resid_pre", source=src).apply(act), src.expand(3, 4, 2))
    with pytest.raises(ValueError, match="same length"):
        Patch("blocks.0.hook_resid_pre", source=torch.zeros(3, 5, 2)).apply(act)
    with pytest.raises(ValueError, match="same length"):
        Patch("blocks.0.hook_resid_pre", source=torch.zeros(2, 4, 2)).apply(act)
    with pytest.raises(ValueError, match="broadcast"):
        Add("blocks.0.hook_resid_pre", torch.ones(3)).apply(act)


def test_ablate_semantics_on_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    act = torch.randn(4, 3, 2, generator=g)
    ref = torch.randn(6, 3, 2, generator=g)
    site = "blocks.0.hook_resid_pre"
    assert not Ablate(site).apply(act).any()
    torch.testing.assert_close(Ablate(site, method="mean").apply(act), act.mean(0, keepdim=True).expand_as(act))
    torch.testing.assert_close(Ablate(site, method="mean", reference=ref).apply(act),
                               ref.mean(0, keepdim=True).expand_as(act))
    torch.testing.assert_close(Ablate(site, method="mean", over="tokens", reference=ref).apply(act),
                               ref.mean((0, 1), keepdim=True).expand_as(act))
    # resample from a reference: every row is one of the reference's rows; seeded
    out = Ablate(site, method="resample", reference=ref, seed=3).apply(act)
    assert all(any(torch.equal(row, r) for r in ref) for row in out)
    assert torch.equal(out, Ablate(site, method="resample", reference=ref, seed=3).apply(act))
    draws = {tuple(Ablate(site, method="resample", reference=ref, seed=s).apply(act)[:, 0, 0].tolist()) for s in range(8)}
    assert len(draws) > 1
    # resample within the batch: every row takes *another* row
    for seed in range(10):
        out = Ablate(site, method="resample", seed=seed).apply(act)
        for i, row in enumerate(out):
            hits = [j for j in range(4) if torch.equal(row, act[j])]
            assert hits and i not in hits
    with pytest.raises(ValueError, match="at least 2 sequences"):
        Ablate(site, method="resample").apply(act[:1])
    with pytest.raises(ValueError, match="incompatible"):
        Ablate(site, method="mean", reference=torch.zeros(2, 5, 2)).apply(act)
    with pytest.raises(ValueError, match="incompatible"):
        Ablate(site, method="resample", reference=torch.zeros(2, 5, 2)).apply(act)


def test_clamp_and_scale_on_tensors() -> None:
    act = torch.linspace(-2, 2, 12).reshape(1, 3, 4)
    assert torch.equal(Clamp("blocks.0.mlp.hook_post", min=-0.5).apply(act), act.clamp(min=-0.5))
    assert torch.equal(Clamp("blocks.0.mlp.hook_post", max=0.25, positions=[1]).apply(act),
                       torch.cat([act[:, :1], act[:, 1:2].clamp(max=0.25), act[:, 2:]], dim=1))
    assert torch.equal(Scale("blocks.0.mlp.hook_post", factor=-3).apply(act), -3 * act)


# --- in runs, against hand-edited recomputations ----------------------------------------------------

def test_patch_full_tensor_matches_a_raw_hook(tiny_llama: Model, batch: Batch) -> None:
    X = torch.randn(3, 8, 64, generator=torch.Generator().manual_seed(5))
    with raw_hook(tiny_llama.hf.model.layers[0], lambda t: X):
        want = plain_logits(tiny_llama, batch)
    got = run_with_hooks(tiny_llama, *batch, interventions=[Patch("blocks.0.hook_resid_post", source=X)]).logits
    assert torch.equal(got, want)
    # the same tensor patched as the next layer's input is the same edit
    got2 = run_with_hooks(tiny_llama, *batch, interventions=[Patch("blocks.1.hook_resid_pre", source=X)]).logits
    assert torch.equal(got2, want)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_patch_from_a_trace_matches_a_raw_hook(tiny_models: dict[str, Model], family: str, batch: Batch) -> None:
    m = tiny_models[family]
    src_batch = other_batch()
    trace = m.run(src_batch, capture=["blocks.0.hook_mlp_out", "blocks.1.attn.hook_z"]).trace
    mlp = {"llama": "model.layers.0.mlp", "gpt2": "transformer.h.0.mlp", "bert": "encoder.layer.0.output.dense"}[family]
    with raw_hook(m.module(mlp), lambda t: trace["blocks.0.hook_mlp_out"]):
        want = plain_logits(m, batch)
    got = run_with_hooks(m, *batch, interventions=[Patch("blocks.0.hook_mlp_out", source=trace)]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # a plain mapping of names to tensors works too
    got = run_with_hooks(m, *batch, interventions=[Patch("blocks.0.hook_mlp_out", source=dict(trace.activations))]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_patch_selected_positions(tiny_gpt2: Model, batch: Batch) -> None:
    """Positions index each sequence's real tokens: -2 is padded index 6 in the full rows and 3 in row 1
    (5 real tokens), so row 1 gets one patched position and the others two."""
    m = tiny_gpt2
    src = capture(m, other_batch(), "blocks.1.hook_resid_pre")["blocks.1.hook_resid_pre"]
    clean = capture(m, batch, ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"])
    lengths = batch[1].sum(-1).tolist()
    rows = {b: sorted({3, n - 2}) for b, n in enumerate(lengths)}
    assert rows == {0: [3, 6], 1: [3], 2: [3, 6]}

    def edit(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        for b, ps in rows.items():
            t[b, ps] = src[b, ps]
        return t

    with raw_hook(m.hf.transformer.h[1], edit, pre=True):
        want = plain_logits(m, batch)
    out = capture(m, batch, ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"],
                  [Patch("blocks.1.hook_resid_pre", source=src, positions=[3, -2])])
    torch.testing.assert_close(out["_logits"], want, rtol=0, atol=0)
    pre = out["blocks.1.hook_resid_pre"]
    for b, ps in rows.items():
        keep = [p for p in range(8) if p not in ps]
        assert torch.equal(pre[b, ps], src[b, ps])
        assert torch.equal(pre[b, keep], clean["blocks.1.hook_resid_pre"][b, keep])
    # causal: positions before the first patched one are untouched downstream, later ones change
    assert torch.equal(out["blocks.1.hook_resid_post"][:, :3], clean["blocks.1.hook_resid_post"][:, :3])
    assert torch.equal(out["_logits"][:, :3], clean["_logits"][:, :3])
    assert not torch.allclose(out["blocks.1.hook_resid_post"][:, 4], clean["blocks.1.hook_resid_post"][:, 4])
    with pytest.raises(BadInputError, match="position 6 is outside sequence 1, which has 5 real tokens"):
        capture(m, batch, "blocks.1.hook_resid_pre", [Patch("blocks.1.hook_resid_pre", source=src, positions=[6])])


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox_parallel", "bert"])
def test_patch_selected_heads_of_z_moves_attn_out_by_their_w_o_terms(tiny_models: dict[str, Model],
                                                                    family: str, batch: Batch) -> None:
    m = tiny_models[family]
    w = m.weights
    names = ["blocks.1.attn.hook_z", "blocks.1.hook_attn_out"]
    src = capture(m, other_batch(), names)["blocks.1.attn.hook_z"]
    clean = capture(m, batch, names)
    heads = [0, 2]
    out = capture(m, batch, names, [Patch("blocks.1.attn.hook_z", source=src, heads=heads)])
    z_clean = clean["blocks.1.attn.hook_z"]
    delta = torch.einsum("bphe,hed->bpd", (src - z_clean)[:, :, heads], w.W_O[1, heads])
    torch.testing.assert_close(out["blocks.1.hook_attn_out"], clean["blocks.1.hook_attn_out"] + delta, **TIGHT)
    other = [h for h in range(m.dims.n_heads) if h not in heads]
    assert torch.equal(out["blocks.1.attn.hook_z"][:, :, other], z_clean[:, :, other])
    assert torch.equal(out["blocks.1.attn.hook_z"][:, :, heads], src[:, :, heads])


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox_sequential", "bert"])
def test_zero_ablating_a_head_removes_its_w_o_contribution(tiny_models: dict[str, Model], family: str,
                                                           batch: Batch) -> None:
    m = tiny_models[family]
    names = ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out"]
    clean = capture(m, batch, names)
    h = 1
    out = capture(m, batch, names, [Ablate("blocks.0.attn.hook_z", heads=h)])
    contrib = clean["blocks.0.attn.hook_z"][:, :, h] @ m.weights.W_O[0, h]
    torch.testing.assert_close(out["blocks.0.hook_attn_out"], clean["blocks.0.hook_attn_out"] - contrib, **TIGHT)
    assert not out["blocks.0.attn.hook_z"][:, :, h].any()


def mean_at_last_real_token(clean: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ablation at position -1: each sequence's last real token takes the batch mean at that padded index."""
    out = clean.clone()
    for b, n in enumerate(mask.sum(-1).tolist()):
        out[b, n - 1] = clean[:, n - 1].mean(0)
    return out


def test_mean_and_resample_ablation_in_a_run(tiny_neox_sequential: Model, batch: Batch) -> None:
    m = tiny_neox_sequential
    w = m.weights
    site = "blocks.1.mlp.hook_post"
    names = [site, "blocks.1.hook_mlp_out"]
    clean = capture(m, batch, names)[site]
    ref = capture(m, other_batch(), names)[site]
    for iv, expect in [
        (Ablate(site, method="mean"), clean.mean(0, keepdim=True).expand_as(clean)),
        (Ablate(site, method="mean", reference=ref), ref.mean(0, keepdim=True).expand_as(clean)),
        (Ablate(site, method="mean", over="tokens", reference=ref), ref.mean((0, 1), keepdim=True).expand_as(clean)),
        (Ablate(site, method="mean", positions=[-1]), mean_at_last_real_token(clean, batch[1])),
    ]:
        out = capture(m, batch, names, [iv])
        torch.testing.assert_close(out[site], expect, **TIGHT)
        torch.testing.assert_close(out["blocks.1.hook_mlp_out"], expect @ w.W_out[1] + w.b_out[1], **TIGHT)
    trace = m.run(other_batch(), capture=site).trace  # a Trace works as the reference too
    out = capture(m, batch, names, [Ablate(site, method="mean", reference=trace)])
    torch.testing.assert_close(out[site], ref.mean(0, keepdim=True).expand_as(clean), **TIGHT)
    a = capture(m, batch, names, [Ablate(site, method="resample", reference=ref, seed=4)])
    b = capture(m, batch, names, [Ablate(site, method="resample", reference=ref, seed=4)])
    assert torch.equal(a[site], b[site]) and torch.equal(a["_logits"], b["_logits"])
    assert all(any(torch.equal(row, r) for r in ref) for row in a[site])


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_add_steering_vector_matches_a_raw_hook(tiny_models: dict[str, Model], family: str, batch: Batch) -> None:
    m = tiny_models[family]
    vec = torch.cos(torch.arange(m.dims.d_model, dtype=torch.float32))
    layer0 = m.module(m.adapter.layers + ".0")

    def edit(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[:, 2] += 2.5 * vec
        return t

    with raw_hook(layer0, edit):
        want = plain_logits(m, batch)
    got = run_with_hooks(m, *batch, interventions=[Add("blocks.0.hook_resid_post", vec, scale=2.5, positions=2)]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_scale_and_clamp_in_a_run(tiny_gpt2: Model, batch: Batch) -> None:
    m = tiny_gpt2
    w = m.weights
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_attn_out", "blocks.1.mlp.hook_post",
             "blocks.1.hook_mlp_out", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    clean = capture(m, batch, names)
    out = capture(m, batch, names, [Scale("blocks.0.hook_attn_out", factor=0.0)])
    assert torch.equal(out["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_pre"])
    out = capture(m, batch, names, [Scale("blocks.1.hook_mlp_out", factor=2.0)])
    torch.testing.assert_close(out["blocks.1.hook_resid_post"],
                               clean["blocks.1.hook_resid_mid"] + 2 * clean["blocks.1.hook_mlp_out"], **TIGHT)
    out = capture(m, batch, names, [Clamp("blocks.1.mlp.hook_post", min=-0.05, max=0.3)])
    clamped = clean["blocks.1.mlp.hook_post"].clamp(-0.05, 0.3)
    assert torch.equal(out["blocks.1.mlp.hook_post"], clamped)
    torch.testing.assert_close(out["blocks.1.hook_mlp_out"], clamped @ w.W_out[1] + w.b_out[1], **TIGHT)


def test_lambda_matches_a_raw_hook_and_interventions_apply_in_order(tiny_llama: Model, batch: Batch) -> None:
    m = tiny_llama
    vec = torch.linspace(-1, 1, 64)
    with raw_hook(m.hf.model.layers[0].mlp, lambda t: torch.tanh(t) * 3):
        want = plain_logits(m, batch)
    got = run_with_hooks(m, *batch, interventions=[Lambda("blocks.0.hook_mlp_out", fn=lambda a, s: torch.tanh(a) * 3)])
    torch.testing.assert_close(got.logits, want, rtol=0, atol=0)
    site = "blocks.0.hook_mlp_out"
    clean = capture(m, batch, site)[site]
    a = capture(m, batch, site, [Scale(site, factor=2.0), Add(site, vec)])[site]
    b = capture(m, batch, site, [Add(site, vec), Scale(site, factor=2.0)])[site]
    torch.testing.assert_close(a, 2 * clean + vec)
    torch.testing.assert_close(b, 2 * (clean + vec))


# --- hook_resid_mid: the edit reaches the MLP input and the residual stream -------------------------

def mlp_of(m: Model, L: int, x: torch.Tensor) -> torch.Tensor:
    """mlp(ln2(x)) with the HF modules of layer L (pre-norm families)."""
    fam = m.adapter.family
    with torch.no_grad():
        if fam == "llama":
            blk = m.hf.model.layers[L]
            return blk.mlp(blk.post_attention_layernorm(x))
        if fam == "gpt2":
            blk = m.hf.transformer.h[L]
            return blk.mlp(blk.ln_2(x))
        blk = m.hf.gpt_neox.layers[L]
        return blk.mlp(blk.post_attention_layernorm(x))


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox_sequential"])
@pytest.mark.parametrize("L", [0, 1])
def test_patching_resid_mid_gives_x_plus_mlp_of_x(tiny_models: dict[str, Model], family: str, L: int,
                                                  batch: Batch) -> None:
    m = tiny_models[family]
    X = 2 * torch.randn(3, 8, m.dims.d_model, generator=torch.Generator().manual_seed(L))
    names = [f"blocks.{L}.hook_resid_mid", f"blocks.{L}.hook_mlp_out", f"blocks.{L}.hook_resid_post"]
    out = capture(m, batch, names, [Patch(f"blocks.{L}.hook_resid_mid", source=X)])
    assert torch.equal(out[f"blocks.{L}.hook_resid_mid"], X)
    torch.testing.assert_close(out[f"blocks.{L}.hook_mlp_out"], mlp_of(m, L, X), **TIGHT)
    torch.testing.assert_close(out[f"blocks.{L}.hook_resid_post"], X + mlp_of(m, L, X), **TIGHT)


def test_patching_resid_mid_at_some_positions(tiny_llama: Model, batch: Batch) -> None:
    m = tiny_llama
    names = ["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    clean = capture(m, batch, names)
    X = torch.randn(3, 8, 64, generator=torch.Generator().manual_seed(3))
    out = capture(m, batch, names, [Patch("blocks.1.hook_resid_mid", source=X, positions=[0, 4])])
    mid = clean["blocks.1.hook_resid_mid"].clone()
    mid[:, [0, 4]] = X[:, [0, 4]]
    torch.testing.assert_close(out["blocks.1.hook_resid_post"], mid + mlp_of(m, 1, mid), **TIGHT)
    untouched = [1, 2, 3, 5, 6, 7]  # the MLP is position-wise
    assert torch.equal(out["blocks.1.hook_resid_post"][:, untouched], clean["blocks.1.hook_resid_post"][:, untouched])


def test_steering_resid_mid_adds_to_the_stream(tiny_gpt2: Model, batch: Batch) -> None:
    m = tiny_gpt2
    vec = torch.sin(torch.arange(48.0))
    names = ["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"]
    clean = capture(m, batch, names)["blocks.0.hook_resid_mid"]
    out = capture(m, batch, names, [Add("blocks.0.hook_resid_mid", vec)])
    X = clean + vec
    torch.testing.assert_close(out["blocks.0.hook_resid_mid"], X)
    torch.testing.assert_close(out["blocks.0.hook_resid_post"], X + mlp_of(m, 0, X), **TIGHT)


def test_patching_resid_mid_in_a_post_norm_encoder(tiny_bert: Model, batch: Batch) -> None:
    m = tiny_bert
    w = m.weights
    X = torch.randn(3, 8, 48, generator=torch.Generator().manual_seed(8))
    out = capture(m, batch, ["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"],
                  [Patch("blocks.0.hook_resid_mid", source=X)])
    assert torch.equal(out["blocks.0.hook_resid_mid"], X)
    blk = m.hf.encoder.layer[0]
    with torch.no_grad():
        act = blk.intermediate.intermediate_act_fn
        mlp = act(X @ w.W_in[0] + w.b_in[0]) @ w.W_out[0] + w.b_out[0]
        want = blk.output.LayerNorm(mlp + X)
    torch.testing.assert_close(out["blocks.0.hook_resid_post"], want, **TIGHT)


# --- attention internals ------------------------------------------------------------------------------

def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal eager attention by hand; q/k/v: [batch, pos, head, d_head]. Returns (pattern, z)."""
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
    P = q.shape[1]
    allowed = torch.ones(P, P, dtype=torch.bool).tril()[None, None] & mask.bool()[:, None, None, :]
    pattern = scores.masked_fill(~allowed, -math.inf).softmax(-1)
    return pattern, torch.einsum("bhqk,bkhe->bqhe", pattern, v)


def test_patching_k_of_one_query_head_under_gqa_leaves_its_group_partner_alone(tiny_llama: Model,
                                                                                batch: Batch) -> None:
    m = tiny_llama
    assert m.dims.n_rep == 2
    L = 1
    qkv = [f"blocks.{L}.attn.hook_{c}" for c in ("q", "k", "v", "pattern", "z")]
    clean = capture(m, batch, qkv)
    src_k = capture(m, other_batch(), f"blocks.{L}.attn.hook_k")[f"blocks.{L}.attn.hook_k"]
    h, partner = 2, 3  # query heads 2 and 3 share KV head 1
    out = capture(m, batch, qkv, [Patch(f"blocks.{L}.attn.hook_k", source=src_k, heads=[h])])
    pat, z = out[f"blocks.{L}.attn.hook_pattern"], out[f"blocks.{L}.attn.hook_z"]
    for other in (0, 1, partner):
        assert torch.equal(pat[:, other], clean[f"blocks.{L}.attn.hook_pattern"][:, other])
        assert torch.equal(z[:, :, other], clean[f"blocks.{L}.attn.hook_z"][:, :, other])
    k = clean[f"blocks.{L}.attn.hook_k"].clone()
    k[:, :, h] = src_k[:, :, h]
    want_pat, want_z = manual_attention(clean[f"blocks.{L}.attn.hook_q"], k, clean[f"blocks.{L}.attn.hook_v"], batch[1])
    torch.testing.assert_close(pat[:, h], want_pat[:, h], **TIGHT)
    torch.testing.assert_close(z[:, :, h], want_z[:, :, h], **TIGHT)
    assert not torch.allclose(pat[:, h], clean[f"blocks.{L}.attn.hook_pattern"][:, h])
    # and the clean run itself agrees with the manual computation
    want_pat, _ = manual_attention(clean[f"blocks.{L}.attn.hook_q"], clean[f"blocks.{L}.attn.hook_k"],
                                   clean[f"blocks.{L}.attn.hook_v"], batch[1])
    torch.testing.assert_close(clean[f"blocks.{L}.attn.hook_pattern"], want_pat, **TIGHT)


def test_patching_the_pattern_of_one_head_at_one_query(tiny_gpt2: Model, batch: Batch) -> None:
    m = tiny_gpt2
    names = ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"]
    clean = capture(m, batch, names)
    uniform = torch.tril(torch.ones(8, 8)) / torch.arange(1, 9)[:, None]
    src = uniform.expand(3, 4, 8, 8)
    out = capture(m, batch, names, [Patch("blocks.0.attn.hook_pattern", source=src, heads=1, positions=[4])])
    pat = clean["blocks.0.attn.hook_pattern"].clone()
    pat[:, 1, 4] = uniform[4]
    assert torch.equal(out["blocks.0.attn.hook_pattern"], pat)
    want_z = torch.einsum("bhqk,bkhe->bqhe", pat, clean["blocks.0.attn.hook_v"])
    torch.testing.assert_close(out["blocks.0.attn.hook_z"], want_z, **TIGHT)
    changed = (out["blocks.0.attn.hook_z"] != clean["blocks.0.attn.hook_z"]).any(-1)  # [batch, pos, head]
    assert changed[:, 4, 1].all() and changed.sum() == 3


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox_parallel", "neox_sequential", "bert"])
def test_interventions_on_positions_touch_only_those_positions(tiny_models: dict[str, Model], family: str,
                                                               batch: Batch) -> None:
    m = tiny_models[family]
    site = "blocks.0.hook_resid_pre"
    names = [site, "blocks.1.hook_resid_post"]
    clean = capture(m, batch, names)
    vec = torch.ones(m.dims.d_model)
    out = capture(m, batch, names, [Add(site, vec, positions=[4])])
    diff = (out[site] != clean[site]).any(-1)
    assert diff[:, 4].all() and diff.sum() == 3
    down = (out["blocks.1.hook_resid_post"] != clean["blocks.1.hook_resid_post"]).any(-1)
    if m.adapter.is_causal:  # nothing before the edited position can see it
        assert not down[:, :4].any() and down[:, 4:].all()
    else:  # bidirectional attention spreads it everywhere
        assert down.any(0).all()


def test_interventions_on_q_and_v_heads(tiny_llama: Model, batch: Batch) -> None:
    m = tiny_llama
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"]
    clean = capture(m, batch, names)
    out = capture(m, batch, names, [Scale("blocks.0.attn.hook_v", factor=-1.0, heads=[0]),
                                    Ablate("blocks.0.attn.hook_q", heads=[3], positions=[2])])
    q = clean["blocks.0.attn.hook_q"].clone()
    q[:, 2, 3] = 0
    v = clean["blocks.0.attn.hook_v"].clone()
    v[:, :, 0] *= -1
    assert torch.equal(out["blocks.0.attn.hook_v"][:, :, 1], clean["blocks.0.attn.hook_v"][:, :, 1])  # the partner
    _, want_z = manual_attention(q, clean["blocks.0.attn.hook_k"], v, batch[1])
    torch.testing.assert_close(out["blocks.0.attn.hook_z"], want_z, **TIGHT)


# --- bad interventions in runs -----------------------------------------------------------------------

def test_bad_interventions_in_a_run(tiny_llama: Model, batch: Batch) -> None:
    m = tiny_llama
    with pytest.raises(ValueError, match="same length"):
        run_with_hooks(m, *batch, interventions=[Patch("blocks.0.hook_resid_post", source=torch.zeros(3, 7, 64))])
    with pytest.raises(ValueError, match="same length"):
        run_with_hooks(m, *batch, interventions=[Patch("blocks.0.attn.hook_z", source=torch.zeros(3, 8, 2, 16))])
    with pytest.raises(BadInputError, match="head 4"):
        run_with_hooks(m, *batch, interventions=[Ablate("blocks.0.attn.hook_k", heads=[4])])
    with pytest.raises(BadInputError, match="position 8"):
        run_with_hooks(m, *batch, interventions=[Ablate("blocks.0.attn.hook_pattern", positions=[8])])
    with pytest.raises(ValueError, match="broadcast"):
        run_with_hooks(m, *batch, interventions=[Add("blocks.0.hook_resid_post", torch.ones(65))])
    with pytest.raises(ValueError, match="keep the activation's shape"):
        run_with_hooks(m, *batch, interventions=[Lambda("blocks.0.hook_resid_post", fn=lambda a, s: a[:1])])
    with pytest.raises(ValueError, match="at least 2 sequences"):
        run_with_hooks(m, batch[0][:1], batch[1][:1], interventions=[Ablate("blocks.0.hook_mlp_out", method="resample")])
