"""Oracle: interp's head scores against TransformerLens 4.3's head detector (``detect_head``) on the bridge.

``detect_head`` (``error_measure="mul"``) is the attention on the detection pattern divided by the total
attention; interp's ``normalize="all_rows"`` is the same measure. Both sides see the same token ids: the
detector tokenizes the text itself, and interp is given exactly the ids the bridge produced.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import requires
from test_transformer_lens import char_tokenizer

import interp
from interp.induction import induction_scores

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge
head_detector = requires("transformer_lens.head_detector")

pytestmark = pytest.mark.oracle
KINDS = {"induction": "induction_head", "prev_token": "previous_token_head", "duplicate": "duplicate_token_head"}


def compare(model: interp.Model, tokenizer: object, text: str, exclude_bos: bool) -> dict[str, float]:
    bridge = TransformerBridge.boot_transformers(f"{model.name}-local", hf_model=copy.deepcopy(model.hf),
                                                 tokenizer=tokenizer, device="cpu")
    ids = bridge.to_tokens(text).cpu()
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, remove_batch_dim=True)
        ours = induction_scores(model, ids, normalize="all_rows", exclude_bos=exclude_bos, progress=False)
        errs = {}
        for kind, tl_name in KINDS.items():
            theirs = head_detector.detect_head(bridge, text, tl_name, cache=cache, exclude_bos=exclude_bos)
            errs[kind] = float((theirs - getattr(ours, kind)).abs().max())
    return errs


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("exclude_bos", [False, True])
def test_tiny_scores_match_detect_head(family: str, exclude_bos: bool, request: pytest.FixtureRequest) -> None:
    text = "qwkzjxvbm" * 2 + "qwk"  # repeated characters: induction, duplicate and previous-token cells
    errs = compare(request.getfixturevalue(f"tiny_{family}"), char_tokenizer(), text, exclude_bos)
    assert max(errs.values()) < 1e-5, errs


@pytest.mark.slow
def test_smollm2_scores_match_detect_head(smollm2: interp.Model) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (24,), generator=g)
    half = smollm2.tokenizer.decode(ids)
    errs = compare(smollm2, copy.deepcopy(smollm2.tokenizer), half + half, exclude_bos=False)
    # measured: 1.2e-7 at most (both sides run eager attention in float32)
    assert max(errs.values()) < 1e-4, errs
