"""Results of the layer and head studies (each a :class:`~interp.trace.results.Result`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.plot import heatmap, layer_curves, scatter
from interp.stats import ranks, spearman
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


def _rows(t: torch.Tensor, names: tuple[str, ...], what: str) -> None:
    if t.dim() != 2 or t.shape[0] != len(names):
        raise BadInputError(f"{what} must be [{len(names)} methods, n], got {tuple(t.shape)}")


@dataclass(frozen=True, repr=False)
class LayerDropResult(Result):
    """Task accuracy and log-likelihood against the number of blocks (or sublayers) dropped, per way of choosing.

    Methods: ``angular`` (the ``n`` consecutive blocks whose input and output are closest in angle, Gromov et al.
    2024), ``attn`` / ``mlp`` (the ``n`` attention / MLP sublayers whose output is most similar to their input,
    He et al. 2024), ``skip_loss`` (the ``n`` blocks whose single removal raises the loss least), ``random``
    (seeded; the baseline).

    With healing (``drop_layers(..., heal="norm" | "lora")``) each cell is also scored after a short seeded
    fine-tune of the dropped model (:func:`~interp.layers.heal`), and the views draw the healed curves dashed
    beside the unhealed ones.

    Views: ``"accuracy"`` (default), ``"loglik"``, ``"heal_loss"`` (fine-tune loss before and after healing).

    Attributes:
        accuracy: ``[method, n_dropped]`` task accuracy (column 0: the unmodified model).
        loglik: ``[method, n_dropped]`` mean log-likelihood of the right answer (or per token).
        dropped: per method, per ``n``, the blocks (or sublayers) dropped, as ``"3"`` / ``"attn.3"`` strings.
        methods: the method names (rows); task: the task's name; chance: the accuracy of guessing.
        healed_accuracy / healed_loglik: ``[method, n_dropped]`` the same after healing (``None`` without).
        heal_loss: ``[method, n_dropped, when]`` mean next-token loss on the fine-tune texts ``before`` / ``after``
            healing; healed: what was healed, how (one line; empty without healing).

    Example:
        >>> import torch
        >>> r = LayerDropResult(accuracy=torch.tensor([[0.9, 0.8, 0.2]]), loglik=torch.zeros(1, 3),
        ...                     methods=("random",), task="t")
        >>> r
        LayerDropResult(accuracy[method=1, n_dropped=3], loglik[method=1, n_dropped=3], task='t', baseline=0.9, ...)
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"accuracy": ("method", "n_dropped"),
                                                     "loglik": ("method", "n_dropped"),
                                                     "healed_accuracy": ("method", "n_dropped"),
                                                     "healed_loglik": ("method", "n_dropped"),
                                                     "heal_loss": ("method", "n_dropped", "when")}
    VIEWS = ("accuracy", "loglik", "heal_loss")

    accuracy: torch.Tensor
    loglik: torch.Tensor
    methods: tuple[str, ...] = ()
    dropped: tuple[tuple[tuple[str, ...], ...], ...] = ()
    task: str = ""
    chance: float = 0.0
    model_id: str = ""
    healed_accuracy: torch.Tensor | None = None
    healed_loglik: torch.Tensor | None = None
    heal_loss: torch.Tensor | None = None
    healed: str = ""

    def __post_init__(self) -> None:
        _rows(self.accuracy, self.methods, "accuracy")
        for name in ("loglik", "healed_accuracy", "healed_loglik"):
            t = getattr(self, name)
            if t is not None and t.shape != self.accuracy.shape:
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, accuracy {tuple(self.accuracy.shape)}")
        if self.heal_loss is not None and tuple(self.heal_loss.shape) != (*self.accuracy.shape, 2):
            raise BadInputError(f"heal_loss must be [method, n_dropped, 2], got {tuple(self.heal_loss.shape)}")

    def labels(self) -> dict[str, list[Any]]:
        return {"method": list(self.methods), "n_dropped": list(range(self.accuracy.shape[1])),
                "when": ["before", "after"]}

    def to_frame(self) -> pd.DataFrame:
        """One row per method and number dropped: what was dropped, accuracy and log-likelihood, and with healing
        the healed accuracy and log-likelihood and the fine-tune loss before and after."""
        import pandas as pd

        rows = []
        for i, m in enumerate(self.methods):
            for n in range(self.accuracy.shape[1]):
                row: dict[str, Any] = {"method": m, "n_dropped": n,
                                       "dropped": ",".join(self.dropped[i][n]) if self.dropped else "",
                                       "accuracy": float(self.accuracy[i, n]), "loglik": float(self.loglik[i, n])}
                if self.healed_accuracy is not None and self.healed_loglik is not None:
                    row["healed_accuracy"] = float(self.healed_accuracy[i, n])
                    row["healed_loglik"] = float(self.healed_loglik[i, n])
                if self.heal_loss is not None:
                    row["heal_loss_before"] = float(self.heal_loss[i, n, 0])
                    row["heal_loss_after"] = float(self.heal_loss[i, n, 1])
                rows.append(row)
        return pd.DataFrame(rows)

    def _curves(self, t: torch.Tensor, y: str, healed: torch.Tensor | None = None) -> Figure:
        series = {m: t[i] for i, m in enumerate(self.methods)}
        if healed is not None:
            series.update({f"{m} (healed)": healed[i] for i, m in enumerate(self.methods)})
        fig = layer_curves(series, x_title="blocks (or sublayers) dropped",
                           y_title=y, title=f"{y} on {self.task} as layers are dropped")
        if healed is not None:
            for tr in fig.data:
                if str(tr.name).endswith("(healed)"):
                    tr.line.dash = "dash"
        return fig

    def _view_accuracy(self) -> Figure:
        """Accuracy per method against the number dropped (healed: dashed)."""
        return self._curves(self.accuracy, "accuracy", self.healed_accuracy)

    def _view_loglik(self) -> Figure:
        """Mean log-likelihood of the right answer per method against the number dropped (healed: dashed)."""
        return self._curves(self.loglik, "log-likelihood", self.healed_loglik)

    def _view_heal_loss(self) -> Figure:
        """Fine-tune loss before and after healing per method against the number dropped (empty without
        healing)."""
        if self.heal_loss is None:
            return layer_curves({}, x_title="blocks (or sublayers) dropped", y_title="loss",
                                title="no healing was run")
        series = {}
        for i, m in enumerate(self.methods):
            series[f"{m} before"] = self.heal_loss[i, :, 0]
            series[f"{m} after"] = self.heal_loss[i, :, 1]
        return layer_curves(series, x_title="blocks (or sublayers) dropped", y_title="next-token loss",
                            title=f"healing: {self.healed}")

    def headline(self) -> dict[str, Any]:
        base = float(self.accuracy[0, 0]) if self.accuracy.numel() else float("nan")
        out: dict[str, Any] = {"task": self.task, "baseline": base, "chance": self.chance}
        for i, m in enumerate(self.methods):  # how many can go before accuracy falls below halfway to chance
            ok = (self.accuracy[i] >= self.chance + 0.5 * (base - self.chance)).tolist()
            out[f"{m}_n_at_half"] = next((n - 1 for n, v in enumerate(ok) if not v), len(ok) - 1)
        if self.healed_accuracy is not None:
            out["healed_at_max"] = float(self.healed_accuracy[:, -1].mean())
        return out


@dataclass(frozen=True, repr=False)
class PaintersResult(Result):
    """The Painters experiments (Sun et al. 2024): task accuracy when a middle span of blocks is skipped,
    shuffled, reversed, replaced by repeats of its middle block, or run in parallel, against the span's width.

    Views: ``"accuracy"`` (default), ``"loglik"``.

    Attributes:
        accuracy: ``[variant, width]`` (width 0: the unmodified model); loglik: likewise.
        spans: per width, the ``(start, stop)`` of the span (centred in the model).
        variants: row names; task; chance.

    Example:
        >>> import torch
        >>> PaintersResult(accuracy=torch.ones(2, 2), loglik=torch.zeros(2, 2), variants=("skip", "reverse"),
        ...                spans=((0, 0), (1, 2)), task="t").headline()["skip_at_widest"]
        1.0
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"accuracy": ("variant", "width"), "loglik": ("variant", "width")}
    VIEWS = ("accuracy", "loglik")

    accuracy: torch.Tensor
    loglik: torch.Tensor
    variants: tuple[str, ...] = ()
    spans: tuple[tuple[int, int], ...] = ()
    task: str = ""
    chance: float = 0.0
    model_id: str = ""

    def __post_init__(self) -> None:
        _rows(self.accuracy, self.variants, "accuracy")
        if len(self.spans) != self.accuracy.shape[1]:
            raise BadInputError(f"{len(self.spans)} spans for {self.accuracy.shape[1]} widths")

    def labels(self) -> dict[str, list[Any]]:
        return {"variant": list(self.variants), "width": [b - a for a, b in self.spans]}

    def _curves(self, t: torch.Tensor, y: str) -> Figure:
        widths = [b - a for a, b in self.spans]
        return layer_curves({v: t[i] for i, v in enumerate(self.variants)}, x=widths,
                            x_title="width of the middle span", y_title=y, title=f"Painters experiments on {self.task}")

    def _view_accuracy(self) -> Figure:
        """Accuracy per variant against the width of the edited middle span."""
        return self._curves(self.accuracy, "accuracy")

    def _view_loglik(self) -> Figure:
        """Mean log-likelihood per variant against the span's width."""
        return self._curves(self.loglik, "log-likelihood")

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "baseline": float(self.accuracy[0, 0])}
        for i, v in enumerate(self.variants):
            out[f"{v}_at_widest"] = float(self.accuracy[i, -1])
        return out


@dataclass(frozen=True, repr=False)
class HeadImportanceResult(Result):
    """Head importance (Michel et al. 2019): ``I_h = E_x |dL(x)/dxi_h|``, the expected absolute gradient of each
    sequence's loss with respect to a mask ``xi_h`` scaling head ``h``'s output, from one backward per batch.

    :meth:`compare` sets other per-head scores beside the importance (a per-head patching effect from
    :func:`interp.patching.activation_patching`, induction scores from :func:`interp.induction.induction_scores`,
    any ``[layer, head]`` tensor) and :meth:`spearman` gives the rank correlation with each.

    Views: ``"heatmap"`` (default; layer x head), ``"ranked"`` (sorted importance), ``"compare"`` (each compared
    score's rank against the importance rank, one point per head).

    Attributes:
        importance: ``[layer, head]`` mean over sequences of ``|dL/dxi|``.
        normalized: ``[layer, head]`` importance divided by its layer's L2 norm (as Michel et al. prune by).
        n_sequences: sequences averaged over; n_tokens: tokens in the loss; model_id.
        compared: ``[source, layer, head]`` the compared scores (NaN where a source has no value), or ``None``;
            sources: their names.

    Example:
        >>> import torch
        >>> r = HeadImportanceResult(importance=torch.tensor([[0.1, 0.3], [0.2, 0.0]]))
        >>> r.ranking()[:2]
        ['L0H1', 'L1H0']
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"importance": ("layer", "head"), "normalized": ("layer", "head"),
                                                     "compared": ("source", "layer", "head")}
    VIEWS = ("heatmap", "ranked", "compare")

    importance: torch.Tensor
    normalized: torch.Tensor | None = None
    n_sequences: int = 0
    n_tokens: int = 0
    model_id: str = ""
    compared: torch.Tensor | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.importance.dim() != 2:
            raise BadInputError(f"importance must be [layer, head], got {tuple(self.importance.shape)}")
        if self.normalized is None:
            norm = self.importance.norm(dim=1, keepdim=True).clamp_min(1e-20)
            object.__setattr__(self, "normalized", self.importance / norm)
        if self.compared is not None and tuple(self.compared.shape) != (len(self.sources), *self.importance.shape):
            raise BadInputError(f"compared must be [{len(self.sources)} sources, layer, head], "
                                f"got {tuple(self.compared.shape)}")

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(range(self.importance.shape[0])), "head": list(range(self.importance.shape[1])),
                "source": list(self.sources)}

    def compare(self, **others: Any) -> HeadImportanceResult:
        """This result with other per-head scores beside the importance, by name.

        Each value is a ``[layer, head]`` tensor; a per-head patching result (axes ``("layer", "head")``, e.g.
        ``activation_patching(..., component="z")``), read as the size of each head's effect
        ``|patched - corrupted|`` (cells it did not patch are NaN); or induction scores (their ``induction``
        scores). Scores are compared by rank, so any monotone scale is fine.

        Example:
            >>> import torch
            >>> r = HeadImportanceResult(importance=torch.tensor([[0.1, 0.3], [0.2, 0.0]]))
            >>> round(r.compare(mine=torch.tensor([[1.0, 4.0], [2.0, 3.0]])).spearman()["mine"], 6)
            0.4
        """
        if not others:
            raise BadInputError("compare needs at least one named score, e.g. compare(patching=result)")
        rows = [_head_scores(v, tuple(self.importance.shape), k) for k, v in others.items()]
        return dataclasses.replace(self, compared=torch.stack(rows), sources=tuple(others))

    def spearman(self) -> dict[str, float]:
        """Spearman's rank correlation of the importance with each compared score, over the heads both score
        (ties get their average rank); ``{}`` without :meth:`compare`."""
        if self.compared is None:
            return {}
        return {name: spearman(self.importance, self.compared[i], min_n=3)
                for i, name in enumerate(self.sources)}

    def to_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, importance, normalized, rank (0: most important), and each compared
        score with its rank among the heads it scores."""
        import pandas as pd

        L, H = self.importance.shape
        imp = self.importance.flatten()
        norm = self.normalized.flatten() if self.normalized is not None else imp
        frame = pd.DataFrame({"layer": [i // H for i in range(L * H)], "head": [i % H for i in range(L * H)],
                              "importance": imp.tolist(), "normalized": norm.tolist(),
                              "rank": ranks(-imp.double()).sub(1).tolist()})
        if self.compared is not None:
            for i, name in enumerate(self.sources):
                v = self.compared[i].flatten().double()
                frame[name] = v.tolist()
                r = torch.full_like(v, float("nan"))
                ok = ~v.isnan()
                r[ok] = ranks(-v[ok]) - 1
                frame[f"{name}_rank"] = r.tolist()
        return frame

    def _view_compare(self) -> Figure:
        """Each compared score's rank (0: highest) against the importance rank, one point per head; the legend
        gives Spearman's rho."""
        if self.compared is None:
            return scatter([], [], title="nothing compared (use compare(...))", x_title="importance rank",
                           y_title="rank")
        f = self.to_frame()
        rho = self.spearman()
        xs, ys, colors, labels = [], [], [], []
        for name in self.sources:
            ok = f[f"{name}_rank"].notna()
            xs += f.loc[ok, "rank"].tolist()
            ys += f.loc[ok, f"{name}_rank"].tolist()
            colors += [f"{name} (ρ = {rho[name]:.2f})"] * int(ok.sum())
            labels += [f"L{a}H{b}" for a, b in zip(f.loc[ok, "layer"], f.loc[ok, "head"], strict=True)]
        return scatter(xs, ys, labels=labels, color=colors, title="head importance rank against other head scores",
                       x_title="importance rank (0: most important)", y_title="rank of the compared score")

    def ranking(self, normalized: bool = False) -> list[str]:
        """Heads as ``"L5H1"`` from most to least important."""
        t = self.normalized if normalized and self.normalized is not None else self.importance
        n_heads = t.shape[1]
        return [f"L{int(i) // n_heads}H{int(i) % n_heads}" for i in t.flatten().argsort(descending=True, stable=True)]

    def _view_heatmap(self) -> Figure:
        """Importance per layer and head."""
        t = self.importance
        return heatmap(t, x_labels=[str(h) for h in range(t.shape[1])], y_labels=[str(L) for L in range(t.shape[0])],
                       title="head importance |dL/dξ|", x_title="head", y_title="layer", signed=False, zmin=0.0,
                       rows_top_down=False)

    def _view_ranked(self, top: int = 40) -> Figure:
        """The ``top`` heads by importance."""
        heads = self.ranking()[:top]
        n_heads = self.importance.shape[1]
        vals = [float(self.importance.flatten()[int(h[1:].split("H")[0]) * n_heads + int(h.split("H")[1])]) for h in heads]
        return layer_curves({"importance": torch.tensor(vals)}, x_labels=heads, x_title="head",
                            y_title="|dL/dξ|", title="heads ranked by importance")

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_heads": self.importance.numel(), "top": self.ranking()[0],
                               "n_sequences": self.n_sequences}
        out.update({f"spearman_{k}": v for k, v in self.spearman().items()})
        return out


def _head_scores(x: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A ``[layer, head]`` score from a tensor, a per-head patching result or induction scores."""
    if isinstance(x, torch.Tensor):
        t = x.detach().float()
    elif hasattr(x, "axes") and hasattr(x, "values") and hasattr(x, "coords"):
        if tuple(x.axes) != ("layer", "head"):
            raise BadInputError(f"{name}: a patching result must have axes (layer, head) (component='z' without "
                                f"per_position), got {tuple(x.axes)}")
        t = torch.full(shape, float("nan"))
        base = float(getattr(x, "corrupted_value", float("nan")))
        vals = x.values.detach().double()
        eff = (vals - base).abs() if base == base else vals.abs()
        for i, layer in enumerate(x.coords["layer"]):
            for j, head in enumerate(x.coords["head"]):
                t[layer, head] = float(eff[i, j])
    elif isinstance(getattr(x, "induction", None), torch.Tensor):
        t = x.induction.detach().float()
    else:
        raise BadInputError(f"{name}: compare takes [layer, head] tensors, per-head patching results or induction "
                            f"scores, not {type(x).__name__}")
    if tuple(t.shape) != shape:
        raise BadInputError(f"{name}: scores of shape {tuple(t.shape)}, the importance is {list(shape)}")
    return t


@dataclass(frozen=True, repr=False)
class PruningResult(Result):
    """Task accuracy as heads are pruned (masked to zero), per order of pruning: by importance (least important
    first; ``iterative``: importance recomputed after each step), at random (seeded), by attention entropy
    (most diffuse first).

    Views: ``"accuracy"`` (default), ``"loglik"``.

    Attributes:
        accuracy: ``[method, step]``; loglik: likewise; shares: the share of heads pruned at each step.
        pruned: per method, per step, the heads pruned so far (``"L5H1"``); methods; task; chance.

    Example:
        >>> import torch
        >>> PruningResult(accuracy=torch.ones(1, 2), loglik=torch.zeros(1, 2), methods=("random",),
        ...               shares=(0.0, 0.5)).headline()["random_at_max"]
        1.0
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"accuracy": ("method", "step"), "loglik": ("method", "step")}
    VIEWS = ("accuracy", "loglik")

    accuracy: torch.Tensor
    loglik: torch.Tensor
    methods: tuple[str, ...] = ()
    shares: tuple[float, ...] = ()
    pruned: tuple[tuple[tuple[str, ...], ...], ...] = ()
    task: str = ""
    chance: float = 0.0
    model_id: str = ""

    def __post_init__(self) -> None:
        _rows(self.accuracy, self.methods, "accuracy")
        if len(self.shares) != self.accuracy.shape[1]:
            raise BadInputError(f"{len(self.shares)} shares for {self.accuracy.shape[1]} steps")

    def labels(self) -> dict[str, list[Any]]:
        return {"method": list(self.methods), "step": list(self.shares)}

    def _curves(self, t: torch.Tensor, y: str) -> Figure:
        return layer_curves({m: t[i] for i, m in enumerate(self.methods)}, x=list(self.shares),
                            x_title="share of heads pruned", y_title=y, title=f"head pruning on {self.task}")

    def _view_accuracy(self) -> Figure:
        """Accuracy per pruning order against the share of heads pruned."""
        return self._curves(self.accuracy, "accuracy")

    def _view_loglik(self) -> Figure:
        """Mean log-likelihood per pruning order against the share pruned."""
        return self._curves(self.loglik, "log-likelihood")

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "baseline": float(self.accuracy[0, 0])}
        for i, m in enumerate(self.methods):
            out[f"{m}_at_max"] = float(self.accuracy[i, -1])
        return out
