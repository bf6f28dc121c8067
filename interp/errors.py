"""interp's errors: one hierarchy under :class:`InterpError`.

Every error interp raises on purpose derives from :class:`InterpError`, so a caller (and the ``interp``
command, which prints these as one line and exits with status 2) can tell a problem with the input from a
bug. Errors about bad input also derive from ``ValueError`` (and the lookups from ``KeyError``), so code
written against the built-in exceptions keeps working.

Example:
    >>> from interp.errors import BadInputError, InterpError, bad_value
    >>> err = bad_value("layer", 40, "0..29")
    >>> isinstance(err, BadInputError) and isinstance(err, ValueError) and isinstance(err, InterpError)
    True
    >>> str(err)
    'bad layer 40; valid: 0..29'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InterpError(Exception):
    """Base of every error interp raises on purpose."""


class BadInputError(InterpError, ValueError):
    """An argument, a name or a file's content is not valid; the message names the value and what is valid."""


class UnknownNameError(BadInputError, KeyError):
    """A name (hook point, view, model, result kind...) that does not exist; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class ModelMismatchError(BadInputError):
    """A trace, store or result made by another model than the one it is used with."""


class CorruptStoreError(InterpError, OSError):
    """A store (or saved result) on disk is damaged or inconsistent; the message says what to run."""


class MissingDependencyError(InterpError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that brings it."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "", how: str | None = None) -> None:
        how = how or (f"pip install 'interp[{extra}]'" if extra else f"pip install {package}")
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"{package} is needed{what} but is not installed; install it with: {how}")
        self.package = package
        self.extra = extra


class SchemaVersionError(InterpError, ValueError):
    """A saved file written by a newer interp (a schema version this one cannot read)."""


def bad_value(what: str, value: object, valid: str) -> BadInputError:
    """A :class:`BadInputError` saying ``bad {what} {value!r}; valid: {valid}``."""
    return BadInputError(f"bad {what} {value!r}; valid: {valid}")


def unknown_name(what: str, name: str, known: Iterable[str], *, hint: str = "") -> UnknownNameError:
    """An :class:`UnknownNameError` for ``name`` among ``known``, naming the close matches (or all, when few).

    Example:
        >>> str(unknown_name("view", "heatmp", ["heatmap", "lines"]))
        "unknown view 'heatmp'. Did you mean heatmap? Valid: heatmap, lines"
    """
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    msg = f"unknown {what} {name!r}."
    if close:
        msg += f" Did you mean {', '.join(close)}?"
    if len(known) <= 16:
        msg += f" Valid: {', '.join(known)}" if known else " There are none."
    if hint:
        msg += f" {hint}"
    return UnknownNameError(msg)


__all__ = [
    "BadInputError", "CorruptStoreError", "InterpError", "MissingDependencyError", "ModelMismatchError",
    "SchemaVersionError", "UnknownNameError", "bad_value", "unknown_name",
]
