"""DecoderLens (interp.lens.decoder_lens): at the last encoder layer it is the model's own greedy generation and
loss, exactly; the loss at each layer equals a hand computation from the encoder's hidden states; on the shipped toy
T5 the embeddings (layer 0) fail the task and the last layer solves it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from interp.errors import BadInputError
from interp.lens import DecoderLensResult, decoder_lens
from interp.models.encdec import EncoderDecoder
from interp.models.encdec_toy import TOY_DIR, answer, load_toy_encdec, toy_examples, toy_tokenizer


@pytest.fixture(scope="module")
def tiny() -> EncoderDecoder:
    torch.manual_seed(0)
    tok = toy_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=3, num_heads=4,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    hf = T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return EncoderDecoder(hf, tok, name="tiny-t5")


def test_last_layer_is_normal_generation_and_loss(tiny: EncoderDecoder) -> None:
    ex = toy_examples(5, seed=4)
    src, ref = [s for s, _ in ex], [t for _, t in ex]
    res = decoder_lens(tiny, src, references=ref, max_new_tokens=7, batch_size=3, progress=False)
    assert res.layer_labels == ("embed", "0", "1", "2")
    tok = tiny.tokenizer
    enc = tok(src, padding=True, return_tensors="pt")
    with torch.no_grad():
        gen = tiny.hf.generate(**enc, max_new_tokens=7, do_sample=False, num_beams=1)
    assert list(res.outputs[-1]) == [t.strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
    lab = tok(ref, padding=True, return_tensors="pt").input_ids
    lab[lab == 0] = -100
    with torch.no_grad():
        out = tiny.hf(**enc, labels=lab)
    # the model's own loss is the mean over every reference token of the batch
    tl = res.token_loss[-1]
    torch.testing.assert_close(tl[~tl.isnan()].mean(), out.loss, rtol=1e-5, atol=1e-6)


def test_each_layer_by_hand(tiny: EncoderDecoder) -> None:
    """Layer L's reading is the decoder run on final_layer_norm(hidden_states[L]) of HF's own encoder output."""
    src, ref = ["rev 1 2 3", "inc 4 5 6 7"], ["3 2 1", "5 6 7 8"]
    res = decoder_lens(tiny, src, references=ref, layers=[0, 2, -1], progress=False)
    assert res.layer_labels == ("embed", "1", "2")
    tok = tiny.tokenizer
    enc = tok(src, padding=True, return_tensors="pt")
    lab = tok(ref, padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = tiny.hf.encoder(**enc, output_hidden_states=True).hidden_states
        for k, L in enumerate([0, 2, 3]):
            h = hs[L] if L == 3 else tiny.hf.encoder.final_layer_norm(hs[L])  # HF's last entry is already normed
            logits = tiny.hf(encoder_outputs=(h,), attention_mask=enc.attention_mask, labels=lab).logits
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab, reduction="none")
            ce = ce.masked_fill(lab == 0, float("nan"))  # padding of the shorter reference: not scored
            torch.testing.assert_close(res.token_loss[k, :, :lab.shape[1]], ce, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_result_surface(tiny: EncoderDecoder) -> None:
    res = decoder_lens(tiny, ["copy 1 2 3", "rev 4 5 6"], references=["1 2 3", "6 5 4"], progress=False)
    assert res.plot("table").data and res.plot("accuracy").data
    back = DecoderLensResult.load(res.save(tempfile.mkdtemp()))
    assert back.outputs == res.outputs and torch.equal(back.correct, res.correct)
    assert "items=2" in repr(res) and len(res.to_frame()) == 4 * 2
    no_ref = decoder_lens(tiny, "copy 1 2", progress=False)
    assert no_ref.loss.isnan().all() and not no_ref.correct.any()
    with pytest.raises(BadInputError):
        decoder_lens(tiny, ["copy 1"], references=["1", "2"], progress=False)
    with pytest.raises(BadInputError):
        decoder_lens(tiny, ["copy 1"], layers=[9], progress=False)


@pytest.mark.slow
@pytest.mark.skipif(not (TOY_DIR / "config.json").is_file(), reason="the toy T5 is not trained (data/encdec)")
def test_toy_t5_layer0_fails_last_layer_solves() -> None:
    ed = load_toy_encdec()
    ex = toy_examples(64, seed=5)
    assert all(t == " ".join(answer(s.split()[0], s.split()[1:])) for s, t in ex)
    res = decoder_lens(ed, [s for s, _ in ex], references=[t for _, t in ex], progress=False)
    assert float(res.accuracy[0]) < 0.2  # the embeddings carry no position in T5: the task cannot be done
    assert float(res.accuracy[-1]) >= 0.9
    assert float(res.loss[-1].mean()) < float(res.loss[0].mean())


@pytest.mark.slow
@pytest.mark.skipif(not (TOY_DIR / "config.json").is_file(), reason="the toy T5 is not trained (data/encdec)")
def test_cli_decoder_lens(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "interp.cli", "lens", "--quiet", "--decoder-lens", "--model", "toy-t5",
                          "--prompt", "rev 1 2 3", "--reference", "3 2 1", "--json", str(tmp_path / "dl.json")],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    last = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("3 ")]
    assert last and " ".join(last[0][2:]) == "'3 2 1'"  # the output layer solves it
    data = json.loads((tmp_path / "dl.json").read_text())["sections"]["DecoderLens"]["DecoderLensResult"]
    assert data["arrays"]["accuracy"]["values"][-1] == 1.0
