"""Oracle: the representation-quality metrics of interp.layers.metrics against direct numpy implementations of
the formulas (Skean et al. 2025) on small random data, and the per-layer study on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tokenizer, randomize
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp.errors import BadInputError
from interp.layers.metrics import (
    RepresentationResult,
    curvature,
    dime,
    infonce,
    lidar,
    matrix_entropy,
    representation_quality,
)

RNG = np.random.default_rng(0)


def np_entropy(z: np.ndarray, alpha: float) -> float:
    k = z @ z.T
    k = k / np.trace(k)
    lam = np.clip(np.linalg.eigvalsh(k), 0, None)
    lam = lam / lam.sum()
    if alpha == 1.0:
        lam = lam[lam > 0]
        return float(-(lam * np.log(lam)).sum())
    return float(np.log((lam ** alpha).sum()) / (1 - alpha))


def np_curvature(z: np.ndarray) -> float:
    v = z[1:] - z[:-1]
    angles = []
    for k in range(len(v) - 1):
        c = v[k] @ v[k + 1] / np.linalg.norm(v[k]) / np.linalg.norm(v[k + 1])
        angles.append(np.arccos(np.clip(c, -1, 1)))
    return float(np.mean(angles))


def np_infonce(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(a)):
        s = np.array([a[i] @ b[j] / tau for j in range(len(b))])
        total += -(s[i] - np.log(np.exp(s).sum()))
    return total / len(a)


def np_lidar(x: np.ndarray, delta: float = 1e-4, eps: float = 1e-12) -> float:
    n, v, d = x.shape
    means = x.mean(1)
    mu = means.mean(0)
    sb = sum(np.outer(m - mu, m - mu) for m in means) / (n - 1)
    sw = sum(np.outer(x[i, j] - means[i], x[i, j] - means[i]) for i in range(n) for j in range(v)) / (n * (v - 1))
    sw = sw + delta * np.eye(d)
    w, u = np.linalg.eigh(sw)
    inv = u @ np.diag(w ** -0.5) @ u.T
    lam = np.clip(np.linalg.eigvalsh(inv @ sb @ inv), 0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def np_dime(a: np.ndarray, b: np.ndarray, alpha: float, perms: list[list[int]]) -> float:
    def gram(z: np.ndarray) -> np.ndarray:
        k = z @ z.T
        return k / np.trace(k)

    def ent(k: np.ndarray) -> float:
        k = k / np.trace(k)
        lam = np.clip(np.linalg.eigvalsh(k), 0, None)
        lam = lam / lam.sum()
        if alpha == 1.0:
            lam = lam[lam > 0]
            return float(-(lam * np.log(lam)).sum())
        return float(np.log((lam ** alpha).sum()) / (1 - alpha))

    ka, kb = gram(a), gram(b)
    shuffled = [ent(ka * kb[np.ix_(p, p)]) for p in perms]
    return float(np.mean(shuffled) - ent(ka * kb))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_matrix_entropy_matches_numpy(alpha: float) -> None:
    z = RNG.normal(size=(7, 5))
    assert float(matrix_entropy(torch.tensor(z), alpha)) == pytest.approx(np_entropy(z, alpha), rel=1e-6)


def test_curvature_infonce_lidar_match_numpy() -> None:
    z = RNG.normal(size=(9, 6))
    assert float(curvature(torch.tensor(z))) == pytest.approx(np_curvature(z), rel=1e-9)
    a, b = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
    assert float(infonce(torch.tensor(a), torch.tensor(b), 0.5)) == pytest.approx(np_infonce(a, b, 0.5), rel=1e-9)
    x = RNG.normal(size=(5, 3, 4))
    assert float(lidar(torch.tensor(x))) == pytest.approx(np_lidar(x), rel=1e-7)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_dime_matches_numpy(alpha: float) -> None:
    import random
    a, b = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
    g = random.Random(3)
    perms = []
    for _ in range(5):
        p = list(range(6))
        g.shuffle(p)
        perms.append(p)
    got = float(dime(torch.tensor(a), torch.tensor(b), alpha, n_perm=5, seed=3))
    assert got == pytest.approx(np_dime(a, b, alpha, perms), rel=1e-7)


def test_representation_quality_per_layer_equals_formulas_on_hf_states() -> None:
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      vocab_size=104, max_position_embeddings=32, tie_word_embeddings=False)
    m = interp.from_hf(randomize(LlamaForCausalLM(cfg), 5).eval(), tokenizer=make_tokenizer(), name="llama3")
    texts = ["w1 w2 w3 w4 w5 w6", "w9 w8 w7 w6", "w3 w3 w4 w4 w5", "w10 w11 w12 w13 w14 w15 w16"]
    res = representation_quality(m, texts, metrics=("prompt_entropy", "dataset_entropy", "curvature"), alpha=2.0,
                                 batch_size=3, progress=False)
    assert res.values.shape == (3, 3)
    for layer in range(3):
        states = []
        for t in texts:
            ids = torch.tensor([m.tokenizer(t, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                hs = m.hf(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            if layer < 2:
                states.append(hs[layer + 1][0].double().numpy())
            else:  # HF's last hidden state is after the final norm: take the last block's output by a hook
                out: list[np.ndarray] = []
                h = m.hf.model.layers[2].register_forward_hook(
                    lambda mod, a, o, out=out: out.append((o[0] if isinstance(o, tuple) else o)[0].double().numpy()))
                with torch.no_grad():
                    m.hf(input_ids=ids, use_cache=False)
                h.remove()
                states.append(out[0])
        pe = np.mean([np_entropy(s, 2.0) for s in states])
        de = np_entropy(np.stack([s.mean(0) for s in states]), 2.0)
        cv = np.mean([np_curvature(s) for s in states])
        assert res.values[0, layer].item() == pytest.approx(pe, rel=1e-4)
        assert res.values[1, layer].item() == pytest.approx(de, rel=1e-4)
        assert res.values[2, layer].item() == pytest.approx(cv, rel=1e-4)
    full = representation_quality(m, texts, n_views=3, progress=False)
    assert full.values.shape == (6, 3) and torch.isfinite(full.values).all()
    assert isinstance(full, RepresentationResult) and full.plot() is not None
    with pytest.raises(BadInputError, match="at least two prompts"):
        representation_quality(m, texts[:1], metrics=("lidar",))


def test_probe_transfer_finds_a_planted_shared_direction() -> None:
    """Planted truth: categories a and b read the same sparse direction (b with label noise), c an orthogonal one."""
    from interp.layers import probe_transfer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 40, generator=g)
    u = torch.zeros(40)
    u[:4] = 1.0
    v = torch.zeros(40)
    v[10:14] = 1.0
    a = (x @ u > 0).long()
    b = (x @ u + 0.3 * torch.randn(600, generator=g) > 0).long()
    c = (x @ v > 0).long()
    res = probe_transfer({0: x, 1: torch.randn(600, 40, generator=g)}, {"a": a, "b": b, "c": c}, top_k=4)
    t, o = res.transfer[0], res.overlap[0]
    assert t[0, 0] > 0.95 and t[0, 1] > 0.85 and t[1, 0] > 0.85  # a and b share their representation
    assert abs(float(t[0, 2]) - 0.5) < 0.1 and abs(float(t[2, 0]) - 0.5) < 0.1  # a's probe says nothing about c
    assert o[0, 1] >= 0.6 and o[0, 2] == 0.0  # top dimensions: a, b on 0..3; c on 10..13
    assert (res.transfer[1].diagonal() < 0.65).all()  # the unrelated layer carries none of them
    with pytest.raises(BadInputError, match="labels of 'a'"):
        probe_transfer({0: x}, {"a": a[:10]})


def test_joint_encoding_runs_on_a_model() -> None:
    from interp.layers import joint_encoding
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      vocab_size=104, max_position_embeddings=32, tie_word_embeddings=False)
    m = interp.from_hf(randomize(LlamaForCausalLM(cfg), 5).eval(), tokenizer=make_tokenizer(), name="llama2")
    texts = [f"w{i % 7} w{i % 5} w{i}" for i in range(40)]
    labels = {"even": [i % 2 for i in range(40)], "big": [int(i >= 20) for i in range(40)]}
    res = joint_encoding(m, texts, labels=labels, top_k=4)
    assert res.transfer.shape == (2, 2, 2) and res.layers == (0, 1)
    res.plot()
