"""The one atomic-write helper every file interp writes goes through (stores, saved results, ``--json`` / ``--html``).

:func:`atomic_write_bytes` writes a temporary file in the same directory, ``fsync``-s it and renames it over the
target, so a reader (or a crash, or a full disk) sees the old file or the new one, never a part of one. Errors
about the place itself (disk full, read-only, a directory in the way) become :class:`OutputWriteError`, a
``BadInputError`` (the command line exits with status 2) that is also an ``OSError``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "out.json"
    >>> atomic_write_bytes(p, b"{}"); p.read_bytes()
    b'{}'
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

from interp.errors import BadInputError


class OutputWriteError(BadInputError, OSError):
    """A file could not be written where the user asked (disk full, read-only, not a directory, no permission);
    the previous file, if any, is left as it was."""


def _open_tmp(path: Path) -> tuple[int, Path]:
    """A new ``.<name>.<random>.tmp`` beside ``path``, created with the umask's permissions (not mkstemp's 0600)."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
                errno.ENAMETOOLONG, errno.ENOENT, errno.EFBIG}


def write_failed(path: Path, e: OSError) -> OSError:
    """``e`` as an :class:`OutputWriteError` when it is about where the user asked to write (disk full, read-only,
    a directory in the way...), else ``e`` itself.

    Example:
        >>> import errno, pathlib
        >>> e = write_failed(pathlib.Path("/data/out.json"), OSError(errno.ENOSPC, "No space left on device"))
        >>> type(e).__name__, isinstance(e, OSError)
        ('OutputWriteError', True)
    """
    if isinstance(e, OutputWriteError) or e.errno not in _USER_ERRNOS:
        return e
    why = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only filesystem", errno.EISDIR: "it is a directory",
           errno.ENOTDIR: "a part of the path is not a directory"}.get(e.errno, e.strerror or str(e))
    err = OutputWriteError(f"cannot write {path}: {why}; nothing was replaced (the previous file, if any, is intact)")
    err.errno = e.errno  # (not strerror / filename: OSError would print those instead of the message)
    return err


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one.

    The one atomic-write helper: a temporary file in the same directory, written, ``fsync``-ed, then renamed
    over ``path``. A failure (a full disk...) removes the temporary file and leaves the previous ``path`` as it
    was; errors about the place itself (disk full, read-only, a directory in the way) raise
    :class:`OutputWriteError` (a ``BadInputError`` and an ``OSError``).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
        >>> atomic_write_bytes(path, b"new"); path.read_bytes(), [p.name for p in path.parent.iterdir()]
        (b'new', ['out.bin'])
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_tmp(path)
    except OSError as e:
        raise write_failed(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failed(path, e) from e
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.md"
        >>> atomic_write_text(path, "héllo"); path.read_text(encoding="utf-8")
        'héllo'
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_file(path: str | os.PathLike[str], tensors: dict[str, Any]) -> None:
    """A ``safetensors`` file of ``tensors`` written with :func:`atomic_write_bytes`.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from safetensors.torch import load_file
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> atomic_save_file(path, {"x": torch.ones(2)}); load_file(path)
        {'x': tensor([1., 1.])}
    """
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


__all__ = ["OutputWriteError", "atomic_save_file", "atomic_write_bytes", "atomic_write_text", "write_failed"]
