"""``capture``: dataset inputs, resume after a crash, re-runs, corruption repair, memory budget."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _trace_helpers import TEXTS, char_llama
from conftest import requires

from interp.errors import BadInputError
from interp.sites import Component, Site, UnknownHookError
from interp.trace import StoreMismatchError, TraceStore, capture, load_texts

capture_module = importlib.import_module("interp.trace.writer")
HOOK = "blocks.0.hook_resid_post"
HOOKS = [HOOK, "blocks.1.attn.hook_pattern", "blocks.1.mlp.hook_post"]
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def model():
    return char_llama(seed=0)


@pytest.fixture()
def count_forwards(monkeypatch):
    """Record the batch of sequences every forward of ``capture`` runs on."""
    calls: list[int] = []
    real = capture_module.forward

    def counting(model, ids, mask):
        calls.append(int(ids.shape[0]))
        return real(model, ids, mask)

    monkeypatch.setattr(capture_module, "forward", counting)
    return calls


def shard_snapshot(path: Path) -> dict[str, tuple[int, str]]:
    """File name -> (mtime_ns, sha256) of every shard."""
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((path / "shards").iterdir())}


def assert_same_store(a: TraceStore, b: TraceStore, metadata: bool = True) -> None:
    """Equal tokens, metadata (unless ``metadata=False``), shard ranges and shard tensors."""
    assert a.hooks == b.hooks and a.n_seqs == b.n_seqs and a.n_tokens == b.n_tokens
    assert a.complete and b.complete
    for x, y in zip(a.tokens(), b.tokens(), strict=True):
        assert torch.equal(x, y)
    if metadata:
        assert a.metadata() == b.metadata()
    assert [(s.index, s.start, s.stop, s.n_tokens) for s in a.shards()] == \
           [(s.index, s.start, s.stop, s.n_tokens) for s in b.shards()]
    for sa, sb in zip(a.shards(), b.shards(), strict=True):
        ta, tb = a.read_shard(sa), b.read_shard(sb)
        for h in a.hooks:
            torch.testing.assert_close(ta[h], tb[h], atol=1e-5, rtol=1e-5, msg=f"shard {sa.index} {h}")


# -- inputs --------------------------------------------------------------------------------------------------
def check_store(store: TraceStore, model, texts: list[str], meta: list[dict]) -> None:
    ids, mask = model.tokenize(texts, max_tokens=128)
    got_ids, got_mask = store.tokens()
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    assert store.n_tokens == int(mask.sum()) and store.complete
    assert store.trace(hooks=[HOOK]).metadata == tuple(meta)
    last = len(texts) - 1
    direct = model.run(texts[last], capture=HOOK).trace[HOOK][0]
    torch.testing.assert_close(store.trace([last], hooks=[HOOK])[HOOK][0], direct, atol=1e-5, rtol=1e-5)


def test_capture_list(model, tmp_path):
    texts = TEXTS[:5]
    st = capture(model, texts, hooks=HOOK, out=tmp_path / "s", batch_size=2, progress=False)
    check_store(st, model, texts, [{"text": t} for t in texts])
    st2 = capture(model, tuple(texts), hooks=HOOK, out=tmp_path / "s2", batch_size=2, progress=False)  # a tuple works too
    assert st2.n_tokens == st.n_tokens


def test_capture_txt_file(model, tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("first line\n\n   \nsecond line  \nthird\n", encoding="utf-8")
    texts = ["first line", "second line  ", "third"]
    st = capture(model, str(f), hooks=HOOK, out=tmp_path / "s", progress=False)
    check_store(st, model, texts, [{"text": t} for t in texts])
    st_path = capture(model, f, hooks=HOOK, out=tmp_path / "s2", progress=False)  # a Path
    assert st_path.n_tokens == st.n_tokens


def test_capture_parquet_with_metadata(model, tmp_path):
    f = tmp_path / "data.parquet"
    texts = TEXTS[:4]
    words = [t.split() for t in texts]  # a "tokens" column of the user's is metadata like any other
    pq.write_table(pa.table({"id": [10, 11, 12, 13], "text": texts, "label": ["a", "b", "a", "c"],
                             "score": [0.5, 1.0, 1.5, 2.0], "tokens": words}), f)
    st = capture(model, f, hooks=HOOK, out=tmp_path / "s", batch_size=3, progress=False)
    meta = [{"text": t, "id": 10 + i, "label": "abac"[i], "score": 0.5 * (i + 1), "tokens": words[i]}
            for i, t in enumerate(texts)]
    check_store(st, model, texts, meta)
    ids, _ = model.tokenize(texts[:1])
    assert st.trace([0]).tokens[0] == tuple(model.to_str_tokens(ids)[0])  # the model's tokens, not the column
    # another text column
    g = tmp_path / "body.parquet"
    pq.write_table(pa.table({"body": texts, "y": [0, 1, 0, 1]}), g)
    st2 = capture(model, g, hooks=HOOK, out=tmp_path / "s2", column="body", progress=False)
    check_store(st2, model, texts, [{"text": t, "y": i % 2} for i, t in enumerate(texts)])


def test_capture_hf_dataset(model, tmp_path):
    datasets = requires("datasets")
    texts = TEXTS[:6]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 2, 0, 1, 2]})
    st = capture(model, ds, hooks=HOOK, out=tmp_path / "s", batch_size=4, progress=False)
    check_store(st, model, texts, [{"text": t, "label": i % 3} for i, t in enumerate(texts)])


def test_load_texts_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_texts([])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty"):
        load_texts(str(empty))
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        load_texts(["ok", ""])
    with pytest.raises(ValueError, match="sequence 0 is empty"):
        load_texts(["  \n", "ok"])
    with pytest.raises(TypeError, match="sequence 1 is a int"):
        load_texts(["ok", 3])
    with pytest.raises(TypeError, match="sequence 0 is a NoneType"):
        load_texts([None])
    # a string is one text unless it names a file (or ends like a file name)
    assert load_texts("just some text") == (["just some text"], [{"text": "just some text"}])
    for missing in (tmp_path / "missing.txt", str(tmp_path / "missing.txt"), "data/nope.parquet",
                    tmp_path / "data.csv"):
        with pytest.raises(BadInputError, match="no dataset file at") as err:  # also a FileNotFoundError
            load_texts(missing)
        assert isinstance(err.value, FileNotFoundError) and str(missing) in str(err.value)
    (tmp_path / "data.csv").write_text("text\na\n")
    with pytest.raises(BadInputError, match=r"unsupported dataset file .*data\.csv"):
        load_texts(tmp_path / "data.csv")
    with pytest.raises(TypeError, match="unsupported dataset type"):
        load_texts({"text": ["a"]})
    with pytest.raises(TypeError, match="unsupported dataset type"):
        load_texts(b"bytes")
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["a"]}), f)
    with pytest.raises(ValueError, match="no column 'text'; columns: body"):
        load_texts(f)
    pq.write_table(pa.table({"text": ["a", None]}), f)
    with pytest.raises(TypeError, match="sequence 1 is a NoneType"):
        load_texts(f)
    datasets = requires("datasets")
    with pytest.raises(ValueError, match="no column 'text'"):
        load_texts(datasets.Dataset.from_dict({"body": ["a"]}))
    with pytest.raises(ValueError, match="empty"):
        load_texts(datasets.Dataset.from_dict({"text": []}))


def test_capture_argument_errors(model, tmp_path):
    with pytest.raises(UnknownHookError, match=r"blocks\.0\.hook_resid_post"):
        capture(model, TEXTS, hooks="blocks.0.hook_resid_pots", out=tmp_path / "a", progress=False)
    with pytest.raises(UnknownHookError):
        capture(model, TEXTS, hooks="blocks.9.hook_resid_post", out=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="empty"):
        capture(model, [], hooks=HOOK, out=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="empty"):
        capture(model, ["x", ""], hooks=HOOK, out=tmp_path / "a", progress=False)
    with pytest.raises(TypeError):
        capture(model, ["x", 1], hooks=HOOK, out=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        capture(model, TEXTS, hooks=HOOK, out=tmp_path / "a", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="floating"):
        capture(model, TEXTS, hooks=HOOK, out=tmp_path / "a", dtype=torch.int8, progress=False)
    with pytest.raises(ValueError, match="unknown dtype"):
        capture(model, TEXTS, hooks=HOOK, out=tmp_path / "a", dtype="float33", progress=False)
    assert not (tmp_path / "a").exists()  # nothing was written for bad arguments


def test_capture_hook_forms_dtype_and_truncation(model, tmp_path):
    st = capture(model, TEXTS[:3], hooks=["blocks.*.hook_resid_post", Site(Component.LOGITS)], out=tmp_path / "s",
                 dtype="bfloat16", max_tokens=5, progress=False)
    assert sorted(st.hooks) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "logits"]
    assert st.dtype == torch.bfloat16 and st.manifest.seq_len == 5
    assert st.n_tokens == sum(min(len(t), 5) for t in TEXTS[:3])
    tr = st.trace()
    direct = model.run([t[:5] for t in TEXTS[:3]], capture="logits").trace  # char tokens: 5 chars = 5 tokens
    assert tr["logits"].dtype == torch.bfloat16
    torch.testing.assert_close(tr["logits"], direct["logits"].bfloat16(), atol=0, rtol=0)


def test_capture_prepend_bos(model, tmp_path):
    st = capture(model, TEXTS[:3], hooks=HOOK, out=tmp_path / "s", prepend_bos=True, progress=False)
    ids, _ = st.tokens()
    assert (ids[:, 0] == model.tokenizer.bos_token_id).all()
    assert st.n_tokens == sum(len(t) + 1 for t in TEXTS[:3])


def test_capture_inputs_of_every_kind(model, tmp_path):
    """One text, a labelled set, token ids, (ids, mask), a Trace and a TraceStore: the same tokens, the same
    activations as a capture of the texts."""
    from interp.probing import LabelledSet

    texts = TEXTS[:4]
    ref = capture(model, texts, hooks=HOOK, out=tmp_path / "texts", batch_size=2, progress=False)
    one = capture(model, texts[0], hooks=HOOK, out=tmp_path / "one", progress=False)
    assert one.n_seqs == 1 and one.metadata()[0]["text"] == texts[0]
    torch.testing.assert_close(one.trace()[HOOK][0], ref.trace([0])[HOOK][0], atol=1e-5, rtol=1e-5)
    labelled = LabelledSet.from_lists(texts, label=["a", "b", "a", "b"])
    st = capture(model, labelled, hooks=HOOK, out=tmp_path / "labelled", batch_size=2, progress=False)
    assert [m["label"] for m in st.trace().metadata] == ["a", "b", "a", "b"]
    assert_same_store(st.__class__(st.path), st)
    ids, mask = model.tokenize(texts, max_tokens=128)
    runs = {"pair": (ids, mask), "trace": model.run(texts, capture=HOOK).trace, "store": ref}
    for name, inputs in runs.items():
        got = capture(model, inputs, hooks=HOOK, out=tmp_path / name, batch_size=2, progress=False)
        assert torch.equal(got.tokens()[0], ids) and torch.equal(got.tokens()[1], mask), name
        assert got.manifest.dataset_fingerprint == ref.manifest.dataset_fingerprint, name
        want_meta = [None] * 4 if name == "pair" else texts  # a trace's / store's metadata travels along
        assert [m.get("text") for m in got.metadata()] == want_meta, name
        assert_same_store(got, ref, metadata=name != "pair")
    bare = capture(model, ids[:1, :5], hooks=HOOK, out=tmp_path / "ids", progress=False)  # ids without a mask
    assert bare.n_tokens == 5 and bare.metadata()[0] == {"__tokens__": list(texts[0][:5])}
    with pytest.raises(BadInputError, match="right-padded"):
        capture(model, (ids, mask.flip(1)), hooks=HOOK, out=tmp_path / "left", progress=False)
    with pytest.raises(BadInputError, match="sequence 1 has no real tokens"):
        capture(model, (ids[:2], torch.stack([mask[0], torch.zeros_like(mask[1])])), hooks=HOOK,
                out=tmp_path / "none", progress=False)
    with pytest.raises(BadInputError, match=r"bad out 'memory://x'.*local directory"):
        capture(model, texts, hooks=HOOK, out="memory://x", progress=False)
    assert not (tmp_path / "left").exists() and not (tmp_path / "none").exists()


HF_SITES = {"hf:model.layers.0.mlp.act_fn": ("model.layers.0.mlp.act_fn", "output"),
            "hf:model.layers.1.mlp.down_proj:input": ("model.layers.1.mlp.down_proj", "input"),
            "hf:model.layers.1.self_attn": ("model.layers.1.self_attn", "output")}  # a tuple output: its first part


def raw_module_activations(model, text: str) -> dict[str, torch.Tensor]:
    """The oracle: plain PyTorch hooks on the Hugging Face modules, one text alone (no interp hooks)."""
    got, handles = {}, []
    for name, (path, io) in HF_SITES.items():
        module = model.hf.get_submodule(path)
        if io == "output":
            def hook(mod, args, output, name=name):
                got[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
            handles.append(module.register_forward_hook(hook))
        else:
            def pre(mod, args, name=name):
                got[name] = args[0].detach().clone()
            handles.append(module.register_forward_pre_hook(pre))
    ids, mask = model.tokenize([text])
    try:
        with torch.no_grad():
            model.hf(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return got


def test_capture_hf_module_sites_to_a_store(model, tmp_path):
    """hf: sites are captured into a store (their trailing shape measured by a probe forward) and read back
    equal to plain PyTorch hooks on the same modules."""
    texts = TEXTS[:5]
    st = capture(model, texts, hooks=[*HF_SITES, "resid_post.1"], out=tmp_path / "s", batch_size=2, progress=False)
    assert st.hooks == ["blocks.1.hook_resid_post", *HF_SITES]  # named hook points first, then hf: in order given
    assert st.manifest.trace.hooks["hf:model.layers.0.mlp.act_fn"] == [128]
    assert st.manifest.trace.hooks["hf:model.layers.1.mlp.down_proj:input"] == [128]
    assert st.manifest.trace.hooks["hf:model.layers.1.self_attn"] == [64]
    st.verify()
    reopened = TraceStore(st.path)
    full = reopened.trace()
    for i, text in enumerate(texts):
        want = raw_module_activations(model, text)
        n = len(text)
        for name in HF_SITES:
            torch.testing.assert_close(full[name][i, :n], want[name][0], atol=1e-5, rtol=1e-5, msg=f"{i} {name}")
            assert not full[name][i, n:].any()
    rows = torch.cat(list(reopened.iter_tokens("hf:model.layers.0.mlp.act_fn", batch_size=16)))
    want = torch.cat([raw_module_activations(model, t)["hf:model.layers.0.mlp.act_fn"][0] for t in texts])
    torch.testing.assert_close(rows, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(UnknownHookError, match=r"no submodule 'model\.layers\.7\.mlp'"):
        capture(model, texts, hooks="hf:model.layers.7.mlp", out=tmp_path / "bad", progress=False)
    with pytest.raises(BadInputError, match=r"bad hook 'hf:model.rotary_emb'.*\[batch, pos, \.\.\.\]"):
        capture(model, texts, hooks="hf:model.rotary_emb", out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_capture_short_forms_and_progress_switch(model, tmp_path, capsys):
    import interp

    with interp.quiet():
        st = capture(model, TEXTS[:3], hooks=["resid_post", ("mlp_out", 1), "z.-1"], out=tmp_path / "s")
    assert "capture" not in capsys.readouterr().err  # no progress bar under interp.quiet()
    assert sorted(st.hooks) == ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out",
                                "blocks.1.hook_resid_post"]
    assert st.hooks == [n for n in model.hook_names() if n in st.hooks]  # in forward order
    capture(model, TEXTS[:3], hooks="resid_post.0", out=tmp_path / "p", progress=True)
    assert "capture 1 hooks" in capsys.readouterr().err


# -- re-runs -------------------------------------------------------------------------------------------------
def test_rerun_complete(model, tmp_path, monkeypatch):
    path = tmp_path / "s"
    capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=3, progress=False)
    manifest = (path / "manifest.json").read_bytes()
    before = shard_snapshot(path)
    monkeypatch.setattr(capture_module, "forward", lambda *a, **k: pytest.fail("forward on a complete store"))
    st = capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=3, progress=False)
    assert st.complete
    assert (path / "manifest.json").read_bytes() == manifest
    assert shard_snapshot(path) == before


def test_rerun_with_other_settings(model, tmp_path):
    path = tmp_path / "s"
    capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=2, progress=False)
    manifest = (path / "manifest.json").read_bytes()
    before = shard_snapshot(path)
    for kwargs, what in [({"hooks": [HOOK]}, "hooks"), ({"inputs": TEXTS[:-1]}, "dataset"),
                         ({"dtype": torch.float16}, "dtype"), ({"batch_size": 3}, "batch_size"),
                         ({"model": char_llama(seed=5)}, "model")]:
        args = {"model": model, "inputs": TEXTS, "hooks": HOOKS, "batch_size": 2, **kwargs}
        with pytest.raises(StoreMismatchError, match=what):
            capture(out=path, progress=False, **args)
    assert (path / "manifest.json").read_bytes() == manifest and shard_snapshot(path) == before
    # overwrite=True replaces it: the result equals a fresh capture, no shard of the old store remains
    st = capture(model, TEXTS, hooks=[HOOK], out=path, batch_size=4, overwrite=True, progress=False)
    fresh = capture(model, TEXTS, hooks=[HOOK], out=tmp_path / "fresh", batch_size=4, progress=False)
    assert_same_store(st, fresh)
    assert sorted(p.name for p in (path / "shards").iterdir()) == ["00000.safetensors", "00001.safetensors",
                                                                   "00002.safetensors"]


def test_rerun_with_new_metadata_keeps_activations(model, tmp_path, monkeypatch):
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": TEXTS[:4], "label": [0, 0, 1, 1]}), f)
    path = tmp_path / "s"
    capture(model, f, hooks=HOOK, out=path, progress=False)
    before = shard_snapshot(path)
    pq.write_table(pa.table({"text": TEXTS[:4], "label": [1, 1, 0, 0]}), f)  # relabelled
    monkeypatch.setattr(capture_module, "forward", lambda *a, **k: pytest.fail("forward"))
    st = capture(model, f, hooks=HOOK, out=path, progress=False)
    assert [m["label"] for m in st.trace().metadata] == [1, 1, 0, 0]
    assert shard_snapshot(path) == before
    assert [m["label"] for m in TraceStore(path).trace().metadata] == [1, 1, 0, 0]


def test_rerun_on_malformed_manifest(model, tmp_path):
    path = tmp_path / "s"
    capture(model, TEXTS, hooks=HOOK, out=path, batch_size=4, progress=False)
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text.replace('"batch_size": 4', '"batch_size": "4"'))
    with pytest.raises(BadInputError, match=r"manifest\.json is malformed \(BadInputError: batch_size must be"):
        capture(model, TEXTS, hooks=HOOK, out=path, batch_size=4, progress=False)


def test_existing_directory_that_is_not_a_store(model, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    (d / ".draft.tmp").write_text("mine too")
    with pytest.raises(FileExistsError, match="not a trace store"):
        capture(model, TEXTS, hooks=HOOK, out=d, progress=False)
    assert (d / "notes.txt").read_text() == "keep me" and (d / ".draft.tmp").read_text() == "mine too"
    (d / "notes.txt").unlink()
    with pytest.raises(FileExistsError, match=r"\.draft\.tmp"):  # a temp file that is not a store's
        capture(model, TEXTS, hooks=HOOK, out=d, progress=False)
    assert (d / ".draft.tmp").exists()
    # shards without a manifest: not ours to overwrite either
    e = tmp_path / "orphan"
    (e / "shards").mkdir(parents=True)
    (e / "shards" / "00000.safetensors").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a trace store"):
        capture(model, TEXTS, hooks=HOOK, out=e, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert capture(model, TEXTS, hooks=HOOK, out=empty, progress=False).complete


def test_killed_before_first_manifest(model, tmp_path):
    # what a capture killed while writing its inputs leaves: shards/, a partial tokens file, a temp file
    path = tmp_path / "s"
    (path / "shards").mkdir(parents=True)
    (path / "tokens.safetensors").write_bytes(b"\x00" * 10)
    (path / ".meta.parquet.abc.tmp").write_bytes(b"partial")
    st = capture(model, TEXTS, hooks=HOOK, out=path, batch_size=4, progress=False)
    assert_same_store(st, capture(model, TEXTS, hooks=HOOK, out=tmp_path / "fresh", batch_size=4, progress=False))
    assert not list(path.rglob("*.tmp"))


def test_interrupt_keeps_finished_shards(model, tmp_path, monkeypatch):
    path = tmp_path / "s"
    real = capture_module.forward
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_module, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=2, progress=False)
    st = TraceStore(path)
    assert [s.index for s in st.shards()] == [0, 1] and not st.complete  # written before the error surfaced
    monkeypatch.setattr(capture_module, "forward", real)
    st = capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=2, progress=False)
    assert_same_store(st, capture(model, TEXTS, hooks=HOOKS, out=tmp_path / "fresh", batch_size=2, progress=False))


def test_write_error_surfaces_and_resumes(model, tmp_path, monkeypatch):
    path = tmp_path / "s"
    real = capture_module.write_shard

    def disk_full(root, index, *args, **kwargs):
        if index == 2:
            raise OSError(28, "No space left on device")
        return real(root, index, *args, **kwargs)

    monkeypatch.setattr(capture_module, "write_shard", disk_full)
    with pytest.raises(OSError, match="No space left"):
        capture(model, TEXTS, hooks=HOOK, out=path, batch_size=2, progress=False)
    assert 2 not in {s.index for s in TraceStore(path).shards()}
    monkeypatch.setattr(capture_module, "write_shard", real)
    st = capture(model, TEXTS, hooks=HOOK, out=path, batch_size=2, progress=False)
    assert_same_store(st, capture(model, TEXTS, hooks=HOOK, out=tmp_path / "fresh", batch_size=2, progress=False))


# -- repair --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "truncated", "emptied"])
def test_rerun_recreates_damaged_shard(model, tmp_path, count_forwards, damage):
    path = tmp_path / "s"
    capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=3, progress=False)
    sha = {s.index: s.sha256 for s in TraceStore(path).shards()}
    shard = path / "shards" / "00002.safetensors"
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        with open(shard, "r+b") as f:
            f.truncate(shard.stat().st_size // 2)
    else:
        shard.write_bytes(b"")
    count_forwards.clear()
    st = capture(model, TEXTS, hooks=HOOKS, out=path, batch_size=3, progress=False)
    assert count_forwards == [3]  # only the damaged shard's batch ran again
    st.verify()
    assert {s.index: s.sha256 for s in st.shards()} == sha  # re-created bit for bit
    assert_same_store(st, capture(model, TEXTS, hooks=HOOKS, out=tmp_path / "fresh", batch_size=3, progress=False))


def test_flipped_bytes_found_by_verify_not_by_rerun(model, tmp_path):
    path = tmp_path / "s"
    capture(model, TEXTS, hooks=HOOK, out=path, batch_size=3, progress=False)
    shard = path / "shards" / "00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4] ^= 0xFF
    shard.write_bytes(bytes(data))
    from interp.trace import CorruptShardError

    st = capture(model, TEXTS, hooks=HOOK, out=path, batch_size=3, progress=False)  # same size: counted as done
    with pytest.raises(CorruptShardError, match="sha256"):
        st.verify()
    shard.unlink()  # the documented repair: delete it and re-run
    capture(model, TEXTS, hooks=HOOK, out=path, batch_size=3, progress=False).verify()


# -- memory budget -------------------------------------------------------------------------------------------
def test_memory_budget_lowers_batch_size(model, tmp_path, caplog):
    ids, _ = model.tokenize(TEXTS, max_tokens=128)
    seq_len = ids.shape[1]
    # float32 resid_post [seq_len, 64] + pattern [4 heads, seq_len, seq_len] per sequence
    per_seq = 4 * (seq_len * 64 + 4 * seq_len * seq_len)
    hooks = [HOOK, "blocks.1.attn.hook_pattern"]
    st = capture(model, TEXTS, hooks=hooks, out=tmp_path / "s", batch_size=8, memory_budget=3 * per_seq + 10, progress=False)
    assert "batch_size 8 -> 3" in caplog.text  # a warning through logging, not a print
    assert st.manifest.batch_size == 3 and len(st.shards()) == 4  # 11 sequences
    ref = capture(model, TEXTS, hooks=hooks, out=tmp_path / "ref", batch_size=3, progress=False)
    assert_same_store(st, ref)  # (test_store checks such a store against direct runs)
    # the same call resumes the same store (the lowered batch size is reproduced)
    st2 = capture(model, TEXTS, hooks=hooks, out=tmp_path / "s", batch_size=8, memory_budget=3 * per_seq + 10, progress=False)
    assert st2.complete
    # a budget below one sequence still runs one at a time
    st1 = capture(model, TEXTS[:2], hooks=HOOK, out=tmp_path / "one", batch_size=8, memory_budget=1, progress=False)
    assert st1.manifest.batch_size == 1 and len(st1.shards()) == 2


# -- crash and resume ----------------------------------------------------------------------------------------
CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from _trace_helpers import char_llama
import importlib
cap = importlib.import_module("interp.trace.writer")

real = cap.forward
def slow(*a, **k):
    time.sleep(0.1)  # slow enough to be killed mid-way, deterministically
    return real(*a, **k)
cap.forward = slow
cap.capture(char_llama(seed=0), {data!r}, hooks={hooks!r}, out={out!r}, batch_size=2, progress=False)
print("finished")
"""


def test_crash_and_resume(model, tmp_path, count_forwards):
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(80)]  # 40 shards
    data = tmp_path / "data.txt"
    data.write_text("\n".join(texts) + "\n")
    path = tmp_path / "s"
    script = textwrap.dedent(CHILD).format(tests=str(TESTS_DIR), data=str(data), hooks=HOOKS, out=str(path))
    log = tmp_path / "child.log"
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=err, stderr=err)
    done_before: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            mpath = path / "manifest.json"
            if mpath.exists():
                done_before = {s["index"] for s in json.loads(mpath.read_text())["shards"]}
                if len(done_before) >= 4:
                    break
            time.sleep(0.02)
        assert child.poll() is None, f"the child ended before it was killed:\n{log.read_text()}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed = TraceStore(path)
    assert not killed.complete and 4 <= len(killed.shards()) < 40, log.read_text()
    done_before = {s.index for s in killed.shards()}
    # stale temp files from writes a kill interrupted; and a file of the user's, to be left alone
    (path / "shards" / ".00039.safetensors.x1y2z3.tmp").write_bytes(b"partial")
    (path / ".manifest.json.abc.tmp").write_bytes(b"{")
    (path / ".user.tmp").write_bytes(b"mine")

    count_forwards.clear()
    st = capture(model, data, hooks=HOOKS, out=path, batch_size=2, progress=False)
    # exactly the missing shards ran: each sequence once over both runs
    assert sum(count_forwards) == 80 - 2 * len(done_before)
    assert st.complete
    assert {s.index for s in st.shards()} == set(range(40))
    assert [(s.start, s.stop) for s in st.shards()] == [(2 * i, 2 * i + 2) for i in range(40)]
    _, mask = model.tokenize(texts, max_tokens=128)
    assert st.n_tokens == int(mask.sum())
    assert sorted(p.name for p in (path / "shards").iterdir()) == [f"{i:05d}.safetensors" for i in range(40)]
    assert [p.name for p in path.rglob("*.tmp")] == [".user.tmp"]
    st.verify()
    fresh = capture(model, data, hooks=HOOKS, out=tmp_path / "fresh", batch_size=2, progress=False)
    assert_same_store(st, fresh)
    assert [m["text"] for m in st.metadata()] == texts


# -- the bundled model ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_capture_equals_direct_runs(smollm2, tmp_path):
    texts = ["The capital of France is Paris.", "Hello world", "One two three four five six seven"]
    hooks = ["blocks.0.hook_resid_post", "blocks.29.hook_resid_post", "blocks.3.attn.hook_pattern",
             "blocks.7.attn.hook_z"]
    st = capture(smollm2, texts, hooks=hooks, out=tmp_path / "s", batch_size=2, progress=False)
    st.verify()
    assert st.complete and len(st.shards()) == 2
    full = st.trace()
    direct = [smollm2.run(t, capture=hooks).trace for t in texts]
    assert st.n_tokens == sum(d.input_ids.shape[1] for d in direct)
    for i, d in enumerate(direct):
        n = d.input_ids.shape[1]
        assert full.tokens[i][:n] == d.tokens[0]
        for h in hooks:
            got = full[h][i, :, :n, :n] if h.endswith("pattern") else full[h][i, :n]
            torch.testing.assert_close(got, d[h][0], atol=2e-4, rtol=1e-4, msg=f"seq {i} {h}")
    rows = torch.cat(list(st.iter_tokens("blocks.29.hook_resid_post", batch_size=5)))
    torch.testing.assert_close(rows, torch.cat([d["blocks.29.hook_resid_post"][0] for d in direct]),
                               atol=2e-4, rtol=1e-4)
    st.check_model(smollm2)
