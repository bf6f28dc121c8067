"""Layer metrics against direct torch computations from plain Hugging Face forwards with raw module hooks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_lens import check_v01_fixture

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.lens import (
    BLOCK,
    AngularDistanceResult,
    SkipLossResult,
    SublayerSimilarityResult,
    angular_distances,
    skip_layer_loss,
    sublayer_similarity,
)
from interp.models import Model
from interp.sites import UnknownHookError


def _layers(model: Model) -> list[torch.nn.Module]:
    hf = model.hf
    if model.adapter.family == "llama":
        return list(hf.model.layers)
    return list(hf.gpt_neox.layers) if hasattr(hf, "gpt_neox") else list(hf.transformer.h)


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[index,return-value]


def hf_residuals(model: Model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Each decoder layer's input, its input + attention output (resid_mid) and its output, via raw torch hooks."""
    got: dict[str, list[torch.Tensor]] = {"pre": [], "attn": [], "post": []}
    handles = []
    for layer in _layers(model):
        attn = layer.self_attn if hasattr(layer, "self_attn") else layer.attn
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, k: got["pre"].append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True))
        handles.append(attn.register_forward_hook(lambda m, a, o: got["attn"].append(_first(o).detach().clone())))
        handles.append(layer.register_forward_hook(lambda m, a, o: got["post"].append(_first(o).detach().clone())))
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    got["mid"] = [p + a for p, a in zip(got["pre"], got["attn"], strict=True)]
    return got


def hf_loss(model: Model, ids: torch.Tensor, mask: torch.Tensor,
            module: torch.nn.Module | None = None, hook: Callable | None = None) -> float:
    """Mean next-token CE over real predictions of the HF model, with an optional raw forward hook."""
    handle = module.register_forward_hook(hook) if module is not None else None
    try:
        with torch.no_grad():
            logits = model.hf(input_ids=ids, attention_mask=mask).logits.double()
    finally:
        if handle is not None:
            handle.remove()
    ok = mask[:, 1:].bool() & mask[:, :-1].bool()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return float(-logp[ok].mean())


@pytest.fixture(params=["llama", "gpt2"])
def decoder(request: pytest.FixtureRequest, tiny_llama: Model, tiny_gpt2: Model) -> Model:
    return {"llama": tiny_llama, "gpt2": tiny_gpt2}[request.param]


def check_angular(res: AngularDistanceResult, states: list[torch.Tensor], mask: torch.Tensor) -> None:
    """Every entry of ``res`` against the angular distance computed here from the raw residual states."""
    n_layers = len(states) - 1
    assert res.distance_last.shape == (n_layers + 1, n_layers + 1)
    real = mask.bool()
    last = [int(mask[b].sum()) - 1 for b in range(mask.shape[0])]  # right padding in the fixture
    for start in range(n_layers + 1):
        for n in range(n_layers + 1):
            if start + n > n_layers:
                assert math.isnan(res.distance_last[start, n]) and math.isnan(res.distance_mean[start, n])
                continue
            a, b = states[start].double(), states[start + n].double()
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
            d = torch.arccos(cos.clamp(-1, 1)) / math.pi
            assert res.distance_mean[start, n] == pytest.approx(float(d[real].mean()), abs=2e-4)
            want_last = sum(float(d[i, p]) for i, p in enumerate(last)) / len(last)
            assert res.distance_last[start, n] == pytest.approx(want_last, abs=2e-4)
    assert (res.distance_last[:, 0] == 0).all()
    assert res.distance_last[0, 1] > 0.01  # a block does move the stream
    col = res.distance_last[:, 1]
    assert res.best_block(1) == int(col[:n_layers].argmin())


def test_angular_distances_match_a_direct_computation(decoder: Model, batch) -> None:
    ids, mask = batch
    h = hf_residuals(decoder, ids, mask)
    check_angular(angular_distances(decoder, batch), [h["pre"][0]] + h["post"], mask)


def test_sublayer_similarity_matches_a_direct_computation(decoder: Model, batch) -> None:
    ids, mask = batch
    h = hf_residuals(decoder, ids, mask)
    res = sublayer_similarity(decoder, batch)
    real = mask.bool()
    for L in range(decoder.dims.n_layers):
        for got, (a, b) in ((res.attn[L], (h["pre"][L], h["mid"][L])), (res.mlp[L], (h["mid"][L], h["post"][L]))):
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
            assert float(got) == pytest.approx(float(cos[real].mean()), abs=1e-4)
    assert (res.attn < 0.999).all() and (res.mlp < 0.999).all()


def test_padding_is_excluded(tiny_llama: Model, batch) -> None:
    ids, mask = batch
    other = ids.clone()
    other[~mask.bool()] = 17  # different tokens at the padding positions: no metric may move
    for fn in (angular_distances, sublayer_similarity):
        a, b = fn(tiny_llama, (ids, mask)), fn(tiny_llama, (other, mask))
        for name in a.AXES:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True, rtol=0, atol=1e-6)
    a, b = (skip_layer_loss(tiny_llama, (x, mask), components=["mlp_out"], progress=False) for x in (ids, other))
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=1e-5)
    # ... while a real token does move them
    moved = ids.clone()
    moved[1, 2] = 17 if ids[1, 2] != 17 else 18
    assert not torch.allclose(angular_distances(tiny_llama, (moved, mask)).distance_mean,
                              angular_distances(tiny_llama, (ids, mask)).distance_mean, equal_nan=True)


def test_skip_mlp_and_block_match_raw_torch_hooks(decoder: Model, batch) -> None:
    ids, mask = batch
    res = skip_layer_loss(decoder, batch, progress=False)
    assert res.components == (BLOCK, "attn_out", "mlp_out") == ("attn_out+mlp_out", "attn_out", "mlp_out")
    base = hf_loss(decoder, ids, mask)
    assert res.baseline_loss == pytest.approx(base, abs=1e-4)
    for L, layer in enumerate(_layers(decoder)):
        zero_mlp = hf_loss(decoder, ids, mask, layer.mlp, lambda m, a, o: torch.zeros_like(o))
        assert float(res.loss[2, L]) == pytest.approx(zero_mlp, abs=1e-4)
        assert float(res.delta[2, L]) == pytest.approx(zero_mlp - base, abs=1e-4)
        # the whole block skipped: the layer hands its input on unchanged
        skip = hf_loss(decoder, ids, mask, layer, lambda m, a, o: a[0])
        assert float(res.loss[0, L]) == pytest.approx(skip, abs=1e-4)
        assert abs(skip - base) > 1e-3


def test_skip_attention_matches_a_raw_torch_hook(tiny_llama: Model, batch) -> None:
    ids, mask = batch
    res = skip_layer_loss(tiny_llama, batch, components="attn_out", progress=False)
    for L, layer in enumerate(_layers(tiny_llama)):
        want = hf_loss(tiny_llama, ids, mask, layer.self_attn,
                       lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]))
        assert float(res.loss[0, L]) == pytest.approx(want, abs=1e-4)


def test_skip_components_and_layers_in_the_one_vocabulary(tiny_llama: Model, batch) -> None:
    full = skip_layer_loss(tiny_llama, batch, progress=False)
    some = skip_layer_loss(tiny_llama, batch, components=["mlp_out+attn_out", "mlp_out"], layers=[-1],
                           progress=False)
    assert some.components == ("attn_out+mlp_out", "mlp_out") and some.layers == (1,)
    assert some.labels()["layer"] == [1] and full.layers == () and full.labels()["layer"] == [0, 1]
    torch.testing.assert_close(some.loss, full.loss[[0, 2]][:, [1]], rtol=0, atol=1e-6)
    assert some.to_frame().to_dict("records")[0]["layer"] == 1
    assert skip_layer_loss(tiny_llama, batch, layers=-1, components="attn_out", progress=False).layers == (1,)
    with pytest.raises(UnknownHookError, match=r"unknown component 'attn'. Did you mean .*attn_out"):
        skip_layer_loss(tiny_llama, batch, components=["attn"])
    with pytest.raises(UnknownHookError, match=r"'block'"):
        skip_layer_loss(tiny_llama, batch, components="block")
    with pytest.raises(BadInputError, match=r"bad component to skip 'resid_post'; valid: attn_out, mlp_out or a whole "
                                            r"block, attn_out\+mlp_out"):
        skip_layer_loss(tiny_llama, batch, components=["resid_post"])
    with pytest.raises(BadInputError, match=r"bad layer 2; valid: -2\.\.1"):
        skip_layer_loss(tiny_llama, batch, layers=[0, 2])
    with pytest.raises(BadInputError, match=r"bad components \[\]"):
        skip_layer_loss(tiny_llama, batch, components=[])


def hf_neox_residuals(model: Model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Each GPT-NeoX layer's input, its attention output and its output, via raw torch hooks."""
    got: dict[str, list[torch.Tensor]] = {"pre": [], "attn": [], "post": []}
    handles = []
    for layer in _layers(model):
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, k: got["pre"].append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True))
        handles.append(layer.attention.register_forward_hook(
            lambda m, a, o: got["attn"].append(_first(o).detach().clone())))
        handles.append(layer.register_forward_hook(lambda m, a, o: got["post"].append(_first(o).detach().clone())))
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return got


def test_parallel_residual_has_no_sublayer_similarity(tiny_neox_parallel: Model, tiny_neox_sequential: Model,
                                                      batch) -> None:
    """Under GPT-NeoX's parallel residual the attention and the MLP both read the layer's input and add to it
    together: there is no residual between them (no resid_mid), so sublayer similarity is refused, while the
    whole-block metrics still hold their values (checked against raw hooks here)."""
    model = tiny_neox_parallel
    assert not any("hook_resid_mid" in n for n in model.hook_names())
    with pytest.raises(BadInputError, match=r"'tiny-neox_parallel' \(gpt_neox\) has no resid_mid.*parallel residual.*use angular_distances"):
        sublayer_similarity(model, batch)
    ids, mask = batch
    h = hf_neox_residuals(model, ids, mask)
    # what the refusal rests on: the layer input plus the attention output is not what the MLP read, and the
    # layer's output is input + attention + MLP(input) (the MLP reads the input, not input + attention)
    mlp_in: list[torch.Tensor] = []
    handle = _layers(model)[0].mlp.register_forward_pre_hook(lambda m, a: mlp_in.append(a[0].detach().clone()))
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    ln2 = _layers(model)[0].post_attention_layernorm
    with torch.no_grad():
        torch.testing.assert_close(mlp_in[0], ln2(h["pre"][0]), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(mlp_in[0], ln2(h["pre"][0] + h["attn"][0]), atol=1e-3)
    check_angular(angular_distances(model, batch), [h["pre"][0]] + h["post"], mask)
    res = skip_layer_loss(model, batch, components=BLOCK, progress=False)
    for L, layer in enumerate(_layers(model)):
        assert float(res.loss[0, L]) == pytest.approx(hf_loss(model, ids, mask, layer, lambda m, a, o: a[0]), abs=1e-4)
    assert sublayer_similarity(tiny_neox_sequential, batch).attn.shape == (model.dims.n_layers,)  # sequential: defined


def test_trace_input_and_errors(tiny_llama: Model, tiny_gpt2: Model, tiny_bert: Model, batch) -> None:
    trace = tiny_llama.run(batch, capture=["resid_pre", "resid_mid", "resid_post"]).trace
    torch.testing.assert_close(angular_distances(tiny_llama, trace).distance_mean,
                               angular_distances(tiny_llama, batch).distance_mean, equal_nan=True)
    torch.testing.assert_close(sublayer_similarity(tiny_llama, trace).attn, sublayer_similarity(tiny_llama, batch).attn)
    torch.testing.assert_close(skip_layer_loss(tiny_llama, trace, progress=False).loss,
                               skip_layer_loss(tiny_llama, batch, progress=False).loss)
    only_post = tiny_llama.run(batch, capture="resid_post").trace  # lacks resid_pre.0: run again on its tokens
    torch.testing.assert_close(angular_distances(tiny_llama, only_post).distance_last,
                               angular_distances(tiny_llama, batch).distance_last, equal_nan=True)
    with pytest.raises(BadInputError, match="not a causal language model"):
        skip_layer_loss(tiny_bert, batch)
    with pytest.raises(BadInputError, match="two or more real tokens"):
        skip_layer_loss(tiny_llama, "w1")
    for fn in (angular_distances, sublayer_similarity, skip_layer_loss):
        with pytest.raises(ModelMismatchError, match="captured from"):
            fn(tiny_gpt2, trace)


def test_results_surface_and_round_trip(tiny_llama: Model, batch, tmp_path: Path) -> None:
    results = [angular_distances(tiny_llama, batch), sublayer_similarity(tiny_llama, batch),
               skip_layer_loss(tiny_llama, batch, components=("attn_out", "mlp_out"), progress=False)]
    for i, res in enumerate(results):
        back = type(res).load(res.save(tmp_path / str(i)))
        for name in res.AXES:
            torch.testing.assert_close(getattr(back, name), getattr(res, name), equal_nan=True, rtol=0, atol=0)
        assert repr(back) == repr(res) and "tensor(" not in repr(res)
        d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
        assert all(set(d["arrays"][n]) == {"axes", "labels", "values"} for n in res.AXES)
        for view in res.VIEWS:
            assert res.plot(view).data
        with pytest.raises(UnknownNameError, match=res.VIEWS[0]):
            res.plot("nope")
    ang, sub, skip = results
    assert ang.to_dict()["arrays"]["distance_last"]["values"][-1][-1] is None and ang.tokens == sub.tokens
    assert skip.to_dict()["arrays"]["delta"]["labels"]["component"] == ["attn_out", "mlp_out"]
    # tables: one row per defined cell, with the values
    df = ang.to_frame()
    assert len(df) == (ang.n_layers + 1) * (ang.n_layers + 2) // 2
    r = df[(df.layer == 0) & (df.n == 1)].iloc[0]
    assert r.distance_last == pytest.approx(float(ang.distance_last[0, 1]))
    assert r.distance_mean == pytest.approx(float(ang.distance_mean[0, 1]))
    assert sub.to_frame().to_dict("records")[1] == {"layer": 1, "attn": float(sub.attn[1]), "mlp": float(sub.mlp[1])}
    rec = skip.to_frame().to_dict("records")[3]
    assert rec == {"component": "mlp_out", "layer": 1, "loss": float(skip.loss[1, 1]), "delta": float(skip.delta[1, 1])}
    best = ang.plot("best_block").data[0]
    assert list(best.y) == pytest.approx([float(ang.distance_last[ang.best_block(n), n]) for n in (1, 2)])
    assert skip.headline()["max_at"] in {f"{c}.{L}" for c in skip.components for L in (0, 1)}
    with pytest.raises(BadInputError, match="distance_mean has shape"):
        AngularDistanceResult(distance_last=ang.distance_last, distance_mean=ang.distance_mean[:2])
    with pytest.raises(BadInputError, match="mlp has shape"):
        SublayerSimilarityResult(attn=sub.attn, mlp=sub.mlp[:1])
    with pytest.raises(BadInputError, match="loss has shape"):
        SkipLossResult(loss=skip.loss, baseline_loss=1.0, components=("attn_out",))
    with pytest.raises(BadInputError, match="a SkipLossResult"):
        SkipLossResult.load(tmp_path / "0")
    with pytest.raises(BadInputError, match=r"bad n 0; valid: 1\.\.2"):
        ang.best_block(0)
    with pytest.raises(BadInputError, match="bad which 'first'"):
        ang.plot("heatmap", which="first")


def test_v01_fixtures_load() -> None:
    """interp 0.1 named the skipped components block / attn / mlp; they load under today's names."""
    check_v01_fixture("AngularDistanceResult")
    check_v01_fixture("SublayerSimilarityResult")
    skip = check_v01_fixture("SkipLossResult", rename={
        "obj.components": ("obj.components", ["attn_out+mlp_out", "attn_out", "mlp_out"])})
    assert skip.labels()["layer"] == [0, 1]


@pytest.mark.slow
def test_smollm2_sanity(smollm2: Model) -> None:
    text = "The capital of France is Paris, and the capital of Italy is Rome."
    ang = angular_distances(smollm2, text)
    n_layers = smollm2.dims.n_layers
    valid = ~torch.isnan(ang.distance_last)
    assert valid.sum() == (n_layers + 1) * (n_layers + 2) // 2
    for d in (ang.distance_last, ang.distance_mean):
        assert (d[valid] >= 0).all() and (d[valid] <= 1).all() and (d[:, 0] == 0).all()
    assert 0 <= ang.best_block(4) <= n_layers - 4
    sub = sublayer_similarity(smollm2, text)
    assert ((sub.attn > -1) & (sub.attn <= 1)).all() and ((sub.mlp > -1) & (sub.mlp <= 1)).all()
    skip = skip_layer_loss(smollm2, text, progress=False)
    assert torch.isfinite(skip.loss).all() and math.isfinite(skip.baseline_loss)
    mid = n_layers // 2
    assert skip.delta[0, 0] > skip.delta[1, mid]  # the first block matters more than a middle attention
