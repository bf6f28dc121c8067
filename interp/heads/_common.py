"""What the heads modules share: the model's head grid, heads in the one spelling, figures that fit a column."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from interp.errors import BadInputError, bad_value
from interp.models import Model
from interp.models.adapters import WeightViews
from interp.models.circuits import KINDS, Kind
from interp.sites import HeadRef, HeadSpec, parse_heads

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

MAX_WIDTH = 1000  # px: wider figures are scaled down to fit a report column or a notebook cell


def weights_of(model: Model | WeightViews) -> WeightViews:
    """The weight views of a model (or the views themselves)."""
    return model if isinstance(model, WeightViews) else model.weights


def grid(weights: WeightViews) -> tuple[int, int]:
    """``(n_layers, n_heads)`` (query heads; grouped-query K/V heads are expanded)."""
    return int(weights.W_Q.shape[0]), int(weights.W_Q.shape[1])


def one_head(x: HeadSpec, weights: WeightViews, what: str = "head") -> HeadRef:
    """One head in any spelling, checked against the model's size (a :class:`BadInputError` names it)."""
    n_layers, n_heads = grid(weights)
    try:
        return HeadRef.parse(x).check(n_layers, n_heads)
    except BadInputError as e:
        raise BadInputError(f"{what}={x!r}: {e}") from None


def heads_of(heads: HeadSpec | Iterable[HeadSpec] | None, weights: WeightViews) -> list[HeadRef]:
    """Heads in any spelling (``None``: every head, in layer order), checked, without repeats."""
    n_layers, n_heads = grid(weights)
    if heads is None:
        return [HeadRef(la, h) for la in range(n_layers) for h in range(n_heads)]
    out = parse_heads(heads, n_layers=n_layers, n_heads=n_heads)
    return list(dict.fromkeys(out))


def check_kind(kind: object) -> Kind:
    """A composition kind ``"q"``, ``"k"`` or ``"v"`` (which input of the receiving head reads the sender)."""
    if kind not in KINDS:
        raise bad_value("composition kind", kind, "'q' (the receiver's queries), 'k' (keys) or 'v' (values)")
    return kind  # type: ignore[return-value]


def fit_width(fig: Figure, max_width: int = MAX_WIDTH) -> Figure:
    """Scale a figure that is wider than ``max_width`` down to it (height in proportion, so cells stay square)."""
    width = fig.layout.width
    if width is not None and width > max_width:
        height = fig.layout.height
        fig.update_layout(width=max_width, height=None if height is None else max(300, int(height * max_width / width)))
    return fig


__all__ = ["MAX_WIDTH", "check_kind", "fit_width", "grid", "heads_of", "one_head", "weights_of"]
