"""Encoder–decoder hook points (interp.models.encdec) on tiny random T5, mT5, BART, mBART and Marian models built
from the real config classes: logits with every module-level hook attached are bit-identical to the plain HF forward
(with q/k/v/pattern/z too: to HF's eager attention), and every
block's output is recomputed from its captured input and sublayer outputs through the model's own norm modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MBartConfig,
    MBartForConditionalGeneration,
    MT5Config,
    MT5ForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)

from interp.errors import UnknownNameError
from interp.models.encdec import EncoderDecoder, encdec_table

V = 40
BART_KW = dict(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
               pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
T5_KW = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,  # HF T5 generate needs equal depths
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "t5": lambda: T5ForConditionalGeneration(T5Config(**T5_KW)),
    "mt5": lambda: MT5ForConditionalGeneration(MT5Config(**T5_KW)),
    "bart": lambda: BartForConditionalGeneration(BartConfig(**BART_KW)),
    "mbart": lambda: MBartForConditionalGeneration(MBartConfig(**BART_KW)),
    "marian": lambda: MarianMTModel(MarianConfig(**BART_KW)),
}


@pytest.fixture(params=list(BUILDERS), scope="module")
def ed(request: pytest.FixtureRequest) -> EncoderDecoder:
    torch.manual_seed(hash(request.param) % 1000)
    hf = BUILDERS[request.param]()
    with torch.no_grad():  # larger than the default init, so that every sublayer matters
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return EncoderDecoder(hf.eval(), name=f"tiny-{request.param}")


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dec = torch.randint(3, V, (2, 5), generator=g)
    return ids, mask, dec


def test_logits_bit_identical_with_every_hook(ed: EncoderDecoder) -> None:
    ids, mask, dec = inputs()
    with torch.no_grad():
        plain = ed.hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    module_level = [s for s in ed.sites() if s.component.short in ("resid_pre", "resid_post", "attn_out",
                                                                   "cross_attn_out", "mlp_out", "ln_final", "logits")]
    run = ed.run(ids, dec, attention_mask=mask, capture=module_level)
    assert torch.equal(run.logits, plain)
    assert set(run.acts) == {s.name for s in module_level}
    assert "decoder.blocks.1.hook_cross_attn_out" in run.acts and "encoder.blocks.1.hook_cross_attn_out" not in run.acts
    # q/k/v/pattern/z run interp's eager kernel: bit-identical to transformers' eager attention
    cfgs = {id(c): c for m in ed.hf.modules() if (c := getattr(m, "config", None)) is not None}
    saved = {k: c._attn_implementation for k, c in cfgs.items()}
    try:
        for c in cfgs.values():
            c._attn_implementation = "eager"
        with torch.no_grad():
            plain_eager = ed.hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    finally:
        for k, c in cfgs.items():
            c._attn_implementation = saved[k]
    every = ed.run(ids, dec, attention_mask=mask, capture="*")
    assert torch.equal(every.logits, plain_eager) and set(every.acts) == set(ed.hook_names())


def test_every_block_recomputed_from_its_parts(ed: EncoderDecoder) -> None:
    ids, mask, dec = inputs()
    a = ed.run(ids, dec, attention_mask=mask, capture=["*resid*", "*_out", "*ln_final*"]).acts
    t = ed.table
    for s in ("encoder", "decoder"):
        comps = list(t.sublayers[s])
        for L in range(ed.n_layers[s]):
            h = a[f"{s}.blocks.{L}.hook_resid_pre"]
            with torch.no_grad():
                for c in comps:
                    h = h + a[f"{s}.blocks.{L}.hook_{c}"]
                    if not t.pre_norm:  # post-norm: the block's own LayerNorm after each sublayer
                        h = ed.hf.get_submodule(t.norms[s][c].format(L=L))(h)
            torch.testing.assert_close(h, a[f"{s}.blocks.{L}.hook_resid_post"], rtol=1e-5, atol=1e-5)
            if ed.n_layers[s] > L + 1:
                assert torch.equal(a[f"{s}.blocks.{L}.hook_resid_post"], a[f"{s}.blocks.{L + 1}.hook_resid_pre"])
    last = a[f"encoder.blocks.{ed.n_layers['encoder'] - 1}.hook_resid_post"]
    with torch.no_grad():
        want = ed.hf.get_submodule(t.encoder_norm)(last) if t.encoder_norm else last
    assert torch.equal(a["encoder.ln_final.hook_normalized"], want)
    states = ed.encoder_states(ids, mask)
    assert len(states) == ed.n_layers["encoder"] + 1 and torch.equal(states[-1], a["encoder.ln_final.hook_normalized"])


def test_cross_attention_reads_the_encoder(ed: EncoderDecoder) -> None:
    """Another source sentence changes what cross-attention writes but not the first decoder self-attention."""
    ids, mask, dec = inputs()
    names = ["decoder.blocks.0.hook_attn_out", "decoder.blocks.0.hook_cross_attn_out"]
    a = ed.run(ids, dec, attention_mask=mask, capture=names).acts
    b = ed.run(torch.flip(ids, [1]), dec, attention_mask=mask, capture=names).acts
    assert torch.equal(a[names[0]], b[names[0]])
    assert not torch.allclose(a[names[1]], b[names[1]])


def test_generation_from_the_last_encoder_state_is_normal_generation(ed: EncoderDecoder) -> None:
    ids, mask, _ = inputs()
    with torch.no_grad():
        normal = ed.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=1)
    ours = ed.generate_from(ed.encoder_states(ids, mask)[-1], mask, max_new_tokens=6)
    assert torch.equal(ours, normal[:, 1:])


def test_names_and_errors() -> None:
    assert encdec_table("mt5").family == "t5" and encdec_table("marian").pre_norm is False
    with pytest.raises(UnknownNameError):
        encdec_table("gpt2")
    ed = EncoderDecoder(BUILDERS["t5"]())
    assert [s.name for s in ed.resolve("encoder.blocks.*.hook_resid_post")] == [
        "encoder.blocks.0.hook_resid_post", "encoder.blocks.1.hook_resid_post"]
    with pytest.raises(UnknownNameError):
        ed.resolve("decoder.blocks.0.hook_crossattn")
