"""Steering with SAE features: amplify or suppress a feature (or a whole flow path) during generation.

A :class:`FeatureEdit` sets a feature's activation ``z`` to ``scale * z + add`` at its hook, by adding
``(new - z) * W_dec[feature]`` to the activation (the SAE's reconstruction error is kept, so an edit
with ``scale=1, add=0`` changes nothing). ``scale=0`` suppresses a feature; ``add > 0`` injects it
where it is silent. :func:`steer` generates greedily with and without the edits, through
:func:`interp.hooks.hooks` around ``generate``.

Example:
    >>> import interp
    >>> from interp.features import FeatureEdit, steer
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> steer(m, saes, [FeatureEdit("blocks.4.hook_resid_post", 12, add=8.0)], "I think that").after  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.features.flow_result import FlowGraph
from interp.features.sae import SparseAutoencoder
from interp.features.validate import feature_remover
from interp.hooks import Lambda, hooks
from interp.models import Model
from interp.trace.results import read_result, write_result


@dataclass(frozen=True)
class FeatureEdit:
    """Set feature ``feature`` of the SAE at ``hook`` to ``scale * z + add`` (SAE activation units)."""

    hook: str
    feature: int
    scale: float = 1.0
    add: float = 0.0

    def __post_init__(self) -> None:
        for name in ("scale", "add"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BadInputError(f"FeatureEdit {name} must be a finite number, got {v!r}")
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or self.feature < 0:
            raise BadInputError(f"FeatureEdit feature must be an int >= 0, got {self.feature!r}")


def path_edits(graph: FlowGraph, scale: float = 1.0, add: float = 0.0, residual_only: bool = True) -> list[FeatureEdit]:
    """One edit per node of a flow graph (by default only its residual-stream nodes): steer a whole path."""
    from interp.features.flow import point_of

    return [FeatureEdit(h, f, scale=scale, add=add) for h, f in graph.nodes
            if not residual_only or point_of(h).kind == "resid"]


def interventions(saes: Mapping[str, SparseAutoencoder], edits: Sequence[FeatureEdit]) -> list[Lambda]:
    """The :mod:`interp.hooks` interventions that apply ``edits``."""
    out = []
    for e in edits:
        if e.hook not in saes:
            raise KeyError(f"no SAE for {e.hook!r}; have: {', '.join(saes)}")
        if e.feature >= saes[e.hook].d_sae:
            raise IndexError(f"feature {e.feature} out of range: {e.hook} has {saes[e.hook].d_sae} features")
        out.append(Lambda(e.hook, fn=feature_remover(saes[e.hook], e.feature, scale=e.scale, add=e.add)))
    return out


@dataclass(frozen=True)
class SteeringResult:
    """Greedy generations of a prompt without (``before``) and with (``after``) the edits."""

    prompt: str
    before: str
    after: str
    edits: tuple[FeatureEdit, ...]

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"prompt": self.prompt, "run": "before", "text": self.before},
                             {"prompt": self.prompt, "run": "after", "text": self.after}])

    def plot(self) -> Any:
        """A two-row table figure: the continuation before and after steering."""
        from interp.plot import heatmap

        return heatmap(torch.zeros(2, 1), x_labels=[self.prompt[-40:]], y_labels=["before", "after"],
                       cell_text=[[self.before], [self.after]], title="steering: greedy continuations",
                       signed=False, zmin=0.0, zmax=1.0)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "SteeringResult", {}, {"prompt": self.prompt, "before": self.before,
                                                          "after": self.after, "edits": [asdict(e) for e in self.edits]})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringResult:
        _, m = read_result(path, "SteeringResult")
        return cls(prompt=m["prompt"], before=m["before"], after=m["after"],
                   edits=tuple(FeatureEdit(**e) for e in m["edits"]))

    def __str__(self) -> str:
        return f"prompt: {self.prompt!r}\nbefore: {self.before!r}\nafter:  {self.after!r}"


def generate(model: Model, prompt: str, max_new_tokens: int = 20, ivs: Sequence[Lambda] = ()) -> str:
    """Greedy continuation of ``prompt`` (only the new text) with interventions applied at every step."""
    if model.tokenizer is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer; steering generates text")
    ids, mask = model.tokenize(prompt)
    ids, mask = ids.to(model.device), mask.to(model.device)
    with torch.no_grad(), hooks(model, interventions=list(ivs)):
        out = model.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=model.tokenizer.pad_token_id)
    return model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def steer(model: Model, saes: Mapping[str, SparseAutoencoder], edits: Sequence[FeatureEdit] | FeatureEdit,
          prompt: str, max_new_tokens: int = 20) -> SteeringResult:
    """Generate from ``prompt`` before and after applying ``edits`` (greedy, so the difference is the edits')."""
    edits = [edits] if isinstance(edits, FeatureEdit) else list(edits)
    if not edits:
        raise BadInputError("no edits given")
    ivs = interventions(saes, edits)
    before = generate(model, prompt, max_new_tokens)
    after = generate(model, prompt, max_new_tokens, ivs)
    return SteeringResult(prompt=prompt, before=before, after=after, edits=tuple(edits))


__all__ = ["FeatureEdit", "SteeringResult", "generate", "interventions", "path_edits", "steer"]
