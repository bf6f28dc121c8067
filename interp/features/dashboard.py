"""Feature dashboards: top-activating contexts from a store, the activation histogram, promoted tokens.

Example:
    >>> import interp
    >>> from interp.features import SparseAutoencoder, feature_dashboard
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> sae = SparseAutoencoder.load("data/features/smollm2-L4")  # doctest: +SKIP
    >>> dash = feature_dashboard(sae, 12, "/tmp/store", model=m)  # doctest: +SKIP
    >>> dash.plot()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.features.flow import promoted_tokens
from interp.features.sae import SparseAutoencoder
from interp.models import Model
from interp.plot import bar_top_tokens, heatmap, layer_curves
from interp.trace import TraceStore
from interp.trace.results import read_result, write_result


@dataclass(frozen=True)
class FeatureDashboard:
    """What one feature responds to and what it writes.

    Attributes:
        hook / feature: the SAE's hook and the feature index.
        contexts: ``[n_contexts][window]`` token strings around each top activation (the peak token
            at index ``peak``).
        context_acts: ``[n_contexts, window]`` the feature's activation on those tokens (NaN outside the sequence).
        peak: index of the peak token inside each window.
        locations: ``(sequence, position)`` of each peak in the store.
        hist_edges / hist_counts: histogram of the non-zero activations (``[bins + 1]``, ``[bins]``).
        frequency: fraction of tokens on which the feature fires; ``n_tokens`` tokens scanned.
        promoted / promoted_logits: tokens its decoder direction promotes through the unembedding (empty without a model).
    """

    hook: str
    feature: int
    contexts: tuple[tuple[str, ...], ...]
    context_acts: torch.Tensor
    peak: int
    locations: tuple[tuple[int, int], ...]
    hist_edges: torch.Tensor
    hist_counts: torch.Tensor
    frequency: float
    n_tokens: int
    promoted: tuple[str, ...] = ()
    promoted_logits: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.context_acts.dim() != 2 or self.context_acts.shape[0] != len(self.contexts):
            raise BadInputError(f"context_acts must be [n_contexts={len(self.contexts)}, window], "
                             f"got {tuple(self.context_acts.shape)}")
        if self.hist_edges.numel() != self.hist_counts.numel() + 1:
            raise BadInputError("hist_edges must have one more entry than hist_counts")

    def to_frame(self) -> Any:
        """One row per (context, token): the token, its activation, and whether it is the peak."""
        import pandas as pd

        rows = [{"context": i, "offset": j - self.peak, "token": t, "activation": float(self.context_acts[i, j])}
                for i, ctx in enumerate(self.contexts) for j, t in enumerate(ctx)]
        return pd.DataFrame(rows)

    def plot(self) -> Any:
        """The top-activating contexts, token-highlighted by activation (one row per context)."""
        labels = [f"seq {s} pos {p}" for s, p in self.locations]
        return heatmap(self.context_acts.nan_to_num(0.0), x_labels=[str(j - self.peak) for j in
                                                                     range(self.context_acts.shape[1])],
                       y_labels=labels, cell_text=[list(c) for c in self.contexts], signed=False,
                       title=f"feature {self.feature} of {self.hook}: top-activating contexts",
                       x_title="offset from the peak token", y_title="context", colorbar_title="activation")

    def plot_histogram(self) -> Any:
        """Histogram of the feature's non-zero activations."""
        mids = (self.hist_edges[1:] + self.hist_edges[:-1]) / 2
        return layer_curves({"count": self.hist_counts.float()}, x=mids, x_title="activation", y_title="tokens",
                            title=f"feature {self.feature}: activation histogram (fires on {self.frequency:.2%} of "
                                  f"{self.n_tokens} tokens)")

    def plot_logits(self) -> Any:
        """The tokens the feature's decoder direction promotes (direct effect through the unembedding)."""
        if not self.promoted:
            raise BadInputError("this dashboard has no promoted tokens: build it with model=")
        return bar_top_tokens(list(self.promoted), list(self.promoted_logits), x_title="logit per unit activation",
                              title=f"feature {self.feature}: tokens its direction promotes")

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "FeatureDashboard", {"context_acts": self.context_acts, "hist_edges": self.hist_edges,
                                                       "hist_counts": self.hist_counts},
                            {"hook": self.hook, "feature": self.feature, "contexts": [list(c) for c in self.contexts],
                             "peak": self.peak, "locations": [list(x) for x in self.locations],
                             "frequency": self.frequency, "n_tokens": self.n_tokens, "promoted": list(self.promoted),
                             "promoted_logits": list(self.promoted_logits)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureDashboard:
        t, m = read_result(path, "FeatureDashboard")
        return cls(hook=m["hook"], feature=m["feature"], contexts=tuple(tuple(c) for c in m["contexts"]),
                   peak=m["peak"], locations=tuple((int(a), int(b)) for a, b in m["locations"]),
                   frequency=m["frequency"], n_tokens=m["n_tokens"], promoted=tuple(m["promoted"]),
                   promoted_logits=tuple(m["promoted_logits"]), **t)


def feature_activations(sae: SparseAutoencoder, store: TraceStore, hook: str, feature: int,
                        batch_size: int = 4096) -> torch.Tensor:
    """``[n_tokens]`` the feature's activation on every stored token row, in store order."""
    with torch.no_grad():
        return torch.cat([sae.encode(x)[:, feature] for x in
                          store.iter_tokens(hook, batch_size=batch_size, dtype=torch.float32)])


def feature_dashboard(sae: SparseAutoencoder, feature: int, store: TraceStore | str | os.PathLike[str],
                      hook: str | None = None, *, model: Model | None = None, n_contexts: int = 8,
                      window: int = 9, bins: int = 30, n_promoted: int = 10) -> FeatureDashboard:
    """Build the dashboard of one feature from the token rows of ``store`` (at ``hook``, default the SAE's)."""
    store = store if isinstance(store, TraceStore) else TraceStore(store)
    hook = hook or sae.hook
    if hook not in store.hooks:
        raise KeyError(f"store has no hook {hook!r}; it holds: {', '.join(store.hooks)}")
    if not 0 <= int(feature) < sae.d_sae:
        raise IndexError(f"feature {feature} out of range: the SAE has {sae.d_sae} features")
    if window < 1 or n_contexts < 1:
        raise BadInputError(f"window and n_contexts must be >= 1, got {window}, {n_contexts}")
    acts = feature_activations(sae, store, hook, int(feature))
    _, mask = store.tokens()
    lens = mask.sum(1)
    starts = torch.cumsum(lens, 0) - lens
    on = acts[acts > 0]
    hi = float(on.max()) if on.numel() else 1.0
    counts = torch.histc(on, bins=bins, min=0.0, max=hi) if on.numel() else torch.zeros(bins)
    edges = torch.linspace(0.0, hi, bins + 1)
    top = acts.topk(min(n_contexts, int((acts > 0).sum()) or 1))
    half = window // 2
    contexts, ctx_acts, locs = [], [], []
    for row in top.indices.tolist():
        seq = int(torch.searchsorted(starts, torch.tensor(row), right=True)) - 1
        pos = row - int(starts[seq])
        tr = store.trace(seq, hooks=[hook])
        n = int(lens[seq])
        toks, vals = [], []
        for j in range(pos - half, pos - half + window):
            inside = 0 <= j < n
            toks.append(tr.tokens[0][j] if inside else "")
            vals.append(float(acts[int(starts[seq]) + j]) if inside else float("nan"))
        contexts.append(tuple(toks))
        ctx_acts.append(vals)
        locs.append((seq, pos))
    promoted: tuple[str, ...] = ()
    logits: tuple[float, ...] = ()
    if model is not None:
        p, v = promoted_tokens(model, sae.direction(int(feature)), n_promoted)
        promoted, logits = tuple(p), tuple(v)
    return FeatureDashboard(hook=hook, feature=int(feature), contexts=tuple(contexts),
                            context_acts=torch.tensor(ctx_acts, dtype=torch.float32).reshape(len(contexts), window),
                            peak=half, locations=tuple(locs), hist_edges=edges, hist_counts=counts,
                            frequency=float((acts > 0).float().mean()), n_tokens=int(acts.numel()),
                            promoted=promoted, promoted_logits=logits)


__all__ = ["FeatureDashboard", "feature_activations", "feature_dashboard"]
