"""Check flow edges with data: activation correlation on a trace, and causal ablation of the upstream feature.

For an edge ``u -> v`` (upstream feature ``u`` of the SAE at hook ``A``, downstream ``v`` at hook ``B``):

- *correlation*: Pearson correlation of ``z_u`` and ``z_v`` over the real tokens of the inputs;
- *ablation effect*: remove ``u``'s contribution ``z_u * sae.direction(u)`` (``W_dec[u] / input_scale``) from
  the activation at ``A``, run on, and measure how much ``z_v`` falls:
  ``1 - sum(z_v ablated) / sum(z_v clean)`` over real tokens (1 = ``v`` vanishes, 0 = untouched).

The removal is an intervention of :mod:`interp.hooks`: a :class:`~interp.hooks.FeatureEdit` with ``scale=0``.

Example:
    >>> import interp
    >>> from interp.features import feature_flow, load_saes, validate_flow
    >>> m = interp.load_model("smollm2-135m")
    >>> saes = load_saes()
    >>> g = feature_flow(m, saes=saes, hook="resid_post.4", feature=12, threshold=0.2)
    >>> v = validate_flow(m, "The capital of France is Paris.", saes=saes, graph=g)
    >>> len(v.to_frame()) == len(g.edges)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.features.flow_result import FlowGraph
from interp.features.points import HookKey, key_by_hook, node_label
from interp.features.sae import SparseAutoencoder
from interp.hooks import FeatureEdit, run_with_hooks
from interp.models import Inputs, Model
from interp.plot import bar_top_tokens, scatter
from interp.stats import pearson
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class FlowValidation(Result):
    """Data checks of a flow graph's edges.

    Attributes:
        edges: ``(upstream hook, upstream feature, downstream hook, downstream feature)`` per edge.
        similarity: ``[edge]`` the data-free cosine similarity.
        correlation: ``[edge]`` Pearson correlation of the two features' activations (NaN if one never fires).
        ablation_effect: ``[edge]`` fraction of the downstream activation lost when the upstream feature is
            removed (NaN where the downstream feature never fires on the inputs).
        n_tokens: real tokens used.

    Views: ``scatter`` (cosine against correlation, coloured by the ablation effect), ``effects`` (the ablation
    effect of each edge).

    Example:
        >>> import torch
        >>> v = FlowValidation((("blocks.0.hook_resid_post", 3, "blocks.1.hook_resid_post", 7),), torch.tensor([0.6]),
        ...                    torch.tensor([0.4]), torch.tensor([0.25]), n_tokens=12)
        >>> v.labels()["edge"], v
        (['r1 #3 → r2 #7'], FlowValidation(similarity[edge=1], correlation[edge=1], ablation_effect[edge=1], n_tokens=12))
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"similarity": ("edge",), "correlation": ("edge",),
                                                  "ablation_effect": ("edge",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("scatter", "effects")

    edges: tuple[tuple[str, int, str, int], ...]
    similarity: torch.Tensor
    correlation: torch.Tensor
    ablation_effect: torch.Tensor
    n_tokens: int

    def __post_init__(self) -> None:
        n = len(self.edges)
        for name in ("similarity", "correlation", "ablation_effect"):
            if tuple(getattr(self, name).shape) != (n,):
                raise BadInputError(f"{name} must be [edge] = ({n},), got {tuple(getattr(self, name).shape)}")

    def labels(self) -> dict[str, list[Any]]:
        return {"edge": [f"{node_label(a, f)} → {node_label(b, g)}" for a, f, b, g in self.edges]}

    def headline(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens}

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: both ends, the cosine similarity, the correlation and the ablation effect."""
        import pandas as pd

        cols = ["src_hook", "src_feature", "dst_hook", "dst_feature", "similarity", "correlation", "ablation_effect"]
        return pd.DataFrame([{"src_hook": a, "src_feature": f, "dst_hook": b, "dst_feature": g,
                              "similarity": float(s), "correlation": float(c), "ablation_effect": float(e)}
                             for (a, f, b, g), s, c, e in zip(self.edges, self.similarity, self.correlation,
                                                              self.ablation_effect, strict=True)], columns=cols)

    def _view_scatter(self) -> Figure:
        """Cosine similarity (x) against activation correlation (y), coloured by the ablation effect."""
        return scatter(self.similarity, self.correlation.nan_to_num(0.0), labels=self.labels()["edge"],
                       color=self.ablation_effect.nan_to_num(0.0), title="flow edges: weights vs data",
                       x_title="cosine similarity (data-free)", y_title="activation correlation",
                       color_title="ablation effect")

    def _view_effects(self) -> Figure:
        """The ablation effect of each edge (the fraction of the downstream activation lost)."""
        return bar_top_tokens(self.labels()["edge"], self.ablation_effect.nan_to_num(0.0),
                              title="flow edges: downstream activation lost when the upstream feature is removed",
                              x_title="ablation effect")


def validate_flow(model: Model, inputs: Inputs, *, saes: Mapping[HookKey, SparseAutoencoder], graph: FlowGraph,
                  max_tokens: int | None = 128) -> FlowValidation:
    """Correlation and ablation effect of every edge of ``graph`` on ``inputs``.

    Args:
        model: the model the SAEs read.
        inputs: texts, token ids, ``(ids, mask)``, or a Trace / TraceStore (its activations are used where it
            holds the graph's hooks; the ablation runs re-run its token ids).
        saes: SAEs by hook (any :mod:`interp.sites` spelling), covering every hook of the graph.
        graph: a :class:`~interp.features.FlowGraph` from :func:`~interp.features.feature_flow`.
        max_tokens: truncate texts to this many tokens.
    """
    keyed = key_by_hook(saes, model)
    hooks = sorted(set(graph.hooks))
    missing = [h for h in hooks if h not in keyed]
    if missing:
        raise BadInputError(f"the graph uses SAEs that are not given: {', '.join(missing)}; given: {', '.join(keyed)}")
    tr = ensure_trace(model, inputs, hooks, max_tokens=max_tokens)
    ids, mask = tr.input_ids.to(model.device), tr.attention_mask.to(model.device)
    real = tr.attention_mask.bool()
    with torch.no_grad():
        z = {h: keyed[h].encode(tr[h]).cpu() for h in hooks}
        edges, sims, corr, eff = [], [], [], []
        for a, b, v in graph.edges:
            ha, fa, hb, fb = graph.hooks[a], graph.features[a], graph.hooks[b], graph.features[b]
            za, zb = z[ha][..., fa][real], z[hb][..., fb][real]
            edges.append((ha, fa, hb, fb))
            sims.append(v)
            corr.append(pearson(za, zb))
            base = float(zb.sum())
            if base <= 0:
                eff.append(float("nan"))
                continue
            remove = FeatureEdit(ha, sae=keyed[ha], feature=fa, scale=0.0)
            out = run_with_hooks(model, ids, mask, capture=[hb], stop_early=True,
                                 interventions=[remove]).activations[hb]
            eff.append(1.0 - float(keyed[hb].encode(out)[..., fb].cpu()[real].sum()) / base)
    return FlowValidation(edges=tuple(edges), similarity=torch.tensor(sims, dtype=torch.float32),
                          correlation=torch.tensor(corr, dtype=torch.float32),
                          ablation_effect=torch.tensor(eff, dtype=torch.float32), n_tokens=int(real.sum()))


__all__ = ["FlowValidation", "validate_flow"]
