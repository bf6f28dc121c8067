"""``TraceStore``: files on disk, contents against direct runs, ``iter_tokens``, corruption, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _trace_helpers import TEXTS, char_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import interp
from interp.errors import BadInputError, SchemaVersionError
from interp.sites import Site, UnknownHookError
from interp.trace import SCHEMA_VERSION, CorruptShardError, Trace, TraceStore, capture

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern",
         "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post", "logits"]
TOKEN_HOOK = "blocks.1.hook_resid_post"
BATCH = 4  # 11 texts -> shards of 4, 4, 3


@pytest.fixture(scope="module")
def model():
    return char_llama(seed=0)


@pytest.fixture(scope="module")
def store_path(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "st"
    capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=BATCH, progress=False)
    return path


@pytest.fixture(scope="module")
def store(store_path) -> TraceStore:
    return TraceStore(store_path)


@pytest.fixture(scope="module")
def direct(model) -> list[Trace]:
    """The oracle: each text run alone (no padding) with the same hooks."""
    return [model.run(t, capture=HOOKS).trace for t in TEXTS]


@pytest.fixture()
def copy(store_path, tmp_path) -> Path:
    """A private copy of the store, to damage."""
    dst = tmp_path / "copy"
    shutil.copytree(store_path, dst)
    return dst


def all_rows(direct: list[Trace], hook: str) -> torch.Tensor:
    return torch.cat([tr[hook][0] for tr in direct])


# -- files ---------------------------------------------------------------------------------------------------
def test_files_and_manifest(store_path, model):
    man = json.loads((store_path / "manifest.json").read_text())
    assert man["kind"] == "interp-trace-store" and man["schema_version"] == SCHEMA_VERSION
    assert man["model_fingerprint"] == model.fingerprint and man["model_id"] == "char-llama"
    assert man["n_seqs"] == len(TEXTS) and man["batch_size"] == BATCH and man["complete"] is True
    assert man["dtype"] == "float32"
    assert man["hooks"]["blocks.1.attn.hook_pattern"] == [4, man["seq_len"], man["seq_len"]]
    assert man["hooks"]["blocks.0.attn.hook_z"] == [4, 16]
    assert man["hooks"]["logits"] == [128]
    assert [s["index"] for s in man["shards"]] == [0, 1, 2]
    assert [(s["start"], s["stop"]) for s in man["shards"]] == [(0, 4), (4, 8), (8, 11)]
    files = sorted(p.name for p in (store_path / "shards").iterdir())
    assert files == ["00000.safetensors", "00001.safetensors", "00002.safetensors"]
    for s in man["shards"]:
        data = (store_path / s["file"]).read_bytes()
        assert s["bytes"] == len(data)
        assert s["sha256"] == hashlib.sha256(data).hexdigest()
    assert not list(store_path.rglob("*.tmp"))


def test_tokens_file_equals_tokenizer(store_path, model):
    ids, mask = model.tokenize(TEXTS, max_tokens=128)
    with safe_open(str(store_path / "tokens.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("input_ids"), ids)
        assert torch.equal(f.get_tensor("attention_mask"), mask)


def test_meta_parquet(store_path, model):
    rows = pq.read_table(store_path / "meta.parquet").to_pylist()
    assert [r["text"] for r in rows] == TEXTS
    ids, _ = model.tokenize(TEXTS, max_tokens=128)
    assert [r["__tokens__"] for r in rows] == model.to_str_tokens(ids)
    assert set(rows[0]) == {"text", "__tokens__"}
    assert TraceStore(store_path).metadata() == rows
    assert TraceStore(store_path).metadata(tokens=False) == [{"text": t} for t in TEXTS]


def test_shard_rows_are_non_padding_tokens(store, direct):
    # shard 1 = sequences 4..7, stored as their real tokens one after another
    info = store.shards()[1]
    raw = store.read_shard(info, [TOKEN_HOOK, "blocks.1.attn.hook_pattern"])
    want = torch.cat([direct[i][TOKEN_HOOK][0] for i in range(4, 8)])
    assert info.n_tokens == want.shape[0]
    torch.testing.assert_close(raw[TOKEN_HOOK], want, atol=1e-5, rtol=1e-5)
    longest = max(direct[i].input_ids.shape[1] for i in range(4, 8))
    assert raw["blocks.1.attn.hook_pattern"].shape == (4, 4, longest, longest)


def test_verify_passes(store_path):
    TraceStore(store_path).verify()
    TraceStore(store_path, verify="sha256").trace()


# -- contents against direct runs ----------------------------------------------------------------------------
def test_contents_equal_direct_runs(store, direct):
    assert store.n_seqs == len(TEXTS) and store.complete
    assert store.n_tokens == sum(tr.input_ids.shape[1] for tr in direct)
    assert sorted(store.hooks) == sorted(HOOKS)
    full = store.trace()
    assert full.n_seqs == len(TEXTS)
    for i, d in enumerate(direct):
        n = d.input_ids.shape[1]
        assert torch.equal(full.input_ids[i, :n], d.input_ids[0])
        assert full.tokens[i][:n] == d.tokens[0]
        assert full.metadata[i] == {"text": TEXTS[i]}
        for h in HOOKS:
            got = full[h][i, :, :n, :n] if h.endswith("pattern") else full[h][i, :n]
            torch.testing.assert_close(got, d[h][0], atol=1e-5, rtol=1e-5, msg=f"seq {i} {h}")
            if not h.endswith("pattern"):
                assert not full[h][i, n:].any(), f"seq {i} {h}: padding is not zero"


def test_trace_subset_matches_full(store):
    full = store.trace()
    sub = store.trace([9, 1, -1], hooks=[TOKEN_HOOK, "blocks.1.attn.hook_pattern"])
    assert sub.names == [TOKEN_HOOK, "blocks.1.attn.hook_pattern"]
    want = [9, 1, 10]
    n = int(full.attention_mask[want].sum(1).max())
    assert sub.input_ids.shape == (3, n)
    assert torch.equal(sub[TOKEN_HOOK], full[TOKEN_HOOK][want, :n])
    pat = full["blocks.1.attn.hook_pattern"][want][..., :n, :n]
    lens = full.attention_mask[want].sum(1)
    for k, m in enumerate(lens.tolist()):
        assert torch.equal(sub["blocks.1.attn.hook_pattern"][k, :, :m, :m], pat[k, :, :m, :m])
    one = store.trace(3, hooks="logits")  # an int and a single name
    assert one.n_seqs == 1 and one.names == ["logits"]
    assert torch.equal(one["logits"][0], full["logits"][3, : one.input_ids.shape[1]])
    assert store.trace(slice(2, 5)).n_seqs == 3


def test_model_check(store, model):
    store.check_model(model)
    from interp.trace import ModelMismatchError

    with pytest.raises(ModelMismatchError):
        store.check_model(char_llama(seed=3))


# -- iter_tokens ---------------------------------------------------------------------------------------------
def test_iter_tokens_unshuffled_is_concatenation(store, direct):
    batches = list(store.iter_tokens(TOKEN_HOOK, batch_size=7))
    rows = torch.cat(batches)
    want = all_rows(direct, TOKEN_HOOK)
    assert rows.shape == want.shape == (store.n_tokens, 64)
    torch.testing.assert_close(rows, want, atol=1e-5, rtol=1e-5)
    sizes = [b.shape[0] for b in batches]
    assert sizes[:-1] == [7] * (len(sizes) - 1) and 0 < sizes[-1] <= 7
    assert sum(sizes) == store.n_tokens


def test_iter_tokens_drop_last_and_dtype(store):
    n = store.n_tokens
    batches = list(store.iter_tokens(TOKEN_HOOK, batch_size=10, drop_last=True, dtype=torch.float16))
    assert [b.shape[0] for b in batches] == [10] * (n // 10)
    assert all(b.dtype == torch.float16 for b in batches)
    exact = list(store.iter_tokens(TOKEN_HOOK, batch_size=n))
    assert len(exact) == 1 and exact[0].shape[0] == n
    big = list(store.iter_tokens(TOKEN_HOOK, batch_size=n + 1, drop_last=True))
    assert big == []


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    order = np.lexsort(x.numpy().T[::-1])
    return x[torch.as_tensor(order)]


def test_iter_tokens_shuffled_is_permutation(store):
    plain = torch.cat(list(store.iter_tokens(TOKEN_HOOK, batch_size=5)))
    a = list(store.iter_tokens(TOKEN_HOOK, batch_size=5, shuffle=True, seed=1))
    b = list(store.iter_tokens(TOKEN_HOOK, batch_size=5, shuffle=True, seed=1))
    c = torch.cat(list(store.iter_tokens(TOKEN_HOOK, batch_size=5, shuffle=True, seed=2)))
    sa = torch.cat(a)
    assert [x.shape[0] for x in a][:-1] == [5] * (len(a) - 1)
    assert sa.shape == plain.shape
    assert torch.equal(_sort_rows(sa), _sort_rows(plain))  # same multiset of rows
    assert not torch.equal(sa, plain)  # but not in store order
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # deterministic per seed
    assert not torch.equal(sa, c)  # another seed, another order
    assert torch.equal(_sort_rows(c), _sort_rows(plain))


def test_iter_tokens_errors(store):
    with pytest.raises(ValueError, match="batch_size"):
        next(store.iter_tokens(TOKEN_HOOK, batch_size=0))
    with pytest.raises(ValueError, match="per sequence"):
        next(store.iter_tokens("blocks.1.attn.hook_pattern"))
    with pytest.raises(KeyError, match="no hook"):
        next(store.iter_tokens("blocks.0.hook_resid_pre"))


# -- incomplete stores ---------------------------------------------------------------------------------------
def test_incomplete_store(copy):
    man = json.loads((copy / "manifest.json").read_text())
    man["shards"] = man["shards"][:2]
    (copy / "manifest.json").write_text(json.dumps(man))
    st_ = TraceStore(copy)
    assert not st_.complete
    assert st_.n_tokens == int(st_.tokens()[1][:8].sum())
    with pytest.raises(ValueError, match="incomplete"):
        next(st_.iter_tokens(TOKEN_HOOK))
    rows = torch.cat(list(st_.iter_tokens(TOKEN_HOOK, allow_incomplete=True)))
    assert rows.shape[0] == st_.n_tokens
    st_.trace([0, 7])
    with pytest.raises(IndexError, match="not in any finished shard"):
        st_.trace([8])


# -- corruption ----------------------------------------------------------------------------------------------
def test_truncated_shard(copy):
    shard = copy / "shards" / "00001.safetensors"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 100)
    st_ = TraceStore(copy)
    with pytest.raises(CorruptShardError, match=f"{size - 100} bytes.*{size}"):
        st_.trace([5])
    with pytest.raises(CorruptShardError, match="bytes"):
        list(st_.iter_tokens(TOKEN_HOOK))
    with pytest.raises(CorruptShardError):
        st_.verify()
    st_.trace([0, 9])  # the other shards still read


def test_missing_shard(copy):
    (copy / "shards" / "00002.safetensors").unlink()
    with pytest.raises(CorruptShardError, match="missing"):
        TraceStore(copy).trace([10])


def test_flipped_bytes_same_size(copy):
    shard = copy / "shards" / "00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-50:-40] = bytes(255 - b for b in data[-50:-40])  # inside the tensor data, not the header
    shard.write_bytes(bytes(data))
    TraceStore(copy).trace([0])  # the size check cannot see it...
    with pytest.raises(CorruptShardError, match="sha256"):
        TraceStore(copy).verify()
    with pytest.raises(CorruptShardError, match="sha256"):
        TraceStore(copy, verify="sha256").trace([0])
    with pytest.raises(CorruptShardError, match="sha256"):
        list(TraceStore(copy, verify="sha256").iter_tokens(TOKEN_HOOK))
    TraceStore(copy, verify="sha256").trace([5])  # other shards are fine


def test_corrupt_shard_header(copy):
    shard = copy / "shards" / "00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:16] = b"\x00garbage"
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="cannot read shard"):
        TraceStore(copy).trace([0])


@pytest.mark.parametrize("edit, match", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: "[1, 2]", "not an object"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "n_seqs"}), "missing field 'n_seqs'"),
    (lambda m: json.dumps({**m, "batch_size": 0}), "batch_size must be"),
    (lambda m: json.dumps({**m, "batch_size": "four"}), "batch_size must be"),
    (lambda m: json.dumps({**m, "hooks": ["a"]}), "malformed"),
    (lambda m: json.dumps({**m, "hooks": {"blocks.0.hook_nonsense": [3]}}), "unknown hook name"),
    (lambda m: json.dumps({**m, "shards": [{"index": 0}]}), "malformed"),
    (lambda m: json.dumps({**m, "shards": m["shards"] + m["shards"][:1]}), "shard indices"),
    (lambda m: json.dumps({**m, "shards": [{**m["shards"][0], "bytes": -1}]}), "shard bytes"),
    (lambda m: json.dumps({**m, "shards": [{**m["shards"][1], "start": 0}]}), "covers sequences"),
    (lambda m: json.dumps({**m, "shards": "00000"}), "malformed"),
])
def test_malformed_manifest(copy, edit, match):
    man = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(edit(man))
    with pytest.raises(ValueError, match=match) as e:
        TraceStore(copy)
    assert "manifest.json" in str(e.value)


def test_newer_schema_version_is_refused_with_upgrade_advice(copy):
    man = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**man, "schema_version": SCHEMA_VERSION + 1,
                                                    "interp_version": "9.0.0"}))
    with pytest.raises(SchemaVersionError, match=f"schema_version {SCHEMA_VERSION + 1}, written by interp 9.0.0.*"
                                                 f"reads version {SCHEMA_VERSION}: upgrade interp"):
        TraceStore(copy)
    with pytest.raises(SchemaVersionError):
        Trace.load(copy)
    for bad in (0, "1", None):  # not a newer schema: a damaged file
        (copy / "manifest.json").write_text(json.dumps({**man, "schema_version": bad}))
        with pytest.raises(BadInputError, match=r"manifest\.json is malformed \(schema_version") as err:
            TraceStore(copy)
        assert not isinstance(err.value, SchemaVersionError)


def test_manifest_records_the_interp_version(store_path, tmp_path):
    man = json.loads((store_path / "manifest.json").read_text())
    assert man["interp_version"] == interp.__version__
    assert TraceStore(store_path).manifest.interp_version == interp.__version__


def test_not_a_store(tmp_path, copy):
    with pytest.raises(FileNotFoundError, match=r"missing manifest\.json"):
        TraceStore(tmp_path / "nowhere")
    man = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**man, "kind": "something-else"}))
    with pytest.raises(ValueError, match="not an interp trace store"):
        TraceStore(copy)
    with pytest.raises(BadInputError, match="bad verify 'md5'; valid: 'size', 'sha256', 'none'"):
        TraceStore(copy, verify="md5")


# -- bad arguments -------------------------------------------------------------------------------------------
def test_trace_bad_arguments(store):
    with pytest.raises(IndexError, match="out of range"):
        store.trace([0, len(TEXTS)])
    with pytest.raises(IndexError, match="out of range"):
        store.trace(-len(TEXTS) - 1)
    with pytest.raises(TypeError, match="ints"):
        store.trace(["0"])
    with pytest.raises(TypeError, match="ints"):
        store.trace([True])
    with pytest.raises(TypeError):
        store.trace("012")
    with pytest.raises(ValueError, match="no sequences"):
        store.trace([])
    with pytest.raises(KeyError, match="no hook"):
        store.trace(hooks=["blocks.5.hook_resid_post"])
    with pytest.raises(KeyError, match="no hook"):
        store.read_shard(store.shards()[0], ["blocks.0.hook_resid_pre"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.none(), st.text(max_size=3),
                            st.booleans()))
def test_iter_tokens_rejects_bad_batch_size(store, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        next(store.iter_tokens(TOKEN_HOOK, batch_size=batch_size))


# every spelling naming a stored hook (written out by hand: full names, short forms, component names, globs)
VALID_SPELLINGS = {*HOOKS, "resid_post.0", "resid_post.1", "pattern.1", "z.0", "mlp_post.1", "resid_post", "pattern",
                   "z", "mlp_post"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hook=st.text(max_size=40))
def test_unknown_hooks_raise_key_error(store, hook):
    if hook in VALID_SPELLINGS or any(c in hook for c in "*?["):
        return
    with pytest.raises(KeyError) as err:  # an UnknownHookError: also a BadInputError naming the hook
        next(store.iter_tokens(hook))
    assert isinstance(err.value, BadInputError) and repr(hook) in str(err.value)
    with pytest.raises(KeyError):
        store.trace([0], hooks=[hook])


def test_hooks_in_every_spelling(store):
    rows = torch.cat(list(store.iter_tokens(TOKEN_HOOK, batch_size=64)))
    for spelling in ("resid_post.1", ("resid_post", 1), Site.parse(TOKEN_HOOK)):
        assert torch.equal(torch.cat(list(store.iter_tokens(spelling, batch_size=64))), rows)
    tr = store.trace([0, 1], hooks="resid_post")  # the component at every stored layer
    assert tr.names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert store.trace([0], hooks="blocks.*.attn.*").names == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern"]
    assert store.trace([0], hooks=["z.0", "logits"]).names == ["blocks.0.attn.hook_z", "logits"]
    with pytest.raises(UnknownHookError, match=r"store has no hook 'resid_pre.0'.*Close matches: .*resid_post\.0"):
        store.trace([0], hooks="resid_pre.0")
    with pytest.raises(BadInputError, match=r"negative layer .* does not record"):
        store.trace([0], hooks="resid_post.-1")
    with pytest.raises(UnknownHookError, match="store has no hook 'mlp_out'"):
        store.trace([0], hooks="mlp_out")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seqs=st.lists(st.integers(min_value=-30, max_value=30), min_size=1, max_size=5))
def test_trace_seq_indices(store, seqs):
    n = len(TEXTS)
    if all(-n <= s < n for s in seqs):
        tr = store.trace(seqs, hooks=["logits"])
        want = [s % n for s in seqs]
        assert tr.n_seqs == len(seqs)
        assert [m["text"] for m in tr.metadata] == [TEXTS[i] for i in want]
    else:
        with pytest.raises(IndexError, match="out of range"):
            store.trace(seqs, hooks=["logits"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(min_value=1, max_value=200), shuffle=st.booleans(), drop_last=st.booleans(),
       seed=st.integers(min_value=0, max_value=2**31))
def test_iter_tokens_sizes(store, batch_size, shuffle, drop_last, seed):
    sizes = [b.shape[0] for b in store.iter_tokens(TOKEN_HOOK, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                                   drop_last=drop_last)]
    n = store.n_tokens
    assert sizes == [batch_size] * (n // batch_size) + ([] if drop_last or n % batch_size == 0 else [n % batch_size])


def test_streamed_shard_is_a_valid_safetensors_file_with_its_sha256(tmp_path: Path) -> None:
    """The shard writer streams header and tensor bytes itself; safetensors must read it back exactly."""
    import hashlib

    from safetensors.torch import load_file

    from interp.trace.layout import stream_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"blocks.0.hook_resid_post": torch.randn(5, 7, generator=g), "ids": torch.arange(9),
               "half": torch.randn(3, 2, generator=g).to(torch.bfloat16), "empty": torch.zeros(0, 4),
               "flags": torch.tensor([True, False, True]), "big": torch.randn(2**22 + 3, generator=g)}
    size, digest = stream_safetensors(tmp_path / "s.safetensors", tensors)
    raw = (tmp_path / "s.safetensors").read_bytes()
    assert size == len(raw) and digest == hashlib.sha256(raw).hexdigest()
    back = load_file(str(tmp_path / "s.safetensors"))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    """Atomic writes make their temp file with the umask's permissions (mkstemp's 0600 would lock out a team)."""
    import os

    from interp.trace.layout import atomic_write_bytes, stream_safetensors

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "m.json", b"{}")
        stream_safetensors(tmp_path / "s.safetensors", {"x": torch.zeros(3)})
    finally:
        os.umask(old)
    for name in ("m.json", "s.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert not list(tmp_path.glob(".*.tmp"))


# -- interp 0.1's files ----------------------------------------------------------------------------------------
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


def summarize(t: torch.Tensor) -> dict:
    """As the fixture README defines it: shape, dtype, NaN-skipping sum (4 decimals), NaN count, first 4 values."""
    t = t.detach().cpu()
    if t.is_floating_point():
        d = t.double()
        nan = torch.isnan(d)
        finite = d[~nan].flatten()
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sum": round(float(finite.sum()), 4),
                "nan_count": int(nan.sum()), "first": [round(float(x), 6) for x in finite[:4].tolist()]}
    flat = t.flatten().long()
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sum": int(flat.sum()),
            "nan_count": 0, "first": [int(x) for x in flat[:4].tolist()]}


def normalize(v: object) -> object:
    return json.loads(json.dumps(v, default=list))


@pytest.mark.parametrize("name", ["Trace", "TraceStore_capture"])
def test_v01_fixture_loads_with_its_values(name: str) -> None:
    """interp 0.1's saved trace and captured store read back identically (exact: rel = 0 for both)."""
    entry = json.loads((FIXTURES / "expected.json").read_text())["fixtures"][name]
    path = FIXTURES / entry["dir"]
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == sorted(entry["files"])
    ns: dict = {"interp": interp, "torch": torch, "path": path}
    exec(entry["load"], ns)
    assert entry["tensors"] and entry["values"] and entry["rel"] == 0.0
    for expr, want in entry["tensors"].items():
        assert summarize(eval(expr, ns)) == want, expr
    for expr, want in entry["values"].items():
        got = normalize(eval(expr, ns))
        if expr.endswith("manifest.to_dict()"):  # keys a later interp adds to the manifest are fine
            got = {k: v for k, v in got.items() if k in want}
        assert got == want, expr
    store = TraceStore(path, verify="sha256")
    store.verify()
    assert store.manifest.interp_version == "" and store.manifest.trace.schema_version == 1


def v01_tiny_llama():  # -> interp.Model
    """The fixtures' tiny Llama, rebuilt from make_fixtures.py's recipe (same weights, same fingerprint)."""
    import math

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3} | {f"w{i}": 4 + i for i in range(100)}
    tk = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                  unk_token="[UNK]")
    cfg = LlamaConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=32, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise if pname.endswith("weight") else 0.1 * noise)
            elif "embed" in pname:
                p.copy_(noise)
            else:
                p.copy_(noise * 1.5 / math.sqrt(p.shape[1]))
    return interp.from_hf(hf.eval(), tok, name="tiny-llama")


def test_v01_store_resumes_and_is_written_the_same_today(tmp_path: Path) -> None:
    """A capture with interp 0.1's arguments finds the 0.1 store complete (nothing recomputed, nothing
    rewritten), and a fresh capture today writes the same shard bytes (same sha256) as 0.1 did."""
    model = v01_tiny_llama()
    src = FIXTURES / "TraceStore_capture"
    man = json.loads((src / "manifest.json").read_text())
    assert model.fingerprint == man["model_fingerprint"]
    texts = [m["text"] for m in TraceStore(src).metadata()]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out"]
    old = tmp_path / "old"
    shutil.copytree(src, old)
    before = {p.name: p.read_bytes() for p in sorted(old.rglob("*")) if p.is_file()}
    st = capture(model, texts, hooks=hooks, out=old, batch_size=2, progress=False)
    assert st.complete and {p.name: p.read_bytes() for p in sorted(old.rglob("*")) if p.is_file()} == before
    new = capture(model, texts, hooks=hooks, out=tmp_path / "new", batch_size=2, progress=False)
    assert [(s.index, s.n_tokens, s.bytes, s.sha256) for s in new.shards()] == \
           [(s["index"], s["n_tokens"], s["bytes"], s["sha256"]) for s in man["shards"]]
    assert (tmp_path / "new" / "tokens.safetensors").read_bytes() == (src / "tokens.safetensors").read_bytes()
    assert new.manifest.dataset_fingerprint == man["dataset_fingerprint"]
