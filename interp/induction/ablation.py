"""Ablate candidate induction heads and measure what breaks: the repeat loss and the in-context-learning score.

Zero ablation sets the heads' outputs (``attn.hook_z``) to zero; mean ablation replaces them with their
mean over the batch at each position (so positional information survives). A control ablates as many
random heads outside the candidate set, to show the effect is specific to the candidates.

Example:
    >>> import interp
    >>> from interp.induction.ablation import ablate_heads
    >>> m = interp.load_model("toy-induction")  # doctest: +SKIP
    >>> r = ablate_heads(m, [(1, 0), (1, 1), (1, 2), (1, 3)], half=20)  # doctest: +SKIP
    >>> r.repeat_loss_ablated > r.repeat_loss_clean + 1  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.errors import BadInputError
from interp.hooks import Ablate, run_with_hooks
from interp.induction.data import bos_id_of, repeated_tokens
from interp.induction.scores import per_token_loss, repeat_offset
from interp.plot import layer_curves
from interp.trace.results import labelled_frame, read_result, write_result


def _window(loss: torch.Tensor, start: int, stop: int) -> float:
    return float(loss[start:stop].mean())


@dataclass(frozen=True)
class AblationResult:
    """Per-position loss with and without the ablated heads (and a random-head control).

    Attributes:
        heads: the ablated ``(layer, head)`` pairs; control_heads: the control's heads (may be empty).
        method: ``"zero"`` or ``"mean"``.
        loss_clean, loss_ablated, loss_control: ``[pos]`` mean cross-entropy (NaN at 0; the control is
            ``None`` without one).
        half, offset: the repeated-token layout (BOS? + half + half).

    Example:
        >>> nan = float("nan")
        >>> r = AblationResult(heads=((1, 0),), control_heads=(), method="zero",
        ...                    loss_clean=torch.tensor([nan, 4.0, 4.0, 4.0, 1.0, 1.0]),
        ...                    loss_ablated=torch.tensor([nan, 4.0, 4.0, 4.0, 3.0, 3.0]), half=3, offset=0)
        >>> r.repeat_loss_clean, r.repeat_loss_ablated, r.icl_score_ablated
        (1.0, 3.0, -1.0)
    """

    heads: tuple[tuple[int, int], ...]
    control_heads: tuple[tuple[int, int], ...]
    method: str
    loss_clean: torch.Tensor
    loss_ablated: torch.Tensor
    half: int
    offset: int
    loss_control: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.loss_clean.shape[0]
        for name in ("loss_ablated", "loss_control"):
            t = getattr(self, name)
            if t is not None and t.shape != (n,):
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected ({n},)")
        if self.offset + 2 * self.half > n:
            raise BadInputError(f"half={self.half}, offset={self.offset} do not fit {n} positions")

    def _first(self, loss: torch.Tensor) -> float:
        return _window(loss, self.offset + 1, self.offset + self.half)

    def _second(self, loss: torch.Tensor) -> float:
        return _window(loss, self.offset + self.half + 1, self.offset + 2 * self.half)

    @property
    def repeat_loss_clean(self) -> float:
        return self._second(self.loss_clean)

    @property
    def repeat_loss_ablated(self) -> float:
        return self._second(self.loss_ablated)

    @property
    def repeat_loss_control(self) -> float | None:
        return None if self.loss_control is None else self._second(self.loss_control)

    @property
    def icl_score_clean(self) -> float:
        """Loss on late tokens (second repeat) minus early tokens (first repeat); negative = learns in context."""
        return self._second(self.loss_clean) - self._first(self.loss_clean)

    @property
    def icl_score_ablated(self) -> float:
        return self._second(self.loss_ablated) - self._first(self.loss_ablated)

    @property
    def icl_score_control(self) -> float | None:
        lc = self.loss_control
        return None if lc is None else self._second(lc) - self._first(lc)

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [list(h) for h in self.heads], "control_heads": [list(h) for h in self.control_heads],
                "method": self.method, "repeat_loss_clean": self.repeat_loss_clean,
                "repeat_loss_ablated": self.repeat_loss_ablated, "repeat_loss_control": self.repeat_loss_control,
                "icl_score_clean": self.icl_score_clean, "icl_score_ablated": self.icl_score_ablated,
                "icl_score_control": self.icl_score_control}

    def to_frame(self) -> Any:
        """Long-form ``DataFrame``: columns ``run, pos, value`` (loss)."""
        runs = {"clean": self.loss_clean, "ablated": self.loss_ablated}
        if self.loss_control is not None:
            runs["control"] = self.loss_control
        return labelled_frame(torch.stack(list(runs.values())), ["run", "pos"], {"run": list(runs)})

    def plot(self) -> Any:
        """Loss per position for the clean, ablated and control runs."""
        series = {"clean": self.loss_clean, f"{self.method}-ablated {len(self.heads)} heads": self.loss_ablated}
        if self.loss_control is not None:
            series["control (random heads)"] = self.loss_control
        fig = layer_curves(series, x_title="position", y_title="loss (nats)",
                           title="ablating candidate induction heads: loss per position")
        fig.add_vline(x=self.offset + self.half - 0.5, line_dash="dash")
        return fig

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_result(path, "AblationResult", {"loss_clean": self.loss_clean, "loss_ablated": self.loss_ablated,
                                                     "loss_control": self.loss_control},
                            {"heads": [list(h) for h in self.heads], "control_heads": [list(h) for h in self.control_heads],
                             "method": self.method, "half": self.half, "offset": self.offset})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AblationResult:
        t, m = read_result(path, "AblationResult")
        return cls(heads=tuple(tuple(h) for h in m["heads"]), control_heads=tuple(tuple(h) for h in m["control_heads"]),  # type: ignore[misc]
                   method=m["method"], loss_clean=t["loss_clean"], loss_ablated=t["loss_ablated"],
                   loss_control=t.get("loss_control"), half=m["half"], offset=m["offset"])


def _interventions(heads: Sequence[tuple[int, int]], method: str) -> list[Ablate]:
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return [Ablate(f"blocks.{layer}.attn.hook_z", heads=hs, method=method) for layer, hs in sorted(by_layer.items())]  # type: ignore[arg-type]


def _loss(model: Any, tokens: torch.Tensor, ivs: list[Ablate]) -> torch.Tensor:
    ids = tokens.to(model.device)
    with torch.no_grad():
        out = run_with_hooks(model, ids, torch.ones_like(ids), interventions=ivs)
    assert out.logits is not None
    return per_token_loss(out.logits, ids).nanmean(0)


def ablate_heads(
    model: Any,
    heads: Sequence[tuple[int, int]],
    tokens: torch.Tensor | None = None,
    *,
    method: Literal["zero", "mean"] = "zero",
    control: bool = True,
    control_pool: Sequence[tuple[int, int]] | None = None,
    n_seq: int = 16,
    half: int = 64,
    seed: int = 0,
) -> AblationResult:
    """Ablate ``heads`` on repeated random tokens and compare the loss with the clean run.

    Args:
        model: a loaded model.
        heads: ``(layer, head)`` pairs to ablate together.
        tokens: ``[batch, pos]`` repeated random tokens (default :func:`repeated_tokens`).
        method: ``"zero"`` or ``"mean"`` (per-position mean over the batch).
        control: also ablate as many random other heads (seeded), for comparison.
        control_pool: heads the control may draw from (default: every head not in ``heads``); pass the
            heads below an induction threshold for a control free of other induction heads.

    Raises:
        ValueError: on an empty head list, a head outside the model, or an unknown method.
    """
    L, H = model.dims.n_layers, model.dims.n_heads
    heads = [tuple(int(x) for x in h) for h in heads]  # type: ignore[misc]
    if not heads:
        raise BadInputError("heads is empty; give (layer, head) pairs to ablate")
    for lh in heads:
        if len(lh) != 2 or not (0 <= lh[0] < L and 0 <= lh[1] < H):
            raise BadInputError(f"head {lh!r} is not a (layer, head) pair inside {L} layers x {H} heads")
    if method not in ("zero", "mean"):
        raise BadInputError(f"unknown ablation method {method!r}; use 'zero' or 'mean'")
    if tokens is None:
        tokens = repeated_tokens(model, n_seq=n_seq, half=half, seed=seed)
    offset = repeat_offset(tokens, bos_id_of(model))
    rep_half = (tokens.shape[1] - offset) // 2
    clean = _loss(model, tokens, [])
    ablated = _loss(model, tokens, _interventions(heads, method))
    ctrl_heads: tuple[tuple[int, int], ...] = ()
    ctrl = None
    pool = [(la, h) for la in range(L) for h in range(H)] if control_pool is None else [tuple(h) for h in control_pool]
    others = [lh for lh in pool if lh not in set(heads)]
    if control and len(others) >= len(heads):
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(others), generator=g)[:len(heads)].tolist()
        ctrl_heads = tuple(sorted(others[i] for i in pick))
        ctrl = _loss(model, tokens, _interventions(ctrl_heads, method))
    return AblationResult(heads=tuple(heads), control_heads=ctrl_heads, method=method, loss_clean=clean,  # type: ignore[arg-type]
                          loss_ablated=ablated, loss_control=ctrl, half=rep_half, offset=offset)
