"""Oracle: heads' SVD and composition scores against TransformerLens 4.3.

- ``TransformerBridge.all_composition_scores(mode)`` on an unprocessed bridge works on the raw
  (unfolded) weights with grouped-query heads expanded: it is compared with
  ``composition_scores(weights, kind, fold_norm=False)`` on a tiny Llama (on SmolLM2 the bridge's
  all-pairs computation takes ~18 GB, more than this machine can spare).
- ``FactoredMatrix(W_V, W_O).S`` against :func:`factored_svd`, and ``utilities.composition_scores``
  handed the same (norm-folded) factors as interp.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import requires
from test_transformer_lens import char_tokenizer

import interp
from interp.heads import composition
from interp.models.circuits import composition_scores, factored_svd, ov_factors, qk_factors

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge
FactoredMatrix = requires("transformer_lens").FactoredMatrix
tl_utils = requires("transformer_lens.utilities")

pytestmark = pytest.mark.oracle


def test_tiny_llama_composition_matches_bridge(tiny_llama: interp.Model) -> None:
    bridge = TransformerBridge.boot_transformers("tiny-llama-local", hf_model=copy.deepcopy(tiny_llama.hf),
                                                 tokenizer=char_tokenizer(), device="cpu")
    res = composition(tiny_llama, kinds=("q", "k", "v"), fold_norm=False, baseline_samples=2)
    for i, kind in enumerate(("q", "k", "v")):
        want = bridge.all_composition_scores(kind.upper()).scores
        got = composition_scores(tiny_llama.weights, kind, fold_norm=False)
        assert torch.allclose(got, want.float(), atol=1e-5), kind
        # the tool's result: the same scores, NaN (TransformerLens: 0) where the receiver is not later
        assert torch.allclose(res.scores[i].nan_to_num(0.0), want.float(), atol=1e-5), kind
        assert res.scores[i][1, :, 0].isnan().all()


@pytest.mark.slow
def test_smollm2_matches_transformer_lens(smollm2: interp.Model) -> None:
    # (bridge.all_composition_scores on all 270 heads needs ~18 GB here; TL's utilities are handed
    # a block of senders x receivers instead, with the same norm-folded factors)
    w = smollm2.weights
    A, B = ov_factors(w, fold_norm=True)
    Q, K = qk_factors(w, fold_norm=True)
    senders, receivers = slice(0, 4), slice(10, 14)
    ov = FactoredMatrix(A[senders], B[senders])
    qk = FactoredMatrix(Q[receivers], K[receivers])
    for kind, right in (("q", qk), ("k", qk.T), ("v", FactoredMatrix(A[receivers], B[receivers]))):
        ref = tl_utils.composition_scores(ov, right)
        ours = composition_scores(w, kind, fold_norm=True)[senders, :, receivers]
        assert float((ours - ref.float()).abs().max()) < 1e-5, kind
    assert torch.allclose(factored_svd(A, B)[1], FactoredMatrix(A, B).S.float(), rtol=1e-4, atol=1e-5)
    assert torch.allclose(factored_svd(Q, K)[1], FactoredMatrix(Q, K).S.float(), rtol=1e-4, atol=1e-5)
