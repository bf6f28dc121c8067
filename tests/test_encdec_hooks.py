"""Encoder–decoders in the one vocabulary (issue 25): ``encoder.* / decoder.*`` sites captured into two Traces and
edited by interp.hooks interventions, on tiny random T5 and BART models from the real config classes.

Oracles (independent of interp's engine): raw PyTorch hooks placed by hand on the Hugging Face modules (the module
names are written out here), hand-edited forwards (the same edits done by raw hooks), Hugging Face's own
``output_attentions`` patterns, and for BART the pattern recomputed from q and k by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.hooks import Ablate, Add, Patch, Scale
from interp.models import EncoderDecoder, HubUnreachableError, load_encdec, load_model
from interp.sites import Site, UnknownHookError
from interp.trace import Trace

V, H, DH = 40, 4, 8
BUILD: dict[str, Callable[[], torch.nn.Module]] = {
    "t5": lambda: T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=32, d_kv=DH, d_ff=48, num_layers=2,
                                                      num_heads=H, decoder_start_token_id=0, pad_token_id=0,
                                                      eos_token_id=1)),
    "bart": lambda: BartForConditionalGeneration(BartConfig(
        vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)),
}
# where the raw oracle hooks go, written out by hand (tests may know HF module names)
LAYOUT: dict[str, dict[str, Any]] = {
    "t5": dict(blocks={"encoder": "encoder.block", "decoder": "decoder.block"}, attn="layer.0.SelfAttention",
               cross="layer.1.EncDecAttention", mlp={"encoder": "layer.1.DenseReluDense",
                                                    "decoder": "layer.2.DenseReluDense"},
               qkvo=("q", "k", "v", "o"), stacks={"encoder": "encoder", "decoder": "decoder"}),
    "bart": dict(blocks={"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"}, attn="self_attn",
                 cross="encoder_attn", mlp={"encoder": "fc2", "decoder": "fc2"},
                 qkvo=("q_proj", "k_proj", "v_proj", "out_proj"),
                 stacks={"encoder": "model.encoder", "decoder": "model.decoder"}),
}


@pytest.fixture(params=list(BUILD), scope="module")
def fam(request: pytest.FixtureRequest) -> tuple[str, EncoderDecoder]:
    torch.manual_seed(7)
    hf = BUILD[request.param]()
    with torch.no_grad():  # larger than the default init, so that every sublayer matters
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return request.param, EncoderDecoder(hf.eval(), name=f"tiny-{request.param}")


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # the second source has 5 real tokens
    dec = torch.randint(3, V, (2, 5), generator=g)
    return ids, mask, dec


@contextmanager
def eager(hf: torch.nn.Module) -> Iterator[None]:
    """Every config the modules hold switched to transformers' own eager attention."""
    cfgs = {id(c): c for m in hf.modules() if (c := getattr(m, "config", None)) is not None}
    saved = {k: c._attn_implementation for k, c in cfgs.items()}
    for c in cfgs.values():
        c._attn_implementation = "eager"
    try:
        yield
    finally:
        for k, c in cfgs.items():
            c._attn_implementation = saved[k]


def raw(family: str, hf: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor,
        edits: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] | None = None
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A plain forward with raw PyTorch hooks on the modules: what each named hook point holds, and ``edits``
    ({(module path, "out"|"in"): fn}) applied to a module's (first) output or first input."""
    lay, acts, handles = LAYOUT[family], {}, []
    edits = edits or {}

    def out_hook(name: str | None, path: str) -> Any:
        def f(m: Any, a: Any, o: Any) -> Any:
            t = o["last_hidden_state"] if isinstance(o, dict) else o[0] if isinstance(o, tuple) else o
            if (path, "out") in edits:
                t = edits[(path, "out")](t)
            if name:
                acts[name] = t.detach().clone()
            if (path, "out") not in edits:
                return None
            if isinstance(o, dict):
                o["last_hidden_state"] = t
                return o
            return (t, *o[1:]) if isinstance(o, tuple) else t
        return f

    def in_hook(name: str | None, path: str) -> Any:
        def f(m: Any, a: Any, k: Any) -> Any:
            t = a[0] if a else k["hidden_states"]
            if (path, "in") in edits:
                t = edits[(path, "in")](t)
            if name:
                acts[name] = t.detach().clone()
            if (path, "in") not in edits:
                return None
            return ((t, *a[1:]), k) if a else (a, {**k, "hidden_states": t})
        return f

    places: list[tuple[str | None, str, str]] = []
    for s in ("encoder", "decoder"):
        for L in range(len(hf.get_submodule(lay["blocks"][s]))):
            b = f"{lay['blocks'][s]}.{L}"
            places += [(f"{s}.resid_pre.{L}", b, "in"), (f"{s}.resid_post.{L}", b, "out"),
                       (f"{s}.attn_out.{L}", f"{b}.{lay['attn']}", "out"), (f"{s}.mlp_out.{L}", f"{b}.{lay['mlp'][s]}", "out")]
            attns = [("", f"{b}.{lay['attn']}")] + ([("cross_", f"{b}.{lay['cross']}")] if s == "decoder" else [])
            for pre, a in attns:
                if pre:
                    places.append((f"{s}.cross_attn_out.{L}", a, "out"))
                q, k, v, o = lay["qkvo"]
                places += [(f"{s}.{pre}q.{L}", f"{a}.{q}", "out"), (f"{s}.{pre}k.{L}", f"{a}.{k}", "out"),
                           (f"{s}.{pre}v.{L}", f"{a}.{v}", "out"), (f"{s}.{pre}z.{L}", f"{a}.{o}", "in")]
        places.append((f"{s}.ln_final", lay["stacks"][s], "out"))
    seen = {(p, io) for _, p, io in places}
    places += [(None, p, io) for (p, io) in edits if (p, io) not in seen]
    for name, path, io in places:
        mod = hf.get_submodule(path)
        handles.append(mod.register_forward_hook(out_hook(name, path)) if io == "out"
                       else mod.register_forward_pre_hook(in_hook(name, path), with_kwargs=True))
    try:
        with torch.no_grad():
            logits = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    for n in list(acts):  # q/k/v/z from the projections: [batch, pos, head * d_head] -> [batch, pos, head, d_head]
        if n.rsplit(".", 2)[-2].removeprefix("cross_") in ("q", "k", "v", "z"):
            acts[n] = acts[n].unflatten(-1, (H, DH))
    return logits, acts


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
    with pytest.raises(BadInputError):  # a store keeps one token axis: the cross pattern's keys are the source's
        res.decoder.save(tmp_path / "cross")
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
