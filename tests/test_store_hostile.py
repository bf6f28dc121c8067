"""The store and the CLI under hostile files, concurrency and full disks (issue 18).

Each numbered case of the issue is reproduced first, then the fix is checked:

1. symbolic links out of a store (``shards/`` -> another directory; a shard -> a file elsewhere) are refused on
   read and on ``--overwrite``, and the other directory is untouched;
2. token ids, masks, the metadata, the dataset fingerprint, hook shapes and token counts are all checked;
3. two writers on one store: the second fails at once naming the first (processes and Ray), the first's store
   verifies;
4. after a byte flip, ``verify()`` says what to run, and running it repairs the store;
5. ``--json`` on a full disk (a small tmpfs) leaves the previous file intact;
6. ``Ablate(method="mean")`` on one sequence without a reference is refused;
7. CLI edges: unknown model names, ``--top -3``, ``--feature -1``, a directory as ``--dataset`` or ``--json``,
   ``run("   ")``, bidi / zero-width characters in the report.

Oracles: the untouched store (itself checked against direct ``model.run`` calls), bytes of files written before
the failure, hand-computed means, and the symlink targets' contents before the attack.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _trace_helpers import TEXTS, char_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from interp.cli import main
from interp.errors import BadInputError, CorruptStoreError, UnknownNameError
from interp.fileio import OutputWriteError, atomic_write_bytes
from interp.hooks import Ablate
from interp.trace import CorruptShardError, TraceStore, capture
from interp.trace.layout import LOCK_FILE, VERIFY_FAILED, UnsafePathError
from interp.trace.lock import StoreLockedError, holder, store_lock

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]
DATA = TEXTS[:5]  # shards of 2, 2, 1


@pytest.fixture(scope="module")
def model():
    return char_llama(seed=0)


@pytest.fixture(scope="module")
def clean(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "st"
    capture(model, DATA, hooks=HOOKS, out=path, batch_size=2, progress=False)
    return path


@pytest.fixture(scope="module")
def clean_data(model, clean) -> dict[str, Any]:
    """What the untouched store returns, checked against each text run alone."""
    data = observe(clean)
    assert data is not None
    for i, text in enumerate(DATA):
        direct = model.run(text, capture=HOOKS[0]).trace[HOOKS[0]][0]
        torch.testing.assert_close(data["acts"][HOOKS[0]][i, :direct.shape[0]], direct, rtol=1e-5, atol=1e-5)
    return data


@pytest.fixture()
def copy(clean, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(clean, dst)
    return dst


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("char-llama")
    m = char_llama()
    m.hf.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


def observe(path: Path) -> dict[str, Any] | None:
    """Everything the store gives (after a full verify), or ``None`` when it raises ``CorruptStoreError``."""
    try:
        st_ = TraceStore(path, verify="sha256")
        st_.verify()
        tr = st_.trace()
        ids, mask = st_.tokens()
        return {"acts": dict(tr.activations), "ids": ids, "mask": mask, "tokens": tr.tokens,
                "meta": st_.metadata(), "n_tokens": st_.n_tokens, "hooks": st_.hooks}
    except CorruptStoreError:
        return None


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.keys() == b.keys() and a["acts"].keys() == b["acts"].keys()
            and all(torch.equal(a["acts"][k], b["acts"][k]) for k in a["acts"])
            and torch.equal(a["ids"], b["ids"]) and torch.equal(a["mask"], b["mask"])
            and all(a[k] == b[k] for k in ("tokens", "meta", "n_tokens", "hooks")))


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- 1. paths out of the store -------------------------------------------------------------------------------
def test_overwrite_through_symlinked_shards_dir_is_refused(model, model_dir, clean, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("00000.safetensors", "precious.safetensors"):
        (other / name).write_bytes(b"user data " + name.encode())
    before = files_of(other)
    st_ = tmp_path / "st"
    shutil.copytree(clean, st_)
    shutil.rmtree(st_ / "shards")
    (st_ / "shards").symlink_to(other)
    with pytest.raises(UnsafePathError, match="leads outside the store"):
        capture(model, DATA, hooks=HOOKS[:1], out=st_, batch_size=2, overwrite=True, progress=False)
    ds = tmp_path / "six.txt"
    ds.write_text("\n".join(DATA) + "\n")
    assert main(["capture", "--model", str(model_dir), "--dataset", str(ds), "--hooks", "blocks.1.hook_resid_post",
                 "-o", str(st_), "--overwrite", "--quiet"]) == 2
    assert files_of(other) == before  # nothing deleted, nothing written there
    assert not (st_ / LOCK_FILE).exists()
    with pytest.raises(UnsafePathError):
        TraceStore(st_)  # reading follows no link out either


def test_symlinked_shard_file_and_inputs_are_refused_on_read(copy, tmp_path, clean_data):
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = copy / "shards" / "00001.safetensors"
    shutil.copy(shard, outside / "x.safetensors")  # even with identical bytes
    shard.unlink()
    shard.symlink_to(outside / "x.safetensors")
    st_ = TraceStore(copy)
    st_.trace([0])  # shard 0 is fine
    with pytest.raises(UnsafePathError):
        st_.trace([2])
    assert observe(copy) is None
    shard.unlink()
    shutil.copy(outside / "x.safetensors", shard)
    tok = copy / "tokens.safetensors"
    shutil.copy(tok, outside / "tokens.safetensors")
    tok.unlink()
    tok.symlink_to(outside / "tokens.safetensors")
    with pytest.raises(UnsafePathError):
        TraceStore(copy).trace([0])
    tok.unlink()
    shutil.copy(outside / "tokens.safetensors", tok)
    assert same(observe(copy), clean_data)


def test_overwrite_removes_only_the_files_the_manifest_lists(model, copy):
    mine = copy / "shards" / "notes.txt"
    mine.write_text("mine")
    stray = copy / "shards" / "00007.safetensors"
    stray.write_bytes(b"not listed")
    capture(model, DATA, hooks=HOOKS[:1], out=copy, batch_size=2, overwrite=True, progress=False)
    assert mine.read_text() == "mine" and stray.read_bytes() == b"not listed"
    assert TraceStore(copy).hooks == HOOKS[:1]


# -- 2. everything the store holds is checked -----------------------------------------------------------------
def _edit_tokens(path: Path, edit) -> None:
    t = load_file(str(path / "tokens.safetensors"))
    edit(t)
    save_file(t, str(path / "tokens.safetensors"))


def _edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m, indent=1))


@pytest.mark.parametrize("what", ["ids", "ids_permuted", "mask"])
def test_replaced_token_ids_or_mask_are_caught(copy, what):
    def edit(t: dict[str, torch.Tensor]) -> None:
        if what == "ids":
            t["input_ids"][0, 0] += 1
        elif what == "ids_permuted":
            t["input_ids"] = t["input_ids"][[1, 0, 2, 3, 4]].contiguous()
            t["attention_mask"] = t["attention_mask"][[1, 0, 2, 3, 4]].contiguous()
        else:
            t["attention_mask"][1, int(t["attention_mask"][1].sum()) - 1] = 0

    _edit_tokens(copy, edit)
    with pytest.raises(CorruptStoreError, match=r"tokens\.safetensors"):
        TraceStore(copy).trace()
    with pytest.raises(CorruptStoreError):
        TraceStore(copy).verify()


def test_old_store_without_hashes_still_catches_replaced_tokens(copy):
    """A store written before the tokens were hashed: the dataset fingerprint catches the edit."""
    _edit_manifest(copy, lambda m: m.pop("tokens_sha256"))
    TraceStore(copy).trace()
    _edit_tokens(copy, lambda t: t["input_ids"].__setitem__((2, 1), 7))
    with pytest.raises(CorruptStoreError, match="dataset_fingerprint"):
        TraceStore(copy).trace()


@pytest.mark.parametrize("edit, where", [
    (lambda m: m.__setitem__("dataset_fingerprint", "0" * 16), "trace"),
    (lambda m: m["hooks"].__setitem__("blocks.0.hook_resid_post", [65]), "open"),
    (lambda m: m["shards"][0].__setitem__("n_tokens", m["shards"][0]["n_tokens"] + 1), "open"),
    (lambda m: m["shards"][2].__setitem__("n_tokens", m["shards"][2]["n_tokens"] - 1), "trace"),
    (lambda m: m.__setitem__("dtype", "float16"), "open"),
    (lambda m: m.__setitem__("meta_sha256", "ab" * 32), "trace"),
])
def test_edited_manifest_is_caught(copy, edit, where):
    _edit_manifest(copy, edit)
    if where == "open":
        with pytest.raises(CorruptStoreError):
            TraceStore(copy)
    else:
        with pytest.raises(CorruptStoreError):
            TraceStore(copy).trace()
    assert observe(copy) is None


def test_v01_store_still_reads_and_verifies():
    src = TESTS_DIR / "fixtures" / "v0.1" / "TraceStore_capture"
    st_ = TraceStore(src, verify="sha256")
    assert not st_.manifest.tokens_sha256
    st_.verify()
    assert st_.trace().n_seqs == 5 and len(st_.metadata()) == 5


# hypothesis: random damage --------------------------------------------------------------------------------
FILES = ["manifest.json", "tokens.safetensors", "meta.parquet", "shards/00000.safetensors",
         "shards/00001.safetensors", "shards/00002.safetensors"]
MANIFEST_FIELDS = ["n_seqs", "seq_len", "batch_size", "shard.n_tokens", "shard.bytes", "shard.start", "shard.stop",
                   "shard.index", "shard.sha256", "hook_shape", "dataset_fingerprint", "tokens_sha256", "meta_sha256"]


def _mutate(path: Path, kind: str, data: st.DataObject, outside: Path) -> None:
    rel = data.draw(st.sampled_from(FILES), label="file")
    p = path / rel
    if kind == "flip":
        raw = bytearray(p.read_bytes())
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[i] ^= data.draw(st.integers(1, 255), label="xor")
        p.write_bytes(bytes(raw))
    elif kind == "truncate":
        raw = p.read_bytes()
        p.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1), label="length")])
    elif kind == "symlink":
        target = outside / f"t{len(list(outside.iterdir()))}"
        shutil.copy(p, target)
        if data.draw(st.booleans(), label="other content"):
            target.write_bytes(target.read_bytes()[::-1])
        p.unlink()
        p.symlink_to(target)
    elif kind == "manifest":
        m = json.loads((path / "manifest.json").read_text())
        field = data.draw(st.sampled_from(MANIFEST_FIELDS), label="field")
        delta = data.draw(st.sampled_from([-2, -1, 1, 3]), label="delta")
        shard = m["shards"][data.draw(st.integers(0, 2), label="shard")]
        if field.startswith("shard."):
            key = field.removeprefix("shard.")
            shard[key] = shard[key] + delta if key != "sha256" else "0" * 64
        elif field == "hook_shape":
            hook = data.draw(st.sampled_from(sorted(m["hooks"])), label="hook")
            m["hooks"][hook][-1] += delta
        elif field in ("dataset_fingerprint", "tokens_sha256", "meta_sha256"):
            m[field] = "f" * len(m[field])
        else:
            m[field] += delta
        (path / "manifest.json").write_text(json.dumps(m, indent=1))
    else:  # "tokens": a valid file with other ids or mask
        t = load_file(str(path / "tokens.safetensors"))
        row = data.draw(st.integers(0, 4), label="row")
        n = int(t["attention_mask"][row].sum())
        if data.draw(st.booleans(), label="mask"):
            t["attention_mask"][row, n - 1] = 0
        else:
            t["input_ids"][row, data.draw(st.integers(0, n - 1), label="pos")] += 1
        save_file(t, str(path / "tokens.safetensors"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(kind=st.sampled_from(["flip", "truncate", "symlink", "manifest", "tokens"]), data=st.data())
def test_damaged_store_raises_or_returns_the_clean_data(clean, clean_data, tmp_path_factory, kind, data):
    work = tmp_path_factory.mktemp("damaged")
    path, outside = work / "st", work / "outside"
    shutil.copytree(clean, path)
    outside.mkdir()
    _mutate(path, kind, data, outside)
    got = observe(path)
    assert got is None or same(got, clean_data)
    shutil.rmtree(work)


# -- 3. one writer at a time ----------------------------------------------------------------------------------
BLOCKED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from _trace_helpers import char_llama
import importlib
w = importlib.import_module("interp.trace.writer")
real = w.forward
calls = []
def gated(*a, **k):
    calls.append(1)
    if len(calls) == 2:  # shard 0 is written; hold the store until the test says go
        Path({ready!r}).write_text("ready")
        deadline = time.monotonic() + 120
        while not Path({go!r}).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return real(*a, **k)
w.forward = gated
w.capture(char_llama(seed=0), {data!r}, hooks={hooks!r}, out={out!r}, batch_size=2, progress=False)
print("finished")
"""


@contextlib.contextmanager
def blocked_writer(out: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = textwrap.dedent(BLOCKED_WRITER).format(tests=str(TESTS_DIR), ready=str(ready), go=str(go),
                                                    data=DATA, hooks=HOOKS, out=str(out))
    log = tmp_path / "writer.log"
    with open(log, "w") as f:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the first writer did not start:\n{log.read_text()}"
        yield child
        go.write_text("go")
        assert child.wait(timeout=120) == 0, log.read_text()
    finally:
        go.write_text("go")
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_second_writer_fails_fast_and_the_first_store_verifies(model, model_dir, tmp_path, clean_data, capsys):
    out = tmp_path / "st"
    with blocked_writer(out, tmp_path) as first:
        info = holder(out)
        assert info is not None and info["pid"] == first.pid
        with pytest.raises(StoreLockedError, match=f"pid {first.pid} on host"):
            capture(model, DATA, hooks=HOOKS[:1], out=out, batch_size=2, progress=False)  # other hooks
        with pytest.raises(StoreLockedError, match=f"pid {first.pid}"):
            capture(model, DATA, hooks=HOOKS[:1], out=out, batch_size=2, overwrite=True, progress=False)
        with pytest.raises(StoreLockedError):
            capture(model, DATA, hooks=HOOKS, out=out, batch_size=2, progress=False)  # even the same capture
        assert main(["capture", "--model", str(model_dir), "--quiet", "--prompt", "x", "-o", str(out),
                     "--overwrite"]) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
        assert not TraceStore(out).complete
    st_ = TraceStore(out, verify="sha256")
    st_.verify()
    assert st_.complete and st_.hooks == HOOKS and same(observe(out), clean_data)
    assert holder(out) is None and not (out / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(model, tmp_path, caplog):
    out = tmp_path / "st"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "started": "then"}))
    assert holder(out) is None  # nobody holds it
    capture(model, DATA[:2], hooks=HOOKS[:1], out=out, batch_size=2, progress=False)
    assert f"pid {pid}" in caplog.text and "stale" in caplog.text
    (out / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "then"}))
    with pytest.raises(StoreLockedError, match=r"another host.*delete"):
        capture(model, DATA[:2], hooks=HOOKS[:1], out=out, batch_size=2, progress=False)


@pytest.mark.slow
def test_ray_driver_holds_the_lock_for_its_workers(model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    from interp import distributed

    out = tmp_path / "st"
    seen: dict[str, Any] = {}
    module = importlib.import_module("interp.distributed.capture")
    real = module.run_pool

    def run_pool_then_try(*a: Any, **k: Any) -> Any:  # while the Ray workers run, a second writer tries
        t0 = time.monotonic()
        try:
            with store_lock(out):
                seen["second"] = "got the lock"
        except StoreLockedError as e:
            seen["second"], seen["seconds"] = str(e), time.monotonic() - t0
        return real(*a, **k)

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    module.run_pool = run_pool_then_try
    try:
        run = distributed.capture(str(model_dir), DATA, hooks=HOOKS[:1], out=str(out), workers=1, batch_size=2,
                                  progress=False)
    finally:
        module.run_pool = real
        ray.shutdown()
    assert f"pid {os.getpid()}" in seen["second"], seen
    st_ = run.open(verify="sha256")
    st_.verify()
    assert st_.complete and not (out / LOCK_FILE).exists()


# -- 4. verify() says what to run, and running it repairs ----------------------------------------------------
def test_byte_flip_then_rerun_repairs(model, copy, clean_data):
    shard = copy / "shards" / "00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0x40  # in the data: same size, so only the sha256 sees it
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match=r"run the same capture again.*captures shard 1 again"):
        TraceStore(copy).verify()
    assert (copy / VERIFY_FAILED).exists()
    capture(model, DATA, hooks=HOOKS, out=copy, batch_size=2, progress=False)  # the default verify="size"
    TraceStore(copy).verify()
    assert not (copy / VERIFY_FAILED).exists() and same(observe(copy), clean_data)


def test_rerun_with_sha256_repairs_without_a_failed_verify(model, copy, clean_data):
    shard = copy / "shards" / "00000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1
    shard.write_bytes(bytes(raw))
    tok = copy / "tokens.safetensors"
    _edit_tokens(copy, lambda t: t["input_ids"].__setitem__((0, 0), 9))
    capture(model, DATA, hooks=HOOKS, out=copy, batch_size=2, verify="sha256", progress=False)
    assert tok.exists() and same(observe(copy), clean_data)


def test_verify_message_names_the_cli_command(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "st"
    argv = ["capture", "--model", str(model_dir), "--prompt", "hello", "--prompt", "xy", "-o", str(out),
            "--hooks", "resid_post.0", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["interp", *argv])  # as the console script sees it
    assert main(argv) == 0
    shard = out / "shards" / "00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + bytes([shard.read_bytes()[-1] ^ 1]))
    with pytest.raises(CorruptShardError) as e:
        TraceStore(out).verify()
    assert "run the capture again:" in str(e.value) and f"-o {out}" in str(e.value)


# -- 5. atomic writes and full disks ------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path) -> Iterator[Path]:
    """A 256 KiB tmpfs (when this machine lets us mount one)."""
    d = tmp_path / "small"
    d.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("optional: no mount command to make a small tmpfs for the disk-full test")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"optional: cannot mount a small tmpfs here ({r.stderr.strip()[:200]}); the disk-full test needs one")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


def _fill(d: Path) -> None:
    """Fill the small disk to the last byte."""
    with open(d / "filler", "wb", buffering=0) as f:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def test_full_disk_leaves_the_previous_json_intact(small_disk, model_dir, tmp_path):
    from interp.cli._common import emit
    from interp.report import Report

    prev, html = small_disk / "prev.json", small_disk / "out.html"
    atomic_write_bytes(prev, b'{"good": true}')
    _fill(small_disk)
    rep = Report("big")
    rep.section("numbers", "Many numbers.").text("x" * 200_000)
    with pytest.raises(OutputWriteError, match="no space left"):
        emit(argparse.Namespace(json=str(prev), html=None), rep)
    with pytest.raises(OutputWriteError):
        emit(argparse.Namespace(json=None, html=str(html)), rep)
    assert prev.read_bytes() == b'{"good": true}' and not html.exists()
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "prev.json"]  # no temporary file left
    # the command line: the store goes elsewhere, the JSON to the full disk -> status 2, previous JSON intact
    assert main(["capture", "--model", str(model_dir), "--prompt", "hello", "-o", str(tmp_path / "st"),
                 "--hooks", "resid_post.0", "--json", str(prev), "--quiet"]) == 2
    assert prev.read_bytes() == b'{"good": true}'
    # a capture into the full disk: status 2, and no partial shard
    assert main(["capture", "--model", str(model_dir), "--prompt", "hello", "-o", str(small_disk / "st"),
                 "--hooks", "resid_post.0", "--quiet"]) == 2
    assert not list(small_disk.rglob("*.tmp"))


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    """Without a tmpfs: a write that fails midway (simulated at fsync) leaves the old file and no temp file."""
    p = tmp_path / "r.json"
    atomic_write_bytes(p, b"old")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OutputWriteError):
        atomic_write_bytes(p, b"new" * 1000)
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_result_save_goes_through_the_atomic_helper(tmp_path, monkeypatch):
    from interp.trace import results

    calls: list[str] = []
    real = results.atomic_write_bytes

    def spy(path: Any, data: bytes) -> None:
        calls.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(results, "atomic_write_bytes", spy)
    results.write_result(tmp_path / "r", "X", {"a": torch.zeros(2)}, {"b": 1})
    assert "result.json" in calls


# -- 6. mean ablation ---------------------------------------------------------------------------------------
def test_mean_ablation_of_one_sequence_needs_a_reference(model):
    site = "blocks.0.hook_resid_post"
    with pytest.raises(BadInputError, match="batch of 1 sequence is its own mean"):
        model.run("the cat sat", interventions=[Ablate(site, method="mean")])
    two = ["the cat", "a dog"]
    ref = model.run(two, capture=site).trace[site]
    plain = model.run("the cat").logits
    ablated = model.run("the cat", interventions=[Ablate(site, method="mean", reference=ref)]).logits
    assert not torch.allclose(plain, ablated)
    act = torch.randn(3, 4, 64)
    from interp.sites import Site

    torch.testing.assert_close(Ablate(site, method="mean").edit(act, Site.parse(site)),
                               ((act[0] + act[1] + act[2]) / 3).unsqueeze(0))
    Ablate(site, method="mean", over="tokens").edit(act[:1], Site.parse(site))  # positions: allowed on one


# -- 7. CLI edges --------------------------------------------------------------------------------------------
def test_unknown_model_fails_at_once_without_the_hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: pytest.fail("the hub was asked"))
    import interp

    with pytest.raises(UnknownNameError, match=r"unknown model 'nosuchmodel'.*smollm2-135m.*hub id"):
        interp.load_model("nosuchmodel")
    assert main(["lens", "--model", "nosuchmodel", "--prompt", "x", "--quiet"]) == 2


def test_unreachable_hub_is_one_try_and_named(monkeypatch):
    import huggingface_hub

    import interp
    from interp.models.registry import HubUnreachableError

    tries: list[str] = []

    class Down:
        def head(self, url: str, **k: Any) -> Any:
            tries.append(url)
            raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: Down())
    with pytest.raises(HubUnreachableError, match=r"could not reach the hub for 'someorg/nosuch' \(offline\?\)"):
        interp.load_model("someorg/nosuch")
    assert len(tries) == 1


@pytest.mark.parametrize("argv, message", [
    (["patch", "--prompt", "a", "--corrupt", "b", "--answer", " x", "--top", "-3"], "--top"),
    (["features", "flow", "--feature", "-1"], "--feature"),
])
def test_negative_counts_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_directories_and_paths_are_bad_input(model_dir, tmp_path):
    assert main(["capture", "--model", str(model_dir), "--dataset", str(tmp_path), "-o", str(tmp_path / "s"),
                 "--quiet"]) == 2
    assert main(["capture", "--model", str(model_dir), "--prompt", "hello", "-o", str(tmp_path / "s2"),
                 "--hooks", "resid_post.0", "--json", str(tmp_path), "--quiet"]) == 2
    (tmp_path / "f").write_text("x")
    assert main(["capture", "--model", str(model_dir), "--prompt", "hello", "-o", str(tmp_path / "f" / "st"),
                 "--quiet"]) == 2


def test_blank_text_is_refused_by_run(model):
    with pytest.raises(BadInputError, match="blank"):
        model.run("   ")


def test_bidi_and_zero_width_characters_are_shown_escaped():
    from interp.report import Report

    prompt = "abc\u202edcba\u200b\u2066x"
    rep = Report("interp report", command=f"interp report --prompt '{prompt}'", subtitle=f"prompt: {prompt}")
    page = rep.to_html()
    assert not any(c in page for c in "\u202e\u200b\u2066")
    assert "abc\\u202edcba\\u200b\\u2066x" in page


def test_lock_is_released_when_the_capture_fails(model, tmp_path, monkeypatch):
    import importlib

    writer = importlib.import_module("interp.trace.writer")

    def broken(*a: Any, **k: Any) -> Any:
        assert holder(tmp_path / "st") is not None  # held while the capture runs
        raise RuntimeError("boom")

    monkeypatch.setattr(writer, "compute_shard", broken)
    with pytest.raises(RuntimeError, match="boom"):
        capture(model, DATA, hooks=HOOKS, out=tmp_path / "st", progress=False)
    assert holder(tmp_path / "st") is None and not (tmp_path / "st" / LOCK_FILE).exists()


def test_sequence_out_of_range_is_bad_input(clean):
    from interp.trace.store import SequenceRangeError

    with pytest.raises(SequenceRangeError, match="out of range") as e:
        TraceStore(clean).trace([99])
    assert isinstance(e.value, BadInputError) and isinstance(e.value, IndexError)
