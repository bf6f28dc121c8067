"""``PatchingResult``: metric values over named axes (layer, pos, head...), with their baselines.

Example:
    >>> import torch
    >>> r = PatchingResult(values=torch.tensor([[1.0, 3.0]]), axes=("layer", "pos"),
    ...                    coords={"layer": (0,), "pos": (0, 1)}, tokens=("a", "b"), component="resid_pre",
    ...                    method="exact", direction="denoising", metric="logit_diff",
    ...                    clean_value=3.0, corrupted_value=1.0)
    >>> r.normalized
    tensor([[0., 1.]])
    >>> r.to_frame()[["layer", "pos", "value", "normalized"]].to_dict("records")[1]
    {'layer': 0, 'pos': '1: b', 'value': 3.0, 'normalized': 1.0}
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.patching.metrics import normalize
from interp.trace.results import labelled_frame, read_result, write_result

KIND = "PatchingResult"


@dataclass(frozen=True)
class PatchingResult:
    """Raw metric values of patched runs (or estimates of them), on named axes.

    Attributes:
        values: ``[*shape]`` metric per cell, axes named by ``axes`` — e.g. ``(layer, pos)``,
            ``(layer, head)``, ``(layer, head, pos)``, ``(src_layer, dst_layer)`` (back-patching).
        axes: axis names.
        coords: per axis, the index of each cell (layer numbers, positions, heads).
        tokens: the clean prompt's token strings (labels for ``pos``).
        component: what was patched (``resid_pre``, ``z``...).
        method: ``exact``, ``attribution``, ``atp*``, ``path`` or ``backpatch``.
        direction: ``denoising`` or ``noising``.
        metric: the metric's name.
        clean_value / corrupted_value: the metric on the unpatched runs (NaN when undefined).
        meta: extra JSON-serialisable settings (window, corruption, receivers...).
        exact: for estimates, the exact values of the same sweep (to compare with), or None.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    coords: dict[str, tuple[int, ...]]
    tokens: tuple[str, ...]
    component: str
    method: str
    direction: str
    metric: str
    clean_value: float
    corrupted_value: float
    meta: dict[str, Any] = field(default_factory=dict)
    exact: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.values.dim() != len(self.axes):
            raise BadInputError(f"values have {self.values.dim()} dims but axes are {self.axes}")
        for a, n in zip(self.axes, self.values.shape, strict=True):
            if len(self.coords.get(a, ())) != n:
                raise BadInputError(f"coords[{a!r}] must have {n} entries, got {len(self.coords.get(a, ()))}")
        if self.exact is not None and self.exact.shape != self.values.shape:
            raise BadInputError(f"exact has shape {tuple(self.exact.shape)}, values {tuple(self.values.shape)}")

    @property
    def normalized(self) -> torch.Tensor:
        """``(values - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""
        return normalize(self.values, self.clean_value, self.corrupted_value)

    @property
    def can_normalize(self) -> bool:
        span = self.clean_value - self.corrupted_value
        return math.isfinite(span) and abs(span) > 1e-12

    def correlation(self) -> float:
        """Pearson r between these values and ``exact`` (estimates only)."""
        if self.exact is None:
            raise BadInputError("this result holds no exact values to compare with")
        x, y = self.values.flatten().double(), self.exact.flatten().double()
        return float(torch.corrcoef(torch.stack([x, y]))[0, 1])

    def labels(self, axis: str) -> list[str]:
        """Tick labels of one axis (``"3: ␣John"`` for positions, ``"L5"`` / ``"H2"`` otherwise)."""
        idx = self.coords[axis]
        if axis == "pos":
            return [f"{p}: {self.tokens[p]}" for p in idx]
        prefix = {"layer": "L", "head": "H", "src_layer": "L", "dst_layer": "L"}.get(axis, "")
        return [f"{prefix}{i}" for i in idx]

    def to_frame(self) -> Any:
        """Long-form ``pandas.DataFrame``: one row per cell, the axes' labels, ``value`` (raw), ``normalized``
        (when defined) and ``exact`` (for estimates)."""
        labels = {a: (self.labels(a) if a == "pos" else list(self.coords[a])) for a in self.axes}
        df = labelled_frame(self.values, list(self.axes), labels)
        if self.can_normalize:
            df["normalized"] = self.normalized.flatten().tolist()
        if self.exact is not None:
            df["exact"] = self.exact.flatten().tolist()
        return df

    def plot(self, normalized: bool | None = None, title: str | None = None) -> Any:
        """A heatmap: layer x position with token labels, layer x head grid, or (layer, head) x position."""
        import interp.plot as ip

        norm = self.can_normalize if normalized is None else normalized
        z = self.normalized if norm else self.values
        what = f"{self.metric} (normalised)" if norm else self.metric
        title = title or f"{self.method} patching of {self.component} ({self.direction})"
        if z.dim() == 1:
            z = z.unsqueeze(1)
            return ip.heatmap(z, ["effect"], self.labels(self.axes[0]), title=title, colorbar_title=what)
        if z.dim() == 3:
            rows = [f"L{L}H{h}" for L in self.coords[self.axes[0]] for h in self.coords[self.axes[1]]]
            return ip.heatmap(z.flatten(0, 1), self.labels(self.axes[2]), rows, title=title, colorbar_title=what,
                              y_title="head", x_title=self.axes[2])
        return ip.heatmap(z, self.labels(self.axes[1]), self.labels(self.axes[0]), title=title, colorbar_title=what,
                          y_title=self.axes[0], x_title=self.axes[1])

    def plot_paths(self, k: int = 8, title: str | None = None) -> Any:
        """Path diagram of a path-patching result: the ``k`` senders with the largest effect, one column per
        layer, linked to the receivers (or to the logits); edge weight = the sender's effect through the path
        (normalised when defined, else ``value - target value``)."""
        import interp.plot as ip

        if self.method != "path":
            raise BadInputError(f"plot_paths draws path-patching results; this one is {self.method!r}")
        base = self.clean_value if self.direction == "noising" else self.corrupted_value
        eff = self.normalized - (1.0 if self.direction == "noising" else 0.0) if self.can_normalize else self.values - base
        top = [c for c, _ in self.top(k)]
        recv = self.meta.get("receivers", "logits")
        receivers = [("logits", None)] if recv == "logits" else [(f"L{L}H{h}", L) for L, h in recv]
        cols = sorted({c["layer"] for c in top})
        layers = [[f"L{L}H{c['head']}" for c in top if c["layer"] == L] for L in cols]
        recv_cols = sorted({L for _, L in receivers if L is not None}) or [None]
        for L in recv_cols:
            layers.append([name for name, rl in receivers if rl == L])
        names = [f"L{L}" for L in cols] + ["logits" if L is None else f"L{L} ({self.meta.get('receiver_input', '')})"
                                          for L in recv_cols]
        edges = []
        for ci, L in enumerate(cols):
            for ni, c in enumerate(c2 for c2 in top if c2["layer"] == L):
                w = float(eff[L, c["head"]])
                for ri in range(len(recv_cols)):
                    for rn in range(len(layers[len(cols) + ri])):
                        edges.append(((ci, ni), (len(cols) + ri, rn), w))
        return ip.layered_graph(layers, edges, layer_names=names, weight_title="effect",
                                title=title or f"path patching: top {len(top)} senders ({self.direction})")

    def top(self, k: int = 10) -> list[tuple[dict[str, int], float]]:
        """The ``k`` cells with the largest ``|value - baseline|`` (the target run's value); NaN cells are skipped."""
        base = self.corrupted_value if self.direction == "denoising" else self.clean_value
        eff = (self.values - (base if math.isfinite(base) else 0.0)).abs().flatten()
        order = [i for i in eff.nan_to_num(nan=-1.0).argsort(descending=True).tolist() if not math.isnan(eff[i])]
        out = []
        for i in order[:k]:
            idx = torch.unravel_index(torch.tensor(i), self.values.shape)
            out.append(({a: self.coords[a][int(j)] for a, j in zip(self.axes, idx, strict=True)},
                        float(self.values.flatten()[i])))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``result.safetensors`` + ``result.json`` under ``path``."""
        meta = {"axes": list(self.axes), "coords": {a: list(v) for a, v in self.coords.items()},
                "tokens": list(self.tokens), "component": self.component, "method": self.method,
                "direction": self.direction, "metric": self.metric,
                "clean_value": None if math.isnan(self.clean_value) else self.clean_value,
                "corrupted_value": None if math.isnan(self.corrupted_value) else self.corrupted_value,
                "meta": self.meta}
        return write_result(path, KIND, {"values": self.values.contiguous(),
                                         "exact": None if self.exact is None else self.exact.contiguous()}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchingResult:
        """Read a result written by :meth:`save`."""
        t, m = read_result(path, KIND)
        nan = float("nan")
        return cls(values=t["values"], axes=tuple(m["axes"]), coords={a: tuple(v) for a, v in m["coords"].items()},
                   tokens=tuple(m["tokens"]), component=m["component"], method=m["method"], direction=m["direction"],
                   metric=m["metric"], clean_value=nan if m["clean_value"] is None else m["clean_value"],
                   corrupted_value=nan if m["corrupted_value"] is None else m["corrupted_value"],
                   meta=m["meta"], exact=t.get("exact"))


__all__ = ["PatchingResult"]
