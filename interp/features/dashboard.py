"""Feature dashboards: top-activating contexts, the activation histogram, promoted tokens.

Example:
    >>> import interp
    >>> from interp.features import feature_dashboard, load_saes
    >>> m = interp.load_model("smollm2-135m")
    >>> texts = ["The capital of France is Paris.", "I went to the market and bought apples."]
    >>> dash = feature_dashboard(m, texts, sae=load_saes()["blocks.4.hook_resid_post"], feature=12, n_contexts=2)
    >>> dash.context_acts.shape[1], dash.n_tokens, len(dash.promoted)
    (9, 16, 10)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.features.flow import promoted_tokens
from interp.features.points import canonical_hook
from interp.features.sae import SparseAutoencoder
from interp.models import Inputs, Model
from interp.plot import bar_top_tokens, heatmap, layer_curves
from interp.sites import SiteSpec
from interp.trace import Trace, TraceStore
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class FeatureDashboard(Result):
    """What one feature responds to and what it writes.

    Attributes:
        hook / feature: the SAE's hook and the feature index.
        contexts: ``[context][offset]`` token strings around each top activation (the peak token at index ``peak``;
            ``""`` outside the sequence).
        context_acts: ``[context, offset]`` the feature's activation on those tokens (NaN outside the sequence).
        peak: index of the peak token inside each window.
        locations: ``(sequence, position)`` of each peak in the inputs.
        hist_edges / hist_counts: histogram of the non-zero activations (``[bins + 1]``, ``[bin]``).
        frequency: fraction of tokens on which the feature fires; ``n_tokens`` tokens scanned.
        promoted / promoted_logits: tokens its direction promotes through the unembedding, and their logit per
            unit of activation (empty without a model).

    Views: ``contexts`` (top-activating contexts, tokens coloured by activation), ``histogram``, ``logits``
    (promoted tokens).

    Example:
        >>> import torch
        >>> d = FeatureDashboard("blocks.4.hook_resid_post", 12, (("a", "b", "c"),), torch.tensor([[0.0, 2.5, 0.1]]),
        ...                      1, ((0, 4),), torch.linspace(0, 2.5, 3), torch.tensor([1.0, 1.0]), 0.2, 10)
        >>> d
        FeatureDashboard(context_acts[context=1, offset=3], hist_counts[bin=2], hist_edges[edge=3], feature=12, frequency=0.2, max_activation=2.5)
        >>> d.labels()["offset"]
        [-1, 0, 1]
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"context_acts": ("context", "offset"), "hist_counts": ("bin",),
                                                  "hist_edges": ("edge",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("contexts", "histogram", "logits")

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

    def labels(self) -> dict[str, list[Any]]:
        return {"context": [f"seq {s} pos {p}" for s, p in self.locations],
                "offset": [j - self.peak for j in range(self.context_acts.shape[1])]}

    def headline(self) -> dict[str, Any]:
        acts = self.context_acts[~self.context_acts.isnan()]
        return {"feature": self.feature, "frequency": self.frequency,
                "max_activation": float(acts.max()) if acts.numel() else 0.0}

    def to_frame(self) -> pd.DataFrame:
        """One row per (context, token): the offset from the peak, the token and its activation."""
        import pandas as pd

        rows = [{"context": i, "offset": j - self.peak, "token": t, "activation": float(self.context_acts[i, j])}
                for i, ctx in enumerate(self.contexts) for j, t in enumerate(ctx)]
        return pd.DataFrame(rows, columns=["context", "offset", "token", "activation"])

    def _view_contexts(self) -> Figure:
        """The top-activating contexts, token-highlighted by activation (one row per context)."""
        lab = self.labels()
        return heatmap(self.context_acts.nan_to_num(0.0), x_labels=[str(o) for o in lab["offset"]],
                       y_labels=lab["context"], cell_text=[list(c) for c in self.contexts], signed=False,
                       title=f"feature {self.feature} of {self.hook}: top-activating contexts",
                       x_title="offset from the peak token", y_title="context", colorbar_title="activation")

    def _view_histogram(self) -> Figure:
        """Histogram of the feature's non-zero activations."""
        mids = (self.hist_edges[1:] + self.hist_edges[:-1]) / 2
        return layer_curves({"count": self.hist_counts.float()}, x=mids, x_title="activation", y_title="tokens",
                            title=f"feature {self.feature}: activation histogram (fires on {self.frequency:.2%} of "
                                  f"{self.n_tokens} tokens)")

    def _view_logits(self) -> Figure:
        """The tokens the feature's direction promotes (direct effect through the unembedding)."""
        if not self.promoted:
            raise BadInputError("this dashboard has no promoted tokens: build it with a model")
        return bar_top_tokens(list(self.promoted), list(self.promoted_logits), x_title="logit per unit activation",
                              title=f"feature {self.feature}: tokens its direction promotes")


def _activations(model: Model | None, inputs: Inputs, sae: SparseAutoencoder, feature: int, hook: str,
                 batch_size: int, max_tokens: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor, Callable[[int], tuple[str, ...]]]:
    """``(acts [real tokens], lengths [sequence], tokens of a sequence)``: real tokens sequence by sequence."""
    if isinstance(inputs, TraceStore) and hook in inputs.hooks:
        store = inputs
        if model is not None:
            store.check_model(model)
        with torch.no_grad():
            acts = torch.cat([sae.encode(x)[:, feature] for x in
                              store.iter_tokens(hook, batch_size=batch_size, dtype=torch.float32)])
        _, mask = store.tokens()
        return acts, mask.sum(1), lambda seq: store.trace(seq, hooks=[]).tokens[0]
    if isinstance(inputs, Trace) and hook in inputs.names and model is None:
        tr = inputs
    elif model is None:
        raise BadInputError(f"a model is needed to run these inputs (or pass a Trace / TraceStore holding {hook})")
    else:
        tr = ensure_trace(model, inputs, hook, max_tokens=max_tokens)
    with torch.no_grad():
        z = sae.encode(tr[hook])[..., feature].cpu()
    return z[tr.attention_mask.bool().cpu()], tr.lengths.cpu(), lambda seq: tr.tokens[seq]


def feature_activations(model: Model | None, inputs: Inputs, *, sae: SparseAutoencoder, feature: int,
                        hook: SiteSpec | None = None, batch_size: int = 4096, max_tokens: int | None = None
                        ) -> torch.Tensor:
    """``[n_tokens]`` the feature's activation on every real token of ``inputs``, sequence by sequence (a store's
    token rows in store order).

    Args:
        model: the model the SAE reads (``None`` when ``inputs`` is a Trace / TraceStore holding the hook).
        inputs: a TraceStore (streamed) or Trace holding the hook, or texts / token ids (the model runs).
        sae / feature: the SAE and the feature index; ``hook``: where it reads (default: the SAE's hook).

    Example:
        >>> import interp
        >>> from interp.features import feature_activations, load_saes
        >>> m = interp.load_model("smollm2-135m")
        >>> sae = load_saes()["blocks.4.hook_resid_post"]
        >>> feature_activations(m, ["Hello world", "The capital of France is"], sae=sae, feature=12).shape
        torch.Size([7])
    """
    name = _hook_of(sae, hook, model)
    _check_feature(sae, feature)
    return _activations(model, inputs, sae, feature, name, batch_size, max_tokens)[0]


def _hook_of(sae: SparseAutoencoder, hook: SiteSpec | None, model: Model | None) -> str:
    if not (hook or sae.hook):
        raise BadInputError("the SAE names no hook; pass hook= (e.g. hook='resid_post.4')")
    return canonical_hook(hook or sae.hook, model)


def _check_feature(sae: SparseAutoencoder, feature: int) -> None:
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < sae.d_sae:
        raise bad_value("feature", feature, f"an int in 0..{sae.d_sae - 1} (the SAE has {sae.d_sae} features)")


def feature_dashboard(model: Model | None, inputs: Inputs, *, sae: SparseAutoencoder, feature: int,
                      hook: SiteSpec | None = None, n_contexts: int = 8, window: int = 9, bins: int = 30,
                      n_promoted: int = 10, batch_size: int = 4096, max_tokens: int | None = None) -> FeatureDashboard:
    """The dashboard of one feature on ``inputs``: its top-activating contexts, the histogram of its
    activations and (with a model) the tokens its direction promotes.

    Args:
        model: the model the SAE reads (``None``: no promoted tokens; ``inputs`` must then hold the hook).
        inputs: a :class:`~interp.trace.TraceStore` holding the hook (streamed), a Trace, texts or token ids.
        sae / feature: the SAE and the feature index; ``hook``: where it reads (default: the SAE's hook).
        n_contexts: top activations shown; ``window``: tokens around each (the peak in the middle).
        bins: histogram bins; ``n_promoted``: promoted tokens.
        batch_size: rows per encoder call on a store; ``max_tokens``: truncate texts.
    """
    name = _hook_of(sae, hook, model)
    _check_feature(sae, feature)
    for what, v in (("window", window), ("n_contexts", n_contexts), ("bins", bins)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad_value(what, v, "an int >= 1")
    acts, lens, tokens_of = _activations(model, inputs, sae, feature, name, batch_size, max_tokens)
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
        toks_seq = tokens_of(seq)
        n = int(lens[seq])
        toks, vals = [], []
        for j in range(pos - half, pos - half + window):
            inside = 0 <= j < n
            toks.append(toks_seq[j] if inside else "")
            vals.append(float(acts[int(starts[seq]) + j]) if inside else float("nan"))
        contexts.append(tuple(toks))
        ctx_acts.append(vals)
        locs.append((seq, pos))
    promoted: tuple[str, ...] = ()
    logits: tuple[float, ...] = ()
    if model is not None and n_promoted > 0:
        toks, vals = promoted_tokens(model, direction=sae.direction(feature), k=n_promoted)
        promoted, logits = tuple(toks), tuple(vals)
    return FeatureDashboard(hook=name, feature=feature, contexts=tuple(contexts),
                            context_acts=torch.tensor(ctx_acts, dtype=torch.float32).reshape(len(contexts), window),
                            peak=half, locations=tuple(locs), hist_edges=edges, hist_counts=counts,
                            frequency=float((acts > 0).float().mean()), n_tokens=int(acts.numel()),
                            promoted=promoted, promoted_logits=logits)


__all__ = ["FeatureDashboard", "feature_activations", "feature_dashboard"]
