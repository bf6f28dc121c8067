"""Traces: captured activations in memory (:class:`Trace`) and on disk (:class:`TraceStore`)."""

from interp.trace.hooked import HookedModel, RunResult, load, wrap
from interp.trace.trace import SCHEMA_VERSION, Manifest, ModelMismatchError, Trace

__all__ = ["SCHEMA_VERSION", "HookedModel", "Manifest", "ModelMismatchError", "RunResult", "Trace", "load", "wrap"]
