"""Progress bars (tqdm) with one switch for the whole library.

Every long-running tool takes ``progress: bool | None = None``: ``True``/``False`` decide for that call;
``None`` follows the library-level switch, which is on unless the environment sets ``INTERP_PROGRESS=0`` or
the code runs inside :func:`quiet` (the ``interp`` command's ``--quiet`` does that). Messages go through the
``logging`` module's ``interp`` logger, never ``print``.

Example:
    >>> import interp
    >>> from interp.progress import progress, progress_enabled
    >>> with interp.quiet():
    ...     progress_enabled(None), progress_enabled(True)
    (False, True)
    >>> sum(progress(range(3), enabled=False))
    3
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_switch: ContextVar[bool | None] = ContextVar("interp_progress", default=None)


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether to show a bar: ``requested`` when given, else the library-level switch."""
    if requested is not None:
        return bool(requested)
    current = _switch.get()
    if current is not None:
        return current
    return os.environ.get("INTERP_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def quiet(quiet: bool = True) -> Iterator[None]:
    """Inside this block, tools called with ``progress=None`` show no progress bars."""
    token = _switch.set(not quiet)
    try:
        yield
    finally:
        _switch.reset(token)


def progress(iterable: Iterable[T] | None = None, *, enabled: bool | None = None, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``), shown per :func:`progress_enabled`."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not progress_enabled(enabled), **kwargs)


__all__ = ["progress", "progress_enabled", "quiet"]
