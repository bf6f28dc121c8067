"""Where a store lives: a local directory or any fsspec URL (``memory://``, ``s3://``, ``gs://``...).

A :class:`StoreLocation` is the small set of file operations every store writer needs (the local
:func:`interp.trace.capture` and the Ray workers of :mod:`interp.distributed` alike), each one atomic from
a reader's point of view: on a local disk a file is written to a temporary name and renamed; on an object
store a single ``PUT`` is atomic by itself (an object is either the old one or the new one). Locations are
plain picklable values (a URL string), so Ray ships them to workers, which reopen the filesystem on their
side.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from interp.errors import BadInputError
from interp.trace.layout import atomic_write_bytes, confined, remove_stale_tmp, store_tmp_files, stream_safetensors

_SHARED_PROTOCOLS_OFF = ("memory",)  # filesystems private to one process


@dataclass(frozen=True)
class StoreLocation:
    """A store root given as a local path or an fsspec URL.

    Args:
        url: ``/data/st``, ``file:///data/st``, ``memory://st``, ``s3://bucket/st``...

    Example:
        >>> from interp.trace.location import StoreLocation
        >>> loc = StoreLocation("memory://doc-example")
        >>> loc.write_bytes("manifest.json", b"{}")
        >>> loc.read_bytes("manifest.json"), loc.is_local, loc.shared
        (b'{}', False, False)
        >>> loc.remove_all()
    """

    url: str

    def __post_init__(self) -> None:
        if isinstance(self.url, os.PathLike):
            object.__setattr__(self, "url", os.fspath(self.url))
        if not isinstance(self.url, str) or not self.url.strip():
            raise BadInputError(f"a store location is a local path or an fsspec URL, got {self.url!r}")
        if "://" in self.url:
            import fsspec

            protocol = self.url.split("://", 1)[0]
            if protocol not in fsspec.available_protocols():
                raise BadInputError(f"unknown filesystem protocol {protocol!r} in {self.url!r}; "
                                 f"known: file, memory, s3, gs, ... (fsspec.available_protocols())")

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/") or "/"

    @property
    def is_local(self) -> bool:
        """The store is a local directory (fast paths: streamed shard writes, memory-mapped reads)."""
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise BadInputError(f"{self.url} is not a local path")
        return Path(self.url.removeprefix("file://"))

    @property
    def shared(self) -> bool:
        """Other processes (Ray workers) see the same files; ``memory://`` is private to one process."""
        return self.url.split("://", 1)[0] not in _SHARED_PROTOCOLS_OFF if "://" in self.url else True

    def _local(self, rel: str) -> Path:
        """The local path of ``rel``, refused (:class:`~interp.trace.layout.UnsafePathError`) when it leads outside
        the store (a symbolic link)."""
        return confined(self.local_path, rel) if rel else self.local_path

    def _full(self, rel: str) -> str:
        return posixpath.join(self._fs[1], rel)

    # -- file operations -------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.is_local:
            return (self._local(rel)).exists()
        return bool(self._fs[0].exists(self._full(rel)))

    def size(self, rel: str) -> int | None:
        """Size in bytes, ``None`` when the file is missing."""
        if self.is_local:
            p = self._local(rel)
            return p.stat().st_size if p.exists() else None
        fs = self._fs[0]
        return int(fs.size(self._full(rel))) if fs.exists(self._full(rel)) else None

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return (self._local(rel)).read_bytes()
        return bytes(self._fs[0].cat_file(self._full(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file atomically (tmp + rename locally; one PUT on an object store)."""
        if self.is_local:
            atomic_write_bytes(self._local(rel), data)
        else:
            self._fs[0].makedirs(posixpath.dirname(self._full(rel)), exist_ok=True)
            self._fs[0].pipe_file(self._full(rel), data)

    def write_tensors(self, rel: str, tensors: dict[str, Any]) -> tuple[int, str]:
        """Write a safetensors file atomically; return ``(bytes, sha256)``."""
        if self.is_local:
            return stream_safetensors(self._local(rel), tensors)
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        self.write_bytes(rel, data)
        return len(data), hashlib.sha256(data).hexdigest()

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        if self.is_local:
            with open(self._local(rel), "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
        else:
            with self._fs[0].open(self._full(rel), "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
        return h.hexdigest()

    def remove(self, rel: str) -> None:
        if self.is_local:
            (self._local(rel)).unlink(missing_ok=True)
        elif self._fs[0].exists(self._full(rel)):
            self._fs[0].rm_file(self._full(rel))

    def listdir(self, rel: str = "") -> list[str]:
        """Names of the files directly under ``rel`` (empty when it does not exist)."""
        if self.is_local:
            d = self._local(rel)
            return sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        fs, full = self._fs[0], self._full(rel) if rel else self._fs[1]
        if not fs.exists(full):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(full, detail=False))

    def remove_all(self) -> None:
        """Delete the whole store (used by tests)."""
        if self.is_local:
            shutil.rmtree(self.local_path, ignore_errors=True)
        elif self._fs[0].exists(self._fs[1]):
            self._fs[0].rm(self._fs[1], recursive=True)

    def is_file(self) -> bool:
        """The location itself is a file (a store is a directory)."""
        if self.is_local:
            return self.local_path.exists() and not self.local_path.is_dir()
        return bool(self._fs[0].isfile(self._fs[1]))

    def mkdir(self) -> None:
        """Create the store directory and its ``shards/`` (object stores need none)."""
        if self.is_local:
            (self.local_path / "shards").mkdir(parents=True, exist_ok=True)

    def tmp_files(self) -> list[str]:
        """The temporary files an interrupted local writer left (paths relative to the store)."""
        if not self.is_local or not self.local_path.is_dir():
            return []
        return sorted(str(p.relative_to(self.local_path)) for p in store_tmp_files(self.local_path))

    def remove_stale_tmp(self) -> None:
        """Delete those temporary files (call only when no writer runs)."""
        if self.is_local and self.local_path.is_dir():
            remove_stale_tmp(self.local_path)

    def download(self, dest: str | os.PathLike[str] | None = None) -> Path:
        """A local copy of the store (the directory itself when it is local) that ``TraceStore`` opens."""
        if self.is_local:
            return self.local_path
        out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="interp-store-"))
        out.mkdir(parents=True, exist_ok=True)
        for name in self.listdir():
            if name == "shards":
                for shard in self.listdir("shards"):
                    (out / "shards").mkdir(exist_ok=True)
                    (out / "shards" / shard).write_bytes(self.read_bytes(f"shards/{shard}"))
            else:
                (out / name).write_bytes(self.read_bytes(name))
        return out


def as_location(where: str | os.PathLike[str] | StoreLocation) -> StoreLocation:
    """A :class:`StoreLocation` from a path, URL or location.

    Example:
        >>> as_location("/tmp/store"), as_location("s3://bucket/store")
        (StoreLocation(url='/tmp/store'), StoreLocation(url='s3://bucket/store'))
    """
    if isinstance(where, StoreLocation):
        return where
    if isinstance(where, (str, os.PathLike)):
        return StoreLocation(os.fspath(where))
    raise TypeError(f"a store location is a path, an fsspec URL or a StoreLocation, got {type(where).__name__}")
