"""``composition``: Q-, K- and V-composition scores between every pair of heads, with a random baseline.

Elhage et al. (2021): how much of a later head's query, key or value reading is done in the
subspace an earlier head writes to, ``‖W_OV^a Y^b‖_F / (‖W_OV^a‖_F ‖Y^b‖_F)``. The math lives in
:func:`interp.models.circuits.composition_scores` (shared with the induction tool).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from interp.errors import BadInputError
from interp.models.circuits import (
    KINDS,
    composition_baseline,
    composition_scores,
    ov_factors,
    qk_factors,
    rotation_baseline,
)
from interp.plot import heatmap, layered_graph
from interp.trace.results import labelled_frame, read_result, write_result


@dataclass(frozen=True)
class CompositionResult:
    """All-pairs composition scores of a model's heads.

    Attributes:
        scores: ``[kind, layer_a, head_a, layer_b, head_b]`` for ``kinds`` (sender ``a``, receiver ``b``);
            ``NaN`` where ``layer_b <= layer_a``.
        kinds: the composition kinds along the first axis (``"q"``, ``"k"``, ``"v"``).
        baseline_mean: per kind, the mean score of the random baseline (``baseline``).
        baseline_std: per kind, its standard deviation.
        baseline: ``"rotation"`` (real heads, receiver subspace randomly rotated: same spectra) or
            ``"gaussian"`` (i.i.d. Gaussian factors of the same shapes, Elhage et al.).
        fold_norm: whether the attention-input norm weights were folded into the reading weights.
        model_id: the model.

    Example:
        >>> import interp
        >>> from interp.heads import composition
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = composition(m, kinds=("k",))  # doctest: +SKIP
        >>> res.top_pairs("k", 1)  # doctest: +SKIP
        [((la, ha), (lb, hb), score, z)]
    """

    scores: torch.Tensor
    kinds: tuple[str, ...]
    baseline_mean: tuple[float, ...]
    baseline_std: tuple[float, ...]
    baseline: str = "rotation"
    fold_norm: bool = True
    model_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "baseline_mean", tuple(float(x) for x in self.baseline_mean))
        object.__setattr__(self, "baseline_std", tuple(float(x) for x in self.baseline_std))
        if not len(self.baseline_mean) == len(self.baseline_std) == len(self.kinds):
            raise BadInputError("baseline_mean and baseline_std need one value per kind")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or len(set(self.kinds)) != len(self.kinds):
            raise BadInputError(f"kinds={self.kinds} must be distinct values from {KINDS}")
        s = self.scores
        if s.dim() != 5 or s.shape[0] != len(self.kinds) or s.shape[1:3] != s.shape[3:5]:
            raise BadInputError(f"scores must be [kind={len(self.kinds)}, layer, head, layer, head]; got {tuple(s.shape)}")

    @property
    def n_layers(self) -> int:
        return self.scores.shape[1]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[2]

    def of(self, kind: str) -> torch.Tensor:
        """The ``[layer_a, head_a, layer_b, head_b]`` scores of one kind."""
        if kind not in self.kinds:
            raise BadInputError(f"kind={kind!r} was not computed; this result has {self.kinds}")
        return self.scores[self.kinds.index(kind)]

    def z_scores(self, kind: str) -> torch.Tensor:
        """``(score - baseline_mean) / baseline_std``, same shape as :meth:`of`."""
        i = self.kinds.index(kind) if kind in self.kinds else -1
        return (self.of(kind) - self.baseline_mean[i]) / self.baseline_std[i]

    def top_pairs(self, kind: str, n: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float, float]]:
        """The ``n`` highest-scoring ``((layer_a, head_a), (layer_b, head_b), score, z)``."""
        s = self.of(kind)
        mean, std = self.baseline_mean[self.kinds.index(kind)], self.baseline_std[self.kinds.index(kind)]
        flat = torch.nan_to_num(s, nan=-1.0).flatten()
        idx = flat.topk(min(n, int((flat >= 0).sum()))).indices
        L, H = self.n_layers, self.n_heads
        out = []
        for i in idx.tolist():
            la, ha, lb, hb = i // (H * L * H), (i // (L * H)) % H, (i // H) % L, i % H
            v = float(s[la, ha, lb, hb])
            out.append(((la, ha), (lb, hb), v, (v - mean) / std))
        return out

    def head_labels(self) -> list[str]:
        return [f"L{la}H{h}" for la in range(self.n_layers) for h in range(self.n_heads)]

    def to_frame(self) -> Any:
        """Long table: ``kind, layer_a, head_a, layer_b, head_b, score`` (pairs that can compose only)."""
        df = labelled_frame(self.scores, ["kind", "layer_a", "head_a", "layer_b", "head_b"],
                            {"kind": list(self.kinds)}, name="score")
        return df[df["layer_b"] > df["layer_a"]].reset_index(drop=True)

    def plot(self, kind: str = "k", style: Literal["heatmap", "graph"] = "heatmap", n_edges: int = 30) -> Any:
        """``"heatmap"``: sender head x receiver head (z-scored against the random baseline);
        ``"graph"``: the ``n_edges`` strongest pairs as a head-to-head graph, one column per layer."""
        if style == "heatmap":
            L, H = self.n_layers, self.n_heads
            z = self.z_scores(kind).reshape(L * H, L * H)
            labels = self.head_labels()
            i = self.kinds.index(kind)
            return heatmap(z, x_labels=labels, y_labels=labels, x_title="receiver head", y_title="sender head",
                           colorbar_title="z vs random", signed=True,
                           title=f"{kind.upper()}-composition (z-score vs random baseline "
                                 f"{self.baseline_mean[i]:.3f} ± {self.baseline_std[i]:.3f}, {self.baseline})")
        if style == "graph":
            pairs = self.top_pairs(kind, n_edges)
            used = sorted({a[0] for a, _, _, _ in pairs} | {b[0] for _, b, _, _ in pairs})
            nodes = {la: sorted({a[1] for a, _, _, _ in pairs if a[0] == la} | {b[1] for _, b, _, _ in pairs if b[0] == la})
                     for la in used}
            col = {la: i for i, la in enumerate(used)}
            layers = [[f"L{la}H{h}" for h in nodes[la]] for la in used]
            edges = [((col[a[0]], nodes[a[0]].index(a[1])), (col[b[0]], nodes[b[0]].index(b[1])), s, f"z={z:.1f}")
                     for a, b, s, z in pairs]
            return layered_graph(layers, edges, layer_names=[f"L{la}" for la in used], weight_title="score",
                                 title=f"Top {len(edges)} {kind.upper()}-composition pairs")
        raise BadInputError(f"style={style!r}; use 'heatmap' or 'graph'")

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Write to a directory (safetensors + JSON)."""
        meta = {"kinds": list(self.kinds), "baseline_mean": list(self.baseline_mean),
                "baseline_std": list(self.baseline_std), "baseline": self.baseline, "fold_norm": self.fold_norm,
                "model_id": self.model_id}
        return write_result(path, "CompositionResult", {"scores": self.scores.contiguous()}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompositionResult:
        """Read what :meth:`save` wrote."""
        tensors, meta = read_result(path, "CompositionResult")
        return cls(scores=tensors["scores"], kinds=tuple(meta["kinds"]), baseline_mean=meta["baseline_mean"],
                   baseline_std=meta["baseline_std"], baseline=meta["baseline"], fold_norm=meta["fold_norm"], model_id=meta["model_id"])


def composition(model: Any, kinds: tuple[str, ...] = KINDS, *, fold_norm: bool = True,
                baseline: Literal["rotation", "gaussian"] = "rotation", baseline_samples: int = 200,
                seed: int = 0) -> CompositionResult:
    """Composition scores of every sender/receiver head pair, for each kind, with the random baseline.

    Args:
        model: a loaded model, or anything with ``.weights`` (:class:`~interp.models.WeightViews`).
        kinds: any of ``"q"``, ``"k"``, ``"v"``.
        fold_norm: fold the attention-input norm weights into the reading weights (RMSNorm models:
            the whole fold; see :mod:`interp.models.circuits`).
        baseline: ``"rotation"``: real (sender, receiver) pairs with the receiver's subspace rotated at
            random (same singular values; :func:`~interp.models.circuits.rotation_baseline`);
            ``"gaussian"``: i.i.d. Gaussian heads (:func:`~interp.models.circuits.composition_baseline`).
        baseline_samples: random head pairs for the baseline.
        seed: seed of the baseline.

    Returns:
        :class:`CompositionResult` (``NaN`` where the receiver is not in a later layer).

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> composition(m, kinds=("q", "k")).scores.shape  # doctest: +SKIP
        torch.Size([2, 30, 9, 30, 9])
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise BadInputError(f"kinds={kinds} must be a non-empty tuple of {KINDS}")
    w = model.weights
    d_model, d_head = w.W_Q.shape[-2:]
    with torch.no_grad():
        scores = torch.stack([composition_scores(w, k, fold_norm=fold_norm, fill=float("nan")) for k in kinds])
    if baseline not in ("rotation", "gaussian"):
        raise BadInputError(f"baseline={baseline!r}; use 'rotation' or 'gaussian'")
    means, stds = [], []
    for k in kinds:
        if baseline == "gaussian":
            mean, std = composition_baseline(d_model, d_head, n_samples=baseline_samples, seed=seed)
        else:
            x = tuple(t.flatten(0, 1) for t in ov_factors(w, fold_norm=fold_norm))
            qa, qb = (t.flatten(0, 1) for t in qk_factors(w, fold_norm=fold_norm))
            y = {"q": (qa, qb), "k": (qb.transpose(-1, -2), qa.transpose(-1, -2)), "v": x}[k]
            mean, std = rotation_baseline(x, y, n_samples=baseline_samples, seed=seed)  # type: ignore[arg-type]
        means.append(mean)
        stds.append(std)
    return CompositionResult(scores=scores, kinds=kinds, baseline_mean=tuple(means), baseline_std=tuple(stds),
                             baseline=baseline, fold_norm=fold_norm, model_id=getattr(model, "name", ""))
