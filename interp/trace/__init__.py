"""Traces: captured activations in memory (:class:`Trace`) and on disk (:class:`TraceStore`), and the
versioned files results are saved in (:mod:`interp.trace.results`)."""

from interp.errors import ModelMismatchError
from interp.trace.layout import MissingFileError, OutputExistsError, UnsafePathError
from interp.trace.lock import StoreLockedError
from interp.trace.results import Result, load_result
from interp.trace.run import RunResult
from interp.trace.store import CorruptShardError, StoreMismatchError, TraceStore
from interp.trace.trace import SCHEMA_VERSION, Manifest, Trace
from interp.trace.writer import capture, load_texts

__all__ = [
    "SCHEMA_VERSION", "CorruptShardError", "Manifest", "MissingFileError", "ModelMismatchError", "OutputExistsError",
    "Result", "RunResult",
    "StoreLockedError", "StoreMismatchError", "Trace", "TraceStore", "UnsafePathError", "capture", "load_result",
    "load_texts",
]
