"""The logit lens against hand computations on tiny models (RMSNorm: Llama; LayerNorm: GPT-2) and SmolLM2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from interp.lens import LogitLensResult, logit_lens
from interp.models import Model
from interp.trace import ModelMismatchError


def hand_logits(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Final norm + unembedding written out from the HF modules' parameters (not via interp)."""
    hf = model.hf
    if model.adapter.family == "llama":
        norm = hf.model.norm
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
    else:
        ln = hf.transformer.ln_f
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        h = (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias
    out = h @ hf.lm_head.weight.T
    return out + hf.lm_head.bias if hf.lm_head.bias is not None else out


@pytest.fixture(params=["llama", "gpt2"])
def decoder(request: pytest.FixtureRequest, tiny_llama: Model, tiny_gpt2: Model) -> Model:
    return {"llama": tiny_llama, "gpt2": tiny_gpt2}[request.param]


def _run(model: Model, batch: tuple[torch.Tensor, torch.Tensor]):
    return model.run(batch, capture=["blocks.*.hook_resid_post", "blocks.*.hook_attn_out"])


def test_last_layer_is_the_model_output(decoder: Model, batch) -> None:
    run = _run(decoder, batch)
    res = logit_lens(decoder, run.trace, top_k=4)
    real = batch[1].bool()
    want_p, want_ids = run.logits.float().softmax(-1).topk(4, dim=-1)
    assert torch.equal(res.top_ids[-1][real], want_ids[real])
    torch.testing.assert_close(res.top_probs[-1][real], want_p[real], rtol=1e-5, atol=1e-6)
    assert res.kl_to_final[-1][real].abs().max() < 1e-5
    assert res.kl_to_final[0][real].min() > 1e-3  # an early layer is not the output
    # the real logits are also the hand computation at the last layer (the oracle checks itself)
    last = run.trace[f"blocks.{decoder.dims.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(hand_logits(decoder, last)[real], run.logits[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tiles", [None, (7, 3), (5, 1)], ids=["one-tile", "7-cols-3-rows", "5-cols-1-row"])
def test_every_metric_matches_a_direct_computation(decoder: Model, batch, tiles, monkeypatch) -> None:
    """Also with tiny tiles, so the online log-sum-exp, top-k merge and rank count cross many tile edges."""
    run = _run(decoder, batch)
    ids, mask = batch
    kwargs = {}
    if tiles is not None:
        cols, rows = tiles
        monkeypatch.setattr(sys.modules["interp.lens.logit_lens"], "VOCAB_TILE", cols)
        kwargs["chunk_bytes"] = cols * rows * 4 * 2
    res = logit_lens(decoder, run.trace, target=7, top_k=3, **kwargs)
    if tiles is not None:  # top-k merged across tiles equals the top-k of the whole row
        want = hand_logits(decoder, run.trace["blocks.0.hook_resid_post"]).float().topk(3, dim=-1).indices
        assert torch.equal(res.top_ids[0][mask.bool()], want[mask.bool()])
    final = run.logits.float().log_softmax(-1)
    for L in range(decoder.dims.n_layers):
        logp = hand_logits(decoder, run.trace[f"blocks.{L}.hook_resid_post"]).float().log_softmax(-1)
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            lp = logp[b, :n]
            torch.testing.assert_close(res.entropy[L, b, :n], -(lp.exp() * lp).sum(-1), rtol=1e-4, atol=1e-5)
            kl = torch.nn.functional.kl_div(lp, final[b, :n], log_target=True, reduction="none").sum(-1)
            torch.testing.assert_close(res.kl_to_final[L, b, :n], kl, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(res.target_prob[L, b, :n], lp[:, 7].exp(), rtol=1e-4, atol=1e-6)
            order = lp.argsort(-1, descending=True)
            rank = (order == 7).nonzero()[:, 1]
            assert torch.equal(res.target_rank[L, b, :n], rank)
            ce = torch.nn.functional.cross_entropy(lp[:-1], ids[b, 1:n], reduction="none")
            torch.testing.assert_close(res.next_token_ce[L, b, :n - 1], ce, rtol=1e-4, atol=1e-5)
            assert torch.isnan(res.next_token_ce[L, b, n - 1])


def test_padding_is_excluded(tiny_llama: Model, batch) -> None:
    res = logit_lens(tiny_llama, _run(tiny_llama, batch).trace, target=5)
    pad = ~batch[1].bool()
    assert pad.any()
    assert (res.top_ids[:, pad] == -1).all() and (res.target_rank[:, pad] == -1).all()
    for t in (res.top_probs, res.entropy, res.kl_to_final, res.next_token_ce, res.target_prob):
        assert torch.isnan(t[:, pad]).all()
    assert not torch.isnan(res.entropy[:, ~pad]).any()
    # the padded row's values equal those of the same tokens run alone
    alone = logit_lens(tiny_llama, batch[0][1:2, :5])
    torch.testing.assert_close(res.entropy[:, 1, :5], alone.entropy[:, 0], rtol=1e-4, atol=1e-5)


def test_contributions_and_text_input(tiny_llama: Model, batch) -> None:
    trace = _run(tiny_llama, batch).trace
    res = logit_lens(tiny_llama, trace, components=["hook_resid_post", "hook_attn_out"])
    assert res.layer_labels == ("0 attn_out", "0 resid_post", "1 attn_out", "1 resid_post")
    logp = hand_logits(tiny_llama, trace["blocks.1.hook_attn_out"]).log_softmax(-1)
    torch.testing.assert_close(res.entropy[2, 0], -(logp.exp() * logp).sum(-1)[0], rtol=1e-4, atol=1e-5)
    from_text = logit_lens(tiny_llama, "w1 w2 w3", target="w4")
    from_trace = logit_lens(tiny_llama, tiny_llama.run("w1 w2 w3", capture="blocks.*.hook_resid_post").trace,
                            target="w4")
    assert torch.equal(from_text.top_ids, from_trace.top_ids) and from_text.target_id == 4 + 4
    assert from_text.tokens == (("w1", "w2", "w3"),)


def test_no_final_norm_changes_the_readout(tiny_llama: Model, batch) -> None:
    trace = _run(tiny_llama, batch).trace
    raw = logit_lens(tiny_llama, trace, include_final_norm=False)
    logits = trace["blocks.0.hook_resid_post"] @ tiny_llama.hf.lm_head.weight.T
    torch.testing.assert_close(raw.top_probs[0, 0], logits[0].softmax(-1).topk(5).values, rtol=1e-4, atol=1e-6)
    assert not raw.include_final_norm


def test_errors(tiny_llama: Model, tiny_gpt2: Model, tiny_bert: Model, batch) -> None:
    only_mlp = tiny_llama.run(batch, capture="blocks.*.hook_mlp_out").trace
    with pytest.raises(KeyError, match=r"capture 'blocks\.\*\.hook_resid_post'"):
        logit_lens(tiny_llama, only_mlp)
    with pytest.raises(ModelMismatchError, match="captured from"):
        logit_lens(tiny_gpt2, _run(tiny_llama, batch).trace)
    with pytest.raises(ValueError, match="not one"):
        logit_lens(tiny_llama, "w1 w2", target="w1 w2")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        logit_lens(tiny_llama, "w1 w2", target=10**6)
    with pytest.raises(ValueError, match="not one of"):
        logit_lens(tiny_llama, "w1 w2", components=["attn.hook_z"])
    with pytest.raises(ValueError, match="no unembedding"):
        logit_lens(tiny_bert, batch)
    with pytest.raises(KeyError, match="'logits' or"):  # mlp_out alone: no way to the final distribution
        logit_lens(tiny_llama, only_mlp, components=["hook_mlp_out"])


def test_result_checks_shapes_and_round_trips(tiny_llama: Model, batch, tmp_path: Path) -> None:
    res = logit_lens(tiny_llama, _run(tiny_llama, batch).trace, target="w3", top_k=2)
    with pytest.raises(ValueError, match="entropy has shape"):
        LogitLensResult(**{**res.__dict__, "entropy": res.entropy[:, :, :2]})
    with pytest.raises(ValueError, match="layer labels"):
        LogitLensResult(**{**res.__dict__, "layer_labels": ("0",)})
    back = LogitLensResult.load(res.save(tmp_path / "lens"))
    for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "next_token_ce", "target_rank", "target_prob"):
        assert torch.equal(torch.nan_to_num(getattr(back, name)), torch.nan_to_num(getattr(res, name))), name
    assert back.tokens == res.tokens and back.id_to_str == res.id_to_str and back.target == "w3"
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    d = json.loads(json.dumps(res.to_dict()))
    assert d["entropy"]["axes"] == ["layer", "batch", "pos"] and d["entropy"]["values"][0][1][-1] is None
    assert d["top_tokens"]["values"][-1][0][0][0] == res.top_tokens(-1, 0, 0)[0]


def test_plots(tiny_llama: Model, batch) -> None:
    res = logit_lens(tiny_llama, _run(tiny_llama, batch).trace, target="w3")
    fig = res.plot(batch=1)
    hm = fig.data[0]
    assert len(hm.z) == 2 and len(hm.z[0]) == 5  # layers x real positions of the padded row
    torch.testing.assert_close(torch.tensor(hm.z, dtype=torch.float32), res.top_probs[:, 1, :5, 0])
    ent = res.plot(color="entropy").data[0]
    torch.testing.assert_close(torch.tensor(ent.z, dtype=torch.float32), res.entropy[:, 0])
    assert len(res.plot_kl().data) == 2 and len(res.plot_target_rank().data) == 1
    with pytest.raises(ValueError, match="color"):
        res.plot(color="kl")
    with pytest.raises(ValueError, match="no target"):
        logit_lens(tiny_llama, "w1 w2").plot_target_rank()


@pytest.mark.slow
def test_smollm2_france(smollm2: Model) -> None:
    res = logit_lens(smollm2, "The capital of France is", target=" Paris")
    assert res.top_tokens(layer=-1)[0] == " Paris"
    ranks = res.target_rank[:, 0, -1]
    assert int(ranks[-1]) == 0 and float(res.kl_to_final[-1, 0].abs().max()) < 1e-4
    late = ranks[-5:]  # measured: ... 2078, 395, 91, 112, 33, 6, 2, 0
    assert (late[1:] <= late[:-1]).all(), ranks  # the rank falls to 0 over the late layers
    assert int(ranks[: len(ranks) // 2].min()) > 1000  # ... from far away in the early layers
