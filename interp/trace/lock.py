"""The store's writer lock: one writer per store at a time.

A writer (:func:`interp.trace.capture`, the driver of :func:`interp.distributed.capture` on behalf of its Ray
workers, :meth:`Trace.save`) holds ``<store>/writer.lock`` while it writes: an exclusive lock file that names
the writer (``{"pid", "host", "started", "command"}``). A second writer on the same store fails at once with
:class:`StoreLockedError`, whose message names the first.

The lock is an advisory ``flock`` on the file (which the kernel drops when the process dies, however it dies)
plus the pid and host written in it:

- held by a live process: refused (the message names its pid, host and command);
- left by a dead process on this host (the file is there, nobody holds the ``flock``): stale, taken over with a
  warning;
- left by a process on another host (a network filesystem): refused, since this host cannot tell whether it
  still runs; the message says which file to delete once no capture runs there.

The file is removed when the writer finishes (or fails). A reader (:class:`~interp.trace.TraceStore`) takes no
lock: every file is replaced atomically, so a reader sees a consistent (possibly partial) store.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from interp.trace.lock import StoreLockedError, store_lock
    >>> root = Path(tempfile.mkdtemp())
    >>> with store_lock(root):
    ...     try:
    ...         with store_lock(root):
    ...             pass
    ...     except StoreLockedError as e:
    ...         print("refused:", "is being written by pid" in str(e))
    refused: True
    >>> (root / "writer.lock").exists()
    False
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interp.errors import BadInputError
from interp.trace.layout import LOCK_FILE, OutputExistsError, write_failed

log = logging.getLogger(__name__)


class StoreLockedError(BadInputError):
    """Another writer holds the store (its pid, host and command are in the message)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    cmd = str(holder.get("command", ""))[:120]
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
            f"{f' ({cmd})' if cmd else ''}, since {holder.get('started', '?')}")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 1 << 16)
        d = json.loads(raw) if raw.strip() else {}
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(root: Path) -> int:
    """Take the writer lock of the store at ``root`` (created if missing); returns the open lock file's fd.

    Raises:
        StoreLockedError: a live writer holds it, or one on another host left it.
        OutputExistsError: ``root`` is a file.
        OutputWriteError: the lock file cannot be written (disk full, read-only...).
    """
    import fcntl

    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root} exists and is a file, not a trace store directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(root, e) from e
    path = root / LOCK_FILE
    if path.is_symlink():
        raise StoreLockedError(f"{path} is a symbolic link; a store's lock file must be a plain file (delete it)")
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise write_failed(path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLockedError(f"the store at {root} is being written by {_describe(holder)}; wait for it to "
                                   "finish (or stop it), or write to another directory") from None
        try:  # the file we locked must still be the one at the path (not one a finishing writer just unlinked)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        holder = _read_holder(fd)
        host = socket.gethostname()
        if holder.get("host") not in (None, host):
            os.close(fd)
            raise StoreLockedError(
                f"the store at {root} is locked by {_describe(holder)}, another host; this host cannot tell whether "
                f"it still runs. If no capture runs there, delete {path} and try again")
        if holder.get("pid") is not None:
            alive = isinstance(holder["pid"], int) and _pid_alive(holder["pid"])
            log.warning("taking over the stale lock of %s (%s)", _describe(holder),
                        "process gone" if not alive else "its lock was released")
        record = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)[:500]}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        except OSError as e:
            release(root, fd)
            raise write_failed(path, e) from e
        return fd
    raise StoreLockedError(f"could not take the lock {path}: other writers keep replacing it")


def release(root: Path, fd: int) -> None:
    """Drop the lock taken by :func:`acquire` (the file is removed first, then the ``flock`` released)."""
    with contextlib.suppress(OSError):
        (root / LOCK_FILE).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


@contextlib.contextmanager
def store_lock(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold the writer lock of a local store for the ``with`` block (``None``: a remote store, no lock)."""
    if root is None:
        yield
        return
    r = Path(root)
    fd = acquire(r)
    try:
        yield
    finally:
        release(r, fd)


def check_unlocked(root: str | os.PathLike[str] | None) -> None:
    """Fail at once (before any planning or tokenizing) when a live writer holds the store; writes nothing.

    Raises:
        StoreLockedError: a live writer holds it (the message names it).
    """
    if root is None:
        return
    held = holder(root)
    if held is not None:
        raise StoreLockedError(f"the store at {root} is being written by {_describe(held)}; wait for it to finish "
                               "(or stop it), or write to another directory")


def holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the store's lock now (``None``: nobody; a lock file nobody holds is stale)."""
    import fcntl

    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        return None
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "StoreLockedError", "acquire", "check_unlocked", "holder", "release", "store_lock"]
