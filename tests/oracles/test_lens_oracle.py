"""Oracle: the logit lens against TransformerLens 4.3's accumulated residual decoded by its unembedding.

TransformerLens' ``cache.accumulated_resid(apply_ln=True)`` holds ``[embed / resid_pre 0, ...,
resid_pre n-1, final resid_post]`` passed through the final norm; entry ``L + 1`` is interp's
``resid_post.L``. ``bridge.unembed`` turns them into logits.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import requires
from test_transformer_lens import char_tokenizer

import interp
from interp.lens import logit_lens

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge

pytestmark = pytest.mark.oracle


def lens_vs_bridge(model: interp.Model, tl_tokenizer: object, ids: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[float, float, float]:
    """Largest differences (entropy, top-10 probabilities, KL to final) at real tokens over all layers."""
    bridge = TransformerBridge.boot_transformers(f"{model.name}-local", hf_model=copy.deepcopy(model.hf),
                                                 tokenizer=tl_tokenizer, device="cpu")
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, attention_mask=mask)
        logp = bridge.unembed(cache.accumulated_resid(apply_ln=True)).float().log_softmax(-1)[1:]
    res = logit_lens(model, (ids, mask), top_k=10)  # inputs as (ids, mask): the lens runs the model itself
    real = mask.bool()
    ent = -(logp.exp() * logp).sum(-1)
    kl = (logp[-1].exp() * (logp[-1] - logp)).sum(-1)
    return (float((ent[:, real] - res.entropy[:, real]).abs().max()),
            float((logp.exp().topk(10).values[:, real] - res.top_probs[:, real]).abs().max()),
            float((kl[:, real] - res.kl_to_final[:, real]).abs().max()))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tiny_lens_matches_bridge(family: str, request: pytest.FixtureRequest,
                                  batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    errs = lens_vs_bridge(request.getfixturevalue(f"tiny_{family}"), char_tokenizer(), *batch)
    assert max(errs) < 1e-4, errs


@pytest.mark.slow
def test_smollm2_lens_matches_bridge(smollm2: interp.Model) -> None:
    ids, mask = smollm2.tokenize(["The capital of France is", "Hello"], prepend_bos=True)
    errs = lens_vs_bridge(smollm2, copy.deepcopy(smollm2.tokenizer), ids, mask)
    # measured: entropy 2.2e-5 nats, top-10 probabilities 3.4e-6 (sdpa vs the bridge's eager attention)
    assert errs[0] < 1e-3 and errs[1] < 1e-4 and errs[2] < 1e-3, errs
