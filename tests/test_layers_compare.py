"""Head importance compared with per-head patching effects and induction scores: Spearman's rho against
scipy.stats.spearmanr (the peer implementation), on a tiny Llama with the real patching and induction tools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tokenizer, randomize
from scipy.stats import spearmanr
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp.errors import BadInputError
from interp.layers import HeadImportanceResult, head_importance
from interp.models import Model


@pytest.fixture(scope="module")
def llama4() -> Model:
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=104, max_position_embeddings=64, rms_norm_eps=1e-5,
                      pad_token_id=0, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    return interp.from_hf(randomize(LlamaForCausalLM(cfg), 11).eval(), tokenizer=make_tokenizer(), name="llama4")


def test_spearman_equals_scipy_with_ties_and_gaps() -> None:
    g = torch.Generator().manual_seed(0)
    imp = torch.rand(5, 6, generator=g)
    other = torch.randint(0, 4, (5, 6), generator=g).float()  # many ties
    other[0, :2] = float("nan")  # heads the other tool did not score
    res = HeadImportanceResult(importance=imp).compare(other=other)
    ok = ~other.flatten().isnan()
    want = spearmanr(imp.flatten()[ok].numpy(), other.flatten()[ok].numpy()).statistic
    assert res.spearman()["other"] == pytest.approx(want, abs=1e-12)
    frame = res.to_frame()
    assert frame["other_rank"].isna().sum() == 2 and frame.loc[frame["rank"] == 0, "importance"].item() == imp.max()


def test_compare_with_patching_and_induction(llama4: Model) -> None:
    from interp.induction import induction_scores
    from interp.patching import activation_patching, prepare

    imp = head_importance(llama4, ["w1 w2 w3 w4 w5 w6 w7 w8", "w9 w8 w7 w6 w5 w4", "w3 w1 w4 w1 w5 w9 w2 w6"],
                          progress=False)
    setup = prepare(llama4, ["w1 w2 w3 w4 w5 w1 w2 w3"], corrupt=["w1 w2 w3 w4 w5 w9 w8 w7"], answer=" w4",
                    wrong=" w6")
    patch = activation_patching(llama4, setup, component="z", layers=[1, 2, 3], progress=False)  # layer 0 left out
    ind = induction_scores(llama4, n_seq=4, half=12, progress=False)
    res = imp.compare(patching=patch, induction=ind)
    assert res.sources == ("patching", "induction") and res.compared is not None
    # oracle: the patching effect |patched - corrupted| placed by hand, layer 0 unscored; scipy's rho
    eff = (patch.values.double() - patch.corrupted_value).abs().numpy()
    a = imp.importance[1:].flatten().numpy()
    assert res.spearman()["patching"] == pytest.approx(spearmanr(a, eff.flatten()).statistic, abs=1e-9)
    assert torch.isnan(res.compared[0, 0]).all()
    want = spearmanr(imp.importance.flatten().numpy(), ind.induction.flatten().numpy()).statistic
    assert res.spearman()["induction"] == pytest.approx(want, abs=1e-9)
    assert set(res.headline()) >= {"spearman_patching", "spearman_induction"}
    fig = res.plot("compare")
    assert len(fig.data) == 2 and all("ρ = " in t.name for t in fig.data)
    assert np.isfinite(res.to_frame()["induction_rank"]).all()
    with pytest.raises(BadInputError, match="shape"):
        imp.compare(bad=torch.ones(3, 4))
    with pytest.raises(BadInputError, match="at least one"):
        imp.compare()
