"""interp.distributed in-process (``backend="local"``): store locations (local, memory://), partial
manifests and their merge, corrupt shards, bad arguments, the CLI. (Killed workers and a killed driver
are in test_distributed_ray.py.)

Oracle: the residual stream from Hugging Face's own ``output_hidden_states`` (not interp's hooks).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch
from _trace_helpers import TEXTS, char_llama
from conftest import requires

import interp
from interp import distributed
from interp.distributed import RayConnectError, StoreLocation, merge_parts
from interp.errors import BadInputError, InterpError
from interp.trace import StoreMismatchError, TraceStore, capture
from interp.trace.layout import StoreManifest
from interp.trace.resume import part_json, part_name

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"]
DATA = TEXTS * 2  # 22 sequences -> 11 shards of 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The char-level Llama saved with save_pretrained, so that any process can load it by path."""
    d = tmp_path_factory.mktemp("char-llama")
    m = char_llama()
    m.hf.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


def oracle_resid_post0(model_dir: Path, texts: list[str]) -> list[torch.Tensor]:
    """``blocks.0.hook_resid_post`` per sequence (real tokens only) from HF hidden_states[1]."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt")["input_ids"]
            out.append(hf(ids, output_hidden_states=True).hidden_states[1][0])
    return out


def assert_matches_oracle(store: TraceStore, expected: list[torch.Tensor]) -> None:
    assert store.complete and store.n_seqs == len(expected)
    # every sequence exactly once: shard ranges are disjoint and cover [0, n)
    covered = [i for s in store.shards() for i in range(s.start, s.stop)]
    assert covered == list(range(len(expected)))
    tr = store.trace(hooks="blocks.0.hook_resid_post")
    for i, want in enumerate(expected):
        got = tr["blocks.0.hook_resid_post"][i, : want.shape[0]]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert store.n_tokens == sum(e.shape[0] for e in expected)


@pytest.mark.parametrize("where", ["dir", "memory"])
def test_local_backend_matches_hf_hidden_states(model_dir: Path, tmp_path: Path, where: str) -> None:
    url = str(tmp_path / "st") if where == "dir" else f"memory://interp-test-{uuid.uuid4().hex}"
    run = distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=url, backend="local", batch_size=2, progress=False)
    assert run.captured == tuple(range(11)) and run.resumed == () and run.worker_failures == 0
    assert not [n for n in StoreLocation(url).listdir() if n.startswith("manifest.part-")]
    assert_matches_oracle(run.open(), oracle_resid_post0(model_dir, DATA))
    again = distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=url, backend="local", batch_size=2, progress=False)
    assert again.captured == () and again.resumed == tuple(range(11))
    with pytest.raises(StoreMismatchError, match="hooks"):
        distributed.capture(str(model_dir), DATA, hooks=["blocks.1.hook_resid_post"], out=url, backend="local", batch_size=2,
                            progress=False)
    other = distributed.capture(str(model_dir), DATA[:3], hooks=["blocks.1.hook_resid_post"], out=url, backend="local",
                                batch_size=2, overwrite=True, progress=False)
    store = other.open()
    assert other.captured == (0, 1) and store.hooks == ["blocks.1.hook_resid_post"] and store.n_seqs == 3
    assert StoreLocation(url).listdir("shards") == ["00000.safetensors", "00001.safetensors"]
    StoreLocation(url).remove_all()


def test_partial_manifests_merge_and_corrupt_shard_is_recaptured(model_dir: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "st")
    run = distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=url, backend="local", batch_size=2, progress=False)
    loc = StoreLocation(url)
    man = StoreManifest.from_json(loc.read_bytes("manifest.json").decode())
    shards = sorted(man.shards, key=lambda s: s.index)
    # as if two workers finished shards 0-5 and 6-10 but the driver died before merging any of them
    loc.write_bytes("manifest.json", StoreManifest(**{**man.__dict__, "shards": ()}).to_json().encode())
    fps = (man.dataset_fingerprint, man.trace.model_fingerprint)
    loc.write_bytes(part_name("a"), part_json("a", *fps, shards[:6]))
    loc.write_bytes(part_name("b"), part_json("b", *fps, shards[6:]))
    loc.write_bytes(part_name("c"), b"{ truncated")  # a worker killed mid-write would leave no such file; still
    assert not TraceStore(url).complete
    report = merge_parts(loc, StoreManifest.from_json(loc.read_bytes("manifest.json").decode()))
    assert report.manifest.complete and report.corrupt == ()
    assert TraceStore(url).complete and not [n for n in loc.listdir() if n.startswith("manifest.part-")]
    # flip one byte in shard 3 (same size: only the sha256 catches it)
    p = tmp_path / "st" / shards[3].file
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF
    p.write_bytes(bytes(raw))
    inode_other = (tmp_path / "st" / shards[4].file).stat().st_ino
    rerun = distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=url, backend="local", batch_size=2, progress=False)
    assert rerun.recaptured == (3,) and rerun.captured == (3,)
    assert (tmp_path / "st" / shards[4].file).stat().st_ino == inode_other  # the good shards were kept
    TraceStore(url, verify="sha256").verify()
    assert_matches_oracle(run.open(), oracle_resid_post0(model_dir, DATA))


def test_locations_and_bad_arguments(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown filesystem protocol 'nosuchfs'"):
        StoreLocation("nosuchfs://x")
    with pytest.raises(ValueError, match="local path or an fsspec URL"):
        StoreLocation("  ")
    with pytest.raises(BadInputError, match="bad backend 'dask'; valid: ray, local"):
        distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=str(tmp_path / "a"), backend="dask")
    with pytest.raises(BadInputError, match="bad workers 0; valid: an int >= 1"):
        distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=str(tmp_path / "a"), workers=0)
    with pytest.raises(TypeError, match="not a loaded model"):
        distributed.capture(char_llama(), DATA, hooks=HOOKS, out=str(tmp_path / "a"))
    with pytest.raises(TypeError, match="returned a int"):
        distributed.capture(lambda: 3, DATA, hooks=HOOKS, out=str(tmp_path / "a"), backend="local")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a trace store"):
        distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=str(tmp_path / "b"), backend="local", progress=False)
    assert sorted(os.listdir(tmp_path / "b")) == ["notes.txt"]
    loc = StoreLocation(f"memory://interp-test-{uuid.uuid4().hex}")
    loc.write_bytes("shards/x.bin", b"abc")
    assert loc.size("shards/x.bin") == 3 and loc.listdir("shards") == ["x.bin"] and loc.size("nope") is None
    loc.remove_all()
    assert not loc.exists("shards/x.bin")


def test_cli_capture_ray_reruns_resume(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    argv = ["capture-ray", "--model", str(model_dir), "--prompt", "the cat sat", "--prompt", "on the mat",
            "--prompt", "x", "--hooks", "blocks.0.hook_resid_post", "-o", str(tmp_path / "st"), "--local",
            "--batch-size", "2", "--quiet"]
    assert main(argv) == 0
    assert "2 shards captured, 0 found done" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 shards captured, 2 found done" in capsys.readouterr().out
    assert TraceStore(tmp_path / "st").n_tokens == len("the cat sat") + len("on the mat") + 1


def test_local_and_distributed_capture_share_one_store_writer(model_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A store the local capture left half-done is finished by the distributed capture (and one a distributed
    run left with unmerged partial manifests is finished by the local capture): same start/resume code."""
    import importlib

    writer = importlib.import_module("interp.trace.writer")
    model = interp.load_model(str(model_dir))
    real, calls = writer.forward, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "st"
    monkeypatch.setattr(writer, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        capture(model, DATA, hooks=HOOKS, out=out, batch_size=2, progress=False)
    monkeypatch.setattr(writer, "forward", real)
    assert [s.index for s in TraceStore(out).shards()] == [0, 1, 2]
    run = distributed.capture(model, DATA, hooks=HOOKS, out=str(out), backend="local", batch_size=2, progress=False)
    assert run.resumed == (0, 1, 2) and run.captured == tuple(range(3, 11))
    assert_matches_oracle(run.open(verify="sha256"), oracle_resid_post0(model_dir, DATA))
    # the other way round: shards 5-10 recorded only in a worker's partial manifest
    loc = StoreLocation(str(out))
    man = StoreManifest.from_json(loc.read_bytes("manifest.json").decode())
    shards = sorted(man.shards, key=lambda s: s.index)
    loc.write_bytes("manifest.json", StoreManifest(**{**man.__dict__, "shards": tuple(shards[:5])}).to_json().encode())
    loc.write_bytes(part_name("w1"), part_json("w1", man.dataset_fingerprint, man.trace.model_fingerprint, shards[5:]))
    monkeypatch.setattr(writer, "forward", lambda *a, **k: pytest.fail("a forward for a finished shard"))
    st = capture(model, DATA, hooks=HOOKS, out=out, batch_size=2, progress=False)
    assert st.complete and not [n for n in loc.listdir() if n.startswith("manifest.part-")]
    assert [s.sha256 for s in st.shards()] == [s.sha256 for s in shards]


def test_hf_site_and_short_forms_on_a_memory_store(model_dir: Path, tmp_path: Path) -> None:
    url = f"memory://interp-test-{uuid.uuid4().hex}"
    hooks = ["resid_post.0", "hf:model.layers.0.mlp.act_fn"]
    run = distributed.capture(str(model_dir), DATA[:5], hooks=hooks, out=url, backend="local", batch_size=2,
                              progress=False)
    got = run.open()
    ref = capture(interp.load_model(str(model_dir)), DATA[:5], hooks=hooks, out=tmp_path / "ref", batch_size=2,
                  progress=False)
    assert got.hooks == ref.hooks == ["blocks.0.hook_resid_post", "hf:model.layers.0.mlp.act_fn"]
    assert [s.sha256 for s in got.shards()] == [s.sha256 for s in ref.shards()]  # the same bytes either way
    assert got.manifest.trace.hooks["hf:model.layers.0.mlp.act_fn"] == [128]
    StoreLocation(url).remove_all()


def test_ray_connect_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray 2.60 clusters started with `ray start --head` need RAY_AUTH_MODE=token in the driver; Ray itself only
    says "Failed to connect"."""
    ray = requires("ray")
    from interp.distributed.pool import run_pool

    def refused(**kwargs):
        try:
            raise RuntimeError("InvalidAuthToken: the request carries no valid authentication token")
        except RuntimeError as e:
            raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}") from e

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(RayConnectError, match=r"10\.0\.0\.5:6379 \(Failed to connect.*InvalidAuthToken.*set "
                                              r"RAY_AUTH_MODE=token in this environment") as err:
        run_pool(dict, (), {}, "keys", [(0, ())], lambda *a: None, workers=1, max_failures=0, address="10.0.0.5:6379")
    assert isinstance(err.value, InterpError) and isinstance(err.value, ConnectionError)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(RayConnectError, match=r"RAY_AUTH_MODE=token is set: check .*auth_token"):
        run_pool(dict, (), {}, "keys", [(0, ())], lambda *a: None, workers=1, max_failures=0, address="10.0.0.5:6379")
