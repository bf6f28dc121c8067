"""``composition``: Q-, K- and V-composition scores between every pair of heads, with a random baseline.

Elhage et al. (2021): how much of a later head's query, key or value reading is done in the
subspace an earlier head writes to, ``‖W_OV^a Y^b‖_F / (‖W_OV^a‖_F ‖Y^b‖_F)``. The math lives in
:func:`interp.models.circuits.composition_scores` (shared with the induction tool). The composition
*kind* (``"q"``, ``"k"``, ``"v"``) says which input of the receiving head reads the sender's output.

Example:
    >>> import interp
    >>> from interp.heads import composition
    >>> toy = interp.load_model("toy-induction")  # 2 layers x 4 heads
    >>> comp = composition(toy, kinds="k", baseline_samples=20)
    >>> (sender, receiver, score, z), = comp.top_pairs("k", 1)
    >>> sender.layer < receiver.layer and comp.score(sender, receiver, "k") == score
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.heads._common import check_kind, fit_width
from interp.models import Model
from interp.models.circuits import (
    KINDS,
    Kind,
    composition_baseline,
    composition_scores,
    ov_factors,
    receiver_factors,
    rotation_baseline,
)
from interp.plot import heatmap, layered_graph
from interp.sites import HeadRef, HeadSpec
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

Baseline = Literal["rotation", "gaussian"]
Pair = tuple[HeadRef, HeadRef, float, float]
"""``(sender, receiver, score, z)``: one pair of heads, its composition score and its z-score against the baseline."""


@dataclass(frozen=True, repr=False)
class CompositionResult(Result):
    """All-pairs composition scores of a model's heads, with the random baseline of each kind.

    Views (``res.plot(view, kind=...)``; ``kind`` defaults to ``"k"`` when computed, else the first kind):

    - ``"heatmap"`` (default): sender head x receiver head, z-scored against the random baseline;
    - ``"graph"``: the ``n_edges`` (default 30) strongest pairs as a head-to-head graph, one column per layer.

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
        >>> toy = interp.load_model("toy-induction")
        >>> res = composition(toy, kinds=("q", "k"), baseline_samples=20)
        >>> res
        CompositionResult(scores[kind=2, layer_a=2, head_a=4, layer_b=2, head_b=4], baseline='rotation', top_q=..., top_k='L0H2→L1H3 0.303 (z ...)')
        >>> res.plot("graph", kind="k", n_edges=10).layout.width is None  # fills its column
        True
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"scores": ("kind", "layer_a", "head_a", "layer_b", "head_b")}
    VIEWS: ClassVar[tuple[str, ...]] = ("heatmap", "graph")

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
        for k in self.kinds:
            check_kind(k)
        if len(set(self.kinds)) != len(self.kinds):
            raise bad_value("kinds", self.kinds, f"distinct values from {KINDS}")
        s = self.scores
        if s.dim() != 5 or s.shape[0] != len(self.kinds) or s.shape[1:3] != s.shape[3:5]:
            raise BadInputError(f"scores must be [kind={len(self.kinds)}, layer, head, layer, head]; got {tuple(s.shape)}")

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.scores.shape[2])

    # -- access ---------------------------------------------------------------------------------
    def _kind(self, kind: str | None) -> str:
        if kind is None:
            return "k" if "k" in self.kinds else self.kinds[0]
        if kind not in self.kinds:
            check_kind(kind)
            raise bad_value("kind", kind, f"one this result computed: {', '.join(map(repr, self.kinds))}")
        return kind

    def of(self, kind: str | None = None) -> torch.Tensor:
        """The ``[layer_a, head_a, layer_b, head_b]`` scores of one kind."""
        return self.scores[self.kinds.index(self._kind(kind))]

    def z_scores(self, kind: str | None = None) -> torch.Tensor:
        """``(score - baseline_mean) / baseline_std``, same shape as :meth:`of`."""
        i = self.kinds.index(self._kind(kind))
        return (self.scores[i] - self.baseline_mean[i]) / self.baseline_std[i]

    def _head(self, x: HeadSpec, what: str) -> HeadRef:
        try:
            return HeadRef.parse(x).check(self.n_layers, self.n_heads)
        except BadInputError as e:
            raise BadInputError(f"{what}={x!r}: {e}") from None

    def score(self, sender: HeadSpec, receiver: HeadSpec, kind: str | None = None) -> float:
        """The composition score of one pair (``NaN`` when the receiver is not in a later layer).

        Example:
            >>> import interp
            >>> from interp.heads import composition
            >>> res = composition(interp.load_model("toy-induction"), kinds="v", baseline_samples=10)
            >>> 0 < res.score("L0H1", "L1H0", "v") < 1, res.score("L1H0", "L0H1", "v")
            (True, nan)
        """
        a, b = self._head(sender, "sender"), self._head(receiver, "receiver")
        return float(self.of(kind)[a.layer, a.head, b.layer, b.head])

    def top_pairs(self, kind: str | None = None, n: int = 10) -> list[Pair]:
        """The ``n`` highest-scoring pairs, ``(sender, receiver, score, z)`` with heads as :class:`HeadRef`."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad_value("n", n, "an int >= 1")
        k = self._kind(kind)
        s = self.of(k)
        i = self.kinds.index(k)
        mean, std = self.baseline_mean[i], self.baseline_std[i]
        flat = torch.nan_to_num(s, nan=-math.inf).flatten()
        idx = flat.topk(min(n, int(torch.isfinite(flat).sum()))).indices
        out = []
        for j in idx.tolist():
            la, ha, lb, hb = (int(v) for v in torch.unravel_index(torch.tensor(j), s.shape))
            v = float(s[la, ha, lb, hb])
            out.append((HeadRef(la, ha), HeadRef(lb, hb), v, (v - mean) / std))
        return out

    def head_labels(self) -> list[str]:
        """``"L0H0"``, ``"L0H1"``, ... for every head, in layer order."""
        return [str(HeadRef(la, h)) for la in range(self.n_layers) for h in range(self.n_heads)]

    # -- the result surface -----------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        return {"kind": list(self.kinds)}

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"baseline": self.baseline}
        for k in self.kinds:
            top = self.top_pairs(k, 1) if self.n_layers > 1 else []
            if top:
                a, b, s, z = top[0]
                out[f"top_{k}"] = f"{a}→{b} {s:.3f} (z {z:.1f})"
        return out

    def to_frame(self) -> pd.DataFrame:
        """Long table: ``kind, layer_a, head_a, layer_b, head_b, score, z`` (pairs that can compose only)."""
        df = labelled_frame(self.scores, ["kind", "layer_a", "head_a", "layer_b", "head_b"],
                            {"kind": list(self.kinds)}, name="score")
        mean = df["kind"].map(dict(zip(self.kinds, self.baseline_mean, strict=True)))
        std = df["kind"].map(dict(zip(self.kinds, self.baseline_std, strict=True)))
        df["z"] = (df["score"] - mean) / std
        return df[df["layer_b"] > df["layer_a"]].reset_index(drop=True)

    def _view_heatmap(self, kind: str | None = None) -> Figure:
        k = self._kind(kind)
        i = self.kinds.index(k)
        n = self.n_layers * self.n_heads
        labels = self.head_labels()
        fig = heatmap(self.z_scores(k).reshape(n, n), x_labels=labels, y_labels=labels, x_title="receiver head",
                      y_title="sender head", colorbar_title="z vs random", signed=True,
                      title=f"{k.upper()}-composition (z-score vs random baseline "
                            f"{self.baseline_mean[i]:.3f} ± {self.baseline_std[i]:.3f}, {self.baseline})")
        return fit_width(fig)

    def _view_graph(self, kind: str | None = None, n_edges: int = 30) -> Figure:
        k = self._kind(kind)
        pairs = self.top_pairs(k, n_edges)
        used = sorted({a.layer for a, _, _, _ in pairs} | {b.layer for _, b, _, _ in pairs})
        nodes = {la: sorted({a.head for a, _, _, _ in pairs if a.layer == la}
                            | {b.head for _, b, _, _ in pairs if b.layer == la}) for la in used}
        col = {la: i for i, la in enumerate(used)}
        layers = [[str(HeadRef(la, h)) for h in nodes[la]] for la in used]
        edges = [((col[a.layer], nodes[a.layer].index(a.head)), (col[b.layer], nodes[b.layer].index(b.head)), s,
                  f"z={z:.1f}") for a, b, s, z in pairs]
        fig = layered_graph(layers, edges, layer_names=[f"L{la}" for la in used], weight_title="score",
                            title=f"Top {len(edges)} {k.upper()}-composition pairs")
        # no fixed width: the graph takes its column's width (a report section, a notebook cell)
        fig.update_layout(width=None, autosize=True, margin={"l": 24, "r": 24, "t": 56, "b": 40})
        return fig


def composition(model: Model, *, kinds: Kind | Iterable[Kind] = KINDS, fold_norm: bool = True,
                baseline: Baseline = "rotation", baseline_samples: int = 200, seed: int = 0) -> CompositionResult:
    """Composition scores of every sender/receiver head pair, for each kind, with the random baseline.

    Args:
        model: a loaded model (``interp.load_model``).
        kinds: one or several of ``"q"``, ``"k"``, ``"v"``: which input of the receiving head reads the
            sender's output (its queries, keys or values).
        fold_norm: fold the attention-input norm weights into the reading weights (RMSNorm models:
            the whole fold; see :mod:`interp.models.circuits`).
        baseline: ``"rotation"``: real (sender, receiver) pairs with the receiver's subspace rotated at
            random (same singular values; :func:`~interp.models.circuits.rotation_baseline`);
            ``"gaussian"``: i.i.d. Gaussian heads (:func:`~interp.models.circuits.composition_baseline`).
        baseline_samples: random head pairs for the baseline.
        seed: seed of the baseline.

    Returns:
        :class:`CompositionResult` (``NaN`` where the receiver is not in a later layer).

    Raises:
        BadInputError: an unknown kind or baseline, or fewer than 2 baseline samples.

    Example:
        >>> import interp
        >>> toy = interp.load_model("toy-induction")
        >>> composition(toy, kinds=("q", "k"), baseline_samples=10).scores.shape
        torch.Size([2, 2, 4, 2, 4])
    """
    ks = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not ks:
        raise bad_value("kinds", kinds, "one or several of 'q', 'k', 'v'")
    for k in ks:
        check_kind(k)
    if baseline not in ("rotation", "gaussian"):
        raise bad_value("baseline", baseline, "'rotation' or 'gaussian'")
    if isinstance(baseline_samples, bool) or not isinstance(baseline_samples, int) or baseline_samples < 2:
        raise bad_value("baseline_samples", baseline_samples, "an int >= 2")
    w = model.weights
    d_model, d_head = w.W_Q.shape[-2:]
    with torch.no_grad():
        scores = torch.stack([composition_scores(w, k, fold_norm=fold_norm, fill=float("nan")) for k in ks])
        means, stds = [], []
        x = tuple(t.flatten(0, 1) for t in ov_factors(w, fold_norm=fold_norm))
        for k in ks:
            if baseline == "gaussian":
                mean, std = composition_baseline(d_model, d_head, n_samples=baseline_samples, seed=seed)
            else:
                y = tuple(t.flatten(0, 1) for t in receiver_factors(w, k, fold_norm=fold_norm))
                mean, std = rotation_baseline((x[0], x[1]), (y[0], y[1]), n_samples=baseline_samples, seed=seed)
            means.append(mean)
            stds.append(std)
    return CompositionResult(scores=scores, kinds=ks, baseline_mean=tuple(means), baseline_std=tuple(stds),
                             baseline=baseline, fold_norm=fold_norm, model_id=model.name)


__all__ = ["CompositionResult", "Pair", "composition"]
