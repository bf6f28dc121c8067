"""``capture`` on Ray: a dataset split over workers, each writing disjoint shards of one store.

The driver plans the capture and starts (or resumes) the store with the same code as
:func:`interp.trace.capture` (:func:`interp.trace.writer.plan_capture`, :func:`interp.trace.resume.start_or_resume`),
then hands out shard indices to a pool of workers (Ray actors that load the model once each). A worker
writes its shard file and its own partial manifest; the driver folds every finished shard into
``manifest.json`` (atomically, after each shard) and, at the end, merges and removes the partial manifests.
Faults:

- a worker dies: its in-flight shard goes back to the queue and a fresh worker replaces it;
- the driver dies: running the same call again merges the partial manifests, checks every shard
  (sha256 by default) and captures only what is missing;
- a shard on disk is corrupt (size or sha256): it is dropped from the manifest and captured again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.distributed.pool import run_pool
from interp.distributed.worker import ModelSpec, ShardWorker, build_model
from interp.errors import BadInputError
from interp.models import Model
from interp.progress import progress as progress_bar
from interp.sites import SiteSpec
from interp.trace.dataset import Dataset
from interp.trace.layout import ShardInfo, StoreManifest
from interp.trace.location import StoreLocation, as_location
from interp.trace.lock import check_unlocked, store_lock
from interp.trace.resume import merge_parts, start_or_resume
from interp.trace.store import TraceStore
from interp.trace.trace import dtype_name
from interp.trace.writer import CapturePlan, plan_capture

log = logging.getLogger(__name__)
BACKENDS = ("ray", "local")
VERIFY = ("sha256", "size", "none")


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
        captured_tokens: tokens of the shards this call computed.
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

    def open(self, *, verify: str = "size", cache_dir: str | os.PathLike[str] | None = None) -> TraceStore:
        """The store as a :class:`TraceStore` (a remote store is downloaded to ``cache_dir`` first)."""
        return TraceStore(self.location.download(cache_dir), verify=verify)

    def summary(self) -> str:
        """Three lines: the store, what this call did, its speed."""
        return (f"store     {self.location.url}  ({self.n_shards} shards, {self.n_tokens} tokens)\n"
                f"this run  {len(self.captured)} shards captured, {len(self.resumed)} found done, "
                f"{len(self.recaptured)} corrupt and re-captured, {self.worker_failures} worker failures\n"
                f"speed     {self.tokens_per_second:.0f} tokens/s over {self.seconds:.1f} s")

    def __repr__(self) -> str:
        return (f"CaptureRun({self.location.url!r}, shards={self.n_shards}, tokens={self.n_tokens}, "
                f"captured={len(self.captured)}, resumed={len(self.resumed)}, recaptured={len(self.recaptured)}, "
                f"worker_failures={self.worker_failures}, tokens_per_second={self.tokens_per_second:.0f})")


def capture(
    model: ModelSpec,
    inputs: Dataset,
    *,
    out: str | os.PathLike[str] | StoreLocation,
    hooks: SiteSpec | Sequence[SiteSpec] = "resid_post",
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
    progress: bool | None = None,
) -> CaptureRun:
    """Capture hooks for a dataset with several workers into one :class:`TraceStore`.

    Same inputs, options and store as :func:`interp.trace.capture`, plus where and how to run.

    Args:
        model: a model name / local directory / hub id that every worker loads, or a zero-argument
            function returning the model (Ray ships it to the workers), or, with ``backend="local"``
            only, a loaded :class:`Model`.
        inputs: texts, a ``.txt`` / ``.parquet`` path, a ``datasets.Dataset``, a labelled set, token ids,
            a Trace or a TraceStore (see :func:`interp.trace.capture`).
        out: a local directory or an fsspec URL (``memory://...``, ``s3://bucket/prefix``...).
            Ray workers write shards there themselves when they can all reach it; for
            ``memory://`` (private to one process) they send shard bytes back to the driver.
        hooks: hook points in any :mod:`interp.sites` spelling (default: ``"resid_post"``, every layer).
        workers: number of Ray actors (each loads the model once).
        backend: ``"ray"`` or ``"local"`` (the same workers, one after another, in this process).
        address: Ray cluster address when Ray is not initialised yet (``None``: ``RAY_ADDRESS`` or a
            new local Ray); ignored when ``ray.init`` was already called.
        batch_size / dtype / max_tokens / column / prepend_bos: as :func:`interp.trace.capture`.
        overwrite: replace a store captured with other settings.
        verify: how existing shards are checked when a capture resumes: ``"sha256"``, ``"size"``, ``"none"``.
        threads_per_worker: torch threads in each Ray worker.
        max_worker_failures: give up after this many worker deaths.
        progress: show a progress bar (``None``: the library switch).

    Returns:
        :class:`CaptureRun` (``.open()`` gives the :class:`TraceStore`).

    Raises:
        StoreMismatchError: ``out`` holds a store captured with other settings (and not ``overwrite``).
        StoreLockedError: another writer is capturing into ``out`` (a local store; the driver holds the lock
            for its workers).
        RayConnectError: Ray cannot reach the cluster at ``address`` (the message says what to set).
        RuntimeError: more than ``max_worker_failures`` workers died.

    Example:
        >>> import tempfile
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> import interp, torch
        >>> from interp import distributed
        >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> run = distributed.capture(m, torch.randint(0, 100, (6, 5)), out="memory://doc-capture",
        ...                           batch_size=2, backend="local", progress=False)
        >>> run.captured, run.open().n_tokens
        ((0, 1, 2), 30)
        >>> run.location.remove_all()

        On a Ray cluster (or a local Ray), give the model as something each worker can load:

        >>> ray.init(num_cpus=2, include_dashboard=False)  # doctest: +SKIP
        >>> run = distributed.capture("smollm2-135m", ["The cat sat.", "On the mat."] * 8,
        ...                           out="/tmp/cats-ray", workers=2)  # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise BadInputError(f"bad backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BadInputError(f"bad workers {workers!r}; valid: an int >= 1")
    if backend == "ray" and isinstance(model, Model):
        raise TypeError("with backend='ray' pass the model as a name/path or a function that builds it "
                        "(each worker loads its own copy), not a loaded model")
    if verify not in VERIFY:
        raise BadInputError(f"bad verify {verify!r}; valid: {', '.join(VERIFY)}")
    loc = as_location(out)
    check_unlocked(loc.local_path if loc.is_local else None)  # another writer: fail before loading anything
    driver_model = build_model(model)
    plan = plan_capture(driver_model, inputs, hooks=hooks, batch_size=batch_size, dtype=dtype,
                        max_tokens=max_tokens, column=column, prepend_bos=prepend_bos)
    # the driver holds the store's writer lock for its workers (they write shards and partial manifests only)
    with store_lock(loc.local_path if loc.is_local else None):
        report = start_or_resume(loc, plan.fresh, plan.inputs, overwrite=overwrite, verify=verify)
        manifest = report.manifest
        done = {s.index for s in manifest.shards}
        todo = [i for i in range(manifest.n_shards) if i not in done]
        if done and todo:
            log.info("resuming %s: %d of %d shards already captured", loc.url, len(done), manifest.n_shards)
        spec: ModelSpec = driver_model if backend == "local" else model
        args = (loc.url, plan.names, dtype_name(plan.dtype), manifest.dataset_fingerprint,
                manifest.trace.model_fingerprint)
        bar = progress_bar(total=len(todo), enabled=progress, desc=f"capture {len(plan.names)} hooks on {workers} workers",
                           unit="shard")
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
