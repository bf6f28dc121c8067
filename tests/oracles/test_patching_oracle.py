"""Oracle: activation patching against TransformerLens 4.3's ``transformer_lens.patching`` functions,
run on ``TransformerBridge`` wrapping a private copy of the same Hugging Face model."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import pytest
import torch
from conftest import requires

import interp
from interp.patching import activation_patching, prepare

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge
tl_patching = requires("transformer_lens.patching")

pytestmark = pytest.mark.oracle

CLEAN = torch.tensor([[5, 17, 33, 9, 41, 22, 60]])
CORRUPT = torch.tensor([[5, 17, 71, 9, 41, 80, 60]])


def _bridge(model: interp.Model, name: str, tmp: Path | None = None) -> object:
    tok = copy.deepcopy(model.tokenizer)
    if tmp is not None:  # TransformerLens reloads the tokenizer from its name_or_path: give it a local copy
        tok.save_pretrained(tmp)
        tok.init_kwargs["name_or_path"] = str(tmp)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers(name, hf_model=copy.deepcopy(model.hf),
                                                   tokenizer=tok, device="cpu")


def _tl(fn, bridge, corrupt, clean, metric):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cache = bridge.run_with_cache(clean)
        return fn(bridge, corrupt, cache, metric)


def test_tiny_llama_matches_transformer_lens(tiny_llama: interp.Model, tmp_path: Path) -> None:
    bridge = _bridge(tiny_llama, "tiny-llama-local", tmp_path)
    s = prepare(tiny_llama, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, 3] - logits[0, -1, 4]

    for comp, fn in (("resid_pre", tl_patching.get_act_patch_resid_pre),
                     ("attn_out", tl_patching.get_act_patch_attn_out),
                     ("mlp_out", tl_patching.get_act_patch_mlp_out)):
        want = _tl(fn, bridge, CORRUPT, CLEAN, metric)
        got = activation_patching(tiny_llama, s, component=comp, progress=False).values
        assert got.shape == want.shape
        assert (got - want.float()).abs().max() <= 1e-4, comp


@pytest.mark.slow
def test_smollm2_resid_pre_matches_transformer_lens(smollm2: interp.Model) -> None:
    """SmolLM2, a 6-token prompt pair, 4 layers x 6 positions (TransformerLens runs one forward per cell)."""
    import pandas as pd

    clean, corrupt = "Mary gave a drink to John", "John gave a drink to John"
    s = prepare(smollm2, clean, corrupt=corrupt, answer=" Mary", wrong=" John")
    a, w = int(s.metric.answer[0]), int(s.metric.wrong[0])
    layers = [0, 10, 20, 29]
    index = pd.DataFrame([(L, p) for L in layers for p in range(s.n_pos)], columns=["layer", "pos"])
    bridge = _bridge(smollm2, "smollm2-local")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cache = bridge.run_with_cache(s.input_ids)
        want = tl_patching.get_act_patch_resid_pre(bridge, s.corrupt_ids, cache,
                                                   lambda lg: lg[0, -1, a] - lg[0, -1, w], index_df=index,
                                                   index_axis_names=None)
    got = activation_patching(smollm2, s, component="resid_pre", layers=layers, progress=False).values
    assert (got.flatten() - want.float()).abs().max() <= 1e-3
    assert (want - want[0]).abs().max() > 0.1
