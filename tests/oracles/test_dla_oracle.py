"""Oracle: decompose_resid, stack_head_results and direct logit attribution against TransformerLens 4.3's
``ActivationCache`` on SmolLM2 (a TransformerBridge in compatibility mode, where the final norm's weight is
folded into the unembedding as TransformerLens' ``logit_attrs`` assumes).

Bound: per-component relative error of the attributions <= 1e-4 (of the largest |attribution|)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import requires

from interp.lens.dla import logit_attrs
from interp.models import Model

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge

pytestmark = [pytest.mark.oracle, pytest.mark.slow]
PROMPT = "When Mary and John went to the store, John gave a drink to"
REL = 1e-4


@pytest.fixture(scope="module")
def tl(_smollm2_session: Model) -> tuple[object, torch.Tensor, dict[str, int]]:
    model = _smollm2_session
    ids, _ = model.tokenize(PROMPT, prepend_bos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers("smollm2-local", hf_model=copy.deepcopy(model.hf),
                                                     tokenizer=copy.deepcopy(model.tokenizer), device="cpu")
        bridge.enable_compatibility_mode(disable_warnings=True)
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids)
    toks = {t: model.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" Mary", " John")}
    return cache, ids, toks


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max())


def test_decomposition_and_head_results_match(_smollm2_session: Model, tl: tuple[object, torch.Tensor, dict]) -> None:
    cache, ids, _ = tl
    trace = _smollm2_session.run(ids, capture=["resid_pre.0", "attn_out", "mlp_out", "resid_post", "z"]).trace
    parts, labels = trace.decompose_resid()
    want, want_labels = cache.decompose_resid(layer=-1, mode="all", return_labels=True)  # type: ignore[attr-defined]
    assert labels == ["embed", *(f"{c}.{L}" for L in range(30) for c in ("attn_out", "mlp_out"))]
    assert want_labels == ["embed", *(f"{L}_{c}" for L in range(30) for c in ("attn_out", "mlp_out"))]
    assert rel_err(parts, want) <= REL
    heads, head_labels = trace.stack_head_results(_smollm2_session)
    want_h, want_hl = cache.stack_head_results(layer=-1, return_labels=True)  # type: ignore[attr-defined]
    assert head_labels == want_hl
    assert rel_err(heads, want_h) <= REL


def test_logit_attrs_match(_smollm2_session: Model, tl: tuple[object, torch.Tensor, dict]) -> None:
    cache, ids, toks = tl
    res = logit_attrs(_smollm2_session, ids, answer=" Mary", wrong=" John")
    stack, _ = cache.decompose_resid(layer=-1, mode="all", return_labels=True)  # type: ignore[attr-defined]
    want = cache.logit_attrs(stack[:, :, -1], tokens=toks[" Mary"], incorrect_tokens=toks[" John"],  # type: ignore[attr-defined]
                             pos_slice=-1)[:, 0]
    assert rel_err(res.components[0], want) <= REL
    heads, _ = cache.stack_head_results(layer=-1, return_labels=True)  # type: ignore[attr-defined]
    want_h = cache.logit_attrs(heads[:, :, -1], tokens=toks[" Mary"], incorrect_tokens=toks[" John"],  # type: ignore[attr-defined]
                               pos_slice=-1)[:, 0]
    assert res.heads is not None
    assert rel_err(res.heads[0].flatten(), want_h) <= REL
    # and both add up to the model's own logit difference
    assert abs(float(want.sum().detach()) - float(res.logit_diff[0])) < 1e-3
