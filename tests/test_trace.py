"""In-memory :class:`Trace`: indexing, stacking, conversion, selection, manifest checks, save/load."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from _trace_helpers import char_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interp
from interp.errors import BadInputError
from interp.sites import Component, Site, UnknownHookError
from interp.trace import SCHEMA_VERSION, Manifest, ModelMismatchError, Trace, TraceStore

TEXTS = ["the cat sat on the mat", "hello", "a b c d e f"]
HOOKS = ["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z",
         "blocks.0.mlp.hook_post", "logits"]


@pytest.fixture(scope="module")
def model():
    return char_llama(seed=0)


@pytest.fixture(scope="module")
def trace(model) -> Trace:
    return model.run(TEXTS, capture=HOOKS).trace


def lengths(tr: Trace) -> list[int]:
    return [int(n) for n in tr.attention_mask.sum(1)]


# -- indexing ----------------------------------------------------------------------------------------------
def test_index_by_name_and_site(trace):
    t = trace["blocks.1.hook_resid_post"]
    assert t.shape == (3, 22, 64)
    assert trace[Site(Component.RESID_POST, 1)] is t
    assert "blocks.1.hook_resid_post" in trace and Site(Component.RESID_POST, 0) in trace
    assert "blocks.0.hook_resid_pre" not in trace
    assert sorted(trace.names) == sorted(["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern", "logits",
                                          "blocks.0.mlp.hook_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_z"])


def test_unknown_name_lists_close_matches(trace):
    with pytest.raises(KeyError, match=r"blocks\.1\.hook_resid_post"):
        trace["blocks.1.hook_resid_pst"]


def test_index_by_any_single_site_spelling(trace):
    t = trace["blocks.1.hook_resid_post"]
    assert trace["resid_post.1"] is t and trace[("resid_post", 1)] is t
    assert trace["z.1"] is trace["blocks.1.attn.hook_z"] and trace["pattern.0"] is trace["blocks.0.attn.hook_pattern"]
    assert "resid_post.0" in trace and "resid_pre.0" not in trace
    with pytest.raises(KeyError, match=r"resid_post\.7|blocks\.7\.hook_resid_post"):
        trace["resid_post.7"]


def test_get_by_layer_positions_heads(trace):
    z = trace["blocks.1.attn.hook_z"]  # [batch, pos, head, d_head]
    assert z.shape == (3, 22, 4, 16)
    lens = lengths(trace)  # 22, 5, 11: a right-padded batch
    assert torch.equal(trace.get("resid_post", layer=1), trace["blocks.1.hook_resid_post"])
    assert torch.equal(trace.get(Component.RESID_POST, layer=0), trace["blocks.0.hook_resid_post"])
    assert torch.equal(trace.get("blocks.0.hook_resid_post"), trace["blocks.0.hook_resid_post"])
    assert torch.equal(trace.get("resid_post.0"), trace["blocks.0.hook_resid_post"])
    # an int drops the position axis; heads index the head axis
    assert torch.equal(trace.get("z", layer=1, heads=2), z[:, :, 2])
    assert torch.equal(trace.get("z", layer=1, positions=3, heads=1), z[:, 3, 1])
    # two lists index their own axes (no zipping together)
    got = trace.get("z", layer=1, positions=[0, 2, 4], heads=[1, 3])
    assert torch.equal(got, z[:, [0, 2, 4]][:, :, [1, 3]])
    assert got.shape == (3, 3, 2, 16)
    assert torch.equal(trace.get("z", layer=1, positions=slice(1, 4)), z[:, 1:4])
    # negative positions count from each sequence's last real token
    want = torch.stack([z[i, n - 2] for i, n in enumerate(lens)])
    assert torch.equal(trace.get("z", layer=1, positions=-2), want)
    # the pattern's position is the query position
    pat = trace["blocks.0.attn.hook_pattern"]
    assert torch.equal(trace.get("pattern", layer=0, positions=4, heads=[0, 2]), pat[:, [0, 2], 4])
    last_q = torch.stack([pat[i, :, n - 1] for i, n in enumerate(lens)])
    assert torch.equal(trace.get("pattern", layer=0, positions=-1), last_q)
    with pytest.raises(ValueError, match="no head axis"):
        trace.get("resid_post", layer=0, heads=0)
    with pytest.raises(BadInputError, match=r"position 7 is outside .*5"):  # "hello" has 5 real tokens
        trace.get("resid_post", layer=0, positions=7)


def test_get_last_real_token_of_each_row_of_a_padded_batch(model, trace):
    """``positions=-1`` is each sequence's last real token, not the last padded column: compared with each text
    run alone (no padding at all)."""
    got = trace.get("resid_post", layer=1, positions=-1)
    assert got.shape == (3, 64)
    for i, text in enumerate(TEXTS):
        alone = model.run(text, capture="resid_post.1").trace["blocks.1.hook_resid_post"][0, -1]
        torch.testing.assert_close(got[i], alone, atol=1e-5, rtol=1e-5)
    padded_last = trace["blocks.1.hook_resid_post"][:, -1]
    assert not torch.allclose(got[1], padded_last[1])  # "hello" ends long before the padded length


def test_stack(trace):
    s = trace.stack("resid_post")
    assert s.shape == (2, 3, 22, 64)
    assert torch.equal(s[0], trace["blocks.0.hook_resid_post"])
    assert torch.equal(s[1], trace["blocks.1.hook_resid_post"])
    assert torch.equal(trace.stack(Component.RESID_POST), s)
    with pytest.raises(KeyError, match="resid_pre"):
        trace.stack("resid_pre")
    with pytest.raises(UnknownHookError, match="written 'resid_post'"):  # no TransformerLens suffixes
        trace.stack("hook_resid_post")


HF_SITES = {"hf:model.layers.0.mlp.act_fn": ("model.layers.0.mlp.act_fn", "output"),
            "hf:model.layers.1.mlp.down_proj:input": ("model.layers.1.mlp.down_proj", "input"),
            "hf:model.norm": ("model.norm", "output")}


def raw_hooks(model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The oracle: plain PyTorch forward (pre-)hooks on the Hugging Face modules, no interp code."""
    got, handles = {}, []
    for name, (path, io) in HF_SITES.items():
        module = model.hf.get_submodule(path)
        if io == "output":
            handles.append(module.register_forward_hook(
                lambda mod, args, out, name=name: got.__setitem__(name, out.detach().clone())))
        else:
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: got.__setitem__(name, args[0].detach().clone())))
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return got


def test_hf_module_sites_equal_raw_pytorch_hooks(model, tmp_path):
    ids, mask = model.tokenize(TEXTS)
    tr = model.run((ids, mask), capture=[*HF_SITES, "resid_post.1"]).trace
    want = raw_hooks(model, ids, mask)
    for name in HF_SITES:
        assert torch.equal(tr[name], want[name]), name
    assert sorted(tr.names) == sorted(["blocks.1.hook_resid_post", *HF_SITES])
    tr.save(tmp_path / "t")  # token rows on disk, like any [batch, pos, ...] hook
    back = Trace.load(tmp_path / "t")
    for name in HF_SITES:
        for i, n in enumerate(lengths(tr)):
            assert torch.equal(back[name][i, :n], want[name][i, :n]), name


@pytest.mark.slow
def test_smollm2_hf_module_site_equals_raw_pytorch_hook(smollm2):
    ids, mask = smollm2.tokenize(["The capital of France is", "Hi"])
    tr = smollm2.run((ids, mask), capture=["hf:model.layers.3.mlp.act_fn", "hf:model.layers.3.mlp.down_proj:input"]
                     ).trace
    got: dict[str, torch.Tensor] = {}
    mlp = smollm2.hf.get_submodule("model.layers.3.mlp")
    h1 = mlp.act_fn.register_forward_hook(lambda m, a, o: got.__setitem__("act", o.detach().clone()))
    h2 = mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("down_in", a[0].detach().clone()))
    try:
        with torch.no_grad():
            smollm2.hf(input_ids=ids, attention_mask=mask)
    finally:
        h1.remove()
        h2.remove()
    assert torch.equal(tr["hf:model.layers.3.mlp.act_fn"], got["act"])
    assert torch.equal(tr["hf:model.layers.3.mlp.down_proj:input"], got["down_in"])
    assert got["act"].shape == (2, ids.shape[1], 1536) and ids.shape[1] == 5


# -- conversion and selection --------------------------------------------------------------------------------
def test_to_dtype(trace):
    half = trace.to(torch.float16)
    assert all(t.dtype == torch.float16 for t in half.activations.values())
    assert half.manifest.dtype == "float16"
    assert half.input_ids.dtype == trace.input_ids.dtype and torch.equal(half.input_ids, trace.input_ids)
    assert torch.equal(half["logits"], trace["logits"].half())
    # the original is untouched
    assert trace["logits"].dtype == torch.float32 and trace.manifest.dtype == "float32"


def test_to_dtype_by_name(trace):
    assert trace.to("bfloat16")["logits"].dtype == torch.bfloat16


def test_cpu_and_device(trace):
    c = trace.cpu()
    assert all(t.device.type == "cpu" for t in c.activations.values())
    assert torch.equal(c["logits"], trace["logits"])
    if torch.cuda.is_available():
        g = trace.to("cuda")
        assert g["logits"].is_cuda and g.input_ids.is_cuda
        assert torch.equal(g.cpu()["logits"], trace["logits"])


@pytest.mark.parametrize("index, expect", [(1, [1]), (-1, [2]), ([2, 0], [2, 0]), (slice(0, 2), [0, 1]),
                                           (range(1, 3), [1, 2])])
def test_select(trace, index, expect):
    sub = trace.select(index)
    assert sub.n_seqs == len(expect)
    assert torch.equal(sub.input_ids, trace.input_ids[expect])
    assert torch.equal(sub.attention_mask, trace.attention_mask[expect])
    assert sub.tokens == tuple(trace.tokens[i] for i in expect)
    assert sub.metadata == tuple(trace.metadata[i] for i in expect)
    for name in trace.names:
        assert torch.equal(sub[name], trace[name][expect]), name
    assert sub.manifest.hooks["logits"] == [len(expect), 22, 128]


def test_select_rejects_bad_indices(trace):
    with pytest.raises(IndexError):
        trace.select(3)
    with pytest.raises(IndexError):
        trace.select([0, 7])
    with pytest.raises(TypeError):
        trace.select([True, False, True])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.one_of(st.integers(-6, 6), st.lists(st.integers(-6, 6), max_size=4)))
def test_select_any_index(trace, index):
    want = [index] if isinstance(index, int) else index
    if all(-3 <= i < 3 for i in want):
        sub = trace.select(index)
        assert sub.n_seqs == len(want)
        assert sub.tokens == tuple(trace.tokens[i] for i in want)
        assert sub["logits"].shape[0] == len(want)
        assert torch.equal(sub["logits"], trace["logits"][torch.tensor(want, dtype=torch.long)])
    else:
        with pytest.raises(IndexError, match="out of range"):
            trace.select(index)


# -- manifest ------------------------------------------------------------------------------------------------
def test_manifest_records_model(trace, model):
    m = trace.manifest
    assert m.model_id == "char-llama" and m.model_fingerprint == model.fingerprint
    assert m.schema_version == SCHEMA_VERSION and m.dtype == "float32"
    assert m.hooks["blocks.0.attn.hook_pattern"] == [3, 4, 22, 22]
    trace.check_model(model)  # no error


def test_manifest_check_with_another_model(trace):
    other = char_llama(seed=1, name="char-llama")  # same architecture and name, other weights
    with pytest.raises(ModelMismatchError, match=trace.manifest.model_fingerprint) as e:
        trace.check_model(other)
    assert other.fingerprint in str(e.value)


def test_manifest_dict_round_trip_and_version(trace):
    d = trace.manifest.to_dict()
    assert Manifest.from_dict(d) == trace.manifest
    with pytest.raises(ValueError, match="schema_version 99"):
        Manifest.from_dict({**d, "schema_version": 99})


# -- shape consistency ---------------------------------------------------------------------------------------
def _parts(trace: Trace) -> dict:
    return {"input_ids": trace.input_ids, "attention_mask": trace.attention_mask, "tokens": trace.tokens,
            "activations": dict(trace.activations), "manifest": trace.manifest, "metadata": trace.metadata}


def test_shape_errors(trace):
    p = _parts(trace)
    Trace(**p)  # consistent
    with pytest.raises(ValueError, match="must both be"):
        Trace(**{**p, "attention_mask": p["attention_mask"][:, :5]})
    with pytest.raises(ValueError, match="must both be"):
        Trace(**{**p, "input_ids": p["input_ids"][0], "attention_mask": p["attention_mask"][0]})
    with pytest.raises(ValueError, match="token lists"):
        Trace(**{**p, "tokens": p["tokens"][:2]})
    with pytest.raises(ValueError, match="metadata rows"):
        Trace(**{**p, "metadata": p["metadata"][:1]})
    acts = p["activations"]
    bad = {  # name -> wrong tensor
        "blocks.0.hook_resid_post": acts["blocks.0.hook_resid_post"][:2],  # batch
        "blocks.1.hook_resid_post": acts["blocks.1.hook_resid_post"][:, :7],  # pos
        "blocks.0.attn.hook_pattern": acts["blocks.0.attn.hook_pattern"][..., :7],  # k_pos
        "blocks.1.attn.hook_z": acts["blocks.1.attn.hook_z"][:, :, 0],  # rank
    }
    for name, t in bad.items():
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            Trace(**{**p, "activations": {**acts, name: t}})
    with pytest.raises(ValueError, match="gradient"):
        Trace(**p, grads={"logits": acts["logits"][:1]})


# -- save / load ---------------------------------------------------------------------------------------------
def assert_same_trace(loaded: Trace, trace: Trace) -> None:
    """Equal token ids, mask, tokens, metadata and manifest; activations equal on real tokens, zero on padding."""
    assert torch.equal(loaded.input_ids, trace.input_ids)
    assert torch.equal(loaded.attention_mask, trace.attention_mask)
    assert loaded.tokens == trace.tokens
    assert loaded.metadata == trace.metadata
    assert loaded.names == trace.names
    assert replace(loaded.manifest, hooks={}) == replace(trace.manifest, hooks={})
    assert loaded.manifest.hooks == {n: list(t.shape) for n, t in trace.activations.items()}
    lens = lengths(trace)
    for name in trace.names:
        a, b = loaded[name], trace[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        for i, n in enumerate(lens):
            if name.endswith("hook_pattern"):
                assert torch.equal(a[i, :, :n, :n], b[i, :, :n, :n]), name
            else:
                assert torch.equal(a[i, :n], b[i, :n]), name
                assert not a[i, n:].any(), f"{name}: padding is not zero"


def test_save_load_round_trip(trace, tmp_path):
    trace.save(tmp_path / "t")
    loaded = Trace.load(tmp_path / "t")
    assert_same_trace(loaded, trace)
    st = TraceStore(tmp_path / "t")
    st.verify()
    assert st.n_tokens == sum(lengths(trace)) and st.complete
    saved = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert saved["schema_version"] == SCHEMA_VERSION and saved["interp_version"] == interp.__version__


def test_save_load_some_hooks_half(trace, tmp_path):
    half = trace.to(torch.bfloat16)
    half.save(tmp_path / "h")
    loaded = Trace.load(tmp_path / "h", hooks=["blocks.1.attn.hook_z"])
    assert loaded.names == ["blocks.1.attn.hook_z"] and loaded.manifest.dtype == "bfloat16"
    n = lengths(trace)[1]
    assert torch.equal(loaded["blocks.1.attn.hook_z"][1, :n], half["blocks.1.attn.hook_z"][1, :n])


def test_save_refuses_existing_store(trace, tmp_path):
    trace.save(tmp_path / "t")
    with pytest.raises(FileExistsError):
        trace.save(tmp_path / "t")


def test_save_load_selected_single_sequence(trace, tmp_path):
    one = trace.select([1])  # "hello": padding columns remain in the selected trace
    one.save(tmp_path / "one")
    loaded = Trace.load(tmp_path / "one")
    n = lengths(trace)[1]
    assert loaded.input_ids.shape == (1, n)  # re-cropped to the real length
    assert torch.equal(loaded["logits"][0], trace["logits"][1, :n])
    assert torch.equal(loaded["blocks.0.attn.hook_pattern"][0], trace["blocks.0.attn.hook_pattern"][1, :, :n, :n])


def test_save_rejects_left_padding(model, tmp_path):
    ids, mask = model.tokenize(["hello", "hi"])
    # left-pad by hand: "hi" shifted right
    ids2, mask2 = ids.clone(), mask.clone()
    ids2[1] = torch.roll(ids[1], 3)
    mask2[1] = torch.roll(mask[1], 3)
    tr = model.run((ids2, mask2), capture="blocks.0.hook_resid_post").trace
    with pytest.raises(ValueError, match="right-padded"):
        tr.save(tmp_path / "left")


def test_repr(trace):
    assert "3 seqs" in repr(trace) and "char-llama" in repr(trace)


def test_save_load_keeps_gradients(model, tmp_path):
    res = model.run(TEXTS, capture="blocks.1.hook_resid_post",
                    grads=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                    metric=lambda logits: logits[:, -1, 5].sum())
    tr = res.trace
    assert set(tr.grads) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    tr.save(tmp_path / "g")
    loaded = Trace.load(tmp_path / "g")
    assert set(loaded.grads) == set(tr.grads) and loaded.names == ["blocks.1.hook_resid_post"]
    for name, g in tr.grads.items():
        for i, n in enumerate(lengths(tr)):
            assert torch.equal(loaded.grads[name][i, :n], g[i, :n])
    only = Trace.load(tmp_path / "g", hooks=["blocks.0.hook_resid_post"])  # a gradient-only hook
    assert only.names == [] and list(only.grads) == ["blocks.0.hook_resid_post"]


def test_save_load_without_metadata(trace, tmp_path):
    bare = replace(trace, metadata=())
    bare.save(tmp_path / "b")
    assert Trace.load(tmp_path / "b").metadata == ()


@pytest.mark.slow
def test_smollm2_trace_round_trip(smollm2, tmp_path):
    texts = ["The capital of France is", "Hi", "Über café — naïve"]  # padding, multi-byte tokens
    tr = smollm2.run(texts, capture=["blocks.*.hook_resid_post", "blocks.2.attn.hook_pattern"]).trace
    assert tr.stack("resid_post").shape == (30, 3, tr.input_ids.shape[1], 576)
    tr.save(tmp_path / "t")
    loaded = Trace.load(tmp_path / "t")
    assert_same_trace(loaded, tr)
    loaded.check_model(smollm2)


def test_save_rejects_reserved_metadata_field(trace, tmp_path):
    bad = replace(trace, metadata=tuple({"__tokens__": 1} for _ in range(trace.n_seqs)))
    with pytest.raises(ValueError, match="__tokens__"):
        bad.save(tmp_path / "r")
