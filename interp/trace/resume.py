"""The one store writer's start, resume and merge: shared by :func:`interp.trace.capture` and
:func:`interp.distributed.capture`.

A capture calls :func:`start_or_resume` before its first forward. Given the manifest a new store would start
from, it either

- **starts** a store: checks that the location is empty or a store's leftovers (an interrupted writer's
  temporary files), writes ``tokens.safetensors``, ``meta.parquet`` and ``manifest.json``;
- **resumes** one captured with the same model, hooks (and their shapes), dtype, tokens and batch size: removes
  stale temporary files, re-writes ``tokens.safetensors`` / ``meta.parquet`` when their bytes differ from what
  the inputs give (edited, corrupt, or new labels), folds in the partial manifests of writers that died before
  the driver merged them, and checks every finished shard (its size and token count always; its sha256 with
  ``verify="sha256"`` or when a previous :meth:`TraceStore.verify` failed, which leaves ``verify-failed.json``);
  a shard that fails is dropped and its file deleted, so the capture computes it again;
- **refuses** a store captured with other settings (:class:`StoreMismatchError`), or replaces it with
  ``overwrite=True``, which removes only the files the old manifest (and the partial manifests) list.

Every path is resolved inside the store first: a symbolic link that leads outside it (``shards/`` pointing to
another directory...) is refused with :class:`~interp.trace.layout.UnsafePathError` before anything is written
or deleted.

Partial manifests: each worker of a distributed capture owns ``manifest.part-<worker>.json``, listing the
shards it has finished (rewritten atomically after every shard). Only the driver writes ``manifest.json``.
Whatever was killed and when, :func:`merge_parts` rebuilds a consistent manifest: every shard entry of the
manifest and of the parts whose file is present with the recorded size (and, with ``verify="sha256"``, the
recorded hash), one entry per shard index.

Example:
    >>> import torch, interp
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from interp.hooks import make_plans
    >>> from interp.trace.location import StoreLocation
    >>> from interp.trace.resume import part_json, part_name, start_or_resume
    >>> from interp.trace.writer import compute_shard, plan_capture, write_shard
    >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
    >>> plan = plan_capture(m, torch.randint(0, 100, (4, 6)), hooks="resid_post.1", batch_size=2)
    >>> loc = StoreLocation("memory://resume-doc")
    >>> start_or_resume(loc, plan.fresh, plan.inputs).manifest.n_shards  # a new store: inputs and manifest
    2
    >>> tensors, n = compute_shard(m, make_plans(m, plan.names), plan.names, plan.input_ids[:2],
    ...                            plan.attention_mask[:2], torch.float32, False)
    >>> info = write_shard(loc, 0, 0, 2, tensors, n)  # a worker finished shard 0, then its driver died
    >>> loc.write_bytes(part_name("w1"), part_json("w1", plan.fresh.dataset_fingerprint,
    ...                                            plan.fresh.trace.model_fingerprint, [info]))
    >>> report = start_or_resume(loc, plan.fresh, plan.inputs, verify="sha256")  # the same call resumes
    >>> [s.index for s in report.manifest.shards], report.merged_parts
    ([0], ('manifest.part-w1.json',))
    >>> loc.remove_all()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from safetensors.torch import save as st_save

from interp.errors import BadInputError
from interp.trace.layout import (
    PART_PREFIX,
    STORE_FILES,
    VERIFY_FAILED,
    OutputExistsError,
    ShardInfo,
    StoreManifest,
    StoreMismatchError,
    meta_parquet,
)
from interp.trace.location import StoreLocation

PART_KIND = "interp-trace-store-part"
VERIFY = ("sha256", "size", "none")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreInputs:
    """What a store holds besides activations: token ids and mask ``[n_seqs, seq_len]`` (right-padded), one
    metadata dict per sequence and the token strings (``None``: a model without a tokenizer)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    metadata: Sequence[dict[str, Any]]
    tokens: Sequence[Sequence[str]] | None


@dataclass(frozen=True)
class MergeReport:
    """What :func:`start_or_resume` / :func:`merge_parts` found.

    Attributes:
        manifest: the manifest to continue from (as written to ``manifest.json``).
        merged_parts: the partial manifests folded in (and deleted).
        corrupt: shards found missing or failing their check; dropped, to be captured again.
    """

    manifest: StoreManifest
    merged_parts: tuple[str, ...] = ()
    corrupt: tuple[int, ...] = ()


def meta_fingerprint(meta: Sequence[dict[str, Any]]) -> str:
    """A short hash of the per-sequence metadata (labels can change while the tokens do not)."""
    return hashlib.sha256(json.dumps(list(meta), sort_keys=True, default=str).encode()).hexdigest()[:16]


def manifest_diffs(old: StoreManifest, fresh: StoreManifest) -> list[str]:
    """The capture settings in which an existing store differs from a new one (empty: it can resume)."""
    return [k for k, a, b in (
        ("model", old.trace.model_fingerprint, fresh.trace.model_fingerprint),
        ("hooks", list(old.trace.hooks), list(fresh.trace.hooks)),
        ("hook shapes", old.trace.hooks, fresh.trace.hooks),
        ("dtype", old.trace.dtype, fresh.trace.dtype),
        ("dataset", old.dataset_fingerprint, fresh.dataset_fingerprint),
        ("batch_size", old.batch_size, fresh.batch_size),
    ) if a != b]


def input_files(inputs: StoreInputs) -> tuple[bytes, bytes | None]:
    """The bytes of ``tokens.safetensors`` and of ``meta.parquet`` (``None``: no metadata file); the metadata is
    checked."""
    meta = meta_parquet(inputs.metadata, inputs.tokens)
    tokens = st_save({"input_ids": inputs.input_ids.detach().cpu().contiguous(),
                      "attention_mask": inputs.attention_mask.detach().cpu().contiguous()})
    return tokens, meta


def write_inputs(loc: StoreLocation, inputs: StoreInputs) -> tuple[str, str]:
    """Write ``tokens.safetensors`` and ``meta.parquet`` (each atomically; the metadata is checked first); returns
    their sha256 (``""`` for no ``meta.parquet``)."""
    tokens, meta = input_files(inputs)
    loc.write_bytes("tokens.safetensors", tokens)
    if meta is not None:
        loc.write_bytes("meta.parquet", meta)
    return hashlib.sha256(tokens).hexdigest(), (hashlib.sha256(meta).hexdigest() if meta is not None else "")


def _refresh_inputs(loc: StoreLocation, old: StoreManifest, inputs: StoreInputs) -> StoreManifest:
    """Re-write ``tokens.safetensors`` / ``meta.parquet`` of a resumed store when their bytes are not what
    ``inputs`` give (a damaged or edited file, new metadata); the manifest records their hashes."""
    tokens, meta = input_files(inputs)
    t_sha = hashlib.sha256(tokens).hexdigest()
    m_sha = hashlib.sha256(meta).hexdigest() if meta is not None else ""
    rewrote = False
    if not loc.exists("tokens.safetensors") or loc.sha256("tokens.safetensors") != t_sha:
        log.warning("re-writing %s/tokens.safetensors (missing or not what the inputs give)", loc.url)
        loc.write_bytes("tokens.safetensors", tokens)
        rewrote = True
    if meta is not None and (not loc.exists("meta.parquet") or loc.sha256("meta.parquet") != m_sha):
        loc.write_bytes("meta.parquet", meta)
        rewrote = True
    elif meta is None and loc.exists("meta.parquet"):
        loc.remove("meta.parquet")
        rewrote = True
    if rewrote or old.tokens_sha256 or old.meta_sha256:  # an untouched older store keeps its manifest as it is
        return replace(old, tokens_sha256=t_sha, meta_sha256=m_sha)
    return old


def start_or_resume(loc: StoreLocation, fresh: StoreManifest, inputs: StoreInputs, *, overwrite: bool = False,
                    verify: str = "size") -> MergeReport:
    """The manifest a capture continues from: a matching store's (partial manifests merged, shards checked),
    else a new store's, whose inputs and manifest are written here (see the module docs).

    Args:
        loc: where the store is.
        fresh: the manifest a new store starts from (with no shards).
        inputs: the store's token ids, mask, metadata and token strings.
        overwrite: replace a store captured with other settings.
        verify: how finished shards are checked: ``"size"`` (their size and token count), ``"sha256"`` (and their
            hash) or ``"none"`` (as ``"size"``: sizes are always checked). A failed :meth:`TraceStore.verify`
            makes the next resume check sha256 whatever this says.

    Raises:
        StoreMismatchError: the location holds a store captured with other settings (and not ``overwrite``).
        OutputExistsError: the location holds files that are not a store's.
        BadInputError / SchemaVersionError: a malformed ``manifest.json`` / one written by a newer interp.
    """
    if verify not in VERIFY:
        raise BadInputError(f"bad verify {verify!r}; valid: {', '.join(VERIFY)}")
    if loc.is_file():
        raise OutputExistsError(f"{loc.url} exists and is a file, not a trace store directory")
    for name in ("manifest.json", "tokens.safetensors", "meta.parquet", "shards", VERIFY_FAILED):
        loc.exists(name)  # resolves each path: a symbolic link out of the store is refused before any write
    if loc.exists("manifest.json"):
        old = StoreManifest.from_json(loc.read_bytes("manifest.json").decode(errors="replace"),
                                      f"{loc.url}/manifest.json")
        loc.remove_stale_tmp()
        diffs = manifest_diffs(old, fresh)
        if not diffs:
            meta_fp = fresh.settings.get("meta_fingerprint")
            on_disk = old.to_json()
            old = _refresh_inputs(loc, replace(old, settings={**old.settings, "meta_fingerprint": meta_fp}), inputs)
            if loc.exists(VERIFY_FAILED):
                log.warning("a previous verify() of %s failed: checking every shard's sha256", loc.url)
                verify = "sha256"
            lens = inputs.attention_mask.sum(1)
            counts = [int(lens[slice(*old.shard_range(i))].sum()) for i in range(old.n_shards)]
            report = merge_parts(loc, old, verify, token_counts=counts, force_write=old.to_json() != on_disk)
            loc.remove(VERIFY_FAILED)
            return report
        if not overwrite:
            raise StoreMismatchError(f"{loc.url} already holds a store captured with different {', '.join(diffs)}; "
                                     "use another path, or overwrite=True (--overwrite) to replace it")
        _clear(loc, old)
    else:
        ours = set(STORE_FILES) | set(loc.tmp_files())
        foreign = [n for n in loc.listdir() if n not in ours and not _is_part(n)]
        foreign += [f"shards/{n}" for n in loc.listdir("shards") if not n.startswith(".")]
        if foreign:
            raise OutputExistsError(f"{loc.url} exists and is not a trace store (no manifest.json; holds "
                                 f"{', '.join(sorted(foreign)[:5])}); choose an empty or new directory")
        loc.remove_stale_tmp()
        for name in [n for n in loc.listdir() if _is_part(n)]:  # parts of a capture that never wrote a manifest
            loc.remove(name)
    loc.mkdir()
    t_sha, m_sha = write_inputs(loc, inputs)
    fresh = replace(fresh, tokens_sha256=t_sha, meta_sha256=m_sha)
    loc.write_bytes("manifest.json", fresh.to_json().encode())
    return MergeReport(fresh)


def _clear(loc: StoreLocation, old: StoreManifest) -> None:
    """Remove the files a store's manifest and partial manifests list (its shards), the partial manifests and the
    manifest, in that order (a crash midway leaves a manifest that still refuses to resume, never shards without
    one). Nothing else is deleted: a file the manifest does not list is left where it is."""
    loc.remove_stale_tmp()
    files = {s.file for s in old.shards}
    for d in read_parts(loc).values():
        for entry in d.get("shards", []):
            index = entry.get("index") if isinstance(entry, dict) else None
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < old.n_shards:
                files.add(ShardInfo(index, 0, 0, 0, 0, "").file)
    for rel in sorted(files):
        loc.remove(rel)
    for name in loc.listdir():
        if _is_part(name):
            loc.remove(name)
    loc.remove(VERIFY_FAILED)
    loc.remove("manifest.json")


def _is_part(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(".json")


# -- partial manifests ---------------------------------------------------------------------------------------
def part_name(worker: str) -> str:
    """The file of one writer's partial manifest."""
    return f"{PART_PREFIX}{worker}.json"


def part_json(worker: str, dataset_fingerprint: str, model_fingerprint: str, shards: Sequence[ShardInfo]) -> bytes:
    """The content of one writer's partial manifest."""
    from interp.version import __version__

    return json.dumps({"kind": PART_KIND, "worker": worker, "pid": os.getpid(), "interp_version": __version__,
                       "dataset_fingerprint": dataset_fingerprint, "model_fingerprint": model_fingerprint,
                       "shards": [s.__dict__ for s in shards]}, indent=1).encode()


def read_parts(loc: StoreLocation) -> dict[str, dict[str, Any]]:
    """Every partial manifest in the store, by file name (malformed ones are skipped with a warning:
    a part is only a record of work done; its shards are simply captured again)."""
    out = {}
    for name in loc.listdir():
        if not _is_part(name):
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


def merge_parts(loc: StoreLocation, manifest: StoreManifest, verify: str = "sha256", *,
                token_counts: Sequence[int] | None = None, force_write: bool = False) -> MergeReport:
    """Fold the partial manifests into ``manifest`` and check every shard (see the module docs).

    Writes the merged ``manifest.json`` when it changed, then deletes the merged part files (a crash in
    between leaves parts whose entries are already merged; merging them again changes nothing).

    Args:
        loc: the store.
        manifest: its current ``manifest.json``.
        verify: ``"sha256"`` (hash every shard), ``"size"`` or ``"none"`` (sizes only).
        token_counts: each shard's token count as the inputs give it (a shard recorded with another is dropped).
        force_write: write ``manifest.json`` even when nothing changed.
    """
    if verify not in VERIFY:
        raise BadInputError(f"bad verify {verify!r}; valid: {', '.join(VERIFY)}")
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
        ok = next((c for c in candidates[index] if _shard_ok(loc, c, verify)
                   and (token_counts is None or c.n_tokens == token_counts[index])), None)
        if ok is None:
            corrupt.append(index)
            log.warning("shard %d of %s is missing or fails its %s check; it will be captured again", index,
                        loc.url, "sha256" if verify == "sha256" else "size")
            loc.remove(ShardInfo(index, 0, 0, 0, 0, "").file)
        else:
            good.append(ok)
    merged = replace(manifest, shards=tuple(sorted(good, key=lambda s: s.index)))
    if force_write or merged.to_json() != manifest.to_json() or parts:
        loc.write_bytes("manifest.json", merged.to_json().encode())
    for name in parts:
        loc.remove(name)
    return MergeReport(merged, tuple(parts), tuple(corrupt))


def _shard_ok(loc: StoreLocation, info: ShardInfo, verify: str) -> bool:
    if loc.size(info.file) != info.bytes:  # the size always ("none" included: a stat is free)
        return False
    return verify != "sha256" or loc.sha256(info.file) == info.sha256


__all__ = ["MergeReport", "StoreInputs", "manifest_diffs", "merge_parts", "meta_fingerprint", "part_json",
           "part_name", "read_parts", "start_or_resume", "write_inputs"]
