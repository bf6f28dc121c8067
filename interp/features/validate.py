"""Check flow edges with data: activation correlation on a trace, and causal ablation of the upstream feature.

For an edge ``u -> v`` (upstream feature ``u`` of the SAE at hook ``A``, downstream ``v`` at hook ``B``):

- *correlation*: Pearson correlation of ``z_u`` and ``z_v`` over the real tokens of the inputs;
- *ablation effect*: remove ``u``'s contribution ``z_u * W_dec[u]`` from the activation at ``A``
  (through :mod:`interp.hooks`), run on, and measure how much ``z_v`` falls:
  ``1 - sum(z_v ablated) / sum(z_v clean)`` over real tokens (1 = ``v`` vanishes, 0 = untouched).

Example:
    >>> import interp
    >>> from interp.features import feature_flow, validate_flow
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> v = validate_flow(m, saes, feature_flow(saes, "blocks.4.hook_resid_post", 12), ["Some text"])  # doctest: +SKIP
    >>> v.to_frame()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.features.flow_result import FlowGraph
from interp.features.sae import SparseAutoencoder
from interp.hooks import Lambda, run_with_hooks
from interp.models import Model
from interp.plot import scatter
from interp.trace.results import read_result, write_result


@dataclass(frozen=True)
class FlowValidation:
    """Data checks of a flow graph's edges.

    Attributes:
        edges: ``(upstream hook, upstream feature, downstream hook, downstream feature)`` per edge.
        similarity: ``[edge]`` the data-free cosine similarity.
        correlation: ``[edge]`` Pearson correlation of the two features' activations (NaN if one never fires).
        ablation_effect: ``[edge]`` fraction of the downstream activation lost when the upstream feature is
            removed (NaN where the downstream feature never fires on the inputs).
        n_tokens: real tokens used.
    """

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

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"src_hook": a, "src_feature": f, "dst_hook": b, "dst_feature": g,
                              "similarity": float(s), "correlation": float(c), "ablation_effect": float(e)}
                             for (a, f, b, g), s, c, e in zip(self.edges, self.similarity, self.correlation,
                                                              self.ablation_effect, strict=True)])

    def plot(self) -> Any:
        """Cosine similarity (x) against activation correlation (y), coloured by the ablation effect."""
        labels = [f"{a} #{f} → {b} #{g}" for a, f, b, g in self.edges]
        return scatter(self.similarity, self.correlation.nan_to_num(0.0), labels=labels,
                       color=self.ablation_effect.nan_to_num(0.0), title="flow edges: weights vs data",
                       x_title="cosine similarity (data-free)", y_title="activation correlation",
                       color_title="ablation effect")

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "FlowValidation", {"similarity": self.similarity, "correlation": self.correlation,
                                                     "ablation_effect": self.ablation_effect},
                            {"edges": [list(e) for e in self.edges], "n_tokens": self.n_tokens})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FlowValidation:
        t, m = read_result(path, "FlowValidation")
        return cls(edges=tuple((a, int(f), b, int(g)) for a, f, b, g in m["edges"]), n_tokens=m["n_tokens"], **t)


def feature_remover(sae: SparseAutoencoder, feature: int, scale: float = 0.0, add: float = 0.0) -> Any:
    """``fn(act, site)`` that sets feature ``feature``'s activation to ``scale * z + add`` in ``act``
    (its decoder row times the change is added; everything else, the SAE error included, is kept)."""
    d = sae.W_dec_[int(feature)] / sae.input_scale_  # type: ignore[index]

    def fn(act: torch.Tensor, site: Any) -> torch.Tensor:
        if scale == 1.0:
            delta = torch.full(act.shape[:-1], float(add), device=act.device, dtype=act.dtype)
        else:
            delta = (scale - 1.0) * sae.encode(act)[..., int(feature)] + add
        return act + delta[..., None].to(act.dtype) * d.to(act.device, act.dtype)

    return fn


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def validate_flow(model: Model, saes: Mapping[str, SparseAutoencoder], graph: FlowGraph,
                  inputs: str | Sequence[str] | tuple[torch.Tensor, torch.Tensor], max_tokens: int = 128) -> FlowValidation:
    """Correlation and ablation effect of every edge of ``graph`` on ``inputs`` (texts or ``(ids, mask)``)."""
    if isinstance(inputs, tuple):
        ids, mask = inputs
    else:
        ids, mask = model.tokenize(inputs, max_tokens=max_tokens)
    ids, mask = ids.to(model.device), mask.to(model.device)
    real = mask.bool()
    hooks = sorted(set(graph.hooks))
    missing = [h for h in hooks if h not in saes]
    if missing:
        raise KeyError(f"the graph uses SAEs that are not given: {missing}")
    with torch.no_grad():
        clean = run_with_hooks(model, ids, mask, capture=hooks, stop_early=True).activations
        z = {h: saes[h].encode(clean[h]) for h in hooks}
        edges, sims, corr, eff = [], [], [], []
        for a, b, v in graph.edges:
            ha, fa, hb, fb = graph.hooks[a], graph.features[a], graph.hooks[b], graph.features[b]
            za, zb = z[ha][..., fa][real], z[hb][..., fb][real]
            edges.append((ha, fa, hb, fb))
            sims.append(v)
            corr.append(_pearson(za, zb))
            base = float(zb.sum())
            if base <= 0:
                eff.append(float("nan"))
                continue
            out = run_with_hooks(model, ids, mask, capture=[hb], stop_early=True,
                                 interventions=[Lambda(ha, fn=feature_remover(saes[ha], fa))]).activations[hb]
            eff.append(1.0 - float(saes[hb].encode(out)[..., fb][real].sum()) / base)
    return FlowValidation(edges=tuple(edges), similarity=torch.tensor(sims, dtype=torch.float32),
                          correlation=torch.tensor(corr, dtype=torch.float32),
                          ablation_effect=torch.tensor(eff, dtype=torch.float32), n_tokens=int(real.sum()))


__all__ = ["FlowValidation", "feature_remover", "validate_flow"]
