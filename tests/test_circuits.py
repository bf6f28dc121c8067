"""interp.models.circuits against dense d_model x d_model products (materialised here, the slow way)."""

from __future__ import annotations

import pytest
import torch

from interp.models import Model
from interp.models.circuits import (
    composition_baseline,
    composition_scores,
    effective_rank,
    factored_norm,
    factored_svd,
    ov_factors,
    pair_composition,
    qk_factors,
    receiver_factors,
    rotation_baseline,
)


def dense(weights, fold: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """OV and QK [layer, head, d, d] written out from the per-head weights, in float64."""
    g = weights.ln1_w.double()[:, None, :, None] if fold else 1.0
    W_Q, W_K, W_V = (g * w.double() for w in (weights.W_Q, weights.W_K, weights.W_V))
    return W_V @ weights.W_O.double(), W_Q @ W_K.transpose(-1, -2)


def fro(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(m)


def test_factored_svd_matches_dense_svd() -> None:
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 40, 6, generator=g), torch.randn(3, 6, 40, generator=g)
    U, S, V = factored_svd(A, B)
    M = (A @ B).double()
    assert torch.allclose(S.double(), torch.linalg.svdvals(M)[:, :6], rtol=1e-4)
    assert torch.allclose((U * S[:, None, :]) @ V.transpose(-1, -2), A @ B, atol=1e-3)
    eye = torch.eye(6).expand(3, 6, 6)
    assert torch.allclose(U.transpose(-1, -2) @ U, eye, atol=1e-5)
    assert torch.allclose(V.transpose(-1, -2) @ V, eye, atol=1e-5)
    assert torch.allclose(factored_norm(A, B).double(), fro(M), rtol=1e-4)


@pytest.mark.parametrize("fold", [False, True])
def test_all_pairs_composition_matches_dense(tiny_llama: Model, fold: bool) -> None:
    w = tiny_llama.weights
    OV, QK = dense(w, fold)
    L, H = OV.shape[:2]
    recv = {"q": QK, "k": QK.transpose(-1, -2), "v": OV}
    for kind, Y in recv.items():
        got = composition_scores(w, kind, fold_norm=fold)
        assert got.shape == (L, H, L, H)
        for la in range(L):
            for lb in range(L):
                for ha in range(H):
                    for hb in range(H):
                        want = (fro(OV[la, ha] @ Y[lb, hb]) / fro(OV[la, ha]) / fro(Y[lb, hb])) if lb > la else 0.0
                        assert float(got[la, ha, lb, hb]) == pytest.approx(float(want), abs=1e-5), (kind, la, ha, lb, hb)


def test_factors_shapes_and_fill(tiny_llama: Model) -> None:
    w = tiny_llama.weights
    A, B = ov_factors(w, layer=1, head=2)
    assert A.shape == (64, 16) and B.shape == (16, 64)
    assert torch.allclose(A @ B, w.W_OV[1, 2], atol=1e-5)
    Q, K = qk_factors(w, layer=0)
    assert torch.allclose(Q @ K, w.W_QK[0], atol=1e-5)
    s = composition_scores(w, "q", fill=float("nan"))
    assert s[1, :, 0].isnan().all() and s[0, :, 0].isnan().all() and not s[0, :, 1].isnan().any()


@pytest.mark.parametrize("fold", [False, True])
def test_receiver_factors_are_what_each_kind_reads(tiny_llama: Model, fold: bool) -> None:
    w = tiny_llama.weights
    OV, QK = dense(w, fold)
    for kind, Y in {"q": QK, "k": QK.transpose(-1, -2), "v": OV}.items():
        A, B = receiver_factors(w, kind, fold_norm=fold)
        assert torch.allclose((A.double() @ B.double()), Y, atol=1e-4), kind
        a, b = receiver_factors(w, kind, 1, 3, fold_norm=fold)
        assert torch.equal(a, A[1, 3]) and torch.equal(b, B[1, 3])
        # the all-pairs scores are the pairwise score of these factors
        x = ov_factors(w, 0, 2, fold_norm=fold)
        want = float(pair_composition((x[0].double(), x[1].double()), (a.double(), b.double())))
        assert float(composition_scores(w, kind, fold_norm=fold)[0, 2, 1, 3]) == pytest.approx(want, abs=1e-5)


def test_pair_composition_and_effective_rank() -> None:
    e = torch.eye(8, dtype=torch.float64)
    # X writes into e0; Y reads e0 (aligned) or e1 (orthogonal)
    x = (e[:, :1], e[:1])
    assert float(pair_composition(x, (e[:, :1], e[:1]))) == pytest.approx(1.0)
    assert float(pair_composition(x, (e[:, 1:2], e[1:2]))) == pytest.approx(0.0)
    assert float(effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0]))) == pytest.approx(4.0, rel=1e-5)
    assert float(effective_rank(torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(1.0, rel=1e-5)


def test_baselines() -> None:
    mean, std = composition_baseline(128, 8, n_samples=100)
    # Monte Carlo done by hand: random Gaussian factors, dense products
    g = torch.Generator().manual_seed(1)
    vals = []
    for _ in range(100):
        X = torch.randn(128, 8, generator=g) @ torch.randn(8, 128, generator=g)
        Y = torch.randn(128, 8, generator=g) @ torch.randn(8, 128, generator=g)
        vals.append(float(fro(X @ Y) / fro(X) / fro(Y)))
    ref = torch.tensor(vals)
    assert mean == pytest.approx(float(ref.mean()), rel=0.05)
    assert std == pytest.approx(float(ref.std()), rel=0.5)
    x = (torch.randn(6, 128, 8, generator=g), torch.randn(6, 8, 128, generator=g))
    rmean, rstd = rotation_baseline(x, x, n_samples=64)
    assert rmean == pytest.approx(mean, rel=0.15) and rstd > 0


def test_errors(tiny_llama: Model) -> None:
    w = tiny_llama.weights
    with pytest.raises(ValueError, match="kind='x'"):
        composition_scores(w, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind='z'"):
        receiver_factors(w, "z")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer=5 is out of range"):
        ov_factors(w, layer=5)
    with pytest.raises(ValueError, match="head=9 is out of range"):
        qk_factors(w, layer=0, head=9)
    with pytest.raises(ValueError, match="factors must be"):
        factored_svd(torch.zeros(4, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="n_samples"):
        composition_baseline(8, 2, n_samples=1)
