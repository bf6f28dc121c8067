"""Feature flow, flow validation, steering and dashboards, against planted ground truth and raw PyTorch hooks."""

from __future__ import annotations

import pytest
import torch

from interp.features import (
    FeatureClasses,
    FeatureDashboard,
    FeatureEdit,
    FlowGraph,
    FlowValidation,
    SAEConfig,
    SparseAutoencoder,
    SteeringResult,
    classify_features,
    feature_dashboard,
    feature_flow,
    path_edits,
    steer,
    validate_flow,
)
from interp.trace import capture

D = 48
R1, A1, M1, R2, M2, R3 = ("blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
                          "blocks.1.hook_resid_post", "blocks.2.hook_mlp_out", "blocks.2.hook_resid_post")


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def planted_dictionaries(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[tuple[str, int], tuple[str, int]]]:
    """Feature directions at six sites of three layers, and the planted links (downstream -> upstream).

    r1 has 8 features. Block 1: attention writes 3, the MLP 3. r2: features 0-3 carry r1's 0-3 (rotated a
    little: cosine ~0.95), 4-5 are attention's 0-1, 6-7 the MLP's 0-1, 8-9 are new. Block 2's MLP writes 3;
    r3: 0-5 carry r2's 0, 1, 4, 6, 8, 9; 6-7 are MLP2's 0-1; 8 is new.
    """
    g = torch.Generator().manual_seed(seed)

    def fresh(n: int) -> torch.Tensor:
        return unit(torch.randn(n, D, generator=g))

    def carry(v: torch.Tensor) -> torch.Tensor:
        return unit(v + 0.3 * fresh(v.shape[0]))

    r1, a1, m1, m2 = fresh(8), fresh(3), fresh(3), fresh(3)
    r2 = torch.cat([carry(r1[:4]), carry(a1[:2]), carry(m1[:2]), fresh(2)])
    r3 = torch.cat([carry(r2[[0, 1, 4, 6, 8, 9]]), carry(m2[:2]), fresh(1)])
    links = {(R2, i): (R1, i) for i in range(4)} | {(R2, 4): (A1, 0), (R2, 5): (A1, 1), (R2, 6): (M1, 0),
                                                    (R2, 7): (M1, 1)}
    links |= {(R3, j): (R2, i) for j, i in enumerate([0, 1, 4, 6, 8, 9])} | {(R3, 6): (M2, 0), (R3, 7): (M2, 1)}
    return {R1: r1, A1: a1, M1: m1, R2: r2, M2: m2, R3: r3}, links


def exact_sae(rows: torch.Tensor) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_sae=rows.shape[0], k=1))
    sae.W_dec_, sae.W_enc_ = rows.clone(), rows.T.clone()
    sae.b_enc_, sae.b_dec_ = torch.zeros(rows.shape[0]), torch.zeros(rows.shape[1])
    return sae


def expected_class(hook: str, f: int, links: dict) -> str:
    src = links.get((hook, f))
    if src is None:
        return "new"
    return {"resid": "carried", "attn": "attention", "mlp": "mlp"}[src[0].split("hook_")[1].split("_")[0]]


def test_classes_and_graph_recover_planted_links_from_weights() -> None:
    dicts, links = planted_dictionaries()
    saes = {h: exact_sae(v) for h, v in dicts.items()}
    for hook in (R2, R3):
        cls = classify_features(saes, hook, threshold=0.6)
        assert list(cls.labels) == [expected_class(hook, f, links) for f in range(dicts[hook].shape[0])]
    back = feature_flow(saes, R3, 2, threshold=0.6)  # r3#2 <- r2#4 <- attention#0
    assert back.has_edge((R2, 4), (R3, 2)) and back.has_edge((A1, 0), (R2, 4))
    assert len(back.edges) == 2
    chain = feature_flow(saes, R3, 0, threshold=0.6)
    assert chain.has_edge((R2, 0), (R3, 0)) and chain.has_edge((R1, 0), (R2, 0))
    fwd = feature_flow(saes, R1, 1, direction="forward", threshold=0.6)  # r1#1 -> r2#1 -> r3#1
    assert fwd.has_edge((R1, 1), (R2, 1)) and fwd.has_edge((R2, 1), (R3, 1)) and len(fwd.edges) == 2
    dead_end = feature_flow(saes, R1, 5, direction="forward", threshold=0.6)  # r1#5 is not carried
    assert dead_end.edges == ()


def planted_rows(dirs: torch.Tensor, n: int, g: torch.Generator, p: float = 0.1) -> torch.Tensor:
    on = (torch.rand(n, dirs.shape[0], generator=g) < p).float()
    return (on * (0.5 + torch.rand(n, dirs.shape[0], generator=g))) @ dirs + 0.01 * torch.randn(n, D, generator=g)


def test_trained_saes_recover_planted_flow() -> None:
    """SAEs trained on rows made of the planted directions; every planted feature the SAEs learn (most do:
    small SAEs sometimes learn a combination of two features instead) gets its planted class and link."""
    dicts, links = planted_dictionaries(seed=1)
    g = torch.Generator().manual_seed(2)
    saes = {}
    for hook, dirs in dicts.items():
        cfg = SAEConfig(d_sae=2 * dirs.shape[0], k=2, batch_size=128, n_tokens=60_000, lr=3e-3, dead_after=1000)
        saes[hook] = SparseAutoencoder(cfg, progress=False).fit(planted_rows(dirs, 6000, g))

    def learned(hook: str, f: int) -> int | None:
        cos = unit(saes[hook].W_dec_) @ dicts[hook][f]
        return int(cos.argmax()) if float(cos.max()) > 0.9 else None

    found = [learned(h, f) is not None for h, v in dicts.items() for f in range(v.shape[0])]
    assert sum(found) >= 0.75 * len(found)
    checked = 0
    for hook in (R2, R3):
        cls = classify_features(saes, hook, threshold=0.6)
        for f in range(dicts[hook].shape[0]):
            j = learned(hook, f)
            src = links.get((hook, f))
            i = learned(*src) if src is not None else None
            if j is None or (src is not None and i is None):
                continue
            assert cls.labels[j] == expected_class(hook, f, links), (hook, f)
            if src is not None:
                graph = feature_flow(saes, hook, j, threshold=0.6, top_n=1, max_steps=1)
                assert graph.has_edge((src[0], i), (hook, j)), (hook, f)
            checked += 1
    assert checked >= 12


def test_flow_results_roundtrip_and_plot(tmp_path) -> None:
    dicts, _ = planted_dictionaries()
    saes = {h: exact_sae(v) for h, v in dicts.items()}
    graph = feature_flow(saes, R3, 0, threshold=0.6)
    back = FlowGraph.load(graph.save(tmp_path / "g"))
    assert back == graph
    assert len(graph.to_frame()) == len(graph.edges)
    assert graph.plot().data and graph.plot("sankey").data
    cls = classify_features(saes, R2, threshold=0.6)
    back_cls = FeatureClasses.load(cls.save(tmp_path / "c"))
    assert back_cls.labels == cls.labels and torch.equal(back_cls.matches, cls.matches)
    assert cls.counts() == {"carried": 4, "attention": 2, "mlp": 2, "new": 2}
    assert cls.plot().data and len(cls.to_frame()) == 3 * 10
    with pytest.raises(ValueError, match="hook_resid_pre/hook_resid_post"):
        feature_flow({**saes, "blocks.0.attn.hook_z": saes[R1]}, R3, 0)
    with pytest.raises(IndexError, match="out of range"):
        feature_flow(saes, R3, 99)
    with pytest.raises(ValueError, match="no predecessor"):
        classify_features(saes, R1)


# -- with a model -----------------------------------------------------------------------------------
TEXTS = [" ".join(f"w{(7 * i + 3 * j) % 100}" for j in range(16)) for i in range(24)]


@pytest.fixture(scope="module")
def tiny_saes(tiny_llama, tmp_path_factory):
    store = capture(tiny_llama, TEXTS, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                    tmp_path_factory.mktemp("st") / "s", batch_size=8, progress=False)
    saes = {h: SparseAutoencoder(SAEConfig(d_sae=96, k=8, batch_size=64, n_tokens=8000, lr=3e-3),
                                 progress=False).fit(store, h) for h in store.hooks}
    return store, saes


def _raw(model, layer_fns: dict[int, object], capture_layer: int, ids: torch.Tensor) -> torch.Tensor:
    """Run the HF model with raw forward hooks editing decoder-layer outputs; return one layer's output."""
    got = {}
    handles = []
    for L, fn in layer_fns.items():
        def hook(mod, args, out, fn=fn):
            h = out[0] if isinstance(out, tuple) else out
            new = fn(h)
            return (new, *out[1:]) if isinstance(out, tuple) else new
        handles.append(model.hf.model.layers[L].register_forward_hook(hook))

    def grab(mod, args, out):
        got["x"] = out[0] if isinstance(out, tuple) else out
    handles.append(model.hf.model.layers[capture_layer].register_forward_hook(grab))
    try:
        with torch.no_grad():
            model.hf(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return got["x"]


def test_validate_flow_matches_raw_hooks(tiny_llama, tiny_saes, tmp_path) -> None:
    _, saes = tiny_saes
    up, down = saes["blocks.0.hook_resid_post"], saes["blocks.1.hook_resid_post"]
    ids = tiny_llama.tokenize(TEXTS[:4])[0]
    x0 = _raw(tiny_llama, {}, 0, ids)
    x1 = _raw(tiny_llama, {}, 1, ids)
    z1 = down.encode(x1)
    f_down = int(z1.sum((0, 1)).argmax())
    graph = feature_flow(saes, "blocks.1.hook_resid_post", f_down, threshold=-1.0, top_n=2)
    assert len(graph.edges) == 2
    val = validate_flow(tiny_llama, saes, graph, TEXTS[:4])
    for (h_up, f_up, _, f_dn), corr, eff in zip(val.edges, val.correlation, val.ablation_effect, strict=True):
        assert h_up == "blocks.0.hook_resid_post" and f_dn == f_down
        a, b = up.encode(x0)[..., f_up].flatten(), z1[..., f_dn].flatten()
        ref = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert float(corr) == pytest.approx(float(ref), abs=1e-4, nan_ok=True)
        d = up.W_dec_[f_up] / up.input_scale_
        ablated = _raw(tiny_llama, {0: lambda h, f=f_up, d=d: h - up.encode(h)[..., f, None] * d}, 1, ids)
        ref_eff = 1 - float(down.encode(ablated)[..., f_dn].sum()) / float(z1[..., f_dn].sum())
        assert float(eff) == pytest.approx(ref_eff, abs=1e-4)
    back = FlowValidation.load(val.save(tmp_path / "v"))
    assert back.edges == val.edges and torch.equal(back.correlation, val.correlation, )
    assert len(val.to_frame()) == 2 and val.plot().data


def test_steering_matches_raw_hooks_and_is_a_noop_at_identity(tiny_llama, tiny_saes, tmp_path) -> None:
    _, saes = tiny_saes
    hook = "blocks.0.hook_resid_post"
    sae = saes[hook]
    prompt = TEXTS[0][:20]
    same = steer(tiny_llama, saes, FeatureEdit(hook, 3, scale=1.0), prompt, max_new_tokens=6)
    assert same.after == same.before
    edit = FeatureEdit(hook, 3, add=40.0)
    res = steer(tiny_llama, saes, edit, prompt, max_new_tokens=6)
    d = sae.W_dec_[3] / sae.input_scale_
    ids, mask = tiny_llama.tokenize(prompt)
    h = tiny_llama.hf.model.layers[0].register_forward_hook(
        lambda mod, args, out: ((out[0] + 40.0 * d, *out[1:]) if isinstance(out, tuple) else out + 40.0 * d))
    try:
        with torch.no_grad():
            out = tiny_llama.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                         pad_token_id=tiny_llama.tokenizer.pad_token_id)
    finally:
        h.remove()
    assert res.after == tiny_llama.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert res.after != res.before
    assert SteeringResult.load(res.save(tmp_path / "s")) == res
    assert "before" in str(res) and res.plot().data and len(res.to_frame()) == 2
    graph = feature_flow(saes, "blocks.1.hook_resid_post", 0, threshold=-1.0, top_n=1)
    assert [e.hook for e in path_edits(graph, scale=0.0)] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with pytest.raises(KeyError, match="no SAE"):
        steer(tiny_llama, saes, FeatureEdit("blocks.0.hook_mlp_out", 0), prompt)
    with pytest.raises(ValueError, match="finite"):
        FeatureEdit(hook, 0, scale=float("nan"))


def test_dashboard_finds_the_top_contexts(tiny_llama, tiny_saes, tmp_path) -> None:
    store, saes = tiny_saes
    hook = "blocks.1.hook_resid_post"
    sae = saes[hook]
    tr = store.trace(hooks=[hook])
    z = sae.encode(tr[hook])[..., 5] * tr.attention_mask
    dash = feature_dashboard(sae, 5, store, model=tiny_llama, n_contexts=3, window=5)
    best = z.flatten().topk(3)
    seq_len = z.shape[1]
    assert [s * seq_len + p for s, p in dash.locations] == best.indices.tolist()
    assert torch.allclose(dash.context_acts[:, dash.peak], best.values, atol=1e-5)
    s, p = dash.locations[0]
    assert dash.contexts[0][dash.peak] == tr.tokens[s][p]
    assert int(dash.hist_counts.sum()) == int((z > 0).sum())
    W_U, _ = tiny_llama.weights.folded_unembed()
    logits = sae.direction(5) @ W_U
    assert dash.promoted_logits[0] == pytest.approx(float(logits.max()), rel=1e-5)
    back = FeatureDashboard.load(dash.save(tmp_path / "d"))
    assert back.contexts == dash.contexts and back.locations == dash.locations
    assert dash.plot().data and dash.plot_histogram().data and dash.plot_logits().data
    assert len(dash.to_frame()) == 3 * 5
