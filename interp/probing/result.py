"""``ProbeResult``: accuracy of dense and k-sparse probes per hook, the chosen neurons and the probe
directions, with plots, a long-form table, storage, and export as a steering intervention."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from interp.errors import BadInputError
from interp.hooks import Add
from interp.plot import layer_curves
from interp.sites import Site
from interp.trace.results import labelled_frame, read_result, write_result

KIND = "ProbeResult"
TENSORS = ("accuracy", "train_accuracy", "f1", "cv_mean", "cv_std", "control_accuracy", "selectivity",
           "sparse_accuracy", "sparse_f1", "neurons", "directions", "intercepts", "projection_std",
           "top_activations", "example_labels", "is_test")
PER_LAYER = ("accuracy", "train_accuracy", "f1", "cv_mean", "cv_std", "control_accuracy", "selectivity",
             "projection_std")


@dataclass(frozen=True)
class ProbeResult:
    """Probes at ``n_layer`` hooks (rows, in layer order), evaluated on sequences held out from training.

    Scores are accuracy for classification and R² for regression; ``NaN`` where not computed (F1 for
    regression, CV without ``cv``, control without ``control``).

    Attributes:
        hooks: ``[layer]`` the hook of each row.
        ks: ``[k]`` the sparsity levels.
        task, position, ranking: how the probes were fitted.
        classes: class names (index = class code); empty for regression.
        accuracy: ``[layer]`` held-out score of the dense probe. ``train_accuracy`` the same on training.
        f1: ``[layer]`` held-out macro F1.
        cv_mean, cv_std: ``[layer]`` cross-validated score on the training sequences.
        control_accuracy: ``[layer]`` held-out score on the control task; ``selectivity = accuracy - control_accuracy``.
        sparse_accuracy, sparse_f1: ``[layer, k]`` held-out scores of the probes on the top-k dimensions.
        neurons: ``[layer, k_max]`` the dimensions in rank order (the top k are ``neurons[L, :k]``).
        directions: ``[layer, n_out, d]`` unit probe directions in activation space (``n_out`` = 1 for
            binary and regression: towards ``classes[1]``; one per class for multiclass).
        intercepts: ``[layer, n_out]`` the probes' intercepts (on standardised inputs).
        projection_std: ``[layer]`` standard deviation of the training activations along ``directions[:, 0]``
            (a natural unit for steering scales).
        top_activations: ``[layer, example]`` activation of each layer's top-ranked dimension.
        example_labels: ``[example]`` class code (or target) of each example; ``is_test``: ``[example]``.
        n_seqs, model_id: the data it came from.

    Example:
        >>> import torch
        >>> from interp.probing import synthetic_trace, probe
        >>> tr, labels = synthetic_trace(n_seqs=40, seq_len=8, d=32, planted=(3, 17), seed=0)
        >>> res = probe(tr, labels, hooks="blocks.0.hook_resid_post", ks=[1, 2, 4], progress=False)
        >>> sorted(res.neurons[0, :2].tolist()), float(res.accuracy[0]) > 0.9
        ([3, 17], True)
    """

    hooks: tuple[str, ...]
    ks: tuple[int, ...]
    task: str
    position: str
    ranking: str
    classes: tuple[str, ...]
    accuracy: torch.Tensor
    train_accuracy: torch.Tensor
    f1: torch.Tensor
    cv_mean: torch.Tensor
    cv_std: torch.Tensor
    control_accuracy: torch.Tensor
    selectivity: torch.Tensor
    sparse_accuracy: torch.Tensor
    sparse_f1: torch.Tensor
    neurons: torch.Tensor
    directions: torch.Tensor
    intercepts: torch.Tensor
    projection_std: torch.Tensor
    top_activations: torch.Tensor
    example_labels: torch.Tensor
    is_test: torch.Tensor
    n_seqs: int = 0
    model_id: str = ""

    def __post_init__(self) -> None:
        n = len(self.hooks)
        for name in PER_LAYER:
            if tuple(getattr(self, name).shape) != (n,):
                raise BadInputError(f"{name} must be [layer={n}], got {tuple(getattr(self, name).shape)}")
        for name in ("sparse_accuracy", "sparse_f1"):
            if tuple(getattr(self, name).shape) != (n, len(self.ks)):
                raise BadInputError(f"{name} must be [layer={n}, k={len(self.ks)}], got {tuple(getattr(self, name).shape)}")
        if self.directions.dim() != 3 or self.directions.shape[0] != n:
            raise BadInputError(f"directions must be [layer={n}, n_out, d], got {tuple(self.directions.shape)}")
        n_ex = self.example_labels.shape[0]
        if tuple(self.top_activations.shape) != (n, n_ex) or tuple(self.is_test.shape) != (n_ex,):
            raise BadInputError(f"top_activations must be [layer={n}, example={n_ex}] and is_test [example]")

    # -- access ------------------------------------------------------------------------------------
    @property
    def layer_labels(self) -> list[str]:
        """A short label per row: the layer number (or the hook name for hooks without a layer)."""
        labels = []
        for h in self.hooks:
            layer = Site.parse(h).layer
            labels.append(h if layer is None else str(layer))
        return labels if len(set(labels)) == len(labels) else list(self.hooks)

    def _row(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if layer not in self.hooks:
                raise KeyError(f"no probe at {layer!r}; probed hooks: {', '.join(self.hooks)}")
            return self.hooks.index(layer)
        n = len(self.hooks)
        if not -n <= layer < n:
            raise IndexError(f"layer row {layer} out of range: {n} hooks were probed")
        return layer % n

    def best_layer(self) -> int:
        """Row of the highest held-out score."""
        return int(torch.nan_to_num(self.accuracy, nan=-np.inf).argmax())

    def direction(self, layer: int | str, cls: int = 0) -> torch.Tensor:
        """``[d]`` unit probe direction at a row (index or hook name); ``cls`` picks a class of a multiclass probe."""
        return self.directions[self._row(layer), cls].clone()

    def steering(self, layer: int | str, scale: float | None = None, cls: int = 0, **kwargs: Any) -> Add:
        """The probe direction as an :class:`interp.hooks.Add` intervention on the probed hook.

        Args:
            layer: row index or hook name.
            scale: multiple of the unit direction to add (default: 4 times ``projection_std``); negative
                scales push towards the other class.
            cls: class of a multiclass probe.
            **kwargs: ``positions=`` etc., passed to ``Add``.
        """
        row = self._row(layer)
        s = 4.0 * float(self.projection_std[row]) if scale is None else float(scale)
        return Add(self.hooks[row], vector=self.direction(row, cls), scale=s, **kwargs)

    def feature_vector(self, layer: int | str, cls: int = 0) -> torch.Tensor:
        """The probe direction as a plain ``[d]`` float32 tensor: a feature (decoder row / encoder
        direction) for ``interp.features`` or any code that takes a direction."""
        return self.direction(layer, cls).float().contiguous()

    def top_neurons(self, layer: int | str, k: int = 1) -> list[int]:
        """The ``k`` best-ranked dimensions at a row (``k = 1`` localises a single neuron)."""
        return self.neurons[self._row(layer), :k].tolist()

    # -- tables and plots --------------------------------------------------------------------------
    def to_frame(self) -> Any:
        """Long form: columns ``metric``, ``layer``, ``k`` (``-1`` for dense probes), ``value``."""
        import pandas as pd

        labels = {"layer": self.layer_labels}
        frames = []
        for m in PER_LAYER:
            f = labelled_frame(getattr(self, m), ["layer"], labels)
            frames.append(f.assign(metric=m, k=-1))
        for m in ("sparse_accuracy", "sparse_f1"):
            f = labelled_frame(getattr(self, m), ["layer", "k"], {**labels, "k": list(self.ks)})
            frames.append(f.assign(metric=m))
        return pd.concat(frames, ignore_index=True)[["metric", "layer", "k", "value"]]

    def plot(self, kind: str = "layers", layer: int | str | None = None) -> Any:
        """A figure: ``"layers"`` (scores vs layer), ``"k"`` (score vs k at ``layer``, default the
        best), or ``"hist"`` (histogram by class of the top neuron at ``layer``)."""
        name = "R²" if self.task == "regression" else "accuracy"
        if kind == "layers":
            series = {f"dense probe {name}": self.accuracy}
            if not torch.isnan(self.control_accuracy).all():
                series |= {"control task": self.control_accuracy, "selectivity": self.selectivity}
            for j, k in enumerate(self.ks):
                if k in (1, self.ks[-1]):
                    series[f"{k}-sparse probe"] = self.sparse_accuracy[:, j]
            lower = upper = None
            if not torch.isnan(self.cv_mean).all():
                series[f"cv {name}"] = self.cv_mean
                lower, upper = {f"cv {name}": self.cv_mean - self.cv_std}, {f"cv {name}": self.cv_mean + self.cv_std}
            return layer_curves(series, lower=lower, upper=upper, x_labels=self.layer_labels, y_title=f"held-out {name}",
                                title=f"Probe {name} by layer ({self.position} positions)")
        row = self.best_layer() if layer is None else self._row(layer)
        if kind == "k":
            series = {f"{self.layer_labels[row]}: {name}": self.sparse_accuracy[row]}
            if self.task == "classification":
                series[f"{self.layer_labels[row]}: macro F1"] = self.sparse_f1[row]
            return layer_curves(series, x=np.log2(np.array(self.ks, dtype=float)), x_labels=[str(k) for k in self.ks],
                                x_title="k (top-ranked dimensions)", y_title=f"held-out {name}",
                                title=f"k-sparse probes at {self.hooks[row]} (ranking: {self.ranking})")
        if kind == "hist":
            return self._hist(row)
        raise BadInputError(f"kind must be 'layers', 'k' or 'hist', got {kind!r}")

    def _hist(self, row: int, bins: int = 40) -> Any:
        acts = self.top_activations[row].double().numpy()
        edges = np.linspace(acts.min(), acts.max() + 1e-9, bins + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        series = {}
        if self.task == "classification":
            for c, cname in enumerate(self.classes):
                m = (self.example_labels == c).numpy()
                if m.any():
                    series[f"class {cname}"] = np.histogram(acts[m], edges)[0] / m.sum()
        else:
            series["all examples"] = np.histogram(acts, edges)[0] / len(acts)
        neuron = int(self.neurons[row, 0])
        return layer_curves(series, x=centres, x_title=f"activation of dimension {neuron}", y_title="fraction of examples",
                            title=f"Top-ranked dimension {neuron} at {self.hooks[row]} by class")

    # -- storage -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``result.safetensors`` + ``result.json`` into directory ``path``."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TENSORS}
        write_result(path, KIND, {n: getattr(self, n).contiguous() for n in TENSORS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProbeResult:
        tensors, meta = read_result(path, KIND)
        meta = {**meta, "hooks": tuple(meta["hooks"]), "ks": tuple(meta["ks"]), "classes": tuple(meta["classes"])}
        return cls(**tensors, **meta)

    def __repr__(self) -> str:
        b = self.best_layer()
        return (f"ProbeResult({len(self.hooks)} hooks, task={self.task}, position={self.position}, "
                f"best={self.hooks[b]} {float(self.accuracy[b]):.3f}, ks={list(self.ks)})")


__all__ = ["ProbeResult"]
