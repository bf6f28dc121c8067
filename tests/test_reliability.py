"""Reliability suite: malformed inputs thrown at the public API must raise a clear exception (a named
type, a message naming the bad value) and leave no half-written file behind.

Property tests (hypothesis) draw the malformed inputs; the expectations are written by hand from the
documented contract (which error type, which words in the message), never read back from the code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from _trace_helpers import char_llama
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from interp.errors import CorruptStoreError
from interp.hooks import Ablate, Add, Patch
from interp.sites import Site, UnknownHookError
from interp.trace import ModelMismatchError, StoreMismatchError, TraceStore, capture
from interp.trace.layout import store_tmp_files

FAST = settings(max_examples=int(os.environ.get("INTERP_HYPOTHESIS_EXAMPLES", "30")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
HOOK = "blocks.0.hook_resid_post"
TEXTS = ["the cat sat", "on the mat", "hello there", "x"]


@pytest.fixture(scope="module")
def model():
    return char_llama()


@pytest.fixture(scope="module")
def other_model():
    return char_llama(seed=1)


@pytest.fixture(scope="module")
def store_dir(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rel") / "st"
    capture(model, TEXTS, hooks=[HOOK, "blocks.0.attn.hook_pattern"], out=d, batch_size=2, progress=False)
    return d


def files_under(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


# -- bad prompts ------------------------------------------------------------------------------------
not_str = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.binary(max_size=4),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@FAST
@given(good=st.lists(st.sampled_from(TEXTS), max_size=3), bad=not_str, at=st.integers(0, 3))
def test_non_string_prompt_in_a_list_is_a_type_error_naming_it(model, tmp_path: Path, good, bad, at) -> None:
    at = min(at, len(good))
    prompts = [*good[:at], bad, *good[at:]]
    with pytest.raises(TypeError, match=f"input {at} is a {type(bad).__name__}, not a str"):
        model.run(prompts)
    out = tmp_path / f"st-{abs(hash(repr(prompts)))}"
    with pytest.raises(TypeError, match=f"sequence {at} is a {type(bad).__name__}, not a str"):
        capture(model, prompts, hooks=HOOK, out=out, progress=False)
    assert not out.exists()  # nothing written for a rejected dataset


@FAST
@given(bad=st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.dictionaries(st.text(), st.text())))
def test_non_text_input_is_a_type_error(model, bad) -> None:
    with pytest.raises(TypeError, match="inputs must be a str, a list of str"):
        model.run(bad)


@FAST
@given(blank=st.text(alphabet=" \t\n", max_size=5), at=st.integers(0, 2))
def test_empty_or_blank_prompts_are_value_errors(model, tmp_path: Path, blank: str, at: int) -> None:
    prompts = [*TEXTS[:at], blank, *TEXTS[at:2]]
    if blank == "":
        with pytest.raises(ValueError, match=f"input {at} is an empty string"):
            model.run(prompts)
    out = tmp_path / f"st-{abs(hash(repr(prompts)))}"
    with pytest.raises(ValueError, match=f"sequence {at} is empty or blank"):
        capture(model, prompts, hooks=HOOK, out=out, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="no input: got an empty list"):
        model.run([])
    with pytest.raises(ValueError, match="the dataset is empty"):
        capture(model, [], hooks=HOOK, out=out, progress=False)


@FAST
@given(extra=st.integers(1, 300))
def test_prompt_longer_than_the_context_is_a_value_error(model, extra: int) -> None:
    n_ctx = model.dims.n_ctx
    with pytest.raises(ValueError, match=f"sequence length {n_ctx + extra} exceeds the model's context of {n_ctx}"):
        model.run("a" * (n_ctx + extra))
    # truncation is the documented way out
    assert model.run("a" * (n_ctx + extra), max_tokens=n_ctx).logits.shape[1] == n_ctx


# -- bad interventions ------------------------------------------------------------------------------
@FAST
@given(value=st.sampled_from([float("nan"), float("inf"), float("-inf")]), pos=st.integers(0, 2),
       dim=st.integers(0, 63))
def test_nan_or_inf_in_a_patch_or_steering_vector_is_rejected(model, value: float, pos: int, dim: int) -> None:
    src = torch.zeros(1, 3, 64)
    src[0, pos, dim] = value
    with pytest.raises(ValueError, match=f"patch source for {HOOK} contains NaN or inf"):
        Patch(HOOK, source=src)
    vec = torch.zeros(64)
    vec[dim] = value
    with pytest.raises(ValueError, match=f"steering vector for {HOOK} contains NaN or inf"):
        Add(HOOK, vec)


def valid_spellings(model) -> set[str]:
    """Every string that names hook points of ``model``, written out from the documented vocabulary."""
    n = model.dims.n_layers
    out: set[str] = set()
    for s in model.sites():
        out |= {s.name, s.short}
        if s.layer is not None:
            out |= {s.component.short, f"{s.component.short}.{s.layer - n}"}
        else:
            out.add(s.component.value)
    for path, _ in model.hf.named_modules():  # any submodule: hf:<path>, its output or its input
        out |= {f"hf:{path}", f"hf:{path}:output", f"hf:{path}:input"}
    return out


GUIDANCE = ("resid_post", "hook_names()", "named_modules()", "valid:", "hf:<", "alone")  # how each error says what is valid


@FAST
@given(name=st.text(max_size=30))
def test_wrong_hook_names_raise_unknown_hook_error(model, name: str) -> None:
    assume(name not in valid_spellings(model) and "*" not in name and "?" not in name and "[" not in name)
    with pytest.raises(UnknownHookError) as err:
        model.run("abc", capture=[name])
    msg = str(err.value)
    try:
        canonical = Site.parse(name).name
    except UnknownHookError:
        canonical = name
    assert repr(name) in msg or repr(canonical) in msg, msg  # names the bad value...
    assert any(g in msg for g in GUIDANCE), msg  # ...and what is valid
    with pytest.raises(UnknownHookError):  # the store writer parses names the same way, before writing anything
        capture(model, ["abc"], hooks=[name], out=f"/nonexistent-{abs(hash(name))}", progress=False)


@FAST
@given(layer=st.integers(2, 10_000))
def test_hook_of_a_layer_the_model_lacks(model, layer: int) -> None:
    with pytest.raises(UnknownHookError, match=f"no hook 'blocks.{layer}.hook_resid_post'"):
        model.run("abc", capture=[f"blocks.{layer}.hook_resid_post"])


@FAST
@given(dtype=st.sampled_from([torch.int8, torch.int64, torch.bool, torch.complex64, "int32", "float99", "cuda"]))
def test_mismatched_dtypes_are_value_errors(model, store_dir: Path, tmp_path: Path, dtype) -> None:
    out = tmp_path / f"st-{dtype}"
    with pytest.raises(ValueError, match="dtype"):
        capture(model, TEXTS, hooks=HOOK, out=out, dtype=dtype, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="dtype"):
        next(TraceStore(store_dir).iter_tokens(HOOK, dtype=dtype))


def test_trace_from_another_model(model, other_model, store_dir: Path, tmp_path: Path) -> None:
    longer = model.run("abcdef", capture=[HOOK]).trace
    with pytest.raises(ValueError, match=r"patch source .* has shape \(1, 6, 64\) but the activation has \(1, 3, 64\)"):
        model.run("abc", interventions=[Patch(HOOK, source=longer)])
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        TraceStore(store_dir).check_model(other_model)
    copy = tmp_path / "copy"
    shutil.copytree(store_dir, copy)
    before = {f: (copy / f).read_bytes() for f in files_under(copy) if (copy / f).is_file()}
    with pytest.raises(StoreMismatchError, match="different model"):
        capture(other_model, TEXTS, hooks=[HOOK, "blocks.0.attn.hook_pattern"], out=copy, batch_size=2, progress=False)
    assert {f: (copy / f).read_bytes() for f in files_under(copy) if (copy / f).is_file()} == before


def test_same_shape_trace_from_another_model_is_refused(model, other_model) -> None:
    foreign = other_model.run("abc", capture=[HOOK]).trace
    with pytest.raises(ModelMismatchError, match="captured from"):
        model.run("abc", interventions=[Patch(HOOK, source=foreign)])
    with pytest.raises(ModelMismatchError), model.hooks(interventions=[Ablate(HOOK, "mean", reference=foreign)]):
        pass
    own = model.run("abc", capture=[HOOK]).trace  # the model's own trace still patches
    model.run("abc", interventions=[Patch(HOOK, source=own)])


# -- damaged stores ---------------------------------------------------------------------------------
def store_copy(store_dir: Path, tmp: Path, tag: str) -> Path:
    d = tmp / tag
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(store_dir, d)
    return d


def read_everything(d: Path) -> None:
    s = TraceStore(d)
    s.trace()
    list(s.iter_tokens(HOOK, batch_size=3))


CLEAR = (CorruptStoreError, ValueError, KeyError, IndexError)


@FAST
@given(which=st.sampled_from(["manifest.json", "tokens.safetensors", "meta.parquet", "shards/00000.safetensors",
                              "shards/00001.safetensors"]), frac=st.floats(0.0, 0.999))
def test_truncated_files_are_detected(store_dir: Path, tmp_path: Path, which: str, frac: float) -> None:
    d = store_copy(store_dir, tmp_path, "trunc")
    p = d / which
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(CLEAR) as err:
        read_everything(d)
    event(f"{which}: {type(err.value).__name__}")
    assert which.split("/")[-1] in str(err.value) or "manifest.json" in str(err.value)


def test_shard_with_flipped_bytes_fails_sha256(store_dir: Path, tmp_path: Path) -> None:
    d = store_copy(store_dir, tmp_path, "flip")
    p = d / "shards/00001.safetensors"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    p.write_bytes(bytes(raw))
    TraceStore(d).trace()  # the size check alone cannot see it...
    with pytest.raises(CorruptStoreError, match=r"00001\.safetensors fails its sha256 check"):
        TraceStore(d, verify="sha256").verify()


json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                                    st.text(max_size=8)),
                          lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                          max_leaves=6)


@FAST
@given(data=st.data())
def test_hand_edited_manifest_is_refused_or_read_consistently(store_dir: Path, tmp_path: Path, data) -> None:
    d = store_copy(store_dir, tmp_path, "edit")
    man = json.loads((d / "manifest.json").read_text())
    paths: list[tuple] = [(k,) for k in man] + [("shards", i, k) for i in range(len(man["shards"]))
                                                 for k in man["shards"][i]] + [("hooks", h) for h in man["hooks"]]
    path = data.draw(st.sampled_from(paths), label="field")
    target = man
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans(), label="delete"):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(json_value, label="value")
    (d / "manifest.json").write_text(json.dumps(man))
    try:
        read_everything(d)
        event("read")
    except CLEAR as e:
        event(f"refused: {type(e).__name__}")
        assert str(e), "an error without a message"
    # anything else (TypeError, AttributeError, RuntimeError...) fails the test


# -- no half-written files --------------------------------------------------------------------------
def test_capture_that_fails_mid_way_leaves_only_whole_files(model, tmp_path: Path, monkeypatch) -> None:
    import importlib

    writer = importlib.import_module("interp.trace.writer")
    real, calls = writer.forward, []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory in the second batch")
        return real(*a, **kw)

    monkeypatch.setattr(writer, "forward", failing)
    out = tmp_path / "st"
    with pytest.raises(MemoryError, match="second batch"):
        capture(model, TEXTS, hooks=HOOK, out=out, batch_size=2, progress=False)
    assert store_tmp_files(out) == []
    s = TraceStore(out, verify="sha256")
    assert [i.index for i in s.shards()] == [0] and not s.complete
    s.verify()
    assert files_under(out) == ["manifest.json", "meta.parquet", "shards", "shards/00000.safetensors",
                                "tokens.safetensors"]


def test_a_write_failing_at_the_rename_leaves_no_file(model, tmp_path: Path, monkeypatch) -> None:
    import interp.trace.layout as layout

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    out = tmp_path / "st"
    monkeypatch.setattr(layout.os, "replace", disk_full)
    with pytest.raises(OSError, match=r"(?i)no space left"):
        capture(model, TEXTS, hooks=HOOK, out=out, batch_size=2, progress=False)
    monkeypatch.undo()
    assert store_tmp_files(out) == [] and not (out / "manifest.json").exists()
    assert [f for f in files_under(out) if f != "shards"] == []
    # and the next capture at the same path works
    assert capture(model, TEXTS, hooks=HOOK, out=out, batch_size=2, progress=False).complete
    assert os.listdir(out / "shards") == ["00000.safetensors", "00001.safetensors"]


@FAST
@given(dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64]))
def test_patch_source_of_a_non_float_dtype_is_a_type_error(model, dtype) -> None:
    with pytest.raises(TypeError, match=f"patch source for {HOOK} has dtype {dtype}"):
        Patch(HOOK, source=torch.zeros(1, 3, 64, dtype=dtype))
    # a float source of another precision is cast to the activation's dtype (documented behaviour)
    src = torch.randn(1, 3, 64, dtype=torch.float64)
    out = model.run("abc", capture=[HOOK], interventions=[Patch(HOOK, source=src)]).trace[HOOK]
    torch.testing.assert_close(out, src.float())


@FAST
@given(bad=st.one_of(st.just([]), st.lists(not_str, min_size=1, max_size=2), st.just(["ok", "  "]), st.integers()),
       url_kind=st.sampled_from(["dir", "memory"]))
def test_distributed_capture_rejects_bad_datasets_before_writing(model, tmp_path: Path, bad, url_kind: str) -> None:
    from interp import distributed
    from interp.distributed import StoreLocation

    url = str(tmp_path / f"d-{abs(hash(repr(bad)))}") if url_kind == "dir" else f"memory://rel-{abs(hash(repr(bad)))}"
    with pytest.raises((TypeError, ValueError)) as err:
        distributed.capture(model, bad, hooks=HOOK, out=url, backend="local", progress=False)
    assert str(err.value)
    assert StoreLocation(url).listdir() == []
