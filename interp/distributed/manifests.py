"""Per-writer partial manifests and their merge into ``manifest.json``.

Each worker owns one file, ``manifest.part-<worker>.json``, listing the shards it has finished (it
rewrites it atomically after every shard). Only the driver writes ``manifest.json``. Whatever was
killed and when, the merge rebuilds a consistent manifest: it takes every shard entry of the
manifest and of the parts whose file is present with the recorded size (and, with
``verify="sha256"``, the recorded hash), one entry per shard index; a shard that fails is dropped
from the manifest and its file deleted, so the next capture re-computes it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from interp.distributed.location import StoreLocation
from interp.errors import BadInputError
from interp.trace.layout import ShardInfo, StoreManifest

PART_PREFIX = "manifest.part-"
PART_KIND = "interp-trace-store-part"
log = logging.getLogger("interp.distributed")


def part_name(worker: str) -> str:
    return f"{PART_PREFIX}{worker}.json"


def part_json(worker: str, dataset_fingerprint: str, model_fingerprint: str, shards: list[ShardInfo]) -> bytes:
    """The content of one worker's partial manifest."""
    return json.dumps({"kind": PART_KIND, "worker": worker, "pid": os.getpid(),
                       "dataset_fingerprint": dataset_fingerprint, "model_fingerprint": model_fingerprint,
                       "shards": [s.__dict__ for s in shards]}, indent=1).encode()


def read_parts(loc: StoreLocation) -> dict[str, dict[str, Any]]:
    """Every partial manifest in the store, by file name (malformed ones are skipped with a warning:
    a part is only a cache of work done; its shards are simply captured again)."""
    out = {}
    for name in loc.listdir():
        if not (name.startswith(PART_PREFIX) and name.endswith(".json")):
            continue
        try:
            d = json.loads(loc.read_bytes(name))
            if not isinstance(d, dict) or d.get("kind") != PART_KIND or not isinstance(d.get("shards"), list):
                raise BadInputError("not a partial manifest")
            out[name] = d
        except (ValueError, OSError) as e:
            log.warning("ignoring unreadable partial manifest %s (%s); its shards will be captured again", name, e)
            out[name] = {"shards": [], "unreadable": True}
    return out


@dataclass(frozen=True)
class MergeReport:
    """What a merge found: the manifest to continue from and the shards it dropped as corrupt."""

    manifest: StoreManifest
    merged_parts: tuple[str, ...]
    corrupt: tuple[int, ...]


def merge_parts(loc: StoreLocation, manifest: StoreManifest, verify: str = "sha256") -> MergeReport:
    """Fold the partial manifests into ``manifest`` and check every shard (see module docs).

    Writes the merged ``manifest.json`` and then deletes the merged part files (a crash in between
    leaves parts whose entries are already merged; merging them again changes nothing).

    Args:
        loc: the store.
        manifest: its current ``manifest.json``.
        verify: ``"sha256"`` (hash every shard), ``"size"`` (sizes only) or ``"none"``.
    """
    if verify not in ("sha256", "size", "none"):
        raise BadInputError(f"verify must be 'sha256', 'size' or 'none', got {verify!r}")
    parts = read_parts(loc)
    candidates: dict[int, list[ShardInfo]] = {}
    for s in manifest.shards:
        candidates.setdefault(s.index, []).append(s)
    for name, d in parts.items():
        if d.get("unreadable"):
            continue
        if (d.get("dataset_fingerprint"), d.get("model_fingerprint")) != (
                manifest.dataset_fingerprint, manifest.trace.model_fingerprint):
            log.warning("ignoring partial manifest %s: it belongs to another capture (dataset or model differs)", name)
            continue
        for entry in d["shards"]:
            try:
                info = ShardInfo(**entry)
            except TypeError:
                log.warning("ignoring a malformed entry of %s: %r", name, entry)
                continue
            if 0 <= info.index < manifest.n_shards and (info.start, info.stop) == manifest.shard_range(info.index):
                candidates.setdefault(info.index, []).append(info)
    good: list[ShardInfo] = []
    corrupt: list[int] = []
    for index in sorted(candidates):
        ok = next((c for c in candidates[index] if _shard_ok(loc, c, verify)), None)
        if ok is None:
            corrupt.append(index)
            log.warning("shard %d is missing or fails its %s check; it will be captured again", index,
                        "sha256" if verify == "sha256" else "size")
            loc.remove(ShardInfo(index, 0, 0, 0, 0, "").file)
        else:
            good.append(ok)
    merged = StoreManifest(trace=manifest.trace, n_seqs=manifest.n_seqs, seq_len=manifest.seq_len,
                           batch_size=manifest.batch_size, dataset_fingerprint=manifest.dataset_fingerprint,
                           settings=manifest.settings, shards=tuple(good), grads=manifest.grads)
    loc.write_bytes("manifest.json", merged.to_json().encode())
    for name in parts:
        loc.remove(name)
    return MergeReport(merged, tuple(parts), tuple(corrupt))


def _shard_ok(loc: StoreLocation, info: ShardInfo, verify: str) -> bool:
    if verify == "none":
        return loc.exists(info.file)
    if loc.size(info.file) != info.bytes:
        return False
    return verify != "sha256" or loc.sha256(info.file) == info.sha256
