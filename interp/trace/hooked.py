"""``HookedModel``: a loaded model with ``.run`` returning logits and a :class:`Trace`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from interp.hooks import HookedRun, Intervention, Site, hooks, run_with_hooks
from interp.models import LoadedModel, from_hf, load_model
from interp.trace.trace import Manifest, Trace

Inputs = str | Sequence[str] | torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RunResult:
    """``logits [batch, pos, vocab]`` (``None`` after ``stop_early``) and the run's :class:`Trace`."""

    logits: torch.Tensor | None
    trace: Trace


class HookedModel(LoadedModel):
    """A :class:`~interp.models.LoadedModel` that runs with captures and interventions.

    Example:
        >>> import interp
        >>> from interp.hooks import Ablate
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = m.run("The capital of France is", capture=["blocks.*.hook_resid_post"],
        ...             interventions=[Ablate("blocks.5.attn.hook_z", heads=[0, 1])])  # doctest: +SKIP
        >>> res.trace["blocks.29.hook_resid_post"].shape  # doctest: +SKIP
        torch.Size([1, 5, 576])
    """

    @classmethod
    def wrap(cls, loaded: LoadedModel) -> HookedModel:
        """Re-type a :class:`LoadedModel` (sharing its modules, nothing copied)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(loaded.__dict__)
        return obj

    def encode(self, inputs: Inputs, max_tokens: int | None = None, prepend_bos: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text, token ids ``[batch, pos]`` or ``(ids, mask)`` → ``(input_ids, attention_mask)`` on the model's device."""
        if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, torch.Tensor) for x in inputs):
            ids, mask = inputs
        elif isinstance(inputs, torch.Tensor):
            ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
            mask = torch.ones_like(ids)
        elif isinstance(inputs, str) or (isinstance(inputs, Sequence) and not isinstance(inputs, torch.Tensor)):
            ids, mask = self.tokenize(inputs, max_tokens=max_tokens, prepend_bos=prepend_bos)
        else:
            raise TypeError(f"inputs must be a str, a list of str, a tensor of token ids or (ids, mask); "
                            f"got {type(inputs).__name__}")
        return ids.to(self.device), mask.to(self.device)

    def run(
        self,
        inputs: Inputs,
        capture: str | Site | Sequence[str | Site] = (),
        interventions: Sequence[Intervention] = (),
        *,
        grads: str | Site | Sequence[str | Site] = (),
        metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_tokens: int | None = None,
        prepend_bos: bool = False,
        stop_early: bool = False,
        metadata: Sequence[dict[str, Any]] = (),
    ) -> RunResult:
        """Run the model once, capturing and editing activations.

        Args:
            inputs: text, a list of texts, token ids ``[batch, pos]``, or ``(ids, mask)``.
            capture: hook names or glob patterns to capture (only these are kept).
            interventions: :mod:`interp.hooks` interventions, applied in order.
            grads: hooks at which to take ``d metric / d activation`` (one backward).
            metric: ``logits -> scalar`` for ``grads``.
            max_tokens: truncate texts to this many tokens.
            prepend_bos: put the BOS token first (SmolLM2's tokenizer adds none by default).
            stop_early: end the forward after the last captured hook (``logits`` is then ``None``).
            metadata: one dict per sequence, stored in the trace.

        Returns:
            :class:`RunResult` with ``logits`` and ``trace``.
        """
        ids, mask = self.encode(inputs, max_tokens=max_tokens, prepend_bos=prepend_bos)
        out = run_with_hooks(self, ids, mask, capture=capture, interventions=interventions, grads=grads,
                             metric=metric, stop_early=stop_early)
        acts = out.activations
        dtype = next(iter(acts.values())).dtype if acts else self.dtype
        manifest = Manifest.for_model(self, dtype, {k: list(v.shape) for k, v in acts.items()})
        texts = [inputs] if isinstance(inputs, str) else inputs
        meta = tuple(dict(m) for m in metadata)
        if not meta and isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts):
            meta = tuple({"text": t} for t in texts)
        trace = Trace(input_ids=ids.cpu(), attention_mask=mask.cpu(),
                      tokens=tuple(tuple(row) for row in self.to_str_tokens(ids)),
                      activations=acts, manifest=manifest, metadata=meta, grads=out.grads)
        return RunResult(logits=out.logits, trace=trace)

    @contextmanager
    def hooks(self, fns: dict[str, Callable[[torch.Tensor, Site], torch.Tensor | None]] | None = None,
              interventions: Sequence[Intervention] = (), capture: str | Sequence[str] = ()) -> Iterator[HookedRun]:
        """Ad-hoc hooks around forwards you call yourself (``model.hf.generate`` too); see :func:`interp.hooks.hooks`."""
        with hooks(self, fns, interventions, capture) as run:
            yield run

    def __repr__(self) -> str:
        d = self.dims
        return (f"HookedModel({self.name!r}, {self.adapter.family}, layers={d.n_layers}, heads={d.n_heads}/"
                f"{d.n_kv_heads}kv, d_model={d.d_model}, d_mlp={d.d_mlp}, vocab={d.d_vocab})")


def load(name_or_path: str, **kwargs: Any) -> HookedModel:
    """Load a model ready to run with hooks; arguments as :func:`interp.models.load_model`.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> m.run("Hello").logits.shape  # doctest: +SKIP
        torch.Size([1, 1, 49152])
    """
    return HookedModel.wrap(load_model(name_or_path, **kwargs))


def wrap(hf_model: torch.nn.Module, tokenizer: object = None, name: str | None = None) -> HookedModel:
    """Wrap a ``transformers`` model you already have (not copied)."""
    return HookedModel.wrap(from_hf(hf_model, tokenizer, name))
