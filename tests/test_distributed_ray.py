"""interp.distributed on a local Ray with 2 CPUs: a worker killed mid-capture, a driver killed
mid-capture, a patching sweep split over workers. The memory:// path (workers send shard bytes to the
driver) is tested without Ray in test_distributed.py, where the same worker code runs in-process.
Few tests on purpose: every Ray worker start costs seconds here.

Oracles: HF ``output_hidden_states`` for captured activations; a patching loop written with raw
PyTorch forward pre-hooks on the HF layers for the sweep.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import requires
from test_distributed import DATA, HOOKS, assert_matches_oracle, model_dir, oracle_resid_post0  # noqa: F401

from interp import distributed

ray = requires("ray")


@pytest.fixture(scope="module")
def local_ray() -> object:
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield ray
    ray.shutdown()


def slow_loader(path: str, delay: float):  # -> a zero-argument model builder Ray ships by value
    def build():
        import time as _time

        import interp

        m = interp.load_model(path)
        m.hf.register_forward_pre_hook(lambda *a: _time.sleep(delay))
        return m

    return build


def test_worker_killed_mid_capture_every_sequence_once(local_ray: object, model_dir: Path, tmp_path: Path,  # noqa: F811
                                                       caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "st"
    result: dict[str, object] = {}

    def drive() -> None:
        try:
            result["run"] = distributed.capture(slow_loader(str(model_dir), 0.2), DATA, hooks=HOOKS, out=str(out),
                                                workers=2, batch_size=2, progress=False)
        except BaseException as e:  # surfaced below
            result["error"] = e

    caplog.set_level(logging.WARNING, logger="interp.distributed")
    driver = threading.Thread(target=drive)
    driver.start()
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and driver.is_alive():
        parts = list(out.glob("manifest.part-*.json")) if out.exists() else []
        for p in parts:
            try:
                victim = json.loads(p.read_text())["pid"]
                break
            except (OSError, ValueError, KeyError):
                continue
        time.sleep(0.02)
    assert victim is not None, f"no worker finished a shard in time: {result}"
    os.kill(victim, signal.SIGKILL)
    driver.join(240)
    assert "error" not in result, result.get("error")
    run = result["run"]
    assert run.worker_failures >= 1 and "worker died" in caplog.text
    assert sorted(run.captured) == list(range(11))
    assert not list(out.glob("manifest.part-*.json"))
    assert_matches_oracle(run.open(verify="sha256"), oracle_resid_post0(model_dir, DATA))


DRIVER = """
import sys, time, torch
from interp import distributed

def slow_model():
    import time as t
    from interp.models import load_model as load
    m = load({model!r})
    m.hf.register_forward_pre_hook(lambda *a: t.sleep(0.25))
    return m

distributed.capture(slow_model, {data!r}, hooks={hooks!r}, out={out!r}, workers=2, batch_size=2, progress=False,
                    address={address!r})
print("finished")
"""


def test_driver_killed_mid_capture_resumes_from_partial_manifests(local_ray: object, model_dir: Path,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    """A driver process attached to the running Ray cluster is SIGKILLed mid-capture (Ray then ends its
    workers); the same call, run again, merges the workers' partial manifests, keeps every finished
    shard and captures only the rest."""
    out = tmp_path / "st"
    script = tmp_path / "driver.py"
    address = ray.get_runtime_context().gcs_address
    script.write_text(DRIVER.format(model=str(model_dir), data=DATA, hooks=HOOKS, out=str(out), address=address))
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(json.loads((out / "manifest.json").read_text())["shards"]) >= 3:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the driver ended before it could be killed: " + (tmp_path / "driver.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    before = json.loads((out / "manifest.json").read_text())
    assert not before["complete"]
    kept = {s["index"]: (out / s["file"]).stat().st_ino for s in before["shards"]}
    run = distributed.capture(str(model_dir), DATA, hooks=HOOKS, out=str(out), backend="local", batch_size=2, progress=False)
    assert set(kept) <= set(run.resumed) and len(run.resumed) >= 3
    assert sorted(run.resumed + run.captured) == list(range(11))
    assert {i: (out / f"shards/{i:05d}.safetensors").stat().st_ino for i in kept} == kept  # not re-written
    assert not list(out.glob("manifest.part-*.json"))
    assert_matches_oracle(run.open(verify="sha256"), oracle_resid_post0(model_dir, DATA))


CLEAN, CORRUPT = "the cat sat", "the dog sat"
TARGETS = (70, 71)


def patch_cell(model, cell):  # shipped to Ray workers by value
    """Logit difference after patching the clean resid_pre at (layer, pos) into the corrupt run."""
    from interp.hooks import Patch

    layer, pos = cell
    site = f"blocks.{layer}.hook_resid_pre"
    clean = model.run(CLEAN, capture=[site]).trace
    logits = model.run(CORRUPT, interventions=[Patch(site, positions=pos, source=clean)]).logits
    return float(logits[0, -1, TARGETS[0]] - logits[0, -1, TARGETS[1]])


def hf_patch_oracle(path: Path, cells: list[tuple[int, int]]) -> list[float]:
    from transformers import AutoTokenizer, LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    clean_ids, corrupt_ids = (tok(t, return_tensors="pt")["input_ids"] for t in (CLEAN, CORRUPT))
    out = []
    with torch.no_grad():
        hidden = hf(clean_ids, output_hidden_states=True).hidden_states
        for layer, pos in cells:
            def pre(module, args, kwargs, layer=layer, pos=pos):
                h = (args[0] if args else kwargs["hidden_states"]).clone()
                h[:, pos] = hidden[layer][:, pos]
                return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

            handle = hf.model.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
            logits = hf(corrupt_ids).logits
            handle.remove()
            out.append(float(logits[0, -1, TARGETS[0]] - logits[0, -1, TARGETS[1]]))
    return out


def test_patching_sweep_split_over_workers(local_ray: object, model_dir: Path) -> None:  # noqa: F811
    cells = [(layer, pos) for layer in range(2) for pos in range(len(CLEAN))]
    got = distributed.map_items(str(model_dir), cells, fn=patch_cell, workers=2, progress=False)
    want = hf_patch_oracle(model_dir, cells)
    assert len(set(want)) > 3  # the sweep is not trivially constant
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=1e-4)
