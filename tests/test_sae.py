"""SAE training, storage and evaluation, against independent oracles (autograd, planted features, hand formulas)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from interp.errors import BadInputError, SchemaVersionError, UnknownNameError
from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae, save_saelens, spliced_ce
from interp.features.topk import _group_topk, _topk_grads
from interp.trace import capture


def planted(n: int = 20000, d: int = 32, n_feat: int = 48, active: int = 3, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that are sparse sums of ``n_feat`` unit directions (``active`` on average), and the directions."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=-1, keepdim=True)
    on = (torch.rand(n, n_feat, generator=g) < active / n_feat).float()
    coef = on * (0.5 + 2 * torch.rand(n, n_feat, generator=g))
    return coef @ D + 0.01 * torch.randn(n, d, generator=g), D


def small(**kw: object) -> SparseAutoencoder:
    base = {"d_sae": 96, "k": 4, "batch_size": 256, "n_tokens": 60_000, "lr": 3e-3, "dead_after": 5000}
    return SparseAutoencoder(SAEConfig(**{**base, **kw}), progress=False)  # type: ignore[arg-type]


def test_topk_recovers_planted_features_and_keeps_unit_decoder() -> None:
    x, D = planted()
    sae = small().fit(x[:16000])
    ev = evaluate_sae(None, x[16000:], sae=sae)
    assert ev.explained_variance > 0.85
    assert ev.l0 <= 4.0 + 1e-6
    assert torch.allclose(sae.W_dec_.norm(dim=-1), torch.ones(sae.d_sae), atol=1e-5)
    cos = (sae.W_dec_ @ D.T).max(0).values  # best learned match of each planted direction
    assert float((cos > 0.9).float().mean()) >= 0.9
    # the evaluation's EV and L0 match a hand computation
    xt = x[16000:]
    z = sae.encode(xt)
    hand = 1 - float((xt - sae.decode(z)).pow(2).sum() / (xt - xt.mean(0)).pow(2).sum())
    assert ev.explained_variance == pytest.approx(hand, abs=1e-4)
    assert ev.l0 == pytest.approx(float((z > 0).sum(-1).float().mean()), abs=1e-4)
    assert len(sae.history_["ev"]) == 60_000 // 256 and sae.history_["lr"][0] < sae.history_["lr"][-1]


def test_relu_l1_trades_sparsity_for_reconstruction() -> None:
    x, _ = planted(n=12000)
    weak = small(activation="relu", l1_coeff=1e-3, n_tokens=40_000).fit(x[:10000])
    strong = small(activation="relu", l1_coeff=3e-2, n_tokens=40_000).fit(x[:10000])
    ew, es = evaluate_sae(None, x[10000:], sae=weak), evaluate_sae(None, x[10000:], sae=strong)
    assert es.l0 < ew.l0
    assert ew.explained_variance > es.explained_variance
    assert ew.explained_variance > 0.9


@pytest.mark.parametrize(("S", "k"), [(4096, 32), (16384, 64), (1024, 4), (1000, 8), (2048, 100)])
def test_group_topk_is_torch_topk(S: int, k: int) -> None:
    g = torch.Generator().manual_seed(S + k)
    pre = torch.randn(64, S, generator=g)
    pre[:4] = pre[:4].round()  # many ties
    pre[4:8, ::3] = float("-inf")  # masked columns
    pre[8, : S // 2] = 5.0  # one group holding most of the top values
    vals, idx = _group_topk(pre, k)
    ref = pre.topk(k, dim=-1)
    assert torch.equal(vals.sort(-1, descending=True).values, ref.values)
    assert torch.equal(pre.gather(1, idx), vals)  # the indices point at those values
    assert all(len(set(r)) == k for r in idx.tolist())  # no index twice


@pytest.mark.parametrize(("S", "k"), [(40, 5), (2048, 16)])
def test_topk_hand_gradients_match_autograd(S: int, k: int) -> None:
    torch.manual_seed(0)
    d, B = 12, 64
    cfg = SAEConfig(d_sae=S, k=k, aux_k=7, aux_coeff=0.5, dead_after=1)
    p = {"W_enc": torch.randn(d, S), "b_enc": 0.1 * torch.randn(S), "W_dec": torch.randn(S, d), "b_dec": torch.randn(d)}
    p["W_dec"] /= p["W_dec"].norm(dim=-1, keepdim=True)
    x = torch.randn(B, d)
    since = torch.zeros(S, dtype=torch.long)
    since[::3] = 5  # every third feature is dead
    stats, _ = _topk_grads(p, x, cfg, since)
    hand = {n: t.grad.clone() for n, t in p.items()}
    # the same loss written densely, differentiated by autograd
    q = {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}
    pre = (x - q["b_dec"]) @ q["W_enc"] + q["b_enc"]
    v, i = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    err = x - (z @ q["W_dec"] + q["b_dec"])
    fvu = err.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    dead = since >= 1
    dv, di = pre.masked_fill(~dead, float("-inf")).topk(7, dim=-1)
    e = err.detach()
    r = e - torch.zeros_like(pre).scatter(-1, di, torch.relu(dv)) @ q["W_dec"]
    aux = r.pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    (fvu + 0.5 * aux).backward()
    assert stats["fvu"] == pytest.approx(fvu.item(), rel=1e-4) and stats["aux"] == pytest.approx(aux.item(), rel=1e-4)
    for n in p:
        assert torch.allclose(hand[n], q[n].grad, atol=1e-5, rtol=1e-4), n


def test_dead_features_are_tracked_and_fed_to_auxk() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8000, 2, generator=g) @ torch.randn(2, 16, generator=g)  # rank-2 data: most features die
    sae = small(d_sae=64, k=2, dead_after=512, n_tokens=20_000).fit(x)
    assert max(sae.history_["dead_fraction"]) > 0
    assert max(sae.history_["aux"]) > 0
    ev = evaluate_sae(None, x, sae=sae)
    assert ev.dead_fraction == pytest.approx(float((ev.feature_frequency == 0).float().mean()))


def test_checkpoint_resume_continues_exactly(tmp_path) -> None:
    x, _ = planted(n=4000)
    full = small(n_tokens=6144, checkpoint_every=4).fit(x)
    half = small(n_tokens=3072, checkpoint_every=4).fit(x, checkpoint_dir=tmp_path / "ck")
    assert not torch.allclose(half.W_dec_, full.W_dec_)
    resumed = small(n_tokens=6144, checkpoint_every=4).fit(x, checkpoint_dir=tmp_path / "ck", resume=True)
    for n in ("W_enc_", "b_enc_", "W_dec_", "b_dec_"):
        assert torch.allclose(getattr(resumed, n), getattr(full, n), atol=1e-6), n
    assert resumed.history_["loss"] == pytest.approx(full.history_["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="another config"):
        small(n_tokens=6144, k=3).fit(x, checkpoint_dir=tmp_path / "ck", resume=True)


def test_save_load_roundtrip_and_float16(tmp_path) -> None:
    x, _ = planted(n=3000)
    sae = small(n_tokens=2560).fit(x)
    back = SparseAutoencoder.load(sae.save(tmp_path / "a"))
    assert torch.equal(back.encode(x[:10]), sae.encode(x[:10]))
    assert back.config == sae.config and back.history_ == sae.history_
    half = SparseAutoencoder.load(sae.save(tmp_path / "b", dtype=torch.float16))
    assert half.W_enc_.dtype == torch.float32
    assert torch.allclose(half.reconstruct(x[:10]), sae.reconstruct(x[:10]), atol=2e-2)
    with pytest.raises(BadInputError, match="no SAE"):
        SparseAutoencoder.load(tmp_path)


def _write_saelens(path, arch: str, k: int | None = None, apply_b_dec: bool = True) -> dict[str, torch.Tensor]:
    """An SAE in SAELens 6's layout, written by hand (cfg.json + sae_weights.safetensors)."""
    g = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(8, 20, generator=g), "W_dec": torch.randn(20, 8, generator=g),
         "b_enc": torch.randn(20, generator=g), "b_dec": torch.randn(8, generator=g)}
    path.mkdir(parents=True)
    save_file(w, str(path / "sae_weights.safetensors"))
    cfg = {"architecture": arch, "d_in": 8, "d_sae": 20, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "metadata": {"hook_name": "blocks.2.hook_resid_pre", "model_name": "gpt2"}}
    if k is not None:
        cfg["k"] = k
    (path / "cfg.json").write_text(json.dumps(cfg))
    return w


def test_loads_saelens_layout(tmp_path) -> None:
    x = torch.randn(6, 8)
    w = _write_saelens(tmp_path / "std", "standard")
    sae = SparseAutoencoder.load(tmp_path / "std")
    assert sae.hook == "blocks.2.hook_resid_pre" and sae.model_id == "gpt2" and sae.config.activation == "relu"
    z = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    assert torch.allclose(sae.encode(x), z, atol=1e-5)
    assert torch.allclose(sae.decode(z), z @ w["W_dec"] + w["b_dec"], atol=1e-5)

    w = _write_saelens(tmp_path / "topk", "topk", k=3, apply_b_dec=False)
    sae = SparseAutoencoder.load(tmp_path / "topk")
    pre = x @ w["W_enc"] + w["b_enc"]
    v, i = pre.topk(3, dim=-1)
    assert torch.allclose(sae.encode(x), torch.zeros_like(pre).scatter(-1, i, torch.relu(v)), atol=1e-5)

    _write_saelens(tmp_path / "jr", "jumprelu")
    with pytest.raises(ValueError, match="jumprelu"):
        SparseAutoencoder.load(tmp_path / "jr")


def test_save_saelens_folds_the_input_scale(tmp_path) -> None:
    x, _ = planted(n=3000)
    sae = small(n_tokens=2560).fit(3.0 * x)
    assert not math.isclose(sae.input_scale_, 1.0, rel_tol=1e-3)
    w = SparseAutoencoder.load(save_saelens(sae, tmp_path))
    assert w.input_scale_ == 1.0
    assert torch.allclose(w.encode(3 * x[:20]), sae.encode(3 * x[:20]), atol=1e-4)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="activation must be"):
        SAEConfig(activation="jump")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k=40 is larger than d_sae=32"):
        SAEConfig(d_sae=32, k=40)
    with pytest.raises(BadInputError, match="not fitted"):
        SparseAutoencoder().encode(torch.randn(2, 4))
    with pytest.raises(ValueError, match="fewer token rows"):
        small().fit(torch.randn(10, 4))
    sae = small(n_tokens=512).fit(torch.randn(600, 4))
    with pytest.raises(ValueError, match="d_in=4"):
        sae.encode(torch.randn(2, 5))


def test_saved_files_record_class_and_versions_and_refuse_newer_ones(tmp_path) -> None:
    import interp

    sae = small(n_tokens=512).fit(torch.randn(600, 4))
    meta = json.loads((sae.save(tmp_path / "a") / "sae.json").read_text())
    assert (meta["class"], meta["schema_version"], meta["interp_version"]) == ("SparseAutoencoder", 1,
                                                                               interp.__version__)
    meta["schema_version"] = 2
    (tmp_path / "a" / "sae.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError, match="upgrade interp"):
        SparseAutoencoder.load(tmp_path / "a")
    meta["schema_version"], meta["class"] = 1, "TunedLens"
    (tmp_path / "a" / "sae.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="holds a TunedLens"):
        SparseAutoencoder.load(tmp_path / "a")
    meta["class"], meta["config"]["from_the_future"] = "SparseAutoencoder", 1  # unknown keys are ignored
    (tmp_path / "a" / "sae.json").write_text(json.dumps(meta))
    assert SparseAutoencoder.load(tmp_path / "a").config == sae.config


def _raw_ce(model, sae, layer, ids, mask=None):
    """Per-sequence next-token cross-entropies (over real tokens) with the SAE spliced in by a raw PyTorch
    forward hook on the decoder layer (the oracle); ``sae=None``: the clean model."""
    def hook(mod, args, out):
        h = out[0] if isinstance(out, tuple) else out
        new = sae.reconstruct(h)
        return (new, *out[1:]) if isinstance(out, tuple) else new
    h = model.hf.model.layers[layer].register_forward_hook(hook) if sae is not None else None
    mask = torch.ones_like(ids) if mask is None else mask
    try:
        with torch.no_grad():
            logits = model.hf(input_ids=ids, attention_mask=mask).logits
    finally:
        if h is not None:
            h.remove()
    out = []
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        out.append(torch.nn.functional.cross_entropy(logits[row, : n - 1], ids[row, 1:n], reduction="none"))
    return out


def test_store_training_and_spliced_ce(tiny_llama, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 100, (24,), generator=g)) for _ in range(64)]
    store = capture(tiny_llama, texts, out=tmp_path / "st", hooks="resid_post.0", batch_size=16, progress=False)
    sae = SparseAutoencoder(SAEConfig(d_sae=128, k=16, batch_size=128, n_tokens=20_000, lr=3e-3),
                            progress=False).fit(store)
    assert sae.hook == "blocks.0.hook_resid_post" and sae.model_id
    ids = tiny_llama.tokenize(texts[0])[0]
    clean, spliced, zero = spliced_ce(tiny_llama, ids, sae=sae)
    assert spliced == pytest.approx(float(_raw_ce(tiny_llama, sae, 0, ids)[0].mean()), rel=1e-4)
    assert clean == pytest.approx(float(_raw_ce(tiny_llama, None, 0, ids)[0].mean()), rel=1e-5)
    assert zero != clean
    ev = evaluate_sae(tiny_llama, store, sae=sae, ce_inputs=texts[:4])
    assert ev.explained_variance > 0.5 and not math.isnan(ev.ce_recovered)
    back = type(ev).load(ev.save(tmp_path / "ev"))
    assert back.metrics() == pytest.approx(ev.metrics(), nan_ok=True)
    assert len(ev.to_frame()) == 128 and ev.plot().data and ev.plot("frequency").data
    # without a model the store's rows alone: no loss; with texts the model runs and captures the hook
    rows_only = evaluate_sae(None, store, sae=sae)
    assert rows_only.explained_variance == pytest.approx(ev.explained_variance) and math.isnan(rows_only.ce_clean)
    from_texts = evaluate_sae(tiny_llama, texts[:4], sae=sae, hook="resid_post.-2")
    first4 = evaluate_sae(None, store, sae=sae, max_rows=4 * 24)
    assert from_texts.n_tokens == first4.n_tokens == 96
    assert from_texts.explained_variance == pytest.approx(first4.explained_variance, abs=1e-5)
    assert from_texts.ce_clean == pytest.approx(float(torch.cat(_raw_ce(tiny_llama, None, 0, store.tokens()[0][:4]))
                                                      .mean()), rel=1e-5)
    with pytest.raises(BadInputError, match="needs a model"):
        evaluate_sae(None, texts[:4], sae=sae)
    with pytest.raises(BadInputError, match="bad max_rows 0"):
        evaluate_sae(None, store, sae=sae, max_rows=0)


def test_spliced_ce_on_a_padded_batch_in_several_forwards(tiny_llama) -> None:
    """Sequences of different lengths, two per forward: the mean over every real next token (padding never
    counts), equal to the raw hook's per-sequence losses pooled."""
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(3000, 64, generator=g)
    sae = SparseAutoencoder(SAEConfig(d_sae=64, k=8, batch_size=256, n_tokens=4096), progress=False).fit(rows)
    texts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9 w10", "w11 w12 w13 w14 w15", "w16 w17"]
    loss = spliced_ce(tiny_llama, texts, sae=sae, hook=("resid_post", 1), batch_size=2)
    ids, mask = tiny_llama.tokenize(texts)
    for got, sub in ((loss.spliced, sae), (loss.clean, None)):
        want = torch.cat(_raw_ce(tiny_llama, sub, 1, ids, mask)).mean()
        assert got == pytest.approx(float(want), rel=1e-5)
    assert loss.zero != loss.clean and loss.recovered == pytest.approx((loss.zero - loss.spliced) /
                                                                       (loss.zero - loss.clean))
    with pytest.raises(BadInputError, match="names no hook"):
        spliced_ce(tiny_llama, texts, sae=sae)


def test_fits_on_an_in_memory_trace(tiny_llama) -> None:
    texts = ["w1 w2 w3 w4 w5 w6", "w7 w8 w9"]  # the second is padded: its padding rows must not be used
    trace = tiny_llama.run(texts, capture=["blocks.1.hook_resid_post"]).trace
    sae = SparseAutoencoder(SAEConfig(d_sae=16, k=2, batch_size=3, n_tokens=30), progress=False).fit(trace)
    assert sae.hook == "blocks.1.hook_resid_post"
    assert len(sae.to_frame()) == 10 and sae.plot().data and sae.plot("training").data
    assert "train_ev" in sae.summary() and repr(sae).startswith("SparseAutoencoder(64->16")
    with pytest.raises(UnknownNameError, match="training"):
        sae.plot("curves")
    rows = trace["blocks.1.hook_resid_post"][trace.attention_mask.bool()]
    assert evaluate_sae(None, rows, sae=sae).n_tokens == 9
    two = tiny_llama.run(texts, capture=["resid_post.0", "resid_post.1"]).trace
    again = SparseAutoencoder(SAEConfig(d_sae=16, k=2, batch_size=3, n_tokens=30), progress=False)
    assert again.fit(two, hook=("resid_post", 1)).hook == "blocks.1.hook_resid_post"
    with pytest.raises(UnknownNameError, match=r"blocks\.0\.hook_resid_post"):
        SparseAutoencoder(SAEConfig(d_sae=16, k=2, batch_size=3, n_tokens=30)).fit(trace, hook="resid_post.0")
    with pytest.raises(BadInputError, match="pass hook="):
        SparseAutoencoder(SAEConfig(d_sae=16, k=2, batch_size=3, n_tokens=30)).fit(two)
    with pytest.raises(BadInputError, match="TraceStore"):
        bare = SparseAutoencoder(SAEConfig(d_sae=16, k=2, batch_size=3, n_tokens=30))
        bare.fit("/tmp/store")  # type: ignore[arg-type]
