"""``Model.run``'s work: encode the inputs, run with hooks, and wrap what was captured in a :class:`Trace`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.hooks import Intervention, run_with_hooks
from interp.models import Inputs, Model
from interp.sites import SiteSpec
from interp.trace.trace import Manifest, Trace


@dataclass(frozen=True)
class RunResult:
    """``logits [batch, pos, vocab]`` (``None`` after ``stop_early``) and the run's :class:`Trace`."""

    logits: torch.Tensor | None
    trace: Trace

    def __repr__(self) -> str:
        shape = "None" if self.logits is None else f"[{', '.join(map(str, self.logits.shape))}]"
        return f"RunResult(logits={shape}, trace={self.trace!r})"


def run_model(model: Model, inputs: Inputs, capture: SiteSpec | Sequence[SiteSpec] = (),
              interventions: Sequence[Intervention] = (), *, grads: SiteSpec | Sequence[SiteSpec] = (),
              metric: Callable[[torch.Tensor], torch.Tensor] | None = None, max_tokens: int | None = None,
              prepend_bos: bool = False, stop_early: bool = False, metadata: Sequence[dict[str, Any]] = ()
              ) -> RunResult:
    """See :meth:`interp.models.Model.run`."""
    ids, mask = model.encode(inputs, max_tokens=max_tokens, prepend_bos=prepend_bos)
    out = run_with_hooks(model, ids, mask, capture=capture, interventions=interventions, grads=grads,
                         metric=metric, stop_early=stop_early)
    acts = out.activations
    dtype = next(iter(acts.values())).dtype if acts else model.dtype
    manifest = Manifest.for_model(model, dtype, {k: list(v.shape) for k, v in acts.items()})
    meta = tuple(dict(m) for m in metadata)
    if not meta:
        if isinstance(inputs, str):
            meta = ({"text": inputs},)
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
            meta = tuple({"text": t} for t in inputs)
        elif isinstance(inputs, Trace):
            meta = inputs.metadata
    trace = Trace(input_ids=ids.cpu(), attention_mask=mask.cpu(),
                  tokens=tuple(tuple(row) for row in model.to_str_tokens(ids)),
                  activations=acts, manifest=manifest, metadata=meta, grads=out.grads)
    return RunResult(logits=out.logits, trace=trace)


__all__ = ["RunResult", "run_model"]
