"""Ablate candidate induction heads and measure what breaks: the repeat loss and the in-context-learning score.

Zero ablation sets the heads' outputs (``attn.hook_z``) to zero; mean ablation replaces them with their
mean over the clean run's real tokens at each position (so positional information survives). A control
ablates as many random heads outside the candidate set, to show the effect is specific to the candidates.
The edits are :class:`interp.hooks.Ablate` interventions on ``z``, so ``positions=`` restricts them to
some tokens of each sequence (``-1``: each sequence's last real token).

Example:
    >>> import interp
    >>> from interp.induction import ablate_heads
    >>> toy = interp.load_model("toy-induction")
    >>> r = ablate_heads(toy, heads="L1H0,L1H1,L1H2,L1H3", n_seq=4, half=20)
    >>> r.repeat_loss_ablated > r.repeat_loss_clean + 1
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interp.errors import BadInputError
from interp.hooks import Ablate, run_with_hooks
from interp.induction.data import bos_id_of
from interp.induction.scores import per_token_loss, repeat_offset, scoring_tokens
from interp.models import Inputs, Model
from interp.plot import layer_curves
from interp.sites import HeadRef, HeadSpec, Positions, normalize_positions, parse_heads
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


def _window(loss: torch.Tensor, start: int, stop: int) -> float:
    part = loss[start:stop]
    return float(part.nanmean()) if part.numel() else float("nan")


def spell_positions(positions: Positions) -> str | None:
    """A position selection written as the CLI's ``--positions`` takes it (``None`` stays ``None``).

    Example:
        >>> spell_positions(-1), spell_positions([0, 3, -1]), spell_positions(slice(2, None))
        ('-1', '0,3,-1', '2:')
    """
    sel = normalize_positions(positions)
    if sel is None:
        return None
    if isinstance(sel, slice):
        parts = ["" if v is None else str(v) for v in (sel.start, sel.stop)]
        return ":".join(parts + ([str(sel.step)] if sel.step is not None else []))
    if isinstance(sel, int):
        return str(sel)
    return ",".join(str(i) for i in sel)


@dataclass(frozen=True, repr=False)
class AblationResult(Result):
    """Loss per position with and without the ablated heads (and a random-head control).

    Attributes:
        heads: the ablated heads; control_heads: the control's heads (may be empty).
        method: ``"zero"`` or ``"mean"``.
        loss_clean, loss_ablated, loss_control: ``[pos]`` mean cross-entropy (NaN at 0 and where every
            sequence is padding; ``loss_control`` is ``None`` without a control).
        half, offset: the repeated-token layout (BOS? + half + half).
        positions: the ablated positions as ``--positions`` writes them (``None``: every position).

    Views: ``"loss"`` (loss per position of each run).

    Example:
        >>> nan = float("nan")
        >>> r = AblationResult(heads=("L1H0",), control_heads=(), method="zero",
        ...                    loss_clean=torch.tensor([nan, 4.0, 4.0, 4.0, 1.0, 1.0]),
        ...                    loss_ablated=torch.tensor([nan, 4.0, 4.0, 4.0, 3.0, 3.0]), half=3, offset=0)
        >>> r.heads, r.repeat_loss_clean, r.repeat_loss_ablated, r.icl_score_ablated
        ((HeadRef(1, 0),), 1.0, 3.0, -1.0)
        >>> r
        AblationResult(loss_clean[pos=6], loss_ablated[pos=6], heads='L1H0', repeat_loss_clean=1, repeat_loss_ablated=3, repeat_loss_control=None)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"loss_clean": ("pos",), "loss_ablated": ("pos",),
                                                  "loss_control": ("pos",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("loss",)

    heads: tuple[HeadRef, ...]
    control_heads: tuple[HeadRef, ...]
    method: str
    loss_clean: torch.Tensor
    loss_ablated: torch.Tensor
    half: int
    offset: int
    loss_control: torch.Tensor | None = None
    positions: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(HeadRef.parse(h) for h in self.heads))
        object.__setattr__(self, "control_heads", tuple(HeadRef.parse(h) for h in self.control_heads))
        n = self.loss_clean.shape[0]
        for name in ("loss_ablated", "loss_control"):
            t = getattr(self, name)
            if t is not None and t.shape != (n,):
                raise BadInputError(f"bad {name} of shape {tuple(t.shape)}; valid: ({n},)")
        if self.offset + 2 * self.half > n:
            raise BadInputError(f"bad half={self.half}, offset={self.offset}: they do not fit {n} positions")

    def _first(self, loss: torch.Tensor) -> float:
        return _window(loss, self.offset + 1, self.offset + self.half)

    def _second(self, loss: torch.Tensor) -> float:
        return _window(loss, self.offset + self.half + 1, self.offset + 2 * self.half)

    @property
    def repeat_loss_clean(self) -> float:
        """Mean loss on the second repeat, clean run."""
        return self._second(self.loss_clean)

    @property
    def repeat_loss_ablated(self) -> float:
        """Mean loss on the second repeat with the heads ablated."""
        return self._second(self.loss_ablated)

    @property
    def repeat_loss_control(self) -> float | None:
        """Mean loss on the second repeat with the control heads ablated (``None`` without a control)."""
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

    # -- the result surface --------------------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        ctrl = self.repeat_loss_control
        return {"heads": ",".join(str(h) for h in self.heads), "repeat_loss_clean": round(self.repeat_loss_clean, 4),
                "repeat_loss_ablated": round(self.repeat_loss_ablated, 4),
                "repeat_loss_control": None if ctrl is None else round(ctrl, 4)}

    def to_frame(self) -> pd.DataFrame:
        """Long-form table: columns ``run, pos, value`` (loss)."""
        runs = {"clean": self.loss_clean, "ablated": self.loss_ablated}
        if self.loss_control is not None:
            runs["control"] = self.loss_control
        return labelled_frame(torch.stack(list(runs.values())), ["run", "pos"], {"run": list(runs)})

    def to_dict(self) -> dict[str, Any]:
        """The labelled arrays, plus the repeat losses and ICL scores of each run."""
        out = super().to_dict()
        out["attributes"].update(
            repeat_loss_clean=self.repeat_loss_clean, repeat_loss_ablated=self.repeat_loss_ablated,
            repeat_loss_control=self.repeat_loss_control, icl_score_clean=self.icl_score_clean,
            icl_score_ablated=self.icl_score_ablated, icl_score_control=self.icl_score_control)
        return out

    def _view_loss(self) -> Figure:
        series = {"clean": self.loss_clean, f"{self.method}-ablated {len(self.heads)} heads": self.loss_ablated}
        if self.loss_control is not None:
            series["control (random heads)"] = self.loss_control
        fig = layer_curves(series, x_title="position", y_title="loss (nats)",
                           title="ablating candidate induction heads: loss per position")
        fig.add_vline(x=self.offset + self.half - 0.5, line_dash="dash")
        return fig


def _mean_reference(clean: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position mean of each captured ``z`` over the sequences that are real there: ``[1, pos, head, d_head]``."""
    w = mask.to(torch.float32)[:, :, None, None]
    return {name: ((z.float() * w.to(z.device)).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp_min(1).to(z.device))
            .to(z.dtype) for name, z in clean.items()}


def ablate_heads(
    model: Model,
    inputs: Inputs | None = None,
    *,
    heads: HeadSpec | Sequence[HeadSpec],
    method: Literal["zero", "mean"] = "zero",
    positions: Positions = None,
    control: bool = True,
    control_pool: Sequence[HeadSpec] | None = None,
    n_seq: int | None = None,
    half: int | None = None,
    seed: int = 0,
) -> AblationResult:
    """Ablate ``heads`` together and compare the loss per position with the clean run (and a random control).

    Args:
        model: the model.
        inputs: what to run on. ``None`` (the default): repeated random tokens (``n_seq`` sequences of BOS? +
            ``half`` + the same ``half``, see :func:`~interp.induction.repeated_tokens`); otherwise any inputs
            (texts, ids ``[batch, pos]``, ``(ids, mask)``, a Trace or TraceStore; padding is left out of the loss).
        heads: the heads: ``"L1H0,L1H3"``, ``[(1, 0), "L1H3"]`` or one head.
        method: ``"zero"`` or ``"mean"`` (per position, over the clean run's real tokens).
        positions: ablate only at these positions of each sequence (ints, lists, slices; ``-1`` is each
            sequence's last real token; default every position).
        control: also ablate as many random other heads (drawn with ``seed``), for comparison.
        control_pool: heads the control may draw from (default: every head not in ``heads``); pass the
            heads below an induction threshold for a control free of other induction heads.
        n_seq, half: the repeated random tokens (defaults 16 and 64), only without ``inputs``.
        seed: seeds the random tokens and the control's draw.

    Returns:
        An :class:`AblationResult`.

    Raises:
        BadInputError: no heads, a malformed or out-of-range head, an unknown method, a bad position.

    Example:
        >>> import interp, torch
        >>> toy = interp.load_model("toy-induction")
        >>> r = ablate_heads(toy, heads=[(1, 2), "L1H3"], n_seq=4, half=20, method="mean")
        >>> r.heads, len(r.control_heads), r.repeat_loss_ablated > r.repeat_loss_clean
        ((HeadRef(1, 2), HeadRef(1, 3)), 2, True)
        >>> ids = torch.tensor([[0, 5, 9, 7, 5, 9, 7], [0, 3, 8, 3, 8, 0, 0]])
        >>> mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
        >>> r = ablate_heads(toy, (ids, mask), heads="L1H0,L1H1,L1H2,L1H3", positions=-2, control=False)
        >>> changed = (r.loss_ablated - r.loss_clean).abs() > 1e-6  # each sequence's last token only
        >>> changed.nonzero().flatten().tolist()
        [4, 6]
    """
    L, H = model.dims.n_layers, model.dims.n_heads
    chosen = list(dict.fromkeys(parse_heads(heads, n_layers=L, n_heads=H)))
    if method not in ("zero", "mean"):
        raise BadInputError(f"bad ablation method {method!r}; valid: 'zero', 'mean'")
    if control_pool is None:
        pool = [HeadRef(la, h) for la in range(L) for h in range(H)]
    else:
        pool = [] if isinstance(control_pool, Sequence) and not isinstance(control_pool, str) and not control_pool \
            else parse_heads(control_pool, n_layers=L, n_heads=H)  # type: ignore[arg-type]
    spelled = spell_positions(positions)
    ids, mask = scoring_tokens(model, inputs, n_seq=n_seq, half=half, bos=None, seed=seed)
    offset = repeat_offset(ids, bos_id_of(model))
    rep_half = (ids.shape[1] - offset) // 2
    if rep_half < 1:
        raise BadInputError(f"bad inputs of {ids.shape[1]} tokens; valid: at least 2 tokens"
                            f"{' after BOS' if offset else ''}")
    ctrl_heads: list[HeadRef] = []
    others = [h for h in dict.fromkeys(pool) if h not in set(chosen)]
    if control and len(others) >= len(chosen):
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(others), generator=g)[:len(chosen)].tolist()
        ctrl_heads = sorted(others[i] for i in pick)
    ids, mask = ids.to(model.device), mask.to(model.device)
    z_sites = sorted({f"blocks.{h.layer}.attn.hook_z" for h in (*chosen, *ctrl_heads)})
    with torch.no_grad():
        clean_out = run_with_hooks(model, ids, mask, capture=z_sites if method == "mean" else [])
    assert clean_out.logits is not None
    reference = _mean_reference(clean_out.activations, mask) if method == "mean" else None

    def loss_with(hs: Sequence[HeadRef]) -> torch.Tensor:
        edit = Ablate("z", heads=tuple(hs), method=method, positions=positions, reference=reference)
        with torch.no_grad():
            out = run_with_hooks(model, ids, mask, interventions=[edit])
        assert out.logits is not None
        return per_token_loss(out.logits, ids, mask).nanmean(0)

    clean = per_token_loss(clean_out.logits, ids, mask).nanmean(0)
    ablated = loss_with(chosen)
    ctrl = loss_with(ctrl_heads) if ctrl_heads else None
    return AblationResult(heads=tuple(chosen), control_heads=tuple(ctrl_heads), method=method, loss_clean=clean,
                          loss_ablated=ablated, loss_control=ctrl, half=rep_half, offset=offset, positions=spelled)


__all__ = ["AblationResult", "ablate_heads", "spell_positions"]
