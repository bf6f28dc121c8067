"""The one vocabulary (interp.sites) and the interventions that speak it: short hook names, negative layers,
heads as (layer, head) / "L5H1", positions over each sequence's real tokens, hf: module paths — each checked
against a hand-written PyTorch hook or a direct computation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import interp
from interp.errors import BadInputError, UnknownNameError
from interp.hooks import Ablate, FeatureEdit, Project, Scale, Splice, Transform, run_with_hooks
from interp.models import Model
from interp.sites import (
    SHORT_NAMES,
    Component,
    HeadRef,
    Site,
    UnknownHookError,
    all_sites,
    parse_heads,
    position_mask,
    resolve,
    resolve_positions,
)

AVAILABLE = all_sites(4, [c for c in Component if c is not Component.HF])


# -- names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("short", "full"), [
    ("resid_post.3", "blocks.3.hook_resid_post"), ("z.0", "blocks.0.attn.hook_z"), ("mlp_pre.2", "blocks.2.mlp.hook_pre"),
    ("pattern.1", "blocks.1.attn.hook_pattern"), ("embed", "hook_embed"), ("ln_final", "ln_final.hook_normalized"),
    ("logits", "logits"), (("attn_out", 2), "blocks.2.hook_attn_out"),
])
def test_short_forms_name_the_same_sites_as_full_names(short: str | tuple[str, int], full: str) -> None:
    assert Site.parse(short) == Site.parse(full)
    assert Site.parse(full).short == (short if isinstance(short, str) else f"{short[0]}.{short[1]}")


def test_every_component_has_one_short_form() -> None:
    assert set(SHORT_NAMES) == {c.short for c in Component if c is not Component.HF}
    for c in Component:
        if c is not Component.HF:
            assert Component.parse(c.short) is c


def test_short_form_without_layer_means_every_layer_and_negative_layers_count_from_the_end() -> None:
    assert [s.name for s in resolve("resid_post", AVAILABLE)] == [f"blocks.{L}.hook_resid_post" for L in range(4)]
    assert [s.short for s in resolve(["z.-1", "z.0", ("mlp_out", -2)], AVAILABLE)] == ["z.0", "mlp_out.2", "z.3"]
    with pytest.raises(UnknownHookError, match="out of range"):
        resolve("z.-5", AVAILABLE)
    with pytest.raises(UnknownHookError, match="needs a layer"):
        Site.parse("resid_post")  # one site needs its layer
    with pytest.raises(UnknownHookError, match="needs the model"):
        Site.parse("z.-1")


@pytest.mark.parametrize("bad", ["hook_resid_post", "attn.hook_z", "resid", "blocks.0.z", "z3", "Z.3"])
def test_private_spellings_are_rejected_with_the_valid_ones(bad: str) -> None:
    with pytest.raises(UnknownHookError) as e:
        resolve(bad, AVAILABLE)
    assert isinstance(e.value, BadInputError) and isinstance(e.value, KeyError)
    msg = str(e.value)
    assert "resid_post" in msg and bad in msg


def test_component_parse_names_the_short_form_of_a_transformerlens_suffix() -> None:
    with pytest.raises(UnknownHookError, match="written 'resid_post' here"):
        Component.parse("hook_resid_post")
    with pytest.raises(UnknownHookError, match="Did you mean resid_pre"):
        Component.parse("resid_pr")


# -- heads -------------------------------------------------------------------------------------------------
def test_heads_parse_from_every_spelling() -> None:
    assert HeadRef.parse("L17H3") == HeadRef.parse((17, 3)) == HeadRef.parse([17, 3]) == (17, 3)
    assert HeadRef.parse(torch.tensor([2, 1])) == HeadRef(2, 1)
    assert str(HeadRef(4, 0)) == "L4H0"
    assert parse_heads("L0H1,L2H3") == parse_heads([(0, 1), "L2H3"]) == [HeadRef(0, 1), HeadRef(2, 3)]
    assert parse_heads((3, 1)) == [HeadRef(3, 1)]  # one pair is one head


@pytest.mark.parametrize(("bad", "match"), [
    ("L17", "bad head 'L17'"), ("l1h2x", "bad head"), ([17, 3, 1], "bad head 17"), ((-1, 2), r"bad head \(-1, 2\)"),
    ([], "no heads"), ("L9H0", "layer 9 not in 0..3"), ("L0H7", "head 7 not in 0..3"), ([1.5, 2], "bad head"),
])
def test_bad_heads_name_the_value_and_what_is_valid(bad: object, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        parse_heads(bad, n_layers=4, n_heads=4)  # type: ignore[arg-type]


# -- positions ---------------------------------------------------------------------------------------------
def test_positions_count_each_sequences_real_tokens() -> None:
    lengths = torch.tensor([5, 3])
    assert position_mask(-1, lengths, 5).nonzero().tolist() == [[0, 4], [1, 2]]
    assert position_mask([0, -2], lengths, 5).nonzero().tolist() == [[0, 0], [0, 3], [1, 0], [1, 1]]
    assert position_mask(slice(-2, None), lengths, 5).nonzero().tolist() == [[0, 3], [0, 4], [1, 1], [1, 2]]
    assert position_mask(None, lengths, 5).sum(-1).tolist() == [5, 3]  # every real token, never padding
    with pytest.raises(BadInputError, match="position 3 is outside sequence 1, which has 3 real tokens"):
        position_mask(3, lengths, 5)
    with pytest.raises(BadInputError, match="position -4 is outside sequence 1"):
        position_mask(-4, lengths, 5)
    assert resolve_positions([-1, 0], 4) == [3, 0]


# -- interventions in the vocabulary, against raw hooks ----------------------------------------------------
@contextlib.contextmanager
def raw_hook(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], pre: bool = False) -> Iterator[None]:
    if pre:
        h = module.register_forward_pre_hook(lambda m, args: (fn(args[0]), *args[1:]))
    else:
        h = module.register_forward_hook(
            lambda m, a, out: (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out))
    try:
        yield
    finally:
        h.remove()


def logits_of(m: Model, batch: tuple[torch.Tensor, torch.Tensor], ivs: list) -> torch.Tensor:
    out = run_with_hooks(m, *batch, interventions=ivs)
    assert out.logits is not None
    return out.logits


def plain(m: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return m.hf(input_ids=batch[0], attention_mask=batch[1]).logits


def test_heads_spelled_with_layers_pick_their_own_layer(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]
                                                        ) -> None:
    """Ablate("z", heads=["L0H1", "L1H3"]) zeroes head 1 of layer 0 and head 3 of layer 1, nothing else."""
    m = tiny_llama
    out = run_with_hooks(m, *batch, capture="z", interventions=[Ablate("z", heads=["L0H1", (1, 3)])])
    z0, z1 = out.activations["blocks.0.attn.hook_z"], out.activations["blocks.1.attn.hook_z"]
    assert not z0[:, :, 1].any() and not z1[:, :, 3].any()
    assert z0[:, :, [0, 2, 3]].abs().sum() > 0 and z1[:, :, [0, 1, 2]].abs().sum() > 0
    same = run_with_hooks(m, *batch, interventions=[Ablate("z.0", heads=[1]), Ablate("z.1", heads=[3])]).logits
    assert same is not None and torch.equal(out.logits, same)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="not in layer 0"):
        Ablate("z.0", heads=["L1H0"])
    with pytest.raises(BadInputError, match="no head axis"):
        Ablate("resid_post", heads=[0])


def test_a_pattern_site_edits_every_layer_like_one_intervention_per_layer(
        tiny_gpt2: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_gpt2
    a = logits_of(m, batch, [Scale("mlp_out", 0.5)])
    b = logits_of(m, batch, [Scale(f"mlp_out.{L}", 0.5) for L in range(m.dims.n_layers)])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with raw_hook(m.hf.transformer.h[0].mlp, lambda t: t * 0.5), raw_hook(m.hf.transformer.h[1].mlp, lambda t: t * 0.5):
        want = plain(m, batch)
    torch.testing.assert_close(a, want, rtol=1e-6, atol=1e-6)
    last = logits_of(m, batch, [Scale("mlp_out.-1", 0.0)])
    with raw_hook(m.hf.transformer.h[1].mlp, lambda t: t * 0.0):
        torch.testing.assert_close(last, plain(m, batch), rtol=1e-6, atol=1e-6)


def test_negative_positions_edit_each_sequences_last_real_token(tiny_llama: Model,
                                                                 batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_llama
    mask = batch[1]
    last = (mask.sum(-1) - 1).tolist()  # [7, 4, 7]: row 1 is padded

    def edit(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        for b, p in enumerate(last):
            t[b, p] = 0
        return t

    with raw_hook(m.hf.model.layers[1], edit, pre=True):
        want = plain(m, batch)
    got = logits_of(m, batch, [Ablate("resid_pre.1", positions=-1)])
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], rtol=1e-5, atol=1e-5)


def test_hf_module_sites_capture_and_edit_like_raw_hooks(tiny_llama: Model,
                                                         batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The escape hatch: any submodule by its Hugging Face path, output or input, with the same semantics."""
    m = tiny_llama
    seen: dict[str, torch.Tensor] = {}
    mod = m.hf.model.layers[1].mlp.act_fn
    h = mod.register_forward_hook(lambda mm, a, out: seen.__setitem__("out", out.detach().clone()))
    h2 = m.hf.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda mm, a: seen.__setitem__("in", a[0].detach().clone()))
    try:
        plain(m, batch)
    finally:
        h.remove()
        h2.remove()
    tr = m.run(batch, capture=["hf:model.layers.1.mlp.act_fn", "hf:model.layers.1.mlp.down_proj:input"]).trace
    assert torch.equal(tr["hf:model.layers.1.mlp.act_fn"], seen["out"])
    assert torch.equal(tr["hf:model.layers.1.mlp.down_proj:input"], seen["in"])
    with raw_hook(mod, lambda t: t * 0.0):
        want = plain(m, batch)
    got = logits_of(m, batch, [Scale("hf:model.layers.1.mlp.act_fn", 0.0)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(UnknownNameError, match=r"no submodule 'model\.layers\.1\.mlp\.act'"):
        m.run(batch, capture="hf:model.layers.1.mlp.act")
    with pytest.raises(UnknownHookError, match="hf:<dotted module path>"):
        Site.parse("hf:model..x")


def test_transform_and_project_match_direct_computations(tiny_llama: Model,
                                                         batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_llama
    g = torch.Generator().manual_seed(0)
    M = torch.randn(16, 16, generator=g)
    z = run_with_hooks(m, *batch, capture="z.1").activations["blocks.1.attn.hook_z"]
    out = run_with_hooks(m, *batch, capture="z.1", interventions=[Transform("z.1", M, heads=[2])]).activations
    want = z.clone()
    want[:, :, 2] = z[:, :, 2] @ M
    torch.testing.assert_close(out["blocks.1.attn.hook_z"], want, rtol=1e-5, atol=1e-5)
    d = torch.randn(2, 64, generator=g)
    r = run_with_hooks(m, *batch, capture="resid_post.0").activations["blocks.0.hook_resid_post"]
    got = run_with_hooks(m, *batch, capture="resid_post.0",
                         interventions=[Project("resid_post.0", d)]).activations["blocks.0.hook_resid_post"]
    q = torch.linalg.qr(d.T.double()).Q  # an orthonormal basis of the two directions
    torch.testing.assert_close(got.double(), r.double() - (r.double() @ q) @ q.T, rtol=1e-5, atol=1e-5)
    assert (got.double() @ d.T.double()).abs().max() < 1e-4
    with pytest.raises(BadInputError, match="square"):
        Transform("z.1", torch.ones(2, 3))


def test_feature_edit_and_splice_go_into_a_run(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from interp.features import SAEConfig, SparseAutoencoder

    m = tiny_llama
    rows = run_with_hooks(m, *batch, capture="resid_post.0").activations["blocks.0.hook_resid_post"].flatten(0, 1)
    sae = SparseAutoencoder(SAEConfig(d_sae=32, k=4, n_tokens=rows.shape[0] * 8, batch_size=24), progress=False)
    sae.fit(rows.repeat(8, 1))
    clean = logits_of(m, batch, [])
    torch.testing.assert_close(logits_of(m, batch, [FeatureEdit("resid_post.0", sae=sae, feature=3)]), clean)
    x = run_with_hooks(m, *batch, capture="resid_post.0").activations["blocks.0.hook_resid_post"]
    edited = run_with_hooks(m, *batch, capture="resid_post.0",
                            interventions=[FeatureEdit("resid_post.0", sae=sae, feature=3, scale=0.0, add=2.0)]
                            ).activations["blocks.0.hook_resid_post"]
    want = x + (2.0 - sae.encode(x)[..., 3:4]) * sae.direction(3)
    torch.testing.assert_close(edited, want, rtol=1e-4, atol=1e-4)
    spliced = run_with_hooks(m, *batch, capture="resid_post.0",
                             interventions=[Splice("resid_post.0", sae=sae)]).activations["blocks.0.hook_resid_post"]
    torch.testing.assert_close(spliced, sae.reconstruct(x), rtol=1e-5, atol=1e-5)
    kept = logits_of(m, batch, [Splice("resid_post.0", sae=sae, keep_error=True)])
    torch.testing.assert_close(kept, clean, rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInputError, match="bad feature 32"):
        FeatureEdit("resid_post.0", sae=sae, feature=32)
    with pytest.raises(TypeError, match="needs sae="):
        Splice("resid_post.0", sae=object())


def test_model_hooks_context_reads_lengths_from_the_forward(tiny_llama: Model,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """model.hooks() around a forward you call yourself places -1 at each sequence's last real token too."""
    m = tiny_llama
    with m.hooks(interventions=[Ablate("resid_pre.1", positions=-1)], capture="resid_pre.1") as run:
        m.hf(input_ids=batch[0], attention_mask=batch[1])
    x = run.activations["blocks.1.hook_resid_pre"]
    for b, n in enumerate(batch[1].sum(-1).tolist()):
        assert not x[b, n - 1].any() and x[b, : n - 1].abs().sum() > 0


def test_blank_text_is_rejected_like_empty_text(tiny_llama: Model) -> None:
    for bad in ("", "   ", "\n\t"):
        with pytest.raises(BadInputError, match="input 0 is"):
            tiny_llama.run(bad)


def test_progress_switch_and_quiet() -> None:
    from interp.progress import progress, progress_enabled

    assert progress_enabled(None) in (True, False)
    with interp.quiet():
        assert progress_enabled(None) is False and progress_enabled(True) is True
        assert progress(range(2)).disable
        with interp.quiet(False):
            assert progress_enabled(None) is True
    assert progress(range(2), enabled=False).disable
