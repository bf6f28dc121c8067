"""``capture`` on Ray: a dataset split over workers, each writing disjoint shards of one store.

The driver tokenizes the dataset, writes ``tokens.safetensors``, ``meta.parquet`` and the
manifest, then hands out shard indices to a pool of workers (Ray actors that load the model once
each). A worker writes its shard file and its own partial manifest; the driver folds every
finished shard into ``manifest.json`` (atomically, after each shard) and, at the end, removes the
partial manifests. Faults:

- a worker dies: its in-flight shard goes back to the queue and a fresh worker replaces it;
- the driver dies: running the same call again merges the partial manifests, checks every shard
  (sha256 by default) and captures only what is missing;
- a shard on disk is corrupt (size or sha256): it is dropped from the manifest and captured again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.distributed.location import StoreLocation, as_location
from interp.distributed.manifests import PART_PREFIX, merge_parts
from interp.distributed.pool import run_pool
from interp.distributed.worker import ModelSpec, ShardWorker, build_model
from interp.errors import BadInputError
from interp.models import Model
from interp.sites import Site
from interp.trace.layout import ShardInfo, StoreManifest, StoreMismatchError, write_meta
from interp.trace.store import TraceStore
from interp.trace.trace import dtype_name
from interp.trace.writer import CapturePlan, Dataset, manifest_diffs, meta_fingerprint, plan_capture

log = logging.getLogger("interp.distributed")
BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class CaptureRun:
    """What one :func:`capture` call did.

    Attributes:
        location: the store.
        n_shards / n_tokens: the store's size when complete.
        resumed: shards found finished (and verified) when the call started.
        captured: shards computed by this call.
        recaptured: shards found corrupt or missing on disk and captured again.
        worker_failures: workers that died and were replaced.
        seconds: wall time of the capture phase (after the model and dataset were loaded).
    """

    location: StoreLocation
    n_shards: int
    n_tokens: int
    resumed: tuple[int, ...] = ()
    captured: tuple[int, ...] = ()
    recaptured: tuple[int, ...] = ()
    worker_failures: int = 0
    seconds: float = 0.0
    captured_tokens: int = field(default=0)

    @property
    def tokens_per_second(self) -> float:
        """Tokens captured by this call per second of capture."""
        return self.captured_tokens / self.seconds if self.seconds > 0 else float("nan")

    def open(self, verify: str = "size", cache_dir: str | os.PathLike[str] | None = None) -> TraceStore:
        """The store as a :class:`TraceStore` (a remote store is downloaded to ``cache_dir`` first)."""
        return TraceStore(self.location.download(cache_dir), verify=verify)


def capture(
    model: ModelSpec,
    dataset: Dataset,
    hooks: str | Site | Sequence[str | Site],
    path: str | os.PathLike[str] | StoreLocation,
    *,
    workers: int = 2,
    backend: str = "ray",
    address: str | None = None,
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    max_tokens: int | None = 128,
    column: str = "text",
    prepend_bos: bool = False,
    overwrite: bool = False,
    verify: str = "sha256",
    threads_per_worker: int | None = 1,
    max_worker_failures: int = 8,
    progress: bool = True,
) -> CaptureRun:
    """Capture hooks for a dataset with several workers into one :class:`TraceStore`.

    Same arguments and same store as :func:`interp.trace.capture`, plus where and how to run.

    Args:
        model: a model name / local directory / hub id that every worker loads, or a zero-argument
            function returning the model (Ray ships it to the workers), or — with
            ``backend="local"`` only — a loaded model.
        dataset: list of str, ``.txt`` / ``.parquet`` path, or ``datasets.Dataset``.
        hooks: names or glob patterns.
        path: a local directory or an fsspec URL (``memory://...``, ``s3://bucket/prefix``...).
            Ray workers write shards there themselves when they can all reach it; for
            ``memory://`` (private to one process) they send shard bytes back to the driver.
        workers: number of Ray actors (each loads the model once).
        backend: ``"ray"`` or ``"local"`` (the same workers, one after another, in this process).
        address: Ray cluster address when Ray is not initialised yet (``None``: ``RAY_ADDRESS`` or a
            new local Ray); ignored when ``ray.init`` was already called.
        batch_size / dtype / max_tokens / column / prepend_bos: as :func:`interp.trace.capture`.
        overwrite: replace a store captured with other settings.
        verify: how existing shards are checked when a capture resumes: ``"sha256"``, ``"size"``, ``"none"``.
        threads_per_worker: torch threads in each Ray worker.
        max_worker_failures: give up after this many worker deaths.
        progress: show a tqdm bar.

    Returns:
        :class:`CaptureRun` (``.open()`` gives the :class:`TraceStore`).

    Raises:
        StoreMismatchError: the path holds a store captured with other settings (and not ``overwrite``).
        RuntimeError: more than ``max_worker_failures`` workers died.

    Example:
        >>> import ray
        >>> from interp import distributed
        >>> ray.init(num_cpus=2, include_dashboard=False)  # doctest: +SKIP
        >>> run = distributed.capture("smollm2-135m", ["The cat sat.", "On the mat."] * 8,
        ...                           "blocks.*.hook_resid_post", "/tmp/cats-ray", workers=2)  # doctest: +SKIP
        >>> run.open().complete, run.worker_failures  # doctest: +SKIP
        (True, 0)
    """
    if backend not in BACKENDS:
        raise BadInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BadInputError(f"workers must be an int >= 1, got {workers!r}")
    if backend == "ray" and isinstance(model, Model):
        raise TypeError("with backend='ray' pass the model as a name/path or a function that builds it "
                        "(each worker loads its own copy), not a loaded model")
    if verify not in ("sha256", "size", "none"):
        raise BadInputError(f"verify must be 'sha256', 'size' or 'none', got {verify!r}")
    loc = as_location(path)
    driver_model = build_model(model)
    plan = plan_capture(driver_model, dataset, hooks, batch_size=batch_size, dtype=dtype, max_tokens=max_tokens,
                        column=column, prepend_bos=prepend_bos)
    manifest = _start_or_resume(loc, plan, overwrite, driver_model)
    report = merge_parts(loc, manifest, verify)
    manifest = report.manifest
    done = {s.index for s in manifest.shards}
    todo = [i for i in range(manifest.n_shards) if i not in done]
    if done:
        log.info("resuming %s: %d of %d shards already captured", loc.url, len(done), manifest.n_shards)
    spec: ModelSpec = driver_model if backend == "local" else model
    args = (loc.url, plan.names, dtype_name(plan.dtype), manifest.dataset_fingerprint,
            manifest.trace.model_fingerprint)
    bar = tqdm(total=len(todo), desc=f"capture {len(plan.names)} hooks on {workers} workers", unit="shard",
               disable=not progress)
    state: dict[str, Any] = {"manifest": manifest, "t0": time.perf_counter()}

    def restart_clock() -> None:  # the clock measures capturing, not starting workers and loading models
        state["t0"] = time.perf_counter()

    def finished(entry: dict[str, Any], data: bytes | None) -> None:
        info = ShardInfo(**entry)
        if data is not None:  # the store is private to this process: the driver writes the shard
            loc.write_bytes(info.file, data)
        state["manifest"] = state["manifest"].with_shard(info)
        loc.write_bytes("manifest.json", state["manifest"].to_json().encode())
        bar.update(1)

    try:
        if backend == "local":
            worker = ShardWorker(spec, *args, threads=None)
            restart_clock()
            for i in todo:
                finished(*worker.run(i, *_shard_inputs(plan, manifest, i)))
            failures = 0
        else:
            jobs = [(i, (i, *_shard_inputs(plan, manifest, i))) for i in todo]
            failures = run_pool(ShardWorker, (spec, *args), {"threads": threads_per_worker}, "run", jobs,
                                lambda _, value: finished(*value), workers=workers,
                                max_failures=max_worker_failures, address=address, on_ready=restart_clock)
    finally:
        bar.close()
    seconds = time.perf_counter() - state["t0"]
    final = merge_parts(loc, state["manifest"], "none").manifest  # fold in (and remove) the parts
    n_new = sum(s.n_tokens for s in final.shards if s.index in set(todo))
    return CaptureRun(location=loc, n_shards=final.n_shards, n_tokens=sum(s.n_tokens for s in final.shards),
                      resumed=tuple(sorted(done)), captured=tuple(todo), recaptured=report.corrupt,
                      worker_failures=failures, seconds=seconds, captured_tokens=n_new)


def _shard_inputs(plan: CapturePlan, manifest: StoreManifest, index: int
                  ) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    start, stop = manifest.shard_range(index)
    return start, stop, plan.input_ids[start:stop].clone(), plan.attention_mask[start:stop].clone()


def _start_or_resume(loc: StoreLocation, plan: CapturePlan, overwrite: bool, model: Model) -> StoreManifest:
    fresh = plan.fresh
    if loc.exists("manifest.json"):
        old = StoreManifest.from_json(loc.read_bytes("manifest.json").decode(), f"{loc.url}/manifest.json")
        diffs = manifest_diffs(old, fresh)
        if not diffs:
            if old.settings.get("meta_fingerprint") != meta_fingerprint(plan.meta):
                _write_inputs(loc, plan, model)
                old = replace(old, settings={**old.settings, "meta_fingerprint": meta_fingerprint(plan.meta)})
                loc.write_bytes("manifest.json", old.to_json().encode())
            return old
        if not overwrite:
            raise StoreMismatchError(f"{loc.url} already holds a store captured with different {', '.join(diffs)}; "
                                     "use another path, or overwrite=True to replace it")
        loc.remove_all()
    else:
        ours = {"shards", "tokens.safetensors", "meta.parquet"}
        foreign = [n for n in loc.listdir() if n not in ours and not n.startswith((PART_PREFIX, "."))]
        if foreign:
            raise FileExistsError(f"{loc.url} exists and is not a trace store (no manifest.json; holds "
                                  f"{', '.join(foreign[:5])}); choose an empty or new location")
    _write_inputs(loc, plan, model)
    loc.write_bytes("manifest.json", fresh.to_json().encode())
    return fresh


def _write_inputs(loc: StoreLocation, plan: CapturePlan, model: Model) -> None:
    from safetensors.torch import save

    loc.write_bytes("tokens.safetensors", save({"input_ids": plan.input_ids.contiguous(),
                                                "attention_mask": plan.attention_mask.contiguous()}))
    tokens = model.to_str_tokens(plan.input_ids) if model.tokenizer is not None else None
    with tempfile.TemporaryDirectory(prefix="interp-meta-") as tmp:
        write_meta(Path(tmp), plan.meta, tokens)
        if (Path(tmp) / "meta.parquet").exists():
            loc.write_bytes("meta.parquet", (Path(tmp) / "meta.parquet").read_bytes())
