"""``ProbeResult``: accuracy of dense and k-sparse probes per hook, the chosen dimensions and the probe
directions, with plot views, a long-form table, versioned storage, and the direction as an intervention."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from interp.errors import BadInputError, UnknownNameError, bad_value, unknown_name
from interp.hooks import Add, Project
from interp.plot import layer_curves
from interp.sites import Component, Positions, Site, resolve
from interp.trace.results import Result, Upgrade, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

PER_LAYER = ("accuracy", "train_accuracy", "f1", "cv_mean", "cv_std", "control_accuracy", "selectivity",
             "projection_std")
PER_EXAMPLE = ("top_activations", "example_labels", "is_test")
PER_HEAD = (Component.Q, Component.K, Component.V, Component.Z)


def _from_v0(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 stored ``position`` ("all", "last", "mean", an int, or a slice's repr: the mean over it);
    now ``positions`` (the rule of interp.sites, spelled as ``--positions``) and ``pool``."""
    old = str(fields.pop("position", "all"))
    m = re.fullmatch(r"slice\((-?\d+|None), (-?\d+|None), (-?\d+|None)\)", old)
    if old in ("all", "last", "mean"):
        fields["positions"], fields["pool"] = {"all": ("all", None), "last": ("-1", None),
                                               "mean": ("all", "mean")}[old]
    elif m:
        parts = ["" if p == "None" else p for p in m.groups()]
        fields["positions"], fields["pool"] = ":".join(parts if parts[2] else parts[:2]), "mean"
    else:
        fields["positions"], fields["pool"] = old, None


@dataclass(frozen=True, repr=False)
class ProbeResult(Result):
    """Linear probes at each hook (one row per hook, in forward order), scored on held-out sequences.

    Scores are accuracy for classification and R² for regression; ``NaN`` where not computed (F1 for
    regression, CV without ``cv``, control without ``control``).

    Views (``res.plot(view)``): ``"layers"`` (scores by layer, the default), ``"k"`` (score against k at
    ``layer=``, default the best row) and ``"hist"`` (the top-ranked dimension's activations by class at
    ``layer=``).

    Rows are picked by ``layer``: an int is a model layer (negative: counted from the last probed layer), a
    string any hook spelling (``"resid_post.6"``, ``"blocks.6.hook_resid_post"``). ``best_row()`` is the index
    of the best row in the tensors, ``best_hook()`` its hook name.

    Attributes:
        hooks: ``[layer]`` the hook of each row.
        ks: ``[k]`` the sparsity levels.
        task, ranking: how the probes were fitted.
        positions: the token positions probed, spelled as ``--positions`` takes them (``all``, ``-1``, ``2:5``).
        pool: ``None`` (every selected token an example) or ``"mean"`` (one example per sequence).
        classes: class names (index = class code); empty for regression.
        accuracy: ``[layer]`` held-out score of the dense probe. ``train_accuracy`` the same on training.
        f1: ``[layer]`` held-out macro F1.
        cv_mean, cv_std: ``[layer]`` cross-validated score on the training sequences.
        control_accuracy: ``[layer]`` held-out score on the control task; ``selectivity = accuracy - control_accuracy``.
        sparse_accuracy, sparse_f1: ``[layer, k]`` held-out scores of the probes on the top-k dimensions.
        neurons: ``[layer, rank]`` the dimensions in rank order (the top k are ``neurons[row, :k]``).
        directions: ``[layer, out, d]`` unit probe directions in activation space (``out`` = 1 for
            binary and regression: towards ``classes[1]``; one per class for multiclass).
        intercepts: ``[layer, out]`` the probes' intercepts (on standardised inputs).
        projection_std: ``[layer]`` standard deviation of the training activations along ``directions[:, 0]``
            (a natural unit for steering scales).
        top_activations: ``[layer, example]`` activation of each row's top-ranked dimension.
        example_labels: ``[example]`` class code (or target) of each example; ``is_test``: ``[example]``.
        n_seqs, model_id: the data it came from.

    ``to_dict()`` (the CLI's ``--json``) leaves out the per-example arrays (``top_activations``,
    ``example_labels``, ``is_test``); ``save()`` keeps everything.

    Example:
        >>> from interp.probing import synthetic_trace, probe
        >>> tr, labels = synthetic_trace(n_seqs=40, seq_len=8, d=32, planted=(3, 17), n_layers=2, planted_layer=1)
        >>> res = probe(None, tr, labels=labels, hooks="resid_post", ks=[1, 2, 4], progress=False)
        >>> res.best_hook(), sorted(res.top_neurons(1, k=2)), float(res.accuracy[1]) > 0.9
        ('blocks.1.hook_resid_post', [3, 17], True)
        >>> res.intervention(1, scale=2.0).site, res.removal("resid_post.1").scale
        (Site('blocks.1.hook_resid_post'), 0.0)
        >>> res.plot("k").layout.title.text
        'k-sparse probes at blocks.1.hook_resid_post (ranking: f_stat)'
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "accuracy": ("layer",), "sparse_accuracy": ("layer", "k"), "directions": ("layer", "out", "d"),
        "train_accuracy": ("layer",), "f1": ("layer",), "cv_mean": ("layer",), "cv_std": ("layer",),
        "control_accuracy": ("layer",), "selectivity": ("layer",), "sparse_f1": ("layer", "k"),
        "neurons": ("layer", "rank"), "intercepts": ("layer", "out"), "projection_std": ("layer",),
        "top_activations": ("layer", "example"), "example_labels": ("example",), "is_test": ("example",),
    }
    VIEWS: ClassVar[tuple[str, ...]] = ("layers", "k", "hist")
    SCHEMA_VERSION: ClassVar[int] = 1
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {0: _from_v0}

    hooks: tuple[str, ...]
    ks: tuple[int, ...]
    task: str
    positions: str
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
    pool: str | None = None
    n_seqs: int = 0
    model_id: str = ""

    def __post_init__(self) -> None:
        n = len(self.hooks)
        for name in PER_LAYER:
            if tuple(getattr(self, name).shape) != (n,):
                raise BadInputError(f"{name} must be [layer={n}], got {tuple(getattr(self, name).shape)}")
        for name in ("sparse_accuracy", "sparse_f1"):
            if tuple(getattr(self, name).shape) != (n, len(self.ks)):
                raise BadInputError(f"{name} must be [layer={n}, k={len(self.ks)}], got "
                                    f"{tuple(getattr(self, name).shape)}")
        if self.directions.dim() != 3 or self.directions.shape[0] != n:
            raise BadInputError(f"directions must be [layer={n}, out, d], got {tuple(self.directions.shape)}")
        n_ex = self.example_labels.shape[0]
        if tuple(self.top_activations.shape) != (n, n_ex) or tuple(self.is_test.shape) != (n_ex,):
            raise BadInputError(f"top_activations must be [layer={n}, example={n_ex}] and is_test [example]")
        if self.pool not in (None, "mean"):
            raise bad_value("pool", self.pool, "None or 'mean'")

    # -- rows ----------------------------------------------------------------------------------------
    @property
    def layer_labels(self) -> list[str]:
        """A short label per row: the layer number (the short hook name where layers repeat or are missing)."""
        sites = [Site.parse(h) for h in self.hooks]
        labels = [s.short if s.layer is None else str(s.layer) for s in sites]
        return labels if len(set(labels)) == len(labels) else [s.short for s in sites]

    def row(self, layer: int | str | Site) -> int:
        """The row (index into the tensors) of a probed hook.

        Args:
            layer: a model layer (an int; negative counts from the last probed layer) or a hook in any spelling
                of :mod:`interp.sites` (``"resid_post.6"``, ``"blocks.6.hook_resid_post"``, a :class:`Site`).

        Raises:
            BadInputError: no probed hook there (the message lists them), or an int layer with several probed
                hooks (name the hook instead).
        """
        if isinstance(layer, bool):
            raise bad_value("layer", layer, "a model layer (int) or a hook name")
        if not isinstance(layer, str | Site | tuple):
            try:
                layer = operator.index(layer)  # NumPy and 0-d tensor integers too
            except TypeError:
                raise bad_value("layer", layer, "a model layer (int) or a hook name") from None
        sites = [Site.parse(h) for h in self.hooks]
        if isinstance(layer, int):
            layers = sorted({s.layer for s in sites if s.layer is not None})
            target = layer + (layers[-1] + 1 if layers else 0) if layer < 0 else layer
            rows = [i for i, s in enumerate(sites) if s.layer == target]
            if not rows:
                raise bad_value("layer", layer, f"a probed layer ({', '.join(map(str, layers)) or 'none'}; negative "
                                "from the last) or a hook name: " + ", ".join(self.hooks))
            if len(rows) > 1:
                raise BadInputError(f"layer {layer} has several probed hooks ({', '.join(self.hooks[i] for i in rows)});"
                                    " name the hook instead")
            return rows[0]
        if isinstance(layer, str) and layer in self.hooks:
            return self.hooks.index(layer)
        try:
            found = resolve(layer, [s for s in sites if s.component is not Component.HF])
        except (UnknownNameError, TypeError):
            found = []
        if len(found) != 1 or found[0].name not in self.hooks:
            raise unknown_name("probed hook", str(layer), self.hooks)
        return self.hooks.index(found[0].name)

    def best_row(self) -> int:
        """Row of the highest held-out score."""
        return int(torch.nan_to_num(self.accuracy, nan=-np.inf).argmax())

    def best_hook(self) -> str:
        """Hook of the highest held-out score."""
        return self.hooks[self.best_row()]

    def _row_or_best(self, layer: int | str | Site | None) -> int:
        return self.best_row() if layer is None else self.row(layer)

    def _out(self, cls: int) -> int:
        n = self.directions.shape[1]
        if isinstance(cls, bool) or not isinstance(cls, int) or not -n <= cls < n:
            valid = "0 (one direction: binary or regression)" if n == 1 else f"0..{n - 1} (classes {list(self.classes)})"
            raise bad_value("cls", cls, valid)
        return cls % n

    # -- directions ------------------------------------------------------------------------------------
    def direction(self, layer: int | str | Site, *, cls: int = 0) -> torch.Tensor:
        """``[d]`` unit probe direction at a probed hook (see :meth:`row`); ``cls`` picks a class of a multiclass
        probe (a binary probe's one direction points towards ``classes[1]``)."""
        return self.directions[self.row(layer), self._out(cls)].clone()

    def top_neurons(self, layer: int | str | Site, *, k: int = 1) -> list[int]:
        """The ``k`` best-ranked dimensions at a probed hook (``k = 1`` localises a single neuron)."""
        n = self.neurons.shape[1]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise bad_value("k", k, f"1..{n}")
        return [int(i) for i in self.neurons[self.row(layer), :k].tolist()]

    def _check_editable(self, row: int) -> Site:
        site = Site.parse(self.hooks[row])
        if site.component in PER_HEAD:
            raise BadInputError(f"a probe direction at {site.name} spans every head (the probe read the heads "
                                "flattened); reshape direction() to [head, d_head] and build the intervention "
                                "yourself")
        return site

    def intervention(self, layer: int | str | Site, *, scale: float | None = None, cls: int = 0,
                     positions: Positions = None) -> Add:
        """Steering along the probe direction: an :class:`interp.hooks.Add` of ``scale`` times the unit direction
        at the probed hook, for ``model.run(inputs, interventions=[...])``.

        Args:
            layer: the probed hook (see :meth:`row`).
            scale: multiple of the unit direction to add (default: 4 times ``projection_std``, the spread of
                the training activations along it); negative scales push towards the other class.
            cls: the class of a multiclass probe.
            positions: where to add it (the rule of :mod:`interp.sites.positions`; ``None``: every real token).

        Example:
            >>> import torch
            >>> from interp.probing import probe, synthetic_trace
            >>> tr, labels = synthetic_trace(n_seqs=24, seq_len=6, d=8, planted=(2,))
            >>> res = probe(None, tr, labels=labels, hooks="resid_post.0", ks=[1], control=False, progress=False)
            >>> add = res.intervention(0, scale=3.0, positions=-1)
            >>> edited = add.apply(torch.zeros(1, 4, 8))
            >>> bool(edited[0, :3].eq(0).all()), torch.allclose(edited[0, -1], 3.0 * res.direction(0))
            (True, True)
        """
        row = self.row(layer)
        site = self._check_editable(row)
        s = 4.0 * float(self.projection_std[row]) if scale is None else float(scale)
        return Add(site, vector=self.directions[row, self._out(cls)].clone(), scale=s, positions=positions)

    def removal(self, layer: int | str | Site, *, cls: int | None = None, positions: Positions = None) -> Project:
        """Removing the probe direction: an :class:`interp.hooks.Project` that takes out the part of the activation
        along it (every class direction of a multiclass probe, unless ``cls`` picks one), so that the probe
        reads nothing there; for ``model.run(inputs, interventions=[...])``.

        Example:
            >>> import torch
            >>> from interp.probing import probe, synthetic_trace
            >>> tr, labels = synthetic_trace(n_seqs=24, seq_len=6, d=8, planted=(2,))
            >>> res = probe(None, tr, labels=labels, hooks="resid_post.0", ks=[1], control=False, progress=False)
            >>> out = res.removal(0).apply(torch.randn(1, 4, 8))
            >>> bool((out @ res.direction(0)).abs().max() < 1e-5)
            True
        """
        row = self.row(layer)
        site = self._check_editable(row)
        dirs = self.directions[row] if cls is None else self.directions[row, self._out(cls)]
        return Project(site, directions=dirs.clone(), scale=0.0, positions=positions)

    # -- the result surface ----------------------------------------------------------------------------
    def _out_labels(self) -> list[str]:
        n = self.directions.shape[1]
        if self.task == "regression":
            return ["target"] * n
        if n == 1 and len(self.classes) >= 2:
            return [self.classes[1]]
        return list(self.classes) if len(self.classes) == n else [str(i) for i in range(n)]

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": self.layer_labels, "k": list(self.ks), "out": self._out_labels()}

    def headline(self) -> dict[str, Any]:
        b = self.best_row()
        score = "r2" if self.task == "regression" else "accuracy"
        out: dict[str, Any] = {"best": Site.parse(self.hooks[b]).short, score: round(float(self.accuracy[b]), 4)}
        if not torch.isnan(self.selectivity[b]):
            out["selectivity"] = round(float(self.selectivity[b]), 4)
        if self.ks:
            out[f"{self.ks[0]}-sparse"] = round(float(self.sparse_accuracy[b, 0]), 4)
        return out

    def to_frame(self) -> pd.DataFrame:
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

    def to_dict(self) -> dict[str, Any]:
        """The labelled-array JSON of the base, without the per-example arrays (kept by ``save``)."""
        out = super().to_dict()
        for name in PER_EXAMPLE:
            out["arrays"].pop(name, None)
        return out

    # -- views ---------------------------------------------------------------------------------------
    def _score_name(self) -> str:
        return "R²" if self.task == "regression" else "accuracy"

    def _view_layers(self) -> Figure:
        name = self._score_name()
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
        pooled = ", mean-pooled" if self.pool == "mean" else ""
        return layer_curves(series, lower=lower, upper=upper, x_labels=self.layer_labels, y_title=f"held-out {name}",
                            title=f"Probe {name} by layer (positions {self.positions}{pooled})")

    def _view_k(self, layer: int | str | Site | None = None) -> Figure:
        row = self._row_or_best(layer)
        name = self._score_name()
        series = {f"{self.layer_labels[row]}: {name}": self.sparse_accuracy[row]}
        if self.task == "classification":
            series[f"{self.layer_labels[row]}: macro F1"] = self.sparse_f1[row]
        return layer_curves(series, x=np.log2(np.array(self.ks, dtype=float)), x_labels=[str(k) for k in self.ks],
                            x_title="k (top-ranked dimensions)", y_title=f"held-out {name}",
                            title=f"k-sparse probes at {self.hooks[row]} (ranking: {self.ranking})")

    def _view_hist(self, layer: int | str | Site | None = None, bins: int = 40) -> Figure:
        row = self._row_or_best(layer)
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
        return layer_curves(series, x=centres, x_title=f"activation of dimension {neuron}",
                            y_title="fraction of examples",
                            title=f"Top-ranked dimension {neuron} at {self.hooks[row]} by class")


__all__ = ["ProbeResult"]
