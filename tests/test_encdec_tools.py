"""The tools across both stacks of an encoder–decoder (issue 25), on tiny random T5, BART and Marian models from the
real config classes: activation patching of encoder and decoder sites (cross-attention included), the logit lens over
the decoder's layers, and trace stores holding cross-attention keys/values.

Oracles, independent of interp's engine: patched runs made by hand with raw PyTorch hooks on the Hugging Face modules
(their names written out in ``_encdec_helpers``) and the metric computed from the plain forward's logits; exact
endpoints (a patch that makes the corrupted run the clean one, or changes nothing); the lens recomputed by hand from
Hugging Face's ``output_hidden_states`` through the decoder's own final norm, T5's rescaling and the LM head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _encdec_helpers import DH, LAYOUT, H, V, build, raw

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.lens import TunedLens, logit_lens
from interp.models import EncoderDecoder
from interp.patching import activation_patching
from interp.patching.encdec import ENCDEC_COMPONENTS, EncDecPatchingSetup, prepare_encdec
from interp.trace import Trace, TraceStore

ANSWER, WRONG = 5, 9
Edits = dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]]


@pytest.fixture(params=["t5", "bart", "marian"], scope="module")
def fam(request: pytest.FixtureRequest) -> tuple[str, EncoderDecoder]:
    return request.param, EncoderDecoder(build(request.param, seed=3), name=f"tiny-{request.param}")


def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean and corrupted sources (tokens 2 and each source's last real one differ), the mask, decoder inputs."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # the second source has 5 real tokens
    bad = ids.clone()
    bad[:, 2] = (ids[:, 2] + 7 - 3) % (V - 3) + 3
    bad[0, 6] = (ids[0, 6] + 11 - 3) % (V - 3) + 3
    bad[1, 4] = (ids[1, 4] + 11 - 3) % (V - 3) + 3
    dec = torch.randint(3, V, (2, 4), generator=g)
    return ids, bad, mask, dec


def metric(logits: torch.Tensor) -> float:
    """logit_diff at the last decoder position, mean over the sequences (decoder inputs without padding)."""
    last = logits[:, -1]
    return float((last[:, ANSWER] - last[:, WRONG]).mean())


def hand(family: str, ed: EncoderDecoder, ids: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor,
         edits: Edits) -> float:
    return metric(raw(family, ed.hf, ids, mask, dec, edits)[0])


def put(values: torch.Tensor, rows_cols: list[tuple[int, Any]], cols: slice = slice(None)
        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """An edit writing ``values`` at (row, position) pairs (position ``slice(None)``: all), last-axis ``cols``."""
    def f(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        for r, p in rows_cols:
            t[r, p, ..., cols] = values[r, p, ..., cols]
        return t
    return f


def test_stream_sites_of_both_stacks_equal_hand_patching(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    lay = LAYOUT[family]
    ids, bad, mask, dec = pair()
    _, clean = raw(family, ed.hf, ids, mask, dec)
    eb, db = lay["blocks"]["encoder"], lay["blocks"]["decoder"]
    # encoder resid_post, positions 0, 2 and each source's last real token (6 and 4): clean values into the corrupted run
    res = activation_patching(ed, (ids, mask), corrupt=(bad, mask), decoder_inputs=dec, answer=ANSWER, wrong=WRONG,
                              component="encoder.resid_post", positions=[0, 2, -1], progress=False)
    assert res.axes == ("layer", "pos") and res.coords["pos"] == (0, 2, -1) and res.component == "encoder.resid_post"
    ends = {0: [(0, 0), (1, 0)], 2: [(0, 2), (1, 2)], -1: [(0, 6), (1, 4)]}
    for i, L in enumerate(res.coords["layer"]):
        for j, p in enumerate(res.coords["pos"]):
            want = hand(family, ed, bad, mask, dec, {(f"{eb}.{L}", "out"): put(clean[f"encoder.resid_post.{L}"], ends[p])})
            assert float(res.values[i, j]) == pytest.approx(want, rel=1e-4, abs=1e-4), (L, p)
    # decoder cross-attention output at every decoder position, noising (corrupted values into the clean run)
    _, corrupted = raw(family, ed.hf, bad, mask, dec)
    res = activation_patching(ed, (ids, mask), corrupt=(bad, mask), decoder_inputs=dec, answer=ANSWER, wrong=WRONG,
                              component="decoder.cross_attn_out", direction="noising", progress=False)
    assert res.values.shape == (ed.n_layers["decoder"], 4)
    for L in range(ed.n_layers["decoder"]):
        for p in range(4):
            want = hand(family, ed, ids, mask, dec, {(f"{db}.{L}.{lay['cross']}", "out"): put(
                corrupted[f"decoder.cross_attn_out.{L}"], [(0, p), (1, p)])})
            assert float(res.values[L, p]) == pytest.approx(want, rel=1e-4, abs=1e-4), (L, p)
    assert res.clean_value == pytest.approx(metric(raw(family, ed.hf, ids, mask, dec)[0]), rel=1e-5, abs=1e-5)
    assert res.corrupted_value == pytest.approx(metric(raw(family, ed.hf, bad, mask, dec)[0]), rel=1e-5, abs=1e-5)


def test_cross_attention_keys_and_decoder_heads_equal_hand_patching(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    lay = LAYOUT[family]
    ids, bad, mask, dec = pair()
    _, clean = raw(family, ed.hf, ids, mask, dec)
    db = lay["blocks"]["decoder"]
    _, k, v, o = lay["qkvo"]
    setup = prepare_encdec(ed, (ids, mask), corrupt=(bad, mask), decoder_inputs=dec, answer=ANSWER, wrong=WRONG)
    # per cross-attention head: its keys at every source position (the encoder's tokens) from the clean run
    res = activation_patching(ed, setup, component="decoder.cross_k", progress=False)
    assert res.axes == ("layer", "head") and res.values.shape == (ed.n_layers["decoder"], H)
    for L in range(ed.n_layers["decoder"]):
        flat = clean[f"decoder.cross_k.{L}"].flatten(-2)
        for h in range(H):
            want = hand(family, ed, bad, mask, dec, {(f"{db}.{L}.{lay['cross']}.{k}", "out"): put(
                flat, [(0, slice(None)), (1, slice(None))], slice(h * DH, (h + 1) * DH))})
            assert float(res.values[L, h]) == pytest.approx(want, rel=1e-4, abs=1e-4), (L, h)
    # cross values of head 1 at source positions 2 and -1 (6 and 4), one cell per position
    res = activation_patching(ed, setup, component="decoder.cross_v", heads=[1], positions=[2, -1], per_position=True,
                              layers=[-1], progress=False)
    L = ed.n_layers["decoder"] - 1
    flat = clean[f"decoder.cross_v.{L}"].flatten(-2)
    for j, cells in enumerate([[(0, 2), (1, 2)], [(0, 6), (1, 4)]]):
        want = hand(family, ed, bad, mask, dec, {(f"{db}.{L}.{lay['cross']}.{v}", "out"): put(
            flat, cells, slice(DH, 2 * DH))})
        assert float(res.values[0, 0, j]) == pytest.approx(want, rel=1e-4, abs=1e-4)
    # decoder self-attention z per head at the last decoder position: the output projection's input columns
    res = activation_patching(ed, setup, component="decoder.z", positions=-1, progress=False)
    for L in range(ed.n_layers["decoder"]):
        flat = clean[f"decoder.z.{L}"].flatten(-2)
        for h in range(H):
            want = hand(family, ed, bad, mask, dec, {(f"{db}.{L}.{lay['attn']}.{o}", "in"): put(
                flat, [(0, 3), (1, 3)], slice(h * DH, (h + 1) * DH))})
            assert float(res.values[L, h]) == pytest.approx(want, rel=1e-4, abs=1e-4), (L, h)


def test_endpoints(fam: tuple[str, EncoderDecoder]) -> None:
    """Patches that make the corrupted run the clean one (or the reverse), and patches that change nothing."""
    _, ed = fam
    ids, bad, mask, dec = pair()
    bad[1, 4] = ids[1, 4]  # now only position 2 differs in the second source; 2 and 6 in the first
    one = bad.clone()
    one[0, 6] = ids[0, 6]  # only position 2 differs in either source
    for direction, there, other in (("denoising", "clean_value", "corrupted_value"),
                                    ("noising", "corrupted_value", "clean_value")):
        s = prepare_encdec(ed, (ids, mask), corrupt=(one, mask), decoder_inputs=dec, answer=ANSWER, wrong=WRONG)
        assert abs(s.clean_value - s.corrupted_value) > 1e-3
        res = activation_patching(ed, s, component="encoder.resid_pre", layers=[0], direction=direction,
                                  progress=False)
        # the one differing token's embedding is the whole difference; the other positions hold the same values
        torch.testing.assert_close(res.values[0, 2], torch.tensor(getattr(s, there)), rtol=1e-5, atol=1e-5)
        keep = [p for p in range(7) if p != 2]
        torch.testing.assert_close(res.values[0, keep], torch.full((6,), getattr(s, other)), rtol=1e-5, atol=1e-5)
        # the decoder's last stream at the position the metric reads is everything the logits see there
        res = activation_patching(ed, s, component="decoder.resid_post", layers=[-1], positions=[0, -1],
                                  direction=direction, progress=False)
        torch.testing.assert_close(res.values[0], torch.tensor([getattr(s, other), getattr(s, there)]),
                                   rtol=1e-5, atol=1e-5)
        if direction == "denoising":
            torch.testing.assert_close(res.normalized[0], torch.tensor([0.0, 1.0]), rtol=1e-4, atol=1e-4)
        # every decoder-side patch before the cross-attention of layer 0 changes nothing
        res = activation_patching(ed, s, component="decoder.attn_out", layers=[0], direction=direction,
                                  progress=False)
        torch.testing.assert_close(res.values[0], torch.full((4,), getattr(s, other)), rtol=1e-5, atol=1e-5)


def test_padded_decoder_inputs(fam: tuple[str, EncoderDecoder]) -> None:
    """Decoder inputs of different lengths: the metric reads each one's last real position, and decoder positions
    count over each one's real tokens (causal: right padding changes no real position, so the oracle runs unmasked)."""
    family, ed = fam
    lay = LAYOUT[family]
    ids, bad, mask, dec = pair()
    dmask = torch.ones_like(dec)
    dmask[1, 3:] = 0  # the second decoder input has 3 real tokens
    _, clean = raw(family, ed.hf, ids, mask, dec)
    res = activation_patching(ed, (ids, mask), corrupt=(bad, mask), decoder_inputs=(dec, dmask), answer=ANSWER,
                              wrong=WRONG, component="decoder.mlp_out", positions=[0, -1], progress=False)
    assert res.coords["pos"] == (0, -1)

    def last_real(logits: torch.Tensor) -> float:
        at = logits[torch.arange(2), torch.tensor([3, 2])]
        return float((at[:, ANSWER] - at[:, WRONG]).mean())

    db = lay["blocks"]["decoder"]
    for L in range(ed.n_layers["decoder"]):
        for j, cells in enumerate([[(0, 0), (1, 0)], [(0, 3), (1, 2)]]):
            edit = {(f"{db}.{L}.{lay['mlp']['decoder']}", "out"): put(clean[f"decoder.mlp_out.{L}"], cells)}
            want = last_real(raw(family, ed.hf, bad, mask, dec, edit)[0])
            assert float(res.values[L, j]) == pytest.approx(want, rel=1e-4, abs=1e-4), (L, j)
    assert res.clean_value == pytest.approx(last_real(raw(family, ed.hf, ids, mask, dec)[0]), rel=1e-5, abs=1e-5)


def test_start_token_only_user_metric_and_errors(fam: tuple[str, EncoderDecoder]) -> None:
    family, ed = fam
    ids, bad, mask, _ = pair()
    start = int(ed.config.decoder_start_token_id)

    def prob(logits: torch.Tensor) -> torch.Tensor:  # [seqs, pos, vocab]
        return logits[:, -1].softmax(-1)[:, ANSWER].mean()

    res = activation_patching(ed, (ids, mask), corrupt=(bad, mask), metric=prob, component="encoder.mlp_out",
                              window=3, positions=[2], progress=False)
    assert res.values.shape == (ed.n_layers["encoder"], 1) and res.metric == "prob"
    lay = LAYOUT[family]
    _, clean = raw(family, ed.hf, ids, mask, torch.full((2, 1), start))
    eb = lay["blocks"]["encoder"]
    edits = {(f"{eb}.{L}.{lay['mlp']['encoder']}", "out"): put(clean[f"encoder.mlp_out.{L}"], [(0, 2), (1, 2)])
             for L in range(ed.n_layers["encoder"])}  # window 3 around layer 0 of 2 layers: both
    logits = raw(family, ed.hf, bad, mask, torch.full((2, 1), start), edits)[0]
    assert float(res.values[0, 0]) == pytest.approx(float(prob(logits)), rel=1e-4, abs=1e-6)
    frame = res.to_frame()
    assert len(frame) == ed.n_layers["encoder"] and str(frame["pos"].iloc[0]).startswith("2:")
    with pytest.raises(UnknownNameError, match=r"encoder\.resid_pre"):
        activation_patching(ed, ids, corrupt=bad, answer=ANSWER, wrong=WRONG, component="resid_pre")
    with pytest.raises(UnknownNameError):
        activation_patching(ed, ids, corrupt=bad, answer=ANSWER, wrong=WRONG, component="encoder.cross_k")
    with pytest.raises(BadInputError, match="token counts"):
        activation_patching(ed, (ids, mask), corrupt=bad, answer=ANSWER, wrong=WRONG, component="encoder.z")
    with pytest.raises(BadInputError, match="needs corrupt"):
        activation_patching(ed, ids, answer=ANSWER, wrong=WRONG, component="encoder.z")
    setup = prepare_encdec(ed, (ids, mask), corrupt=(bad, mask), answer=ANSWER, wrong=WRONG)
    assert isinstance(setup, EncDecPatchingSetup) and "decoder.cross_pattern" in ENCDEC_COMPONENTS
    with pytest.raises(BadInputError, match="already holds"):
        activation_patching(ed, setup, answer=ANSWER, component="encoder.z")
    other = EncoderDecoder(build(family, seed=4))
    with pytest.raises(ModelMismatchError):
        activation_patching(other, setup, component="encoder.z")


def test_store_holds_cross_attention_with_its_source_axis(fam: tuple[str, EncoderDecoder], tmp_path: Any) -> None:
    _, ed = fam
    ids, _, mask, dec = pair()
    dmask = torch.ones_like(dec)
    dmask[1, 2:] = 0  # the second decoder input has 2 real tokens
    run = ed.run((ids, mask), (dec, dmask), capture=["decoder.cross_k", "decoder.cross_v", "decoder.cross_pattern",
                                                     "decoder.resid_post", "logits"])
    tr = run.decoder
    tr.save(tmp_path / "dec")
    run.encoder.save(tmp_path / "enc")
    store = TraceStore(tmp_path / "dec")
    assert store.manifest.trace.hooks["decoder.blocks.0.cross_attn.hook_k"] == [7, H, DH]  # the source axis
    back = Trace.load(tmp_path / "dec")
    real = dmask.bool()
    for n in tr.names:
        if "cross_attn" in n and "pattern" not in n:  # [batch, src_pos, ...]: kept whole, source padding included
            assert torch.equal(back[n], tr[n]), n
        elif "pattern" in n:  # [batch, head, q (decoder), k (source)]: the decoder's rows, every source column
            assert torch.equal(back[n][:, :, :2], tr[n][:, :, :2]) and back[n].shape == tr[n].shape, n
            assert torch.equal(back[n][0], tr[n][0]), n
        else:  # token rows: the decoder's real tokens
            assert torch.equal(back[n][real], tr[n][real]), n
    one = store.trace(seqs=[1])  # the second sequence alone: 2 decoder tokens, the source axis still 7
    assert one["decoder.cross_k.0"].shape == (1, 7, H, DH) and one["decoder.cross_pattern.0"].shape == (1, H, 2, 7)
    assert torch.equal(one["decoder.cross_v.1"][0], tr["decoder.cross_v.1"][1])
    assert torch.equal(one["decoder.cross_pattern.1"][0], tr["decoder.cross_pattern.1"][1, :, :2])
    enc = Trace.load(tmp_path / "enc")
    assert torch.equal(enc.input_ids, ids) and enc.names == run.encoder.names
    with pytest.raises(BadInputError, match="per sequence"):
        next(store.iter_tokens("decoder.cross_k.0"))


def hand_head(family: str, hf: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The logits the model makes of a decoder stream ``h``, written out per family: T5 its final RMS norm, the
    ``d_model ** -0.5`` rescaling and the LM head; mBART its final LayerNorm, the head and ``final_logits_bias``;
    BART and Marian (post-norm: no final norm) the head and the bias."""
    with torch.no_grad():
        if family == "t5":
            return hf.lm_head(hf.decoder.final_layer_norm(h) * hf.config.d_model ** -0.5)
        if family == "mbart":
            h = hf.model.decoder.layer_norm(h)
        return hf.lm_head(h) + hf.final_logits_bias


@pytest.fixture(params=["t5", "bart", "mbart", "marian"], scope="module")
def lensed(request: pytest.FixtureRequest) -> tuple[str, EncoderDecoder]:
    hf = build(request.param, seed=5)
    if hasattr(hf, "final_logits_bias"):  # zeros at init: make the bias matter
        with torch.no_grad():
            hf.final_logits_bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    return request.param, EncoderDecoder(hf, name=f"tiny-{request.param}")


def test_logit_lens_over_decoder_layers_equals_hand_readout(lensed: tuple[str, EncoderDecoder], tmp_path: Any) -> None:
    family, ed = lensed
    ids, _, mask, dec = pair()
    n = ed.n_layers["decoder"]
    res = logit_lens(ed, (ids, mask), decoder_inputs=dec, target=ANSWER, top_k=3)
    with torch.no_grad():
        out = ed.hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)
    hs = out.decoder_hidden_states  # the embeddings, then each block's output (the last one after the final norm)
    assert res.top_ids.shape == (n, 2, 4, 3) and res.layer_labels == tuple(str(L) for L in range(n))
    for L in range(n):
        is_last = n == L + 1
        want = out.logits if is_last else hand_head(family, ed.hf, hs[L + 1])
        if is_last:  # the last block's stream read by hand equals the model's own logits
            last = ed.run((ids, mask), dec, capture=f"decoder.resid_post.{L}").decoder[f"decoder.blocks.{L}.hook_resid_post"]
            torch.testing.assert_close(hand_head(family, ed.hf, last), out.logits, rtol=1e-4, atol=1e-4)
        p = want.float().softmax(-1)
        assert torch.equal(res.top_ids[L, :, :, 0], want.argmax(-1)), L
        torch.testing.assert_close(res.target_prob[L], p[..., ANSWER], rtol=1e-4, atol=1e-5)
        ent = -(p * p.clamp_min(1e-30).log()).sum(-1)
        torch.testing.assert_close(res.entropy[L], ent, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.kl_to_final[-1], torch.zeros(2, 4), rtol=0, atol=1e-4)
    # the same reading from a decoder trace of an earlier run, with the hooks spelled with their stack
    run = ed.run((ids, mask), dec, capture=["decoder.resid_post", "logits"])
    again = logit_lens(ed, run.decoder, hooks="decoder.resid_post", target=ANSWER, top_k=3)
    assert torch.equal(again.top_ids, res.top_ids)
    run.decoder.save(tmp_path / "dec")  # a store of the decoder trace reads the same
    stored = logit_lens(ed, TraceStore(tmp_path / "dec"), target=ANSWER, top_k=3)
    assert torch.equal(stored.top_ids, res.top_ids)
    torch.testing.assert_close(again.target_prob, res.target_prob, rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="encoder site"):
        logit_lens(ed, (ids, mask), decoder_inputs=dec, hooks="encoder.resid_post")
    with pytest.raises(BadInputError, match="cannot run alone"):  # a trace without the hooks cannot be re-run
        logit_lens(ed, run.decoder, hooks="decoder.mlp_out")


def test_tuned_lens_on_the_decoder(lensed: tuple[str, EncoderDecoder]) -> None:
    family, ed = lensed
    ids, _, mask, dec = pair()
    lens = TunedLens(steps=3, batch_size=4, init="least_squares", progress=False).fit(ed, (ids, mask),
                                                                                     decoder_inputs=dec)
    assert lens.n_layers == ed.n_layers["decoder"]
    res = lens.apply(ed, (ids, mask), decoder_inputs=dec, target=ANSWER)
    assert res.lens == "tuned"
    acts = ed.run((ids, mask), dec, capture="decoder.resid_post").decoder
    for L in range(ed.n_layers["decoder"]):
        h = acts[f"decoder.blocks.{L}.hook_resid_post"]
        with torch.no_grad():
            want = hand_head(family, ed.hf, lens.translate(h, L)).float().softmax(-1)
        torch.testing.assert_close(res.target_prob[L], want[..., ANSWER], rtol=1e-4, atol=1e-5)
