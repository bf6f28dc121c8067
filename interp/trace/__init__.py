"""Traces: captured activations in memory (:class:`Trace`) and on disk (:class:`TraceStore`)."""

from interp.trace.hooked import HookedModel, RunResult, load, wrap
from interp.trace.store import CorruptShardError, StoreMismatchError, TraceStore
from interp.trace.trace import SCHEMA_VERSION, Manifest, ModelMismatchError, Trace
from interp.trace.writer import capture, load_texts

__all__ = [
    "SCHEMA_VERSION", "CorruptShardError", "HookedModel", "Manifest", "ModelMismatchError", "RunResult",
    "StoreMismatchError", "Trace", "TraceStore", "capture", "load", "load_texts", "wrap",
]
