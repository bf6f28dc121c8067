"""Token-labelled heatmaps: layer x position, head x layer, query x key attention patterns.

Both axes are numeric (cell ``i`` sits at ``i``) with the labels as tick text, so two equal
tokens in a prompt stay two columns, and every label, hover line and cell text is escaped
(see :mod:`interp.plot.labels`). The figure sizes itself from the number of cells: at
30 layers x 200 tokens every token is still labelled (vertical, small font) and cell text is
dropped (it stays in the hover); with more cells the ticks thin out.

Example:
    >>> import numpy as np
    >>> from interp.plot import heatmap
    >>> fig = heatmap(np.array([[0.5, -1.0], [2.0, 0.0]]), ["a", "b"], ["L0", "L1"])
    >>> fig.data[0].zmid
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from interp.plot.arrays import ArrayLike, as_numpy
from interp.plot.labels import escape_label, format_value, hover_lines, token_label, token_labels
from interp.plot.theme import apply_theme, colorscale

TICK_CHARS = 16  # tick labels longer than this are shortened (hover keeps them whole)
CELL_TEXT_MIN_PX = 32  # narrower cells get no cell text
MAX_TEXT_CELLS = 2500
MAX_PLOT_W, MAX_PLOT_H = 2000, 1400


def is_signed(values: np.ndarray) -> bool:
    """True when the finite entries of ``values`` take both signs.

    Example:
        >>> is_signed(np.array([-1.0, 2.0])), is_signed(np.array([0.0, 0.3]))
        (True, False)
    """
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(finite.min() < 0 < finite.max())


def heatmap(
    values: ArrayLike,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    signed: bool | None = None,
    hover: Sequence[Sequence[Any]] | np.ndarray | None = None,
    colorbar_title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    cell_text: Sequence[Sequence[str]] | np.ndarray | None = None,
    rows_top_down: bool = True,
    zmin: float | None = None,
    zmax: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """A labelled heatmap of a ``[rows, cols]`` array (e.g. layer x position, head x layer).

    Args:
        values: ``[rows, cols]`` numbers (numpy, torch, nested lists); NaN cells stay empty.
        x_labels: ``cols`` column labels (token strings welcome; duplicates stay distinct).
        y_labels: ``rows`` row labels.
        title: Figure title (plain text; escaped).
        signed: Diverging colour scale centred at zero (``zmid=0``) when True, sequential when
            False; ``None`` decides from the data (signed iff it has both signs).
        hover: Extra hover per cell, ``[rows, cols]`` of ``None``, a string, a ``(token, value)``
            pair or a top-k list of those.
        colorbar_title: What a value is (also names it in the hover).
        x_title: Title of the x axis (e.g. ``"position"``).
        y_title: Title of the y axis (e.g. ``"layer"``).
        cell_text: ``[rows, cols]`` short strings drawn in the cells (e.g. the top token); drawn
            only when the cells are big enough, always in the hover.
        rows_top_down: Row 0 at the top (like a table) when True, at the bottom when False.
        zmin: Lower end of the colour range (symmetrised around zero for signed data).
        zmax: Upper end of the colour range.
        width: Figure width in pixels (default: sized from the number of columns).
        height: Figure height in pixels (default: sized from the number of rows).

    Returns:
        The figure, one ``go.Heatmap`` trace.

    Raises:
        ValueError: If a label list or per-cell array does not match the shape of ``values``.

    Example:
        >>> import numpy as np
        >>> fig = heatmap(np.random.rand(3, 4), x_labels=["The", " cat", " sat", " cat"],
        ...               y_labels=["L0", "L1", "L2"], x_title="position", y_title="layer")
        >>> fig.data[0].zmid is None, list(fig.layout.xaxis.ticktext)
        (True, ['The', '␣cat', '␣sat', '␣cat'])
    """
    z = as_numpy(values, ndim=2)
    return _heatmap(z, x_labels, y_labels, title=title, signed=signed, hover=hover, value_name=colorbar_title,
                    x_title=x_title, y_title=y_title, cell_text=cell_text, rows_top_down=rows_top_down,
                    zmin=zmin, zmax=zmax, square=False, width=width, height=height)


def attention_pattern(
    pattern: ArrayLike,
    tokens: Sequence[str],
    *,
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    hover: Sequence[Sequence[Any]] | np.ndarray | None = None,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """One head's attention pattern, query x key, with the token strings on both axes and in hover.

    Args:
        pattern: ``[q_pos, k_pos]`` attention weights (rows sum to one).
        tokens: ``q_pos`` query token strings (also the keys unless ``key_tokens`` is given).
        key_tokens: ``k_pos`` key token strings when they differ from the queries.
        title: Figure title (escaped), e.g. ``"L1H3"``.
        hover: Extra hover per cell, as in :func:`heatmap`.
        width: Figure width in pixels (default: sized from the number of tokens).
        height: Figure height in pixels (default: sized from the number of tokens).

    Returns:
        The figure: square cells (at any width it is drawn at), query 0 at the top, sequential colour scale
        from 0.

    Example:
        >>> import numpy as np
        >>> fig = attention_pattern(np.tril(np.ones((3, 3))) / [[1], [2], [3]], ["a", " b", "a"])
        >>> fig.data[0].hovertext[2][0]
        'query 2: a<br>key 0: a<br>attention: 0.3333'
    """
    z = as_numpy(pattern, ndim=2, name="pattern")
    keys = tokens if key_tokens is None else key_tokens
    return _heatmap(z, keys, tokens, title=title, signed=False, hover=hover, value_name="attention",
                    x_title="key", y_title="query", cell_text=None, rows_top_down=True, zmin=0.0, zmax=None,
                    square=True, index_in_hover=True, width=width, height=height)


@dataclass(frozen=True)
class _Geometry:
    cell_w: float
    cell_h: float
    x_stride: int
    y_stride: int
    x_font: int
    y_font: int
    x_angle: int
    width: int
    height: int
    margin: dict[str, int]


def _heatmap(z: np.ndarray, x_labels: Sequence[str] | None, y_labels: Sequence[str] | None, *, title: str | None,
             signed: bool | None, hover: Any, value_name: str | None, x_title: str | None, y_title: str | None,
             cell_text: Any, rows_top_down: bool, zmin: float | None, zmax: float | None, square: bool,
             index_in_hover: bool = False, width: int | None = None, height: int | None = None) -> go.Figure:
    rows, cols = z.shape
    xs = _labels(x_labels, cols, "x_labels")
    ys = _labels(y_labels, rows, "y_labels")
    texts = _cells(cell_text, z.shape, "cell_text")
    extra = _cells(hover, z.shape, "hover")
    geo = _geometry(rows, cols, xs, ys, square=square, wants_text=texts is not None, has_title=title is not None,
                    x_title=x_title is not None, y_title=y_title is not None)

    signed = is_signed(z) if signed is None else signed
    trace: dict[str, Any] = {"z": z, "x": np.arange(cols), "y": np.arange(rows), "colorscale": colorscale(signed),
                             "xgap": 0, "ygap": 0, "hoverinfo": "text"}
    if signed:
        trace["zmid"] = 0.0
        if zmin is not None or zmax is not None:
            m = max(abs(zmin or 0.0), abs(zmax or 0.0))
            trace.update(zmin=-m, zmax=m)
    else:
        trace.update({k: v for k, v in (("zmin", zmin), ("zmax", zmax)) if v is not None})
    if value_name is not None:
        trace["colorbar"] = {"title": {"text": escape_label(value_name), "side": "right"}}

    x_full = _hover_axis(x_title or "x", xs, x_labels is None, index_in_hover or _has_dupes(xs))
    y_full = _hover_axis(y_title or "y", ys, y_labels is None, index_in_hover or _has_dupes(ys))
    vname = escape_label(value_name or "value")
    hover_text = []
    for i in range(rows):
        row = []
        for j in range(cols):
            lines = [y_full[i], x_full[j], f"{vname}: {format_value(z[i, j])}"]
            if texts is not None:
                lines += hover_lines(texts[i][j])
            if extra is not None:
                lines += hover_lines(extra[i][j])
            row.append("<br>".join(lines))
        hover_text.append(row)
    trace["hovertext"] = hover_text

    show_text = (texts is not None and geo.cell_w >= CELL_TEXT_MIN_PX and geo.cell_h >= 14
                 and rows * cols <= MAX_TEXT_CELLS)
    if show_text and texts is not None:
        max_chars = max(int(geo.cell_w / 7), 2)
        trace["text"] = [[token_label(texts[i][j], max_chars) if texts[i][j] is not None else ""
                          for j in range(cols)] for i in range(rows)]
        trace["texttemplate"] = "%{text}"
        trace["textfont"] = {"size": 10}

    fig = go.Figure(go.Heatmap(**trace))
    apply_theme(fig, title=title)
    short_x = token_labels(xs, TICK_CHARS) if x_labels is not None else [str(j) for j in range(cols)]
    short_y = token_labels(ys, TICK_CHARS) if y_labels is not None else [str(i) for i in range(rows)]
    fig.update_layout(width=width or geo.width, height=height or geo.height, margin=geo.margin)
    fig.update_xaxes(tickmode="array", tickvals=list(range(0, cols, geo.x_stride)), ticktext=short_x[::geo.x_stride],
                     tickangle=geo.x_angle, tickfont={"size": geo.x_font}, showgrid=False, zeroline=False,
                     title={"text": escape_label(x_title)} if x_title else None, range=[-0.5, cols - 0.5])
    fig.update_yaxes(tickmode="array", tickvals=list(range(0, rows, geo.y_stride)), ticktext=short_y[::geo.y_stride],
                     tickfont={"size": geo.y_font}, showgrid=False, zeroline=False,
                     title={"text": escape_label(y_title)} if y_title else None,
                     range=[rows - 0.5, -0.5] if rows_top_down else [-0.5, rows - 0.5])
    if square:  # cells stay square at any width the figure is drawn at (a report column, a notebook cell)
        fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
        fig.update_xaxes(constrain="domain")
    return fig


def _labels(labels: Sequence[str] | None, n: int, name: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    out = [str(t) for t in labels]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but the axis has {n} cells")
    return out


def _cells(cells: Any, shape: tuple[int, int], name: str) -> Any:
    if cells is None:
        return None
    if len(cells) != shape[0] or any(len(row) != shape[1] for row in cells):
        raise ValueError(f"{name} must be [rows, cols] = {list(shape)}")
    return cells


def _has_dupes(labels: list[str]) -> bool:
    return len(set(labels)) != len(labels)


def _hover_axis(axis: str, labels: list[str], unlabelled: bool, with_index: bool) -> list[str]:
    name = escape_label(axis)
    if unlabelled:
        return [f"{name}: {i}" for i in range(len(labels))]
    if with_index:
        return [f"{name} {i}: {token_label(t)}" for i, t in enumerate(labels)]
    return [f"{name}: {token_label(t)}" for t in labels]


def _tick_font(cell_px: float) -> int:
    return 11 if cell_px >= 16 else 9 if cell_px >= 10 else 8


def _geometry(rows: int, cols: int, xs: list[str], ys: list[str], *, square: bool, wants_text: bool,
              has_title: bool, x_title: bool, y_title: bool) -> _Geometry:
    clamp = lambda v, lo, hi: min(max(v, lo), hi)  # noqa: E731
    if square:
        cell_w = cell_h = clamp(720 / max(rows, cols), 7, 40)
    else:
        cell_w = clamp(900 / cols, 10, 48)
        cell_h = clamp(560 / rows, 10, 48)
        if wants_text and cols * CELL_TEXT_MIN_PX <= MAX_PLOT_W:
            cell_w = max(cell_w, CELL_TEXT_MIN_PX)
            cell_h = max(cell_h, 14)
    plot_w = min(cols * cell_w, MAX_PLOT_W)
    plot_h = min(rows * cell_h, MAX_PLOT_H)
    cell_w, cell_h = plot_w / cols, plot_h / rows
    x_font, y_font = _tick_font(cell_w), _tick_font(cell_h)
    x_stride = max(1, math.ceil((x_font + 1) / cell_w))
    y_stride = max(1, math.ceil((y_font + 2) / cell_h))
    x_chars = max((min(len(t), TICK_CHARS) for t in xs), default=1)
    y_chars = max((min(len(t), TICK_CHARS) for t in ys), default=1)
    x_text_px = 0.62 * x_font * x_chars
    if x_text_px <= cell_w * x_stride - 4:
        x_angle, x_extent = 0, x_font + 6
    elif cell_w * x_stride >= 18:
        x_angle, x_extent = -45, int(0.72 * x_text_px) + 8
    else:
        x_angle, x_extent = -90, int(x_text_px) + 8
    margin = {
        "l": int(0.62 * y_font * y_chars) + 24 + (22 if y_title else 0),
        "r": 100,
        "t": 60 if has_title else 24,
        "b": x_extent + 24 + (22 if x_title else 0),
    }
    width = int(plot_w) + margin["l"] + margin["r"]
    height = int(plot_h) + margin["t"] + margin["b"]
    return _Geometry(cell_w, cell_h, x_stride, y_stride, x_font, y_font, x_angle, width, height, margin)
