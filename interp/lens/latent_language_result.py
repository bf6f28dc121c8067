"""The result of :func:`interp.lens.latent_language`: lens probability mass per language, per layer, per prompt."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError, bad_value, unknown_name
from interp.plot import heatmap, layer_curves
from interp.trace.results import Result

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

ROLES = ("target", "english", "source")
ENGLISH = "en"


@dataclass(frozen=True, repr=False)
class LatentLanguageResult(Result):
    """Which language each layer's lens reading speaks: probability mass on each language's tokens.

    Views: ``"roles"`` (Wendler et al.'s plot: mean mass on the target language, English and the source language
    per layer, with 95% intervals), ``"languages"`` (mean mass per language per layer), ``"heatmap"``
    (language x layer), ``"accuracy"`` (source x target: how often the last layer's top token starts the
    answer in the target language: which languages the model handles).

    Attributes:
        mass: ``[lens, layer, item, language]`` probability mass the lens reading at each prompt's last token puts
            on the language's token set (the sets of one item are disjoint, so a row sums to at most 1).
        n_tokens: ``[item, language]`` size of each token set (0: the word's tokens were all shared with another
            language, so that language's mass is 0 by construction).
        top_ids: ``[lens, layer, item]`` the reading's top token (``id_to_str`` spells them).
        target_hit: ``[lens, layer, item]`` the top token is in the target language's set.
        languages: language codes (``"en"``, ``"fr"``, ...), the last axis of ``mass``.
        lenses: the lenses read (``"logit"``, ``"tuned"``).
        layer_labels: one per layer (the ``resid_post`` of each block).
        tasks / sources / targets / concepts: per item, its task (``translation``, ``repetition``, ``cloze``),
            the language of the prompt's word, the language the answer is expected in, the concept (English word).
        prompts: the prompts.
        id_to_str: the top tokens' strings.
        mode: ``"word"`` (each item's token sets are its answer word's first tokens in each language, as Wendler
            et al.) or ``"vocab"`` (one set per language for every item).
        model_id: the model that made it.
    """

    AXES = {"mass": ("lens", "layer", "item", "language"), "n_tokens": ("item", "language"),
            "top_ids": ("lens", "layer", "item"), "target_hit": ("lens", "layer", "item")}
    VIEWS = ("roles", "languages", "heatmap", "accuracy")
    JSON_SKIP = ("top_ids", "target_hit")

    mass: torch.Tensor
    n_tokens: torch.Tensor
    top_ids: torch.Tensor
    target_hit: torch.Tensor
    languages: tuple[str, ...]
    lenses: tuple[str, ...]
    layer_labels: tuple[str, ...]
    tasks: tuple[str, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    concepts: tuple[str, ...]
    prompts: tuple[str, ...]
    id_to_str: dict[int, str]
    mode: str = "word"
    model_id: str = ""

    def __post_init__(self) -> None:
        n_lens, n_layer, n_item, n_lang = self.mass.shape
        if (len(self.lenses), len(self.layer_labels), len(self.languages)) != (n_lens, n_layer, n_lang):
            raise BadInputError(f"mass {tuple(self.mass.shape)} does not match {len(self.lenses)} lenses, "
                                f"{len(self.layer_labels)} layers and {len(self.languages)} languages")
        for name in ("tasks", "sources", "targets", "concepts", "prompts"):
            if len(getattr(self, name)) != n_item:
                raise BadInputError(f"{len(getattr(self, name))} {name} for {n_item} items")

    # -- reading -----------------------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        return {"lens": list(self.lenses), "layer": list(self.layer_labels), "language": list(self.languages),
                "item": [f"{i}: {t} {s}->{g} {c}" for i, (t, s, g, c) in
                         enumerate(zip(self.tasks, self.sources, self.targets, self.concepts, strict=True))]}

    def _lens_index(self, lens: str | None) -> int:
        if lens is None:
            return 0
        if lens not in self.lenses:
            raise unknown_name("lens", lens, self.lenses, hint="(lenses of this result)")
        return self.lenses.index(lens)

    def select(self, *, task: str | None = None, source: str | None = None, target: str | None = None) -> torch.Tensor:
        """``[item]`` bool: the items of a task / source language / target language (``None``: any)."""
        keep = torch.ones(len(self.tasks), dtype=torch.bool)
        for name, want, have in (("task", task, self.tasks), ("source", source, self.sources),
                                 ("target", target, self.targets)):
            if want is not None:
                if want not in have:
                    raise unknown_name(name, want, sorted(set(have)), hint="(in this result)")
                keep &= torch.tensor([h == want for h in have])
        return keep

    def role_mass(self, role: str, lens: str | None = None) -> torch.Tensor:
        """``[layer, item]`` the mass on each item's ``role`` language: ``"target"``, ``"english"``, ``"source"``.

        ``NaN`` where the role is undefined or coincides with another (``english`` for items whose target is
        English; ``source`` for items whose source is the target or English; any language not in the result).
        """
        if role not in ROLES:
            raise unknown_name("role", role, ROLES)
        m = self.mass[self._lens_index(lens)]  # [layer, item, language]
        out = torch.full(m.shape[:2], math.nan)
        for i, (src, tgt) in enumerate(zip(self.sources, self.targets, strict=True)):
            lang = {"target": tgt, "english": ENGLISH if tgt != ENGLISH else None,
                    "source": src if src not in (tgt, ENGLISH) else None}[role]
            if lang in self.languages:
                out[:, i] = m[:, i, self.languages.index(lang)]
        return out

    def curves(self, by: str = "role", *, lens: str | None = None, task: str | None = None,
               source: str | None = None, target: str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (mean [layer], half-width of the 95% interval [layer])}`` over the selected items, by role
        (target / English / source) or by language."""
        keep = self.select(task=task, source=source, target=target)
        if by == "role":
            series = {r: self.role_mass(r, lens)[:, keep] for r in ROLES}
        elif by == "language":
            m = self.mass[self._lens_index(lens)][:, keep]
            series = {lang: m[:, :, k] for k, lang in enumerate(self.languages)}
        else:
            raise bad_value("by", by, "'role' or 'language'")
        out = {}
        for name, v in series.items():  # v: [layer, item] with NaN for undefined
            ok = ~v.isnan()
            n = ok.sum(1)
            if int(n.min()) == 0:
                continue
            mean = v.nan_to_num().sum(1) / n
            var = ((v - mean[:, None]).nan_to_num() ** 2).sum(1) / (n - 1).clamp(min=1)
            out[name] = (mean, 1.96 * (var / n).sqrt())
        return out

    def accuracy(self, lens: str | None = None) -> pd.DataFrame:
        """Per task, source and target: items, how often the last layer's top token starts the answer in the target
        language (``top1``) and the mean target mass there (``p_target``): which languages the model handles."""
        import pandas as pd

        li = self._lens_index(lens)
        hit = self.target_hit[li, -1].float()
        tgt = self.role_mass("target", lens)[-1]
        df = pd.DataFrame({"task": self.tasks, "source": self.sources, "target": self.targets,
                           "top1": hit.tolist(), "p_target": tgt.tolist()})
        return df.groupby(["task", "source", "target"], as_index=False).agg(
            items=("top1", "size"), top1=("top1", "mean"), p_target=("p_target", "mean"))

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"items": len(self.tasks), "lenses": ",".join(self.lenses)}
        curves = self.curves("role")
        if "english" in curves:
            en = curves["english"][0]
            out["english_peak"] = float(en.max())
            out["english_peak_layer"] = self.layer_labels[int(en.argmax())]
        if "target" in curves:
            out["target_last"] = float(curves["target"][0][-1])
        out["top1_last"] = float(self.target_hit[0, -1].float().mean())
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per (lens, layer, item, language) with the item's task, source, target and concept."""
        df = super().to_frame()
        idx = df["item"].str.split(":").str[0].astype(int)
        for col, vals in (("task", self.tasks), ("source", self.sources), ("target", self.targets),
                          ("concept", self.concepts)):
            df[col] = [vals[i] for i in idx]
        return df

    # -- views ---------------------------------------------------------------------------------------
    def _curve_fig(self, by: str, lens: str | None, task: str | None, source: str | None, target: str | None,
                   title: str) -> Figure:
        c = self.curves(by, lens=lens, task=task, source=source, target=target)
        if not c:
            raise BadInputError("no items with those roles / filters in this result")
        names = {"target": "target language", "english": "English", "source": "source language"}
        series = {names.get(k, k): v[0] for k, v in c.items()}
        lower = {names.get(k, k): (v[0] - v[1]).clamp(min=0) for k, v in c.items()}
        upper = {names.get(k, k): (v[0] + v[1]).clamp(max=1) for k, v in c.items()}
        what = ", ".join(f"{k}={v}" for k, v in (("task", task), ("source", source), ("target", target)) if v)
        lens_name = self.lenses[self._lens_index(lens)]
        return layer_curves(series, lower=lower, upper=upper, x_labels=list(self.layer_labels),
                            y_title="probability mass",
                            title=f"{title} ({lens_name} lens{', ' + what if what else ''}; mean, 95% interval)")

    def _view_roles(self, lens: str | None = None, task: str | None = None, source: str | None = None,
                    target: str | None = None) -> Figure:
        return self._curve_fig("role", lens, task, source, target, "mass on the target language, English, the source")

    def _view_languages(self, lens: str | None = None, task: str | None = None, source: str | None = None,
                        target: str | None = None) -> Figure:
        return self._curve_fig("language", lens, task, source, target, "mass per language")

    def _view_heatmap(self, lens: str | None = None, task: str | None = None, target: str | None = None) -> Figure:
        keep = self.select(task=task, target=target)
        m = self.mass[self._lens_index(lens)][:, keep].mean(1).T  # [language, layer]
        return heatmap(m, x_labels=list(self.layer_labels), y_labels=list(self.languages), x_title="layer",
                       y_title="language", colorbar_title="mass", title="mean mass per language and layer")

    def _view_accuracy(self, lens: str | None = None, task: str = "translation") -> Figure:
        df = self.accuracy(lens)
        df = df[df["task"] == task]
        srcs = [lang for lang in self.languages if lang in set(df["source"])]
        tgts = [lang for lang in self.languages if lang in set(df["target"])]
        grid = torch.full((len(srcs), len(tgts)), math.nan)
        for row in df.itertuples():
            grid[srcs.index(str(row.source)), tgts.index(str(row.target))] = float(row.top1)  # type: ignore[arg-type]
        return heatmap(grid, x_labels=tgts, y_labels=srcs, x_title="target language", y_title="source language",
                       colorbar_title="top-1", title=f"{task}: last layer's top token starts the answer")


__all__ = ["LatentLanguageResult"]
