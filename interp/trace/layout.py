"""The store's on-disk layout: manifest schema, shard entries, atomic file writes.

See :mod:`interp.trace.store` for the directory layout and the reader, :mod:`interp.trace.resume` for the one
start/resume/merge logic every writer shares.

Example:
    >>> from interp.trace.layout import ShardInfo
    >>> ShardInfo(index=3, start=24, stop=32, n_tokens=250, bytes=1024, sha256="ab").file
    'shards/00003.safetensors'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError
from interp.fileio import (  # the one atomic-write helper (re-exported here, where interp 0.2.0 had it)
    _fsync_dir,
    _open_tmp,
    atomic_write_bytes,
    write_failed,
)
from interp.sites import Component, Site
from interp.trace.trace import SCHEMA_VERSION, Manifest
from interp.version import __version__

STORE_KIND = "interp-trace-store"
GRAD_PREFIX = "grad:"  # shard key prefix of the gradients a saved trace carries
TOKENS_COLUMN = "__tokens__"  # meta.parquet column of the token strings (the other columns are metadata)
LOCK_FILE = "writer.lock"  # see interp.trace.lock
VERIFY_FAILED = "verify-failed.json"  # left by a failed TraceStore.verify(): the next resume checks sha256
STORE_FILES = frozenset({"shards", "tokens.safetensors", "meta.parquet", LOCK_FILE, VERIFY_FAILED})  # + manifest
PART_PREFIX = "manifest.part-"  # one writer's partial manifest: manifest.part-<writer>.json


class CorruptShardError(CorruptStoreError):
    """A shard's bytes do not match the manifest (truncated, edited or missing)."""


class ManifestError(CorruptStoreError, BadInputError):
    """``manifest.json`` is malformed or disagrees with the files it describes (a ``CorruptStoreError``; also a
    ``BadInputError``, as interp 0.2.0 raised for a malformed manifest)."""


class UnsafePathError(CorruptStoreError, BadInputError):
    """A path inside a store leads outside it (a symbolic link): refused on read and on write."""


class StoreMismatchError(BadInputError):
    """An existing store was captured with other settings than the ones asked for."""


class OutputExistsError(BadInputError, FileExistsError):
    """The output location already holds something interp will not write over (another store, foreign files)."""


class MissingFileError(BadInputError, FileNotFoundError):
    """A file the user named (a dataset, a store) does not exist."""


DENSE = frozenset({Component.PATTERN, Component.CROSS_PATTERN, Component.CROSS_K, Component.CROSS_V})
"""Components stored per sequence (not as token rows): attention patterns, and an encoder–decoder's cross-attention
keys, values and pattern, whose (key) positions are the source's: another token axis than the trace's own."""


def is_dense(name: str) -> bool:
    """Hooks stored per sequence (not as token rows): the attention patterns and cross-attention keys/values
    (:data:`DENSE`).

    Example:
        >>> is_dense("blocks.0.attn.hook_pattern"), is_dense("decoder.cross_k.0"), is_dense("decoder.resid_post.0")
        (True, True, False)
    """
    return Site.parse(name).component in DENSE


def dense_to_length(name: str, x: torch.Tensor, length: int) -> torch.Tensor:
    """One sequence's dense activation with its own-token axes cut (or zero-padded) to ``length``: both axes of
    ``pattern`` ``[head, q, k]``, the query axis of ``cross_pattern``; the source axes (cross keys / values, the
    cross pattern's keys) are kept as stored.

    Example:
        >>> dense_to_length("decoder.cross_pattern.0", torch.ones(2, 4, 3), 2).shape
        torch.Size([2, 2, 3])
    """
    comp = Site.parse(name).component
    if comp is Component.PATTERN:
        x = x[..., :length, :length]
        pad = length - x.shape[-1]
        return torch.nn.functional.pad(x, (0, pad, 0, pad))
    if comp is Component.CROSS_PATTERN:
        x = x[..., :length, :]
        return torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[-2]))
    return x


def stack_padded(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of one rank, zero-padding each axis to the longest (source axes of sequences from shards
    of different source lengths).

    Example:
        >>> stack_padded([torch.ones(2, 3), torch.ones(1, 4)]).shape
        torch.Size([2, 2, 4])
    """
    shape = [max(p.shape[i] for p in parts) for i in range(parts[0].dim())]
    if all(list(p.shape) == shape for p in parts):
        return torch.stack(list(parts))
    out = parts[0].new_zeros((len(parts), *shape))
    for i, p in enumerate(parts):
        index: tuple[slice, ...] = tuple(slice(0, n) for n in p.shape)
        out[i][index] = p
    return out


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``safetensors`` file written atomically (a crash leaves the old file or none, never half of one)."""
    atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def store_tmp_files(root: Path) -> list[Path]:
    """The temporary files an interrupted store writer leaves (see :func:`atomic_write_bytes`)."""
    found = [f for name in ("manifest.json", "tokens.safetensors", "meta.parquet", f"{PART_PREFIX}*.json")
             for f in root.glob(f".{name}.*.tmp")]
    if (root / "shards").is_dir():
        found += list((root / "shards").glob(".[0-9]*.safetensors.*.tmp"))
    return found


def remove_stale_tmp(root: Path) -> list[Path]:
    """Delete the temporary files an interrupted writer left in a store (call only when no writer runs)."""
    found = store_tmp_files(root)
    for f in found:
        f.unlink(missing_ok=True)
    return found


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones then zeros (the layout stores and ``trace()`` assume)."""
    m = attention_mask.bool().cpu()
    lens = m.sum(1, keepdim=True)
    return bool((m == (torch.arange(m.shape[1]) < lens)).all())


@dataclass(frozen=True)
class ShardInfo:
    """One shard: sequences ``[start, stop)``, its token count, file size and sha256."""

    index: int
    start: int
    stop: int
    n_tokens: int
    bytes: int
    sha256: str

    @property
    def file(self) -> str:
        return f"shards/{self.index:05d}.safetensors"


@dataclass(frozen=True)
class StoreManifest:
    """``manifest.json``: the trace manifest plus the store's capture settings and shard list."""

    trace: Manifest
    n_seqs: int
    seq_len: int
    batch_size: int
    dataset_fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    shards: tuple[ShardInfo, ...] = ()
    grads: dict[str, list[int]] = field(default_factory=dict)
    interp_version: str = ""  # the interp that last wrote the file ("" for interp 0.1's stores)
    tokens_sha256: str = ""  # sha256 of tokens.safetensors ("" in stores written before interp 0.2.1)
    meta_sha256: str = ""  # sha256 of meta.parquet ("" when there is none, or in older stores)

    @property
    def n_shards(self) -> int:
        return -(-self.n_seqs // self.batch_size)

    @property
    def complete(self) -> bool:
        return {s.index for s in self.shards} == set(range(self.n_shards))

    def to_json(self) -> str:
        d = {"kind": STORE_KIND, **self.trace.to_dict(), "interp_version": __version__, "n_seqs": self.n_seqs,
             "seq_len": self.seq_len,
             "batch_size": self.batch_size, "dataset_fingerprint": self.dataset_fingerprint,
             "settings": self.settings, "complete": self.complete,
             "shards": [{"file": s.file, **s.__dict__} for s in sorted(self.shards, key=lambda s: s.index)]}
        if self.grads:
            d["grads"] = self.grads
        if self.tokens_sha256:
            d["tokens_sha256"] = self.tokens_sha256
        if self.meta_sha256:
            d["meta_sha256"] = self.meta_sha256
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> StoreManifest:
        """Parse ``manifest.json`` (interp 0.1's stores included: same schema, no ``interp_version``).

        Raises:
            ManifestError: a malformed or foreign file (the message names the problem; a ``CorruptStoreError``
                and a ``BadInputError``).
            SchemaVersionError: a store written by a newer interp (a schema this one cannot read).
        """
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where} is malformed (not valid JSON: {e}); was it edited by hand?") from e
        if not isinstance(d, dict):
            raise ManifestError(f"{where} is malformed (a JSON {type(d).__name__}, not an object); was it edited by hand?")
        if d.get("kind") != STORE_KIND:
            raise ManifestError(f"{where} is not an interp trace store manifest (kind={d.get('kind')!r})")
        version = d.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} has trace schema_version {version}, written by interp {d.get('interp_version', '?')}; "
                f"this interp ({__version__}) reads version {SCHEMA_VERSION}: upgrade interp "
                "(pip install -U interp) to read it")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{where} is malformed (schema_version {version!r}; this interp reads version "
                                f"{SCHEMA_VERSION}); was it edited by hand?")
        try:
            shards = tuple(_shard_info(s) for s in d["shards"])
            man = cls(trace=Manifest.from_dict(d), n_seqs=_int(d["n_seqs"], "n_seqs", 0),
                      seq_len=_int(d["seq_len"], "seq_len", 0), batch_size=_int(d["batch_size"], "batch_size", 1),
                      dataset_fingerprint=str(d["dataset_fingerprint"]), settings=dict(d.get("settings", {})),
                      shards=shards, grads={str(k): [int(x) for x in v] for k, v in d.get("grads", {}).items()},
                      interp_version=str(d.get("interp_version", "")),
                      tokens_sha256=_hex(d.get("tokens_sha256", ""), "tokens_sha256"),
                      meta_sha256=_hex(d.get("meta_sha256", ""), "meta_sha256"))
            for h in (*man.trace.hooks, *man.grads):
                Site.parse(h)
            for h, shape in (*man.trace.hooks.items(), *man.grads.items()):
                if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
                    raise ValueError(f"hook {h!r} has shape {shape!r}")
            if man.seq_len < 1 and man.n_seqs:
                raise ValueError(f"seq_len {man.seq_len} for {man.n_seqs} sequences")
            dt = man.trace.dtype
            if not isinstance(dt, str) or not isinstance(getattr(torch, dt, None), torch.dtype):
                raise ValueError(f"dtype {dt!r} is not a torch dtype name such as 'float32'")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ManifestError(f"{where} is malformed ({what}); was it edited by hand?") from e
        indices = [s.index for s in shards]
        if len(set(indices)) != len(indices) or any(not 0 <= i < man.n_shards for i in indices):
            raise ManifestError(f"{where} is malformed (shard indices {sorted(indices)} for {man.n_shards} shards); "
                             "was it edited by hand?")
        for s in shards:
            if (s.start, s.stop) != man.shard_range(s.index):
                raise ManifestError(f"{where} is malformed (shard {s.index} covers sequences [{s.start}, {s.stop}), "
                                 f"expected {list(man.shard_range(s.index))}); was it edited by hand?")
        return man

    def shard_range(self, index: int) -> tuple[int, int]:
        """Sequences ``[start, stop)`` of shard ``index``."""
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.n_seqs)

    def with_shard(self, info: ShardInfo) -> StoreManifest:
        rest = tuple(s for s in self.shards if s.index != info.index)
        return replace(self, shards=(*rest, info))


def _int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise BadInputError(f"{name} must be an integer >= {low}, got {x!r}")
    return x


def _hex(x: Any, name: str) -> str:
    if not isinstance(x, str) or (x and (len(x) != 64 or any(c not in "0123456789abcdef" for c in x))):
        raise ValueError(f"{name} {x!r} is not a sha256 hex digest")
    return x


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in 16 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def confined(root: Path, rel: str) -> Path:
    """``root / rel``, refused when it leads outside ``root`` (a symbolic link to elsewhere, ``..``).

    Raises:
        UnsafePathError: the resolved path is not inside the resolved ``root``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> confined(root, "shards/00000.safetensors").name
        '00000.safetensors'
        >>> (root / "shards").symlink_to("/tmp")
        >>> confined(root, "shards/00000.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interp.trace.layout.UnsafePathError: ...shards/00000.safetensors leads outside the store ... (to /tmp/00000.safetensors); ...
    """
    p = root / rel
    base = root.resolve()
    target = p.resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafePathError(f"{p} leads outside the store {base} (to {target}); a store's files must be inside its "
                              "directory (a symbolic link?): refusing to read or write it")
    return p


def _shard_info(d: Any) -> ShardInfo:
    if not isinstance(d, dict):
        raise TypeError(f"a shard entry is a {type(d).__name__}, not an object")
    info = ShardInfo(**{k: v for k, v in d.items() if k != "file"})
    for name in ("index", "start", "stop", "n_tokens", "bytes"):
        _int(getattr(info, name), f"shard {name}", 0)
    if info.stop < info.start or not isinstance(info.sha256, str):
        raise BadInputError(f"bad shard entry {d!r}")
    return info


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
_CHUNK = 1 << 24  # 16 MiB pieces: written by this thread while the previous piece is hashed by another


def stream_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[int, str]:
    """Write a safetensors file atomically without building it in memory; return ``(bytes, sha256)``.

    The header and then each tensor's memory go straight to the file, in 16 MiB pieces; a second
    thread hashes each piece while the next one is written (both release the GIL), so the
    checksum costs little beyond the write itself.
    """
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header: dict[str, Any] = {}
    offset = 0
    for name, t in cpu.items():
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"cannot store {name!r} of dtype {t.dtype}")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    prefix = len(head).to_bytes(8, "little") + head
    h = hashlib.sha256()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_tmp(path)
    except OSError as e:
        raise write_failed(path, e) from e
    try:
        with os.fdopen(fd, "wb", buffering=0) as f, ThreadPoolExecutor(1, thread_name_prefix="interp-sha") as pool:
            pending = pool.submit(h.update, prefix)
            f.write(prefix)
            for t in cpu.values():
                if t.numel() == 0:
                    continue
                raw = t.view(torch.uint8).reshape(-1).numpy().data  # a memoryview of the tensor's bytes
                for i in range(0, len(raw), _CHUNK):
                    piece = raw[i:i + _CHUNK]
                    f.write(piece)
                    pending.result()
                    pending = pool.submit(h.update, piece)
            pending.result()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failed(path, e) from e
        raise
    _fsync_dir(path.parent)
    return len(prefix) + offset, h.hexdigest()


def write_shard(root: Path, index: int, start: int, tensors: dict[str, torch.Tensor], n_tokens: int,
                stop: int) -> ShardInfo:
    """Write one shard atomically and return its manifest entry (size and sha256)."""
    info = ShardInfo(index=index, start=start, stop=stop, n_tokens=n_tokens, bytes=0, sha256="")
    size, digest = stream_safetensors(root / info.file, tensors)
    return replace(info, bytes=size, sha256=digest)


def meta_parquet(metadata: Sequence[dict[str, Any]], tokens: Sequence[Sequence[str]] | None) -> bytes | None:
    """The bytes of ``meta.parquet``: per-sequence metadata and, if given, the token strings (``None``: nothing
    to store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(m) for m in metadata] if metadata else [{} for _ in tokens or []]
    if any(TOKENS_COLUMN in r for r in rows):
        raise BadInputError(f"metadata may not have a {TOKENS_COLUMN!r} field: the store keeps the token strings there")
    if tokens is not None:
        for r, t in zip(rows, tokens, strict=True):
            r[TOKENS_COLUMN] = list(t)
    if not rows:
        return None
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return bytes(sink.getvalue().to_pybytes())


def write_meta(root: Path, metadata: Sequence[dict[str, Any]], tokens: Sequence[Sequence[str]] | None) -> None:
    """Write ``meta.parquet`` atomically: per-sequence metadata and, if given, the token strings."""
    data = meta_parquet(metadata, tokens)
    if data is not None:
        atomic_write_bytes(root / "meta.parquet", data)


def tokens_fingerprint(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> str:
    """A short hash of the token ids and mask: what a resumed capture must find unchanged."""
    h = hashlib.sha256(input_ids.to("cpu", torch.int64).numpy().tobytes())
    h.update(attention_mask.to("cpu", torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]
