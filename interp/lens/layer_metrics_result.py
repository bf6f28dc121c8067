"""Results of the layer metrics: angular distances, sublayer similarities, skip-layer losses.

Each is a :class:`~interp.trace.results.Result`: ``.plot(view)``, ``.to_frame()``, ``.to_dict()``,
``.save()`` / ``.load()`` (files of interp 0.1 load too), a short repr and ``.summary()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.plot import heatmap, layer_curves
from interp.trace.results import Result, Upgrade, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

WHICH = ("last", "mean")


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...], axes: tuple[str, ...]) -> None:
    if tuple(t.shape) != shape:
        raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {shape} ({', '.join(axes)})")


@dataclass(frozen=True, repr=False)
class AngularDistanceResult(Result):
    """Angular distances ``arccos(cos(x_layer, x_{layer+n})) / pi`` between residual-stream states.

    State ``l`` is the input of block ``l`` (state ``n_layers``: the last block's output). Entries with
    ``layer + n > n_layers`` are ``NaN``; the ``n = 0`` column is 0.

    Views: ``"heatmap"`` (default; distance over start layer x ``n``, ``which="last"`` or ``"mean"``),
    ``"best_block"`` (for each ``n``, the smallest distance over start layers, hover: the start).

    Attributes:
        distance_last: ``[layer, n]`` mean over the sequences of the distance at their last real token.
        distance_mean: ``[layer, n]`` mean over all real tokens.
        n_tokens: real tokens averaged over; tokens: the input token strings; model_id: the model.

    Example:
        >>> import torch
        >>> from interp.lens import AngularDistanceResult
        >>> d = torch.tensor([[0.0, 0.3], [0.0, float("nan")]])
        >>> res = AngularDistanceResult(distance_last=d, distance_mean=d)
        >>> res.best_block(1), res
        (0, AngularDistanceResult(distance_last[layer=2, n=2], distance_mean[layer=2, n=2], n_layers=1, n_tokens=0, best_single_layer=0))
        >>> res.to_frame().to_dict("records")[1]
        {'layer': 0, 'n': 1, 'distance_last': 0.30000001192092896, 'distance_mean': 0.30000001192092896}
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"distance_last": ("layer", "n"), "distance_mean": ("layer", "n")}
    VIEWS = ("heatmap", "best_block")

    distance_last: torch.Tensor
    distance_mean: torch.Tensor
    n_tokens: int = 0
    tokens: tuple[tuple[str, ...], ...] = ()
    model_id: str = ""

    def __post_init__(self) -> None:
        t = self.distance_last
        if t.dim() != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
            raise BadInputError(f"distance_last must be a square [layer, n] matrix of side >= 2, got {tuple(t.shape)}")
        _check("distance_mean", self.distance_mean, tuple(t.shape), self.AXES["distance_mean"])

    @property
    def n_layers(self) -> int:
        """Number of blocks (the matrices are ``n_layers + 1`` square)."""
        return self.distance_last.shape[0] - 1

    def labels(self) -> dict[str, list[Any]]:
        r = list(range(self.n_layers + 1))
        return {"layer": r, "n": r}

    def distances(self, which: str = "last") -> torch.Tensor:
        """``[layer, n]``: ``"last"`` (each sequence's last real token) or ``"mean"`` (all real tokens)."""
        if which not in WHICH:
            raise bad_value("which", which, "'last' or 'mean'")
        return self.distance_last if which == "last" else self.distance_mean

    def best_block(self, n: int, which: str = "last") -> int:
        """The start layer minimising the distance to ``start + n``: blocks ``start .. start+n-1`` are the
        ``n`` consecutive layers whose removal changes the residual stream least (Gromov et al. 2024)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n_layers:
            raise bad_value("n", n, f"1..{self.n_layers} (layers in the block)")
        col = self.distances(which)[: self.n_layers + 1 - n, n]
        return int(col.argmin())

    def _view_heatmap(self, which: str = "last") -> Figure:
        """Heatmap of the distance: x = ``n`` (layers skipped), y = start layer."""
        d = self.distances(which)
        r = [str(i) for i in range(self.n_layers + 1)]
        where = "last token" if which == "last" else "mean over tokens"
        return heatmap(d, x_labels=r, y_labels=r, title=f"angular distance between layer L and L+n ({where})",
                       x_title="n (layers skipped)", y_title="L (start layer)", signed=False, zmin=0.0,
                       colorbar_title="arccos(cos)/π", rows_top_down=False)

    def _view_best_block(self, which: str = "last") -> Figure:
        """For each block size ``n``, the smallest distance over start layers (the block one could drop)."""
        d = self.distances(which)
        ns = list(range(1, self.n_layers + 1))
        best = torch.tensor([float(d[self.best_block(n, which), n]) for n in ns])
        fig = layer_curves({"min over start layers": best}, x=ns, x_title="n (layers in the block)",
                           y_title="arccos(cos)/π", title=f"the block of n layers that changes the stream least ({which})")
        fig.data[0].customdata = [[self.best_block(n, which)] for n in ns]
        fig.data[0].hovertemplate = "n=%{x}<br>start layer %{customdata[0]}<br>distance %{y:.3f}<extra></extra>"
        return fig

    def to_frame(self) -> pd.DataFrame:
        """One row per defined (start layer, n): ``layer, n, distance_last, distance_mean``."""
        df = labelled_frame(self.distance_last, self.AXES["distance_last"], name="distance_last")
        df["distance_mean"] = self.distance_mean.flatten().tolist()
        return df[df["layer"] + df["n"] <= self.n_layers].reset_index(drop=True)

    def headline(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "n_tokens": self.n_tokens, "best_single_layer": self.best_block(1)}


@dataclass(frozen=True, repr=False)
class SublayerSimilarityResult(Result):
    """Cosine similarity of each sublayer's input and output residual, mean over real tokens.

    Views: ``"similarity"`` (the attention and MLP curves per layer).

    Attributes:
        attn: ``[layer]`` ``cos(resid_pre, resid_mid)``.
        mlp: ``[layer]`` ``cos(resid_mid, resid_post)``.
        n_tokens: real tokens averaged over; tokens: the input token strings; model_id: the model.

    Example:
        >>> import torch
        >>> from interp.lens import SublayerSimilarityResult
        >>> res = SublayerSimilarityResult(attn=torch.tensor([0.9, 0.99]), mlp=torch.tensor([0.8, 0.95]))
        >>> res.n_layers, res.headline()
        (2, {'n_tokens': 0, 'most_similar_attn': 1, 'most_similar_mlp': 1})
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"attn": ("layer",), "mlp": ("layer",)}
    VIEWS = ("similarity",)

    attn: torch.Tensor
    mlp: torch.Tensor
    n_tokens: int = 0
    tokens: tuple[tuple[str, ...], ...] = ()
    model_id: str = ""

    def __post_init__(self) -> None:
        if self.attn.dim() != 1:
            raise BadInputError(f"attn must be [layer], got {tuple(self.attn.shape)}")
        _check("mlp", self.mlp, tuple(self.attn.shape), ("layer",))

    @property
    def n_layers(self) -> int:
        return int(self.attn.shape[0])

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(range(self.n_layers))}

    def _view_similarity(self) -> Figure:
        """Layer curves of the attention and MLP input/output similarity."""
        return layer_curves({"attn": self.attn, "mlp": self.mlp}, y_title="cos(sublayer input, output)",
                            title="sublayer input/output similarity (mean over tokens)")

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: ``layer, attn, mlp``."""
        df = labelled_frame(self.attn, ("layer",), name="attn")
        df["mlp"] = self.mlp.tolist()
        return df

    def headline(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "most_similar_attn": int(self.attn.argmax()),
                "most_similar_mlp": int(self.mlp.argmax())}


_V01_SKIPS = {"block": "attn_out+mlp_out", "attn": "attn_out", "mlp": "mlp_out"}


def _skip_names_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 named the rows ``block``, ``attn``, ``mlp``; they are ``attn_out+mlp_out``, ``attn_out``,
    ``mlp_out`` now."""
    fields["components"] = [_V01_SKIPS.get(c, c) for c in fields.get("components", [])]


@dataclass(frozen=True, repr=False)
class SkipLossResult(Result):
    """Next-token cross-entropy with one sublayer or block skipped, per component and layer.

    Views: ``"delta"`` (the loss increase per layer, one curve per component).

    Attributes:
        loss: ``[component, layer]`` mean cross-entropy (nats) over the real next-token predictions.
        baseline_loss: the same without any skip.
        components: the row labels: ``"attn_out"``, ``"mlp_out"``, ``"attn_out+mlp_out"`` (a whole block).
        n_tokens: predictions averaged over; model_id: the model.
        layers: the layer of each column (``()``: every layer, ``0 .. n - 1``).

    Example:
        >>> import torch
        >>> from interp.lens import SkipLossResult
        >>> res = SkipLossResult(loss=torch.tensor([[3.0, 2.5]]), baseline_loss=2.0, components=("attn_out",))
        >>> res.delta.tolist(), res
        ([[1.0, 0.5]], SkipLossResult(loss[component=1, layer=2], delta[component=1, layer=2], baseline_loss=2, max_delta=1, max_at='attn_out.0'))
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"loss": ("component", "layer"), "delta": ("component", "layer")}
    VIEWS = ("delta",)
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {0: _skip_names_v0}

    loss: torch.Tensor
    baseline_loss: float
    components: tuple[str, ...]
    n_tokens: int = 0
    model_id: str = ""
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.loss.dim() != 2 or self.loss.shape[0] != len(self.components):
            raise BadInputError(f"loss has shape {tuple(self.loss.shape)}, expected ({len(self.components)}, n_layers) "
                                "(component, layer)")
        if self.layers and len(self.layers) != self.loss.shape[1]:
            raise BadInputError(f"{len(self.layers)} layers for {self.loss.shape[1]} columns of loss")
        if not math.isfinite(self.baseline_loss):
            raise BadInputError(f"baseline_loss must be finite, got {self.baseline_loss}")

    @property
    def delta(self) -> torch.Tensor:
        """``[component, layer]`` loss increase over the baseline (nats)."""
        return self.loss - self.baseline_loss

    def labels(self) -> dict[str, list[Any]]:
        return {"component": list(self.components),
                "layer": list(self.layers) if self.layers else list(range(self.loss.shape[1]))}

    def _view_delta(self) -> Figure:
        """Layer curves of the loss increase per skipped component."""
        return layer_curves(dict(zip(self.components, self.delta, strict=True)), x=self.labels()["layer"],
                            y_title="Δ cross-entropy (nats)",
                            title=f"loss increase when skipping one component (baseline {self.baseline_loss:.3f})")

    def to_frame(self) -> pd.DataFrame:
        """One row per (component, layer): ``component, layer, loss, delta``."""
        df = labelled_frame(self.loss, self.AXES["loss"], self.labels(), name="loss")
        df["delta"] = self.delta.flatten().tolist()
        return df

    def headline(self) -> dict[str, Any]:
        i = int(self.delta.flatten().argmax())
        c, j = divmod(i, self.loss.shape[1])
        return {"baseline_loss": self.baseline_loss, "max_delta": float(self.delta.flatten()[i]),
                "max_at": f"{self.components[c]}.{self.labels()['layer'][j]}"}


__all__ = ["AngularDistanceResult", "SkipLossResult", "SublayerSimilarityResult"]
