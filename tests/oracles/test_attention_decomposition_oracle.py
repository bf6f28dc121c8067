"""Oracle: the sparse attention decomposition against the formulas of Franco & Crovella (2024), written here in
numpy from the paper on GPT-2-family tiny models (random GPT-2s with biases, two seeds).

The paper works on GPT-2 small as TransformerLens processes it: LayerNorm's weight and bias folded into the
weights (``W_Q ← diag(γ) W_Q``, ``b_Q ← b_Q + β W_Q``), so the attention input is the centred, scaled stream
``y = (x − mean x)/σ``. With the augmented row ``ỹ = [y, 1]`` the score is ``ỹ_i W̃_QK ỹ_jᵀ / sqrt(d_head)``,
``W̃_QK = [[W_Q W_Kᵀ, W_Q b_Kᵀ], [b_Q W_Kᵀ, b_Q b_Kᵀ]]`` (``d+1`` square); its SVD ``U Σ Vᵀ`` splits the score into
``σ_k (ỹ_i·u_k)(ỹ_j·v_k)``. Terms are compared per pair as sorted lists (singular vectors' signs cancel in each
term). Upstream contributions: the paper projects an upstream head's output, normalised like the stream,
onto the sparse singular vectors at the two tokens; checked for the key side of one pair.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_gpt2

import interp
from interp.heads import attention_decomposition, communication_graph

pytestmark = [pytest.mark.oracle]


def _paper_terms(hf: torch.nn.Module, ids: torch.Tensor, layer: int, head: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Per pair, all terms σ_k (ỹ_i·u_k)(ỹ_j·v_k) [n, n, d+1], plus U, S, V and the LN scale, straight from the paper."""
    cfg = hf.config
    d, nh = cfg.n_embd, cfg.n_head
    dh = d // nh
    with torch.no_grad():
        x = hf(ids, output_hidden_states=True).hidden_states[layer][0].double().numpy()  # [n, d]
    blk = hf.transformer.h[layer]
    g = blk.ln_1.weight.detach().double().numpy()
    beta = blk.ln_1.bias.detach().double().numpy()
    eps = blk.ln_1.eps
    xc = x - x.mean(-1, keepdims=True)
    sig = np.sqrt((xc ** 2).mean(-1, keepdims=True) + eps)
    y = xc / sig
    W = blk.attn.c_attn.weight.detach().double().numpy()  # [d, 3d]
    b = blk.attn.c_attn.bias.detach().double().numpy()
    WQ, WK = W[:, head * dh:(head + 1) * dh], W[:, d + head * dh:d + (head + 1) * dh]
    bQ, bK = b[head * dh:(head + 1) * dh], b[d + head * dh:d + (head + 1) * dh]
    bQ, bK = bQ + beta @ WQ, bK + beta @ WK  # fold_ln, as TransformerLens does
    WQ, WK = g[:, None] * WQ, g[:, None] * WK
    Wt = np.block([[WQ @ WK.T, (WQ @ bK)[:, None]], [(bQ @ WK.T)[None, :], np.array([[bQ @ bK]])]]) / np.sqrt(dh)
    U, S, Vt = np.linalg.svd(Wt)
    yt = np.concatenate([y, np.ones((y.shape[0], 1))], axis=1)
    terms = S[None, None, :] * (yt @ U)[:, None, :] * (yt @ Vt.T)[None, :, :]
    return terms, U, S, Vt.T, sig


@pytest.mark.parametrize("seed", [1, 11])
def test_terms_match_the_papers_formulas(seed: int) -> None:
    hf = make_gpt2(seed)
    model = interp.from_hf(hf, name=f"tiny-gpt2-{seed}")
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(seed))
    dh = model.weights.W_Q.shape[-1]
    dec = attention_decomposition(model, ids, top_k=dh, progress=False)
    H = model.weights.W_Q.shape[1]
    for layer in range(2):
        for head in range(H):
            terms, _, S, _, _ = _paper_terms(hf, ids, layer, head)
            assert np.allclose(S[dh:], 0, atol=1e-8)  # rank <= d_head (the augmented matrix's extra row/col)
            col = layer * H + head
            assert np.allclose(np.sort(dec.singular_values[col, 0].double().numpy())[::-1], S[:dh], rtol=1e-5,
                               atol=1e-6)
            for i in range(9):
                for j in range(i + 1):
                    want = np.sort(terms[i, j, :dh])
                    got = np.sort(dec.values[0, col, i, j].double().numpy())
                    assert np.allclose(got, want, atol=2e-5), (layer, head, i, j)
                    assert abs(terms[i, j].sum() - float(dec.scores[0, col, i, j])) < 1e-4


def test_key_side_contributions_match_the_papers_projection() -> None:
    hf = make_gpt2(1)
    model = interp.from_hf(hf, name="tiny-gpt2-oracle")
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(2))
    g = communication_graph(model, ids, receivers="L1H1", share=0.9, progress=False)
    i, j = g.pairs[0, 0].tolist()
    terms, U, S, V, sig = _paper_terms(hf, ids, 1, 1)
    t = terms[i, j]
    score = t.sum()
    order = np.argsort(-t * np.sign(score))
    csum = np.cumsum((t * np.sign(score))[order])
    K = order[:int(np.argmax(csum >= 0.9 * abs(score))) + 1]
    assert len(K) == int(g.n_sparse[0, 0])
    # ỹ_i at the destination; an upstream head's output c at the source enters ỹ_j as (c − mean c)/σ_j
    # (the normalisation is linear once σ is frozen)
    with torch.no_grad():
        x = hf(ids, output_hidden_states=True).hidden_states[1][0].double().numpy()
    xc = x - x.mean(-1, keepdims=True)
    yt_i = np.concatenate([xc[i] / sig[i], [1.0]])
    tr = model.run(ids, capture=["z.0"]).trace
    z = tr["blocks.0.attn.hook_z"][0, j].double().numpy()  # [head, d_head]
    W_O = model.weights.W_O[0].double().numpy()
    for h in range(model.weights.W_Q.shape[1]):
        c = z[h] @ W_O[h]
        ct = np.concatenate([(c - c.mean()) / sig[j], [0.0]])
        want = sum(S[k] * (yt_i @ U[:, k]) * (ct @ V[:, k]) for k in K)
        got = float(g.edges[0, 1, 0, g.senders.index(f"L0H{h}")])
        assert got == pytest.approx(want, abs=1e-4)
