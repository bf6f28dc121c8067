"""interp.stats against scipy (an independent implementation of the same formulas)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as scipy_stats


def test_ranks_pearson_spearman_equal_scipy() -> None:
    from interp.stats import pearson, ranks, spearman
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    b = a + torch.randn(40, generator=g, dtype=torch.float64)
    assert ranks(a).tolist() == pytest.approx(scipy_stats.rankdata(a.numpy()).tolist())
    assert pearson(a, b) == pytest.approx(scipy_stats.pearsonr(a.numpy(), b.numpy())[0], abs=1e-12)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a.numpy(), b.numpy())[0], abs=1e-12)
    b[3] = float("nan")  # pairs with a NaN are left out
    keep = ~b.isnan()
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a[keep].numpy(), b[keep].numpy())[0], abs=1e-12)


def test_undefined_correlations_are_nan() -> None:
    from interp.stats import pearson, spearman
    assert math.isnan(pearson(torch.ones(5), torch.arange(5.0)))
    assert math.isnan(pearson(torch.ones(1), torch.ones(1)))
    assert math.isnan(spearman(torch.arange(2.0), torch.arange(2.0), min_n=3))
