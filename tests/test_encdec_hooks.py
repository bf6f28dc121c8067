"""Encoder–decoders in the one vocabulary (issue 25): ``encoder.* / decoder.*`` sites captured into two Traces and
edited by interp.hooks interventions, on tiny random T5 and BART models from the real config classes.

Oracles (independent of interp's engine): raw PyTorch hooks placed by hand on the Hugging Face modules (the module
names are written out here), hand-edited forwards (the same edits done by raw hooks), Hugging Face's own
``output_attentions`` patterns, and for BART the pattern recomputed from q and k by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _encdec_helpers import BUILD, DH, LAYOUT, H, V, build, eager, raw

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.hooks import Ablate, Add, Patch, Scale
from interp.models import EncoderDecoder, HubUnreachableError, load_encdec, load_model
from interp.sites import Site, UnknownHookError
from interp.trace import Trace


@pytest.fixture(params=["t5", "bart"], scope="module")
def fam(request: pytest.FixtureRequest) -> tuple[str, EncoderDecoder]:
    return request.param, EncoderDecoder(build(request.param), name=f"tiny-{request.param}")


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # the second source has 5 real tokens
    dec = torch.randint(3, V, (2, 5), generator=g)
    return ids, mask, dec


def test_captures_equal_raw_hooks_and_logits_stay_bit_identical(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    ids, mask, dec = inputs()
    module_level = [n for n in ed.sites() if n.component.short in ("resid_pre", "resid_post", "attn_out",
                                                                      "cross_attn_out", "mlp_out", "ln_final")]
    plain, want = raw(family, ed.hf, ids, mask, dec)
    res = ed.run(ids, dec, attention_mask=mask, capture=[*module_level, "logits"])
    assert torch.equal(res.logits, plain)  # the model's own attention kernel, untouched
    assert set(res.acts) == {s.name for s in module_level} | {"logits"}
    for s in module_level:
        assert torch.equal(res.acts[s.name], want[s.short]), s.short
    # every hook point at once (q/k/v/pattern/z switch to interp's eager kernel): bit-identical to HF's eager
    with eager(ed.hf):
        plain_eager, want_eager = raw(family, ed.hf, ids, mask, dec)
    every = ed.run(ids, dec, attention_mask=mask, capture="*")
    assert torch.equal(every.logits, plain_eager)
    assert set(every.acts) == set(ed.hook_names())
    for name, t in want_eager.items():
        assert torch.equal(every.acts[ed.resolve(name)[0].name], t), name
    assert every.decoder["decoder.cross_k.0"].shape == (2, 7, H, DH)  # over the source's 7 positions
    assert every.decoder["decoder.cross_pattern.1"].shape == (2, H, 5, 7)


def test_patterns_equal_hf_output_attentions(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    ids, mask, dec = inputs()
    with torch.no_grad(), eager(ed.hf):
        out = ed.hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_attentions=True, use_cache=False)
    res = ed.run(ids, dec, attention_mask=mask, capture=["encoder.pattern", "decoder.pattern", "decoder.cross_pattern",
                                                         "encoder.q.0", "encoder.k.0"])
    for L in range(2):
        torch.testing.assert_close(res.encoder[f"encoder.pattern.{L}"], out.encoder_attentions[L], rtol=0, atol=1e-6)
        torch.testing.assert_close(res.decoder[f"decoder.pattern.{L}"], out.decoder_attentions[L], rtol=0, atol=1e-6)
        torch.testing.assert_close(res.decoder[f"decoder.cross_pattern.{L}"], out.cross_attentions[L], rtol=0, atol=1e-6)
    p = res.decoder["decoder.cross_pattern.0"]
    assert float(p[1, :, :, 5:].abs().max()) == 0.0  # no query reads the second source's padding
    assert float(res.decoder["decoder.pattern.1"][0].triu(1).abs().max()) == 0.0  # the decoder is causal
    if family == "bart":  # BART's scores by hand: q k^T / sqrt(d_head), padded keys masked
        q, k = res.encoder["encoder.q.0"], res.encoder["encoder.k.0"]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * DH ** -0.5
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        torch.testing.assert_close(res.encoder["encoder.pattern.0"], scores.softmax(-1), rtol=0, atol=1e-6)


def test_interventions_equal_hand_edited_forwards(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    lay = LAYOUT[family]
    ids, mask, dec = inputs()
    eb, db = lay["blocks"]["encoder"], lay["blocks"]["decoder"]
    vec = torch.linspace(-1, 1, 32)

    def add_last(t: torch.Tensor) -> torch.Tensor:  # each source's last real token: 6 and 4
        t = t.clone()
        t[0, 6] += vec
        t[1, 4] += vec
        return t

    def zero_head(h: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[..., h * DH:(h + 1) * DH] = 0
            return t
        return f

    def zero_pos(p: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[:, p] = 0
            return t
        return f

    _, k, v, o = lay["qkvo"]
    cases = [  # (interventions, hand edits, needs eager)
        ([Add("encoder.resid_post.0", vec, positions=-1)], {(f"{eb}.0", "out"): add_last}, False),
        ([Ablate("decoder.cross_attn_out.1")], {(f"{db}.1.{lay['cross']}", "out"): torch.zeros_like}, False),
        ([Scale("encoder.ln_final", 0.5)], {(lay["stacks"]["encoder"], "out"): lambda t: t * 0.5}, False),
        ([Ablate("encoder.z.1", heads=[2])], {(f"{eb}.1.{lay['attn']}.{o}", "in"): zero_head(2)}, True),
        ([Ablate("decoder.cross_k.0", positions=[1])], {(f"{db}.0.{lay['cross']}.{k}", "out"): zero_pos(1)}, True),
        ([Ablate("decoder.v.1", heads=[0]), Add("decoder.resid_pre.0", vec)],
         {(f"{db}.1.{lay['attn']}.{v}", "out"): zero_head(0), (f"{db}.0", "in"): lambda t: t + vec}, True),
    ]
    for ivs, edits, needs_eager in cases:
        res = ed.run(ids, dec, attention_mask=mask, interventions=ivs)
        if needs_eager:
            with eager(ed.hf):
                want, _ = raw(family, ed.hf, ids, mask, dec, edits)
        else:
            want, _ = raw(family, ed.hf, ids, mask, dec, edits)
        torch.testing.assert_close(res.logits, want, rtol=0, atol=1e-6, msg=lambda m, ivs=ivs: f"{ivs}: {m}")
        assert not torch.allclose(res.logits, ed.run(ids, dec, attention_mask=mask).logits)  # the edit mattered
    # a patch from another run's decoder trace = the raw hook that writes the raw-captured tensor
    other = torch.flip(ids, [1])
    src = ed.run(other, dec, attention_mask=mask, capture="decoder.resid_post.0")
    _, other_acts = raw(family, ed.hf, other, mask, dec)
    res = ed.run(ids, dec, attention_mask=mask, interventions=[Patch("decoder.resid_post.0", source=src.decoder)])
    want, _ = raw(family, ed.hf, ids, mask, dec, {(f"{db}.0", "out"): lambda t: other_acts["decoder.resid_post.0"]})
    assert torch.equal(res.logits, want)
    # an edit of the cross pattern (planted): a zeroed head reads nothing, so its z is zero
    res = ed.run(ids, dec, attention_mask=mask, capture="decoder.cross_z.0",
                 interventions=[Ablate("decoder.cross_pattern.0", heads=[1])])
    z = res.decoder["decoder.cross_z.0"]
    assert float(z[:, :, 1].abs().max()) == 0.0 and float(z[:, :, 0].abs().max()) > 0


def test_traces_hold_each_stack_with_its_own_tokens(fam: tuple[str, EncoderDecoder], tmp_path: Any) -> None:
    family, ed = fam
    ids, mask, dec = inputs()
    res = ed.run(ids, dec, attention_mask=mask, capture=["encoder.resid_post", "decoder.resid_post",
                                                         "decoder.cross_pattern.0", "logits"])
    assert isinstance(res.encoder, Trace) and isinstance(res.decoder, Trace)
    assert torch.equal(res.encoder.input_ids, ids) and torch.equal(res.encoder.attention_mask, mask)
    assert torch.equal(res.decoder.input_ids, dec)
    assert res.encoder.stack("resid_post").shape == (2, 2, 7, 32)
    assert res.decoder.stack("decoder.resid_post").shape == (2, 2, 5, 32)
    last = res.encoder.get("resid_post", layer=1, positions=-1)  # each source's last real token: 6 and 4
    assert torch.equal(last, torch.stack([res.encoder["encoder.resid_post.1"][0, 6], res.encoder["encoder.resid_post.1"][1, 4]]))
    assert torch.equal(res.decoder["logits"], res.logits)
    with_k = ed.run(ids, dec, attention_mask=mask, capture="decoder.cross_k.0").decoder
    with pytest.raises(BadInputError, match="source"):  # positions count the decoder's tokens, not the source's
        with_k.get("decoder.cross_k.0", positions=-1)
    assert torch.equal(with_k.get(Site.parse("decoder.cross_k.0"), layer=0), with_k["decoder.cross_k.0"])
    for which in ("encoder", "decoder"):  # saved and loaded as one-shard stores
        tr = getattr(res, which)
        keep = Trace(tr.input_ids, tr.attention_mask, tr.tokens, {k: v for k, v in tr.activations.items()
                                                                  if "cross" not in k}, tr.manifest, tr.metadata)
        keep.save(tmp_path / which)
        back = Trace.load(tmp_path / which)
        real = keep.attention_mask.bool()  # a store keeps the real tokens' rows
        assert sorted(back.names) == sorted(keep.names)
        assert all(torch.equal(back[n][real], keep[n][real]) for n in keep.names if n != "logits")
    # cross-attention keys/values and patterns run over the source: stored per sequence with their own source axis
    cross = ed.run(ids, dec[:, :3], attention_mask=mask, capture=["decoder.cross_k", "decoder.cross_v",
                                                                   "decoder.cross_pattern", "decoder.resid_post.1"])
    assert cross.decoder["decoder.cross_k.0"].shape == (2, 7, H, DH)  # source length 7, target length 3
    cross.decoder.save(tmp_path / "cross")
    back = Trace.load(tmp_path / "cross")
    assert sorted(back.names) == sorted(cross.decoder.names)
    for n in cross.decoder.names:  # the decoder inputs have no padding: every value comes back, bit for bit
        assert torch.equal(back[n], cross.decoder[n]), n
    assert torch.equal(back.input_ids, dec[:, :3])
    # a patch source from another model of the same shapes is refused
    torch.manual_seed(99)
    stranger = EncoderDecoder(BUILD[family]().eval(), name="stranger")
    with pytest.raises(ModelMismatchError):
        ed.run(ids, dec, attention_mask=mask, interventions=[Patch("decoder.resid_post.0", source=
               stranger.run(ids, dec, attention_mask=mask, capture="decoder.resid_post.0").decoder)])


def test_vocabulary_on_two_stacks() -> None:
    ed = EncoderDecoder(BUILD["t5"]())
    assert [s.name for s in ed.resolve("encoder.resid_post.-1")] == ["encoder.blocks.1.hook_resid_post"]
    assert [s.short for s in ed.resolve("resid_post")] == ["encoder.resid_post.0", "encoder.resid_post.1",
                                                           "decoder.resid_post.0", "decoder.resid_post.1"]
    assert [s.short for s in ed.resolve("decoder.blocks.*.cross_attn.hook_pattern")] == [
        "decoder.cross_pattern.0", "decoder.cross_pattern.1"]
    for bad in ("resid_post.0", "encoder.cross_attn_out.0", "encoder.resid_post.2", "encoder.logits", "encoder.bogus.0"):
        with pytest.raises(UnknownHookError):
            ed.resolve(bad)


def test_registry_names_load_from_the_hub_or_fail_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from huggingface_hub import constants

    from interp.models.encdec_toy import toy_tokenizer

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubUnreachableError, match="google-t5/t5-small"):
        load_encdec("t5-small")
    with pytest.raises(BadInputError, match="load_encdec"):
        load_model("bart-base")
    with pytest.raises(UnknownNameError):
        load_encdec("no-such-encdec")
    torch.manual_seed(0)
    BUILD["t5"]().save_pretrained(tmp_path / "tiny")
    toy_tokenizer().save_pretrained(tmp_path / "tiny")
    ed = load_encdec(tmp_path / "tiny")
    assert ed.table.family == "t5" and ed.run("inc 1 2", "2 3").logits.shape[0] == 1


def test_hooks_around_generate_and_hf_sites(fam: tuple[str, EncoderDecoder]) -> None:
    """``ed.hooks`` edits every forward of ``generate`` as a raw hook does; ``hf:`` paths reach any submodule."""
    family, ed = fam
    ids, mask, _ = inputs()
    cross = f"{LAYOUT[family]['blocks']['decoder']}.1.{LAYOUT[family]['cross']}"
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, num_beams=1)
    with torch.no_grad(), ed.hooks(interventions=[Scale("decoder.cross_attn_out.1", 3.0)]):
        ours = ed.hf.generate(**kw)
    h = ed.hf.get_submodule(cross).register_forward_hook(lambda m, a, o: (o[0] * 3.0, *o[1:]))
    try:
        with torch.no_grad():
            want = ed.hf.generate(**kw)
    finally:
        h.remove()
    assert torch.equal(ours, want)
    enc_mlp = f"{LAYOUT[family]['blocks']['encoder']}.0.{LAYOUT[family]['mlp']['encoder']}"
    res = ed.run(ids, torch.tensor([[3, 4], [5, 6]]), attention_mask=mask, capture=[f"hf:{cross}", f"hf:{enc_mlp}"],
                 interventions=[Add(f"hf:{enc_mlp}", torch.ones(32), positions=-1)])
    assert res.decoder[f"hf:{cross}"].shape == (2, 2, 32) and res.encoder[f"hf:{enc_mlp}"].shape == (2, 7, 32)
    _, plain = raw(family, ed.hf, ids, mask, torch.tensor([[3, 4], [5, 6]]))
    delta = res.encoder[f"hf:{enc_mlp}"] - plain["encoder.mlp_out.0"]  # +1 at each source's last real token: 6, 4
    want = torch.zeros_like(delta)
    want[0, 6] = want[1, 4] = 1
    torch.testing.assert_close(delta, want, rtol=0, atol=1e-5)
