"""The logit lens against hand computations on tiny models (RMSNorm: Llama; LayerNorm: GPT-2) and SmolLM2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _v01 import normalize, summarize

import interp
from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.lens import LogitLensResult, logit_lens
from interp.models import Model
from interp.sites import UnknownHookError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


# -- v0.1 fixtures (shared by the lens test files) -------------------------------------------------


def check_v01_fixture(name: str, rename: dict[str, Any] | None = None) -> Any:
    """Load ``tests/fixtures/v0.1/<name>`` with today's loader and compare with the values interp 0.1 recorded
    (``tests/fixtures/v0.1/expected.json``). ``rename`` maps a recorded expression to ``(today's expression,
    today's expected value or None for the recorded one)`` where the API changed."""
    path = FIXTURES / name
    want = json.loads((FIXTURES / "expected.json").read_text())["fixtures"][name]
    assert want["dir"] == name and all((path / f).is_file() for f in want["files"])
    ns: dict[str, Any] = {"interp": interp, "torch": torch, "path": path}
    exec(want["load"], ns)  # the recorded load statement, e.g. "obj = LogitLensResult.load(path)"
    obj = ns["obj"]
    assert type(obj).__name__ == want["class"].rsplit(".", 1)[1]
    rename = rename or {}
    for expr, summary in want["tensors"].items():
        expr, _ = rename.get(expr, (expr, None))
        assert summarize(eval(expr, ns)) == summary, (name, expr)
    for expr, value in want["values"].items():
        expr, new = rename.get(expr, (expr, None))
        assert normalize(eval(expr, ns)) == (value if new is None else new), (name, expr)
    return obj


# -- the oracle --------------------------------------------------------------------------------------
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


def _run(model: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> interp.RunResult:
    return model.run(batch, capture=["resid_post", "attn_out"])


def test_last_layer_is_the_model_output(decoder: Model, batch) -> None:
    run = _run(decoder, batch)
    res = logit_lens(decoder, run.trace, top_k=4)  # a trace without logits: the last resid_post is decoded
    real = batch[1].bool()
    want_p, want_ids = run.logits.float().softmax(-1).topk(4, dim=-1)
    assert torch.equal(res.top_ids[-1][real], want_ids[real])
    torch.testing.assert_close(res.top_probs[-1][real], want_p[real], rtol=1e-5, atol=1e-6)
    assert res.kl_to_final[-1][real].abs().max() < 1e-5
    assert res.kl_to_final[0][real].min() > 1e-3  # an early layer is not the output
    # the real logits are also the hand computation at the last layer (the oracle checks itself)
    last = run.trace[f"blocks.{decoder.dims.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(hand_logits(decoder, last)[real], run.logits[real], rtol=1e-4, atol=1e-4)
    # token ids in: the run captures the model's own logits as the final distribution
    from_ids = logit_lens(decoder, batch, top_k=4)
    assert torch.equal(from_ids.top_ids, res.top_ids) and from_ids.kl_to_final[-1][real].abs().max() < 1e-5


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


def test_negative_positions_count_from_each_sequences_last_real_token(tiny_llama: Model, batch) -> None:
    """Row 1 of the batch has 5 real tokens of 8: ``-1`` is padded index 4 there and 7 in the other rows."""
    trace = _run(tiny_llama, batch).trace
    full = logit_lens(tiny_llama, trace, target=5)
    last = logit_lens(tiny_llama, trace, target=5, positions=-1)
    lengths = batch[1].sum(1)
    assert last.read_mask().nonzero().tolist() == [[b, int(n) - 1] for b, n in enumerate(lengths)]
    read = last.read_mask()
    for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "next_token_ce", "target_rank", "target_prob"):
        a, b = getattr(last, name), getattr(full, name)
        torch.testing.assert_close(a[:, read], b[:, read], rtol=1e-5, atol=1e-6, equal_nan=True)
        unread = a[:, ~read]
        assert (unread == -1).all() if not a.is_floating_point() else torch.isnan(unread).all(), name
    assert last.top_tokens(layer=-1, batch=1, pos=-1) == full.top_tokens(layer=-1, batch=1, pos=4)
    assert full.top_tokens(layer=0, batch=1, pos=-2) == full.top_tokens(layer=0, batch=1, pos=3)
    pair = logit_lens(tiny_llama, trace, positions=[0, -2])
    assert pair.read_mask()[1].nonzero().flatten().tolist() == [0, 3]
    assert pair.read_mask()[0].nonzero().flatten().tolist() == [0, 6]
    tail = logit_lens(tiny_llama, trace, positions=slice(-2, None))
    assert tail.read_mask()[1].nonzero().flatten().tolist() == [3, 4]
    assert len(last.to_frame()) == last.n_layers * batch[0].shape[0]  # one row per layer and sequence
    with pytest.raises(BadInputError, match=r"position 6 is outside sequence 1, which has 5 real tokens"):
        logit_lens(tiny_llama, trace, positions=6)
    with pytest.raises(BadInputError, match=r"position 2 of sequence 0 was not read"):
        last.top_tokens(layer=0, batch=0, pos=2)
    with pytest.raises(BadInputError, match=r"outside a sequence of 5 tokens"):
        full.top_tokens(layer=0, batch=1, pos=-6)


def test_hooks_in_the_one_vocabulary_and_text_input(tiny_llama: Model, batch) -> None:
    trace = _run(tiny_llama, batch).trace
    res = logit_lens(tiny_llama, trace, hooks=["resid_post", "attn_out"])
    assert res.layer_labels == ("0 attn_out", "0 resid_post", "1 attn_out", "1 resid_post")
    logp = hand_logits(tiny_llama, trace["blocks.1.hook_attn_out"]).log_softmax(-1)
    torch.testing.assert_close(res.entropy[2, 0], -(logp.exp() * logp).sum(-1)[0], rtol=1e-4, atol=1e-5)
    glob = logit_lens(tiny_llama, trace, hooks="blocks.*.hook_attn_out")
    assert glob.layer_labels == ("0", "1") and torch.equal(glob.top_ids, res.top_ids[[0, 2]])
    only_last = logit_lens(tiny_llama, trace, hooks="resid_post.-1")
    assert only_last.layer_labels == ("1",) and torch.equal(only_last.top_ids[0], res.top_ids[3])
    from_text = logit_lens(tiny_llama, "w1 w2 w3", target="w4")
    from_trace = logit_lens(tiny_llama, tiny_llama.run("w1 w2 w3", capture="resid_post").trace, target="w4")
    assert torch.equal(from_text.top_ids, from_trace.top_ids) and from_text.target_id == 4 + 4
    assert from_text.tokens == (("w1", "w2", "w3"),)


def test_a_trace_without_the_hooks_is_run_on_its_tokens(tiny_llama: Model, batch) -> None:
    only_mlp = tiny_llama.run(batch, capture="mlp_out").trace
    res = logit_lens(tiny_llama, only_mlp, target=5)
    want = logit_lens(tiny_llama, batch, target=5)
    torch.testing.assert_close(res.kl_to_final, want.kl_to_final, equal_nan=True)
    assert torch.equal(res.target_rank, want.target_rank)
    mlp = logit_lens(tiny_llama, only_mlp, hooks="mlp_out")  # read from the trace, re-run only for the output
    logp = hand_logits(tiny_llama, only_mlp["blocks.0.hook_mlp_out"]).log_softmax(-1)
    torch.testing.assert_close(mlp.entropy[0, 0], -(logp.exp() * logp).sum(-1)[0], rtol=1e-4, atol=1e-5)


def test_no_final_norm_changes_the_readout(tiny_llama: Model, batch) -> None:
    trace = _run(tiny_llama, batch).trace
    raw = logit_lens(tiny_llama, trace, include_final_norm=False)
    logits = trace["blocks.0.hook_resid_post"] @ tiny_llama.hf.lm_head.weight.T
    torch.testing.assert_close(raw.top_probs[0, 0], logits[0].softmax(-1).topk(5).values, rtol=1e-4, atol=1e-6)
    assert not raw.include_final_norm


def test_bad_values_name_the_value_and_what_is_valid(tiny_llama: Model, tiny_gpt2: Model, tiny_bert: Model,
                                                     batch) -> None:
    with pytest.raises(ModelMismatchError, match="captured from"):
        logit_lens(tiny_gpt2, _run(tiny_llama, batch).trace)
    with pytest.raises(BadInputError, match=r"target 'w1 w2' is 2 tokens .* not one"):
        logit_lens(tiny_llama, "w1 w2", target="w1 w2")
    with pytest.raises(BadInputError, match=r"bad target id 1000000; valid: 0\.\.127"):
        logit_lens(tiny_llama, "w1 w2", target=10**6)
    with pytest.raises(BadInputError, match=r"bad target 1\.5; valid: one token"):
        logit_lens(tiny_llama, "w1 w2", target=1.5)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"bad hook for the logit lens 'z\.0'; valid: .*resid_pre, attn_out"):
        logit_lens(tiny_llama, "w1 w2", hooks=["z"])
    with pytest.raises(UnknownHookError, match=r"resid_pots.*resid_post") as e:
        logit_lens(tiny_llama, "w1 w2", hooks="resid_pots")
    assert isinstance(e.value, BadInputError) and isinstance(e.value, KeyError)
    with pytest.raises(BadInputError, match=r"bad top_k 0; valid: an int >= 1"):
        logit_lens(tiny_llama, "w1 w2", top_k=0)
    with pytest.raises(BadInputError, match="no unembedding"):
        logit_lens(tiny_bert, batch)


def test_result_surface_and_round_trip(tiny_llama: Model, batch, tmp_path: Path) -> None:
    res = logit_lens(tiny_llama, _run(tiny_llama, batch).trace, target="w3", top_k=2)
    with pytest.raises(BadInputError, match="entropy has shape"):
        LogitLensResult(**{**res.__dict__, "entropy": res.entropy[:, :, :2]})
    with pytest.raises(BadInputError, match="layer labels"):
        LogitLensResult(**{**res.__dict__, "layer_labels": ("0",)})
    with pytest.raises(BadInputError, match="bad lens 'lucky'"):
        res.with_lens("lucky")
    back = LogitLensResult.load(res.save(tmp_path / "lens"))
    for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "next_token_ce", "target_rank", "target_prob"):
        assert torch.equal(torch.nan_to_num(getattr(back, name)), torch.nan_to_num(getattr(res, name))), name
    assert back.tokens == res.tokens and back.id_to_str == res.id_to_str and back.target == "w3"
    assert repr(back) == repr(res) and "tensor(" not in repr(res) and len(repr(res)) < 400
    head = json.loads((tmp_path / "lens" / "result.json").read_text())
    assert head["class"] == "LogitLensResult" and head["schema_version"] == 1 and head["interp_version"]
    assert interp.load_result(tmp_path / "lens").layer_labels == res.layer_labels
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    d = json.loads(json.dumps(res.to_dict()))
    ent = d["arrays"]["entropy"]
    assert ent["axes"] == ["layer", "batch", "pos"] and ent["values"][0][1][-1] is None  # padding
    assert ent["labels"]["layer"] == ["0", "1"]
    assert d["arrays"]["top_tokens"]["values"][-1][0][0][0] == res.top_tokens(-1, 0, 0)[0]
    assert d["attributes"]["target"] == "w3" and d["class"] == "LogitLensResult"
    df = res.to_frame()
    assert len(df) == res.n_layers * int(batch[1].sum())  # real tokens only
    row = df[(df.layer == "1") & (df.batch == 1) & (df.pos == 4)].iloc[0]
    assert row.token == res.tokens[1][4] and row.top_token == res.top_tokens(1, 1, 4)[0]
    assert row.kl_to_final == pytest.approx(float(res.kl_to_final[1, 1, 4]))
    assert "views: grid, kl, target_rank" in res.summary()


def test_views(tiny_llama: Model, batch) -> None:
    res = logit_lens(tiny_llama, _run(tiny_llama, batch).trace, target="w3")
    hm = res.plot("grid", batch=1).data[0]
    assert len(hm.z) == 2 and len(hm.z[0]) == 5  # layers x real positions of the padded row
    torch.testing.assert_close(torch.tensor(hm.z, dtype=torch.float32), res.top_probs[:, 1, :5, 0])
    assert res.plot().data[0].type == "heatmap"  # the grid is the default view
    ent = res.plot("grid", color="entropy").data[0]
    torch.testing.assert_close(torch.tensor(ent.z, dtype=torch.float32), res.entropy[:, 0])
    kl = res.plot("kl", batch=1).data
    assert len(kl) == 2
    torch.testing.assert_close(torch.tensor(kl[1].y, dtype=torch.float32), res.kl_to_final[:, 1, 4])
    rank = res.plot("target_rank", batch=1).data[0]
    assert list(rank.y) == (res.target_rank[:, 1, 4] + 1).tolist()  # pos=-1: row 1's last real token
    with pytest.raises(UnknownNameError, match=r"unknown view 'grd'.*Did you mean grid"):
        res.plot("grd")
    with pytest.raises(BadInputError, match="bad color 'kl'"):
        res.plot("grid", color="kl")
    with pytest.raises(BadInputError, match="no target"):
        logit_lens(tiny_llama, "w1 w2").plot("target_rank")
    with pytest.raises(BadInputError, match="bad batch 3"):
        res.plot("grid", batch=3)


def test_v01_fixture_loads() -> None:
    res = check_v01_fixture("LogitLensResult")
    assert res.plot("kl").data and res.to_frame()["layer"].iloc[0] == "0 resid_mid"


@pytest.mark.slow
def test_smollm2_france(smollm2: Model) -> None:
    res = logit_lens(smollm2, "The capital of France is", target=" Paris")
    assert res.top_tokens(layer=-1)[0] == " Paris"
    ranks = res.target_rank[:, 0, -1]
    assert int(ranks[-1]) == 0 and float(res.kl_to_final[-1, 0].abs().max()) < 1e-4
    late = ranks[-5:]  # measured: ... 2078, 395, 91, 112, 33, 6, 2, 0
    assert (late[1:] <= late[:-1]).all(), ranks  # the rank falls to 0 over the late layers
    assert int(ranks[: len(ranks) // 2].min()) > 1000  # ... from far away in the early layers
    last = logit_lens(smollm2, ["The capital of France is", "Hello"], target=" Paris", positions=-1)
    assert last.read_mask().int().tolist() == [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]]
    torch.testing.assert_close(last.kl_to_final[:, 0, 4], res.kl_to_final[:, 0, -1], rtol=1e-3, atol=1e-4)
    assert last.top_tokens(layer=-1)[0] == " Paris" and int(last.target_rank[-1, 0, 4]) == 0
