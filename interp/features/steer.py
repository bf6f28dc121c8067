"""Steering with SAE features: amplify or suppress a feature (or a whole flow path) during generation.

The edits are interventions of :mod:`interp.hooks`: a :class:`~interp.hooks.FeatureEdit` sets a feature's
activation ``z`` to ``scale * z + add`` at its hook, by adding ``(new - z) * sae.direction(feature)`` to the
activation (the SAE's reconstruction error is kept, so an edit with ``scale=1, add=0`` changes nothing).
``scale=0`` suppresses a feature; ``add > 0`` injects it where it is silent. :func:`steer` generates greedily
with and without any interventions (feature edits, ``Add`` of a steering vector, ``Project``...), through
``model.hooks`` around ``generate``; :func:`path_edits` builds the feature edits of a whole flow path.

Example:
    >>> import interp
    >>> from interp.features import load_saes, steer
    >>> from interp.hooks import FeatureEdit
    >>> m = interp.load_model("smollm2-135m")
    >>> sae = load_saes()["blocks.4.hook_resid_post"]
    >>> res = steer(m, "I think that", interventions=[FeatureEdit("resid_post.4", sae=sae, feature=12, scale=1.0)],
    ...             max_new_tokens=4)
    >>> res.after == res.before  # scale 1 changes nothing
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.features.flow_result import FlowGraph
from interp.features.points import HookKey, key_by_hook, point_of
from interp.features.sae import SparseAutoencoder
from interp.hooks import Dictionary, FeatureEdit, Intervention
from interp.models import Model
from interp.sites import HeadRef
from interp.trace.results import Result, Upgrade

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


def path_edits(graph: FlowGraph, saes: Mapping[HookKey, SparseAutoencoder], *, scale: float = 1.0,
               add: float = 0.0, residual_only: bool = True) -> list[FeatureEdit]:
    """One :class:`~interp.hooks.FeatureEdit` per node of a flow graph (by default only its residual-stream
    nodes): steer a whole path.

    Args:
        graph: a flow graph from :func:`~interp.features.feature_flow`.
        saes: SAEs by hook (any :mod:`interp.sites` spelling), covering the graph's nodes.
        scale / add: each feature's activation becomes ``scale * z + add``.
        residual_only: edit only the residual-stream nodes (attention and MLP features are carried in them).

    Example:
        >>> import torch
        >>> from interp.features import FlowGraph, SAEConfig, SparseAutoencoder
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, batch_size=64, n_tokens=128), progress=False)
        >>> sae = sae.fit(torch.randn(256, 4))
        >>> g = FlowGraph(("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), (3, 7), (2, 4), ((0, 1, 0.8),))
        >>> [(str(e.site), e.feature, e.scale) for e in path_edits(g, {"resid_post.0": sae, "resid_post.1": sae},
        ...                                                         scale=0.0)]
        [('blocks.0.hook_resid_post', 3, 0.0), ('blocks.1.hook_resid_post', 7, 0.0)]
    """
    keyed = key_by_hook(saes)
    missing = sorted({h for h in graph.hooks if h not in keyed})
    if missing:
        raise BadInputError(f"no SAE given for {', '.join(missing)} (a node of the graph); given: {', '.join(keyed)}")
    return [FeatureEdit(h, sae=keyed[h], feature=f, scale=scale, add=add) for h, f in graph.nodes
            if not residual_only or point_of(h).kind == "resid"]


def _plain(x: Any) -> Any:
    """Positions and heads as JSON-able values (a slice as ``"start:stop:step"``, heads as ``"L5H1"``)."""
    if isinstance(x, slice):
        return ":".join("" if v is None else str(v) for v in (x.start, x.stop, x.step))
    if isinstance(x, HeadRef):
        return str(x)
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def describe(iv: Intervention) -> dict[str, Any]:
    """A plain, saveable description of an intervention: its type, site, selection and scalar settings
    (tensors and functions are left out; a dictionary such as an SAE by its repr).

    Example:
        >>> from interp.hooks import Scale
        >>> describe(Scale("mlp_out.3", factor=0.5, positions=-1))
        {'type': 'Scale', 'site': 'blocks.3.hook_mlp_out', 'positions': -1, 'heads': None, 'factor': 0.5}
    """
    out: dict[str, Any] = {"type": type(iv).__name__, "site": str(iv.site)}
    for f in dataclasses.fields(iv):
        if f.name == "site":
            continue
        v = getattr(iv, f.name)
        if f.name in ("positions", "heads"):
            out[f.name] = _plain(v)
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[f.name] = v
        elif isinstance(v, Dictionary):
            out[f.name] = repr(v)
    return out


def _steering_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 stored its own ``FeatureEdit(hook, feature, scale, add)`` per edit."""
    fields["edits"] = [{"type": "FeatureEdit", "site": e.get("hook", ""), "feature": e.get("feature"),
                        "scale": e.get("scale", 1.0), "add": e.get("add", 0.0)} for e in fields.get("edits", [])]


@dataclass(frozen=True, repr=False)
class SteeringResult(Result):
    """Greedy generations of a prompt without (``before``) and with (``after``) the interventions.

    Attributes:
        prompt: the prompt; ``before`` / ``after``: the continuations (only the new text).
        edits: a plain description of each intervention (:func:`describe`: ``{"type": "FeatureEdit",
            "site": ..., "feature": ..., "scale": ..., "add": ...}``); the SAEs themselves are not stored.

    Views: ``table`` (the two continuations).

    Example:
        >>> r = SteeringResult("I think", " so.", " not.", ({"type": "FeatureEdit", "site": "blocks.4.hook_resid_post",
        ...                                                  "feature": 12, "scale": 0.0, "add": 0.0},))
        >>> r
        SteeringResult(changed=True, edits=1)
        >>> print(r)
        prompt: 'I think'
        before: ' so.'
        after:  ' not.'
    """

    VIEWS: ClassVar[tuple[str, ...]] = ("table",)
    UPGRADES: ClassVar[dict[int, Upgrade]] = {0: _steering_v0}

    prompt: str
    before: str
    after: str
    edits: tuple[dict[str, Any], ...]

    def headline(self) -> dict[str, Any]:
        return {"changed": self.before != self.after, "edits": len(self.edits)}

    def to_frame(self) -> pd.DataFrame:
        """Two rows (``run`` = before / after) with the continuation."""
        import pandas as pd

        return pd.DataFrame([{"prompt": self.prompt, "run": "before", "text": self.before},
                             {"prompt": self.prompt, "run": "after", "text": self.after}])

    def _view_table(self) -> Figure:
        """A two-row table figure: the continuation before and after steering."""
        from interp.plot import heatmap

        return heatmap(torch.zeros(2, 1), x_labels=[self.prompt[-40:]], y_labels=["before", "after"],
                       cell_text=[[self.before], [self.after]], title="steering: greedy continuations",
                       signed=False, zmin=0.0, zmax=1.0)

    def __str__(self) -> str:
        return f"prompt: {self.prompt!r}\nbefore: {self.before!r}\nafter:  {self.after!r}"


def generate(model: Model, prompt: str, *, max_new_tokens: int = 20, interventions: Sequence[Intervention] = ()
             ) -> str:
    """Greedy continuation of ``prompt`` (only the new text) with ``interventions`` applied at every step."""
    if model.tokenizer is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer; steering generates text")
    ids, mask = model.encode(prompt)
    hf: Any = model.hf  # a transformers model with generate()
    with torch.no_grad(), model.hooks(interventions=list(interventions)):
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=model.tokenizer.pad_token_id)
    return str(model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def steer(model: Model, inputs: str, *, interventions: Sequence[Intervention] | Intervention,
          max_new_tokens: int = 20) -> SteeringResult:
    """Generate from a prompt before and after applying ``interventions`` (greedy, so the difference is theirs).

    Args:
        model: a model with a tokenizer.
        inputs: the prompt (one text).
        interventions: :mod:`interp.hooks` interventions applied at every generation step: feature edits
            (``FeatureEdit(site, sae=..., feature=..., scale=..., add=...)``, :func:`path_edits`), or any other.
        max_new_tokens: tokens to generate.

    Example:
        >>> import interp
        >>> from interp.features import load_saes, steer
        >>> from interp.hooks import FeatureEdit
        >>> m = interp.load_model("smollm2-135m")
        >>> sae = load_saes()["blocks.4.hook_resid_post"]
        >>> steer(m, "I went to the", interventions=FeatureEdit("resid_post.4", sae=sae, feature=20, add=40.0),
        ...       max_new_tokens=3).edits[0]["add"]
        40.0
    """
    if not isinstance(inputs, str):
        raise BadInputError(f"steer generates from one prompt: inputs must be a str, got {type(inputs).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise BadInputError(f"bad max_new_tokens {max_new_tokens!r}; valid: an int >= 1")
    ivs = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    if not ivs:
        raise BadInputError("no interventions given: pass interventions=[FeatureEdit(...), ...]")
    bad = [iv for iv in ivs if not isinstance(iv, Intervention)]
    if bad:
        raise TypeError(f"interventions must be interp.hooks interventions, got {type(bad[0]).__name__}")
    before = generate(model, inputs, max_new_tokens=max_new_tokens)
    after = generate(model, inputs, max_new_tokens=max_new_tokens, interventions=ivs)
    return SteeringResult(prompt=inputs, before=before, after=after, edits=tuple(describe(iv) for iv in ivs))


__all__ = ["SteeringResult", "describe", "generate", "path_edits", "steer"]
