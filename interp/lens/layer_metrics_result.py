"""Results of the layer metrics: angular distances, sublayer similarities, skip-layer losses.

Each is a frozen dataclass of labelled tensors with ``.plot()``, ``.to_dict()`` (``{"axes", "labels",
"values"}`` per tensor, NaN → ``None``) and ``.save()/.load()`` (safetensors + JSON).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from interp.errors import BadInputError
from interp.plot import heatmap, layer_curves
from interp.trace.results import nan_to_none, read_result, write_result

R = TypeVar("R", bound="_Stored")


class _Stored:
    """Shared ``to_dict`` / ``save`` / ``load`` for results whose tensors are listed in ``AXES``."""

    AXES: ClassVar[dict[str, list[str]]] = {}

    def _labels(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Every tensor as ``{"axes", "labels", "values"}`` (NaN → ``None``), plus the scalars."""
        labels = self._labels()
        out: dict[str, Any] = {name: {"axes": axes, "labels": {a: labels[a] for a in axes if a in labels},
                                      "values": nan_to_none(getattr(self, name).tolist())}
                               for name, axes in self.AXES.items()}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name not in self.AXES:
                v = getattr(self, f.name)
                out[f.name] = [list(t) for t in v] if f.name == "tokens" else v
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path/result.safetensors`` (tensors) and ``path/result.json`` (labels, tokens, metadata)."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.AXES}  # type: ignore[arg-type]
        return write_result(path, type(self).__name__, {n: getattr(self, n) for n in self.AXES}, meta)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a result written by :meth:`save`."""
        tensors, meta = read_result(path, cls.__name__)
        for key, value in meta.items():
            if isinstance(value, list):
                meta[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        return cls(**meta, **{n: tensors[n] for n in cls.AXES})


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...], axes: list[str]) -> None:
    if tuple(t.shape) != shape:
        raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {shape} ({', '.join(axes)})")


@dataclass(frozen=True)
class AngularDistanceResult(_Stored):
    """Angular distances ``arccos(cos(x_start, x_{start+n})) / pi`` between residual-stream states.

    State ``l`` is the input of block ``l`` (state ``n_layers``: the last block's output). Entries with
    ``start + n > n_layers`` are ``NaN``; the ``n = 0`` column is 0.

    Attributes:
        distance_last: ``[start, n]`` mean over the sequences of the distance at their last real token.
        distance_mean: ``[start, n]`` mean over all real tokens.
        n_tokens: real tokens averaged over; tokens: the input token strings; model_id: the model.

    Example:
        >>> import torch
        >>> from interp.lens import AngularDistanceResult
        >>> d = torch.tensor([[0.0, 0.3], [0.0, float("nan")]])
        >>> AngularDistanceResult(distance_last=d, distance_mean=d).best_block(1)
        0
    """

    distance_last: torch.Tensor
    distance_mean: torch.Tensor
    n_tokens: int = 0
    tokens: tuple[tuple[str, ...], ...] = ()
    model_id: str = ""

    AXES: ClassVar[dict[str, list[str]]] = {"distance_last": ["layer", "n"], "distance_mean": ["layer", "n"]}

    def __post_init__(self) -> None:
        t = self.distance_last
        if t.dim() != 2 or t.shape[0] != t.shape[1]:
            raise BadInputError(f"distance_last must be a square [layer, n] matrix, got {tuple(t.shape)}")
        _check("distance_mean", self.distance_mean, tuple(t.shape), self.AXES["distance_mean"])

    @property
    def n_layers(self) -> int:
        """Number of blocks (the matrices are ``n_layers + 1`` square)."""
        return self.distance_last.shape[0] - 1

    def _labels(self) -> dict[str, list[Any]]:
        r = list(range(self.n_layers + 1))
        return {"layer": r, "n": r}

    def distances(self, which: str = "last") -> torch.Tensor:
        """``[start, n]``: ``"last"`` (last real token) or ``"mean"`` (all real tokens)."""
        if which not in ("last", "mean"):
            raise BadInputError(f"which must be 'last' or 'mean', got {which!r}")
        return self.distance_last if which == "last" else self.distance_mean

    def best_block(self, n: int, which: str = "last") -> int:
        """The ``start`` minimising the distance to ``start + n``: blocks ``start .. start+n-1`` are the
        ``n`` consecutive layers whose removal changes the residual stream least (Gromov et al. 2024)."""
        if not 1 <= n <= self.n_layers:
            raise BadInputError(f"n must be in 1..{self.n_layers}, got {n}")
        col = self.distances(which)[: self.n_layers + 1 - n, n]
        return int(col.argmin())

    def plot(self, which: str = "last") -> Any:
        """Heatmap of the distance: x = ``n`` (layers skipped), y = start layer."""
        d = self.distances(which)
        r = [str(i) for i in range(self.n_layers + 1)]
        where = "last token" if which == "last" else "mean over tokens"
        return heatmap(d, x_labels=r, y_labels=r, title=f"angular distance between layer L and L+n ({where})",
                       x_title="n (layers skipped)", y_title="L (start layer)", signed=False, zmin=0.0,
                       colorbar_title="arccos(cos)/π", rows_top_down=False)

    def __repr__(self) -> str:
        return f"AngularDistanceResult({self.n_layers} layers, {self.n_tokens} tokens, model={self.model_id!r})"


@dataclass(frozen=True)
class SublayerSimilarityResult(_Stored):
    """Cosine similarity of each sublayer's input and output residual, mean over real tokens.

    Attributes:
        attn: ``[layer]`` ``cos(resid_pre, resid_mid)``.
        mlp: ``[layer]`` ``cos(resid_mid, resid_post)``.
        n_tokens: real tokens averaged over; tokens: the input token strings; model_id: the model.

    Example:
        >>> import torch
        >>> from interp.lens import SublayerSimilarityResult
        >>> SublayerSimilarityResult(attn=torch.tensor([0.9, 0.99]), mlp=torch.tensor([0.8, 0.95])).n_layers
        2
    """

    attn: torch.Tensor
    mlp: torch.Tensor
    n_tokens: int = 0
    tokens: tuple[tuple[str, ...], ...] = ()
    model_id: str = ""

    AXES: ClassVar[dict[str, list[str]]] = {"attn": ["layer"], "mlp": ["layer"]}

    def __post_init__(self) -> None:
        if self.attn.dim() != 1:
            raise BadInputError(f"attn must be [layer], got {tuple(self.attn.shape)}")
        _check("mlp", self.mlp, tuple(self.attn.shape), ["layer"])

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]

    def _labels(self) -> dict[str, list[Any]]:
        return {"layer": list(range(self.n_layers))}

    def plot(self) -> Any:
        """Layer curves of the attention and MLP input/output similarity."""
        return layer_curves({"attn": self.attn, "mlp": self.mlp}, y_title="cos(sublayer input, output)",
                            title="sublayer input/output similarity (mean over tokens)")

    def __repr__(self) -> str:
        return f"SublayerSimilarityResult({self.n_layers} layers, {self.n_tokens} tokens, model={self.model_id!r})"


@dataclass(frozen=True)
class SkipLossResult(_Stored):
    """Next-token cross-entropy with one component skipped, per component and layer.

    Attributes:
        loss: ``[component, layer]`` mean cross-entropy (nats) over the real next-token predictions.
        baseline_loss: the same without any skip.
        components: the row labels (``"block"``, ``"attn"``, ``"mlp"``).
        n_tokens: predictions averaged over; model_id: the model.

    Example:
        >>> import torch
        >>> from interp.lens import SkipLossResult
        >>> res = SkipLossResult(loss=torch.tensor([[3.0, 2.5]]), baseline_loss=2.0, components=("attn",))
        >>> res.delta.tolist()
        [[1.0, 0.5]]
    """

    loss: torch.Tensor
    baseline_loss: float
    components: tuple[str, ...]
    n_tokens: int = 0
    model_id: str = ""

    AXES: ClassVar[dict[str, list[str]]] = {"loss": ["component", "layer"]}

    def __post_init__(self) -> None:
        if self.loss.dim() != 2 or self.loss.shape[0] != len(self.components):
            raise BadInputError(f"loss has shape {tuple(self.loss.shape)}, expected ({len(self.components)}, n_layers) "
                             "(component, layer)")
        if not math.isfinite(self.baseline_loss):
            raise BadInputError(f"baseline_loss must be finite, got {self.baseline_loss}")

    @property
    def delta(self) -> torch.Tensor:
        """``[component, layer]`` loss increase over the baseline (nats)."""
        return self.loss - self.baseline_loss

    def _labels(self) -> dict[str, list[Any]]:
        return {"component": list(self.components), "layer": list(range(self.loss.shape[1]))}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["delta"] = {"axes": self.AXES["loss"], "labels": self._labels(), "values": nan_to_none(self.delta.tolist())}
        return out

    def plot(self) -> Any:
        """Layer curves of the loss increase per skipped component."""
        return layer_curves(dict(zip(self.components, self.delta, strict=True)), y_title="Δ cross-entropy (nats)",
                            title=f"loss increase when skipping one component (baseline {self.baseline_loss:.3f})")

    def __repr__(self) -> str:
        return (f"SkipLossResult({'/'.join(self.components)} x {self.loss.shape[1]} layers, "
                f"baseline {self.baseline_loss:.3f}, model={self.model_id!r})")
