"""The ``inputs`` every tool takes, turned into what the tool reads: a :class:`Trace` holding some hooks, or
batches of token ids.

``inputs`` is one of: a text, a list of texts, token ids ``[batch, pos]`` (or ``[pos]``), ``(ids, mask)``, a
:class:`Trace` or a :class:`TraceStore`. A trace or store that already holds the hooks a tool needs is read
as it is (after checking it was made by the same model); otherwise the model runs on its token ids.

Example:
    >>> import interp
    >>> from interp.trace.inputs import ensure_trace
    >>> m = interp.load_model("smollm2-135m")
    >>> tr = ensure_trace(m, "The capital of France is", "resid_post.-1")
    >>> tr.names, ensure_trace(m, tr, "resid_post.-1") is tr
    (['blocks.29.hook_resid_post'], True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from interp.errors import BadInputError
from interp.models import Inputs, Model
from interp.sites import SiteSpec, resolve
from interp.trace.store import TraceStore
from interp.trace.trace import Trace


def ensure_trace(model: Model, inputs: Inputs, hooks: SiteSpec | Sequence[SiteSpec] = (), *,
                 max_tokens: int | None = None, prepend_bos: bool = False, batch_size: int = 16) -> Trace:
    """A trace of ``inputs`` holding every hook in ``hooks`` (any :mod:`interp.sites` spelling).

    A :class:`Trace` or :class:`TraceStore` of this model that holds them is used as is (a store is read into
    memory); one without them is re-run on its token ids. Anything else runs the model once.

    Raises:
        ModelMismatchError: a trace or store made by another model.
    """
    names = [s.name for s in resolve(hooks, model.sites(), _modules(model))] if hooks else []
    if isinstance(inputs, Trace):
        inputs.check_model(model)
        if all(n in inputs for n in names):
            return inputs
        return model.run(inputs, capture=names).trace
    if isinstance(inputs, TraceStore):
        inputs.check_model(model)
        if all(n in inputs.hooks for n in names):
            return inputs.trace(hooks=names)
        ids, mask = inputs.tokens()
        meta = inputs.metadata(tokens=False)
        parts = [model.run((ids[i:i + batch_size], mask[i:i + batch_size]), capture=names,
                           metadata=meta[i:i + batch_size]).trace for i in range(0, ids.shape[0], batch_size)]
        return parts[0] if len(parts) == 1 else concat_traces(parts)
    return model.run(inputs, capture=names, max_tokens=max_tokens, prepend_bos=prepend_bos).trace


def concat_traces(traces: Sequence[Trace]) -> Trace:
    """One trace of the sequences of several traces of one model with the same hooks and the same padded length."""
    first = traces[0]
    if any(t.names != first.names or t.input_ids.shape[1] != first.input_ids.shape[1] for t in traces):
        raise BadInputError("traces to concatenate need the same hooks and the same padded length")
    acts = {n: torch.cat([t.activations[n] for t in traces]) for n in first.names}
    grads = {n: torch.cat([t.grads[n] for t in traces]) for n in first.grads} if first.grads else {}
    manifest = replace(first.manifest, hooks={k: list(v.shape) for k, v in acts.items()})
    return Trace(input_ids=torch.cat([t.input_ids for t in traces]),
                 attention_mask=torch.cat([t.attention_mask for t in traces]),
                 tokens=tuple(row for t in traces for row in t.tokens), activations=acts, manifest=manifest,
                 metadata=tuple(m for t in traces for m in t.metadata), grads=grads)


def token_batches(model: Model, inputs: Inputs, batch_size: int, *, max_tokens: int | None = None,
                  prepend_bos: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask)`` of ``inputs`` in batches of ``batch_size`` sequences, on the model's
    device (texts are tokenized one batch at a time, so padding is per batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"bad batch_size {batch_size!r}; valid: an int >= 1")
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        for i in range(0, len(inputs), batch_size):
            yield model.encode(list(inputs[i:i + batch_size]), max_tokens=max_tokens, prepend_bos=prepend_bos)
        return
    ids, mask = model.encode(inputs, max_tokens=max_tokens, prepend_bos=prepend_bos)
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i:i + batch_size], mask[i:i + batch_size]


def _modules(model: Model) -> Any:
    return (n for n, _ in model.hf.named_modules() if n)


__all__ = ["concat_traces", "ensure_trace", "token_batches"]
