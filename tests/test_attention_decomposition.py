"""Sparse attention decomposition (interp.heads.decompose / graph): sums back to the model's own scores (computed
here from Hugging Face modules, not interp's hooks), a planted low-rank QK channel is traced to its feeding head,
subspace removal beats random subspaces, the result surface, the CLI and the report section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import randomize
from transformers import GPT2Config, GPT2LMHeadModel

import interp
from interp.errors import BadInputError
from interp.heads import (
    AttentionDecomposition,
    CommunicationGraph,
    SubspaceValidation,
    attention_decomposition,
    communication_graph,
    composition,
    subspace_removal,
)
from interp.models import Model


def _gpt2_scores(hf: GPT2LMHeadModel, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """GPT-2's attention scores [batch, head, dest, src] from its own modules: ln_1, c_attn, / sqrt(d_head)."""
    with torch.no_grad():
        hs = hf(ids, output_hidden_states=True).hidden_states[layer]
        blk = hf.transformer.h[layer]
        qkv = blk.attn.c_attn(blk.ln_1(hs))
        d = hf.config.n_embd
        nh = hf.config.n_head
        q, k, _ = qkv.split(d, dim=-1)
        q = q.view(*q.shape[:2], nh, -1).transpose(1, 2)
        k = k.view(*k.shape[:2], nh, -1).transpose(1, 2)
        return (q @ k.transpose(-1, -2)) / math.sqrt(d // nh)


def _llama_scores(hf: torch.nn.Module, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Llama-family scores from HF's own input norm, projections and apply_rotary_pos_emb."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        hs = out.hidden_states[layer]
        blk = hf.model.layers[layer]
        x = blk.input_layernorm(hs)
        att = blk.self_attn
        hd = att.head_dim
        q = att.q_proj(x).view(*x.shape[:2], -1, hd).transpose(1, 2)
        k = att.k_proj(x).view(*x.shape[:2], -1, hd).transpose(1, 2)
        pos = torch.arange(ids.shape[1])[None]
        cos, sin = hf.model.rotary_emb(x, pos)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = repeat_kv(k, q.shape[1] // k.shape[1])
        return (q @ k.transpose(-1, -2)) * att.scaling


def _all_terms(dec: AttentionDecomposition) -> torch.Tensor:
    return dec.values.double().sum(-1)


def test_sums_back_on_tiny_gpt2_with_biases(tiny_gpt2: Model) -> None:
    assert float(tiny_gpt2.weights.b_Q.abs().max()) > 0.01  # the biases are really there
    ids = torch.randint(4, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    dec = attention_decomposition(tiny_gpt2, ids, top_k=64, progress=False)  # every component kept
    assert dec.values.shape[-1] == tiny_gpt2.weights.W_Q.shape[-1]
    H = tiny_gpt2.weights.W_Q.shape[1]
    tril = torch.ones(10, 10, dtype=torch.bool).tril()
    for layer in range(2):
        want = _gpt2_scores(tiny_gpt2.hf, ids, layer).double()
        got = _all_terms(dec)[:, layer * H:(layer + 1) * H]
        assert torch.allclose(got[..., tril], want[..., tril], atol=1e-4)
        assert torch.allclose(dec.scores[:, layer * H:(layer + 1) * H][..., tril].double(), want[..., tril], atol=1e-4)
    assert dec.max_error <= 1e-4
    assert not dec.rotary and dec.singular_values.shape[1] == 1


def test_sums_back_on_tiny_llama_with_rotary(tiny_llama: Model) -> None:
    ids = torch.randint(4, 90, (1, 12), generator=torch.Generator().manual_seed(1))
    want = _llama_scores(tiny_llama.hf, ids, 1)[:, [0, 3]].double()
    tril = torch.ones(12, 12, dtype=torch.bool).tril()
    for per_offset, n_svd in ((False, 1), (True, 12)):
        dec = attention_decomposition(tiny_llama, ids, heads="L1H0,L1H3", top_k=64, per_offset=per_offset,
                                      progress=False)
        assert dec.rotary and dec.per_offset == per_offset and dec.singular_values.shape[1] == n_svd
        assert torch.allclose(_all_terms(dec)[..., tril], want[..., tril], atol=1e-4)


def test_rotary_content_method_matches_its_definition(tiny_llama: Model) -> None:
    """One SVD per head of the position-free augmented QK matrix c·W̃_Q W̃_Kᵀ ((d+1) square, numpy); at a pair
    (i, j) the key reads v_k and the query reads u_k carried through the rotation, W̃_Q R_i R_jᵀ W̃_Q⁺ u_k; the
    rotations come from HF's own rotary module and the augmented weights from the HF modules."""
    import numpy as np

    hf = tiny_llama.hf
    ids = torch.randint(4, 90, (1, 9), generator=torch.Generator().manual_seed(2))
    layer, head = 1, 2
    dec = attention_decomposition(tiny_llama, ids, heads=f"L{layer}H{head}", top_k=64, progress=False)
    blk = hf.model.layers[layer]
    att = blk.self_attn
    hd = att.head_dim
    kv = head // (hf.config.num_attention_heads // hf.config.num_key_value_heads)
    with torch.no_grad():
        x = hf(ids, output_hidden_states=True).hidden_states[layer][0].double().numpy()
        pos = torch.arange(9)[None]
        cos, sin = hf.model.rotary_emb(torch.zeros(1, dtype=torch.float32), pos)
    cos, sin = cos[0].double().numpy(), sin[0].double().numpy()
    g = blk.input_layernorm.weight.detach().double().numpy()
    eps = blk.input_layernorm.variance_epsilon
    y = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    yt = np.concatenate([y, np.ones((9, 1))], axis=1)
    Wq = att.q_proj.weight.detach().double().numpy()[head * hd:(head + 1) * hd].T  # [d, hd]
    Wk = att.k_proj.weight.detach().double().numpy()[kv * hd:(kv + 1) * hd].T
    bq = np.zeros(hd) if att.q_proj.bias is None else att.q_proj.bias.detach().double().numpy()[head * hd:(head + 1) * hd]
    bk = np.zeros(hd) if att.k_proj.bias is None else att.k_proj.bias.detach().double().numpy()[kv * hd:(kv + 1) * hd]
    WQ = np.vstack([g[:, None] * Wq, bq[None]])  # [d+1, hd]
    WK = np.vstack([g[:, None] * Wk, bk[None]])
    U, S, Vt = np.linalg.svd(att.scaling * WQ @ WK.T)
    U, S, V = U[:, :hd], S[:hd], Vt[:hd].T

    def rotate(v: np.ndarray, p: int, inverse: bool = False) -> np.ndarray:  # HF's apply_rotary_pos_emb on a row
        half = v.shape[-1] // 2
        rh = np.concatenate([-v[..., half:], v[..., :half]], -1)
        return v * cos[p] - rh * sin[p] if inverse else v * cos[p] + rh * sin[p]

    pinv = np.linalg.pinv(WQ)
    for i, j in ((8, 3), (5, 5), (6, 0)):
        q = yt[i] @ WQ  # pre-rotary query
        carried = rotate(rotate(q, i), j, inverse=True) @ pinv  # x̃ whose query is q R_i R_jᵀ
        terms = S * (carried @ U) * (yt[j] @ V)
        got = torch.zeros(hd, dtype=torch.float64)
        got[dec.components[0, 0, i, j].long()] = dec.values[0, 0, i, j].double()
        assert np.allclose(got.numpy(), terms, atol=1e-4)
    assert np.allclose(dec.singular_values[0, 0].numpy(), S, rtol=1e-4, atol=1e-6)


def test_padding_and_sparse_set_definition(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    dec = attention_decomposition(tiny_llama, batch, heads="L0H1", top_k=4, share=0.5, progress=False)
    assert torch.isnan(dec.scores[1, 0, 6, 2]) and int(dec.n_sparse[1, 0, 6, 2]) == 0  # padding: masked
    # the sparse set is the shortest prefix (toward the score's sign) that reaches the share
    s = float(dec.scores[0, 0, 7, 3])
    n = int(dec.n_sparse[0, 0, 7, 3])
    vals = dec.values[0, 0, 7, 3].double()
    if n <= 4:
        sgn = 1.0 if s >= 0 else -1.0
        assert float((vals[:n] * sgn).sum()) >= 0.5 * abs(s) - 1e-5
        assert n == 1 or float((vals[:n - 1] * sgn).sum()) < 0.5 * abs(s)
    with pytest.raises(BadInputError, match="share"):
        attention_decomposition(tiny_llama, batch, share=0.0)
    with pytest.raises(BadInputError, match="top_k"):
        attention_decomposition(tiny_llama, batch, top_k=0)


def _planted() -> tuple[Model, torch.Tensor]:
    """Tiny GPT-2 whose L1H0 keys read only a direction e that only L0H2 writes: a rank-1 QK channel."""
    cfg = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_inner=80, vocab_size=100, n_positions=32, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf = randomize(GPT2LMHeadModel(cfg), 7)
    d, dh = 48, 12
    e = torch.zeros(d)
    e[0], e[1] = 1 / math.sqrt(2), -1 / math.sqrt(2)  # orthogonal to the all-ones vector: LayerNorm keeps it
    P = torch.eye(d) - torch.outer(e, e)
    f = torch.randn(dh, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        t = hf.transformer
        t.wte.weight.copy_(t.wte.weight @ P)
        t.wpe.weight.copy_(t.wpe.weight @ P)
        b0 = t.h[0]
        b0.attn.c_proj.weight.copy_(b0.attn.c_proj.weight @ P)
        b0.attn.c_proj.bias.copy_(b0.attn.c_proj.bias @ P)
        b0.attn.c_proj.weight[2 * dh:3 * dh] += torch.outer(torch.randn(dh, generator=torch.Generator().manual_seed(4)), e)
        b0.mlp.c_proj.weight.copy_(b0.mlp.c_proj.weight @ P)
        b0.mlp.c_proj.bias.copy_(b0.mlp.c_proj.bias @ P)
        b1 = t.h[1]
        b1.ln_1.weight.fill_(1.0)
        b1.ln_1.bias.zero_()
        W = b1.attn.c_attn.weight  # [d, 3d]: Q | K | V
        Bv = b1.attn.c_attn.bias
        W[:, 0:dh] = 0.0  # L1H0 queries: the bias only
        Bv[0:dh] = f
        W[:, d:d + dh] = 4.0 * torch.outer(e, f)  # L1H0 keys: read e only
        Bv[d:d + dh] = 0.0
    return interp.from_hf(hf, name="planted-qk"), torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(5))


def test_planted_channel_top_edge_is_the_feeding_head() -> None:
    model, ids = _planted()
    g = communication_graph(model, ids, receivers="L1H0", progress=False)
    top = g.top_edges(1, senders="all")[0]
    assert top[:3] == ("L0H2", "L1H0", "k")
    assert int(g.n_sparse.max()) == 1  # rank-1 channel: one component
    # no other writer feeds the keys; the key-side edges sum to the score (bias coordinate included)
    k_side = g.edges[:, 1, 0]
    others = [i for i, s in enumerate(g.senders) if s != "L0H2"]
    assert float(k_side[:, others].abs().max()) < 1e-4
    assert torch.allclose(k_side.sum(-1), g.scores[:, 0], atol=1e-4)
    v = subspace_removal(model, ids, graph=g, n_edges=1, n_random=10)
    assert v.edges == ("L0H2→L1H0 (k)",)
    assert float(v.sparse_drop[0]) == pytest.approx(float(g.mean()[1, 0, g.senders.index("L0H2")]), rel=1e-3)
    assert float(v.sparse_drop[0]) > float(v.random_drop[0].max())
    assert float(v.p_values()[0]) <= 1 / 11 + 1e-6


def test_edges_sum_to_the_sparse_part(tiny_llama: Model) -> None:
    ids = torch.randint(4, 90, (2, 9), generator=torch.Generator().manual_seed(2))
    g = communication_graph(tiny_llama, ids, receivers="L1H1,L1H2", share=0.8, progress=False)
    dec = attention_decomposition(tiny_llama, ids, heads="L1H1,L1H2", share=0.8, top_k=16, progress=False)
    for b in range(2):
        for r in range(2):
            i, j = g.pairs[b, r].tolist()
            n = int(dec.n_sparse[b, r, i, j])
            assert n == int(g.n_sparse[b, r])
            sparse = float(dec.values[b, r, i, j, :n].sum())
            for side in range(2):
                assert float(g.edges[b, side, r].sum()) == pytest.approx(sparse, abs=1e-4)
            assert j != 0  # skip_first: the first token is passed over


def test_toy_induction_graph_agrees_with_k_composition() -> None:
    toy = interp.load_model("toy-induction")
    ids = torch.tensor([[1, 5, 9, 3, 7, 1, 5, 9], [2, 8, 4, 6, 11, 2, 8, 4]])
    g = communication_graph(toy, ids, receivers="L1H3", progress=False)
    comp = composition(toy, kinds="k", baseline_samples=10)
    sender, receiver, _, _ = comp.top_pairs("k", 1)[0]
    s, r, _, _ = g.top_edges(1, side="k")[0]
    assert (s, r) == (str(sender), str(receiver))


def test_result_surface(tiny_llama: Model, tmp_path: Path) -> None:
    ids = torch.randint(4, 90, (1, 8), generator=torch.Generator().manual_seed(3))
    dec = attention_decomposition(tiny_llama, ids, heads="L1H0", top_k=4, progress=False)
    g = communication_graph(tiny_llama, ids, receivers="L1H0", progress=False)
    v = subspace_removal(tiny_llama, ids, graph=g, n_edges=1, n_random=3)
    for res, cls in ((dec, AttentionDecomposition), (g, CommunicationGraph), (v, SubspaceValidation)):
        back = cls.load(res.save(tmp_path / cls.__name__))
        assert repr(back) == repr(res)
        for view in res.VIEWS:
            res.plot(view)
        assert len(res.to_frame()) > 0
        assert "class" in res.to_dict()
    assert dec.sparse_components("L1H0", dest=-1)
    with pytest.raises(BadInputError):
        dec.sparse_components("L0H0")
    with pytest.raises(BadInputError):
        g.top_edges(3, side="v")


@pytest.mark.slow
def test_sums_back_on_smollm2(smollm2: Model) -> None:
    text = "When Mary and John went to the store, John gave a drink to"
    ids = smollm2.encode(text)[0]
    heads = "L0H0,L5H4,L17H8,L29H8"
    dec = attention_decomposition(smollm2, ids, heads=heads, top_k=64, progress=False)
    n = ids.shape[1]
    tril = torch.ones(n, n, dtype=torch.bool).tril()
    for col, (layer, head) in enumerate([(0, 0), (5, 4), (17, 8), (29, 8)]):
        want = _llama_scores(smollm2.hf, ids, layer)[0, head].double()
        got = _all_terms(dec)[0, col]
        assert float((got - want)[tril].abs().max()) <= 1e-4
    assert dec.max_error <= 1e-4
    # sparsity: on well-attended pairs far fewer components than d_head carry 90% of the score
    assert float(dec.sparsity(0.2).mean()) < 32


def test_cli_decompose(tmp_path: Path, tiny_llama: Model) -> None:
    import json

    from interp.cli import main

    d = tmp_path / "m"
    tiny_llama.hf.save_pretrained(d)
    tiny_llama.tokenizer.save_pretrained(d)
    rc = main(["heads", "decompose", "--quiet", "--model", str(d), "--prompt", "w1 w2 w3 w4 w1 w2",
               "--heads", "L1H0,L1H1", "--validate", "1", "--json", str(tmp_path / "d.json")])
    assert rc == 0
    data = json.loads((tmp_path / "d.json").read_text())
    assert "Attention decomposition" in data["sections"] and "Subspace removal" in data["sections"]
    rc = main(["heads", "decompose", "--quiet", "--model", str(d), "--prompt", "w1 w2 w3 w4", "--heads", "L1H0",
               "--per-offset", "--json", str(tmp_path / "p.json")])
    assert rc == 0 and (tmp_path / "p.json").exists()
