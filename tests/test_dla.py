"""The residual stream taken apart (Trace.decompose_resid / accumulated_resid / stack_head_results) and direct
logit attribution, checked against the models' own forwards and hand computations."""

from __future__ import annotations

import pytest
import torch

from interp.errors import BadInputError, ModelMismatchError
from interp.lens.dla import LogitAttribution, logit_attrs
from interp.models import Model

ALL = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]


@pytest.fixture(params=["llama", "gpt2"])
def decoder(request: pytest.FixtureRequest) -> Model:
    """Grouped-query RMSNorm Llama without biases, and LayerNorm GPT-2 with every bias."""
    return request.getfixturevalue(f"tiny_{request.param}")


def test_decompose_resid_sums_to_the_stream(decoder: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tr = decoder.run(batch, capture=ALL).trace
    n = decoder.dims.n_layers
    parts, labels = tr.decompose_resid()
    assert labels == ["embed"] + [f"{c}.{L}" for L in range(n) for c in ("attn_out", "mlp_out")]
    torch.testing.assert_close(parts.sum(0), tr[f"resid_post.{n - 1}"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts[0], tr["resid_pre.0"], rtol=0, atol=0)
    part1, labels1 = tr.decompose_resid(layer=1)  # the stream entering block 1
    assert labels1 == ["embed", "attn_out.0", "mlp_out.0"]
    torch.testing.assert_close(part1.sum(0), tr["resid_pre.1"], rtol=1e-5, atol=1e-5)
    _, labels_a = tr.decompose_resid(mode="attn")
    assert labels_a == ["embed"] + [f"attn_out.{L}" for L in range(n)]
    with pytest.raises(BadInputError, match="bad mode"):
        tr.decompose_resid(mode="heads")
    with pytest.raises(BadInputError, match="bad layer 9"):
        tr.decompose_resid(layer=9)


def test_accumulated_resid(decoder: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tr = decoder.run(batch, capture=ALL).trace
    acc, labels = tr.accumulated_resid()
    assert labels == ["resid_pre.0", "resid_pre.1", "resid_post.1"]
    assert torch.equal(acc[1], tr["blocks.1.hook_resid_pre"]) and torch.equal(acc[-1], tr["blocks.1.hook_resid_post"])
    acc_mid, labels_mid = tr.accumulated_resid(incl_mid=True, layer=1)
    assert labels_mid == ["resid_pre.0", "resid_mid.0"]
    assert torch.equal(acc_mid[1], tr["resid_mid.0"])
    thin = decoder.run(batch, capture="resid_post").trace
    with pytest.raises(BadInputError, match=r"resid_pre\.0"):
        thin.accumulated_resid()


def test_stack_head_results_add_up_to_attn_out(decoder: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tr = decoder.run(batch, capture=ALL).trace
    heads, labels = tr.stack_head_results(decoder)
    d = decoder.dims
    assert labels[:2] == ["L0H0", "L0H1"] and len(labels) == d.n_layers * d.n_heads
    w = decoder.weights
    for L in range(d.n_layers):
        z = tr[f"z.{L}"]
        for h in range(d.n_heads):  # a hand computation of one head's write
            torch.testing.assert_close(heads[L * d.n_heads + h], z[:, :, h] @ w.W_O[L, h], rtol=1e-5, atol=1e-5)
        total = heads[L * d.n_heads:(L + 1) * d.n_heads].sum(0) + w.b_O[L]
        torch.testing.assert_close(total, tr[f"attn_out.{L}"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelMismatchError):
        tr.stack_head_results(decoder_other(decoder))


def decoder_other(m: Model) -> Model:
    import copy

    import interp

    hf = copy.deepcopy(m.hf)
    with torch.no_grad():
        next(hf.parameters()).add_(1.0)
    return interp.from_hf(hf, m.tokenizer, name="other")


def test_logit_attrs_add_up_to_the_models_logit_difference(decoder: Model,
                                                          batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Components + constant equal the forward's own logit difference at each sequence's last real token
    (row 1 of the batch is padded: -1 is its position 4); heads + their layer's bias equal that layer's term."""
    mask = batch[1]
    res = logit_attrs(decoder, batch, answer=5, wrong=7)
    logits = decoder.run(batch).logits
    assert logits is not None
    last = mask.sum(-1) - 1
    want = logits[torch.arange(3), last, 5] - logits[torch.arange(3), last, 7]
    assert res.positions == tuple(last.tolist()) == (7, 4, 7)
    torch.testing.assert_close(res.logit_diff, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.components.sum(1) + res.bias, want, rtol=1e-4, atol=1e-4)
    assert res.heads is not None
    torch.testing.assert_close(res.heads.sum(-1) + res.attn_bias, res.components[:, 1::2], rtol=1e-4, atol=1e-5)
    if decoder.weights.ln_final_b is None and decoder.weights.b_U is None:
        assert torch.equal(res.bias, torch.zeros(3))
    else:
        assert res.bias.abs().sum() > 0
    alone = logit_attrs(decoder, batch, answer=5, heads=False, positions=2)
    assert alone.heads is None and alone.wrong == () and alone.positions == (2, 2, 2)
    torch.testing.assert_close(alone.components.sum(1) + alone.bias, logits[:, 2, 5], rtol=1e-4, atol=1e-4)


def test_logit_attrs_reads_a_trace_as_it_is(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tr = tiny_llama.run(batch, capture=["resid_pre.0", "attn_out", "mlp_out", "resid_post", "z"]).trace
    a = logit_attrs(tiny_llama, tr, answer=5, wrong=7)
    b = logit_attrs(tiny_llama, batch, answer=5, wrong=7)
    assert torch.equal(a.components, b.components) and a.heads is not None and b.heads is not None
    assert torch.equal(a.heads, b.heads)


def test_bad_input(tiny_llama: Model, tiny_bert: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(BadInputError, match="bad answer 10000"):
        logit_attrs(tiny_llama, batch, answer=10_000)
    with pytest.raises(BadInputError, match="2 answer tokens for 3 sequences"):
        logit_attrs(tiny_llama, batch, answer=[1, 2])
    with pytest.raises(BadInputError, match="position 5 is outside sequence 1"):
        logit_attrs(tiny_llama, batch, answer=1, positions=5)
    with pytest.raises(BadInputError, match="one position per sequence"):
        logit_attrs(tiny_llama, batch, answer=1, positions=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="decoder with an unembedding"):
        logit_attrs(tiny_bert, batch, answer=1)


@pytest.mark.slow
def test_smollm2_name_mover_heads(smollm2: Model) -> None:
    """On an IOI prompt the late heads carry the answer: the top head sits in the last third of the model and
    pushes toward ' Mary'; the result surface works."""
    res = logit_attrs(smollm2, "When Mary and John went to the store, John gave a drink to", answer=" Mary",
                      wrong=" John")
    assert isinstance(res, LogitAttribution)
    assert float(res.logit_diff[0]) > 2  # the model gets it right
    (head, value), *_ = res.top_heads(1)
    assert head.layer >= 20 and value > 0.5
    with pytest.raises(BadInputError, match="is 2 tokens"):
        logit_attrs(smollm2, "The capital of France is", answer=" Paris France")
    assert "top_head" in repr(res) and res.plot("heads") is not None and len(res.to_frame()) == 61
