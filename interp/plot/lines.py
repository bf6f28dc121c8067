"""Curves over layers (with ribbons), top-token bar charts and scatter plots of scores.

Example:
    >>> import numpy as np
    >>> from interp.plot import layer_curves
    >>> fig = layer_curves({"p(Paris)": np.linspace(0, 1, 5)}, y_title="probability")
    >>> fig.data[0].name
    'p(Paris)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from interp.plot.arrays import ArrayLike, as_numpy
from interp.plot.heatmaps import is_signed
from interp.plot.labels import escape_label, format_value, hover_lines, token_label, token_labels
from interp.plot.theme import (
    MONO_FAMILY,
    NEGATIVE_COLOR,
    NEUTRAL_COLOR,
    POSITIVE_COLOR,
    apply_theme,
    colorscale,
    series_color,
)

SCATTERGL_ABOVE = 5000  # points; WebGL beyond this


def layer_curves(
    series: Mapping[str, ArrayLike],
    *,
    lower: Mapping[str, ArrayLike] | None = None,
    upper: Mapping[str, ArrayLike] | None = None,
    x: ArrayLike | None = None,
    x_labels: Sequence[str] | None = None,
    x_title: str = "layer",
    y_title: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """One line per named series over layers, with optional shaded ``lower``-``upper`` ribbons.

    Args:
        series: Name → ``[layer]`` values (names are escaped into the legend and hover).
        lower: Name → ``[layer]`` lower bound of the ribbon of that series (e.g. mean - std).
        upper: Name → ``[layer]`` upper bound; a ribbon is drawn where both bounds are given.
        x: ``[layer]`` x positions shared by all series (default ``0 … n-1``).
        x_labels: Tick text for the positions (e.g. ``["embed", "L0", …]``).
        x_title: Title of the x axis.
        y_title: Title of the y axis (also names the value in the hover).
        title: Figure title (escaped).

    Returns:
        The figure: per series a ribbon trace (if any) followed by its line trace.

    Raises:
        ValueError: If a series, bound or ``x`` has a different length from its series.

    Example:
        >>> import numpy as np
        >>> m = np.array([0.1, 0.5, 0.9])
        >>> fig = layer_curves({"acc": m}, lower={"acc": m - 0.1}, upper={"acc": m + 0.1})
        >>> [t.fill for t in fig.data]
        ['toself', None]
    """
    lower, upper = lower or {}, upper or {}
    fig = go.Figure()
    yname = escape_label(y_title or "value")
    xname = escape_label(x_title)
    for k, (name, values) in enumerate(series.items()):
        y = as_numpy(values, ndim=1, name=f"series {name!r}")
        xs = np.arange(len(y)) if x is None else as_numpy(x, ndim=1, name="x")
        if len(xs) != len(y):
            raise ValueError(f"series {name!r} has {len(y)} values but x has {len(xs)}")
        label = escape_label(name)
        band = None
        if name in lower and name in upper:
            lo = as_numpy(lower[name], ndim=1, name=f"lower {name!r}")
            hi = as_numpy(upper[name], ndim=1, name=f"upper {name!r}")
            if len(lo) != len(y) or len(hi) != len(y):
                raise ValueError(f"ribbon of {name!r} must have {len(y)} values")
            band = (lo, hi)
            fig.add_trace(go.Scatter(
                x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                fillcolor=series_color(k, alpha=0.18), line={"width": 0}, hoverinfo="skip", showlegend=False,
                legendgroup=label, name=label,
            ))
        xtick = token_labels(x_labels) if x_labels is not None else [format_value(float(v)) for v in xs]
        hover = []
        for i in range(len(y)):
            text = f"{label}<br>{xname}: {xtick[i] if i < len(xtick) else format_value(float(xs[i]))}<br>"
            text += f"{yname}: {format_value(y[i])}"
            if band is not None:
                text += f" [{format_value(band[0][i])}, {format_value(band[1][i])}]"
            hover.append(text)
        fig.add_trace(go.Scatter(
            x=xs, y=y, mode="lines+markers", name=label, legendgroup=label, line={"color": series_color(k), "width": 2},
            marker={"size": 5}, hovertext=hover, hoverinfo="text",
        ))
    apply_theme(fig, title=title)
    fig.update_layout(width=760, height=440, hovermode="closest")
    fig.update_xaxes(title={"text": xname})
    fig.update_yaxes(title={"text": escape_label(y_title)} if y_title else None)
    if x_labels is not None:
        ticks = np.arange(len(x_labels)) if x is None else as_numpy(x, ndim=1, name="x")
        fig.update_xaxes(tickmode="array", tickvals=list(ticks), ticktext=token_labels(x_labels))
    return fig


def bar_top_tokens(
    tokens: Sequence[str],
    values: ArrayLike,
    *,
    title: str | None = None,
    x_title: str = "value",
    hover: Sequence[Any] | None = None,
    signed: bool | None = None,
) -> go.Figure:
    """Horizontal bars of tokens and their scores, the first token at the top.

    Args:
        tokens: ``[k]`` token strings (duplicates get their own bar; shown with visible whitespace).
        values: ``[k]`` scores (probabilities, logits, attributions), usually sorted.
        title: Figure title (escaped).
        x_title: What a value is.
        hover: ``[k]`` extra hover items (strings, ``(token, value)`` pairs or lists of them).
        signed: Colour bars red/blue by sign when True; ``None`` decides from the data.

    Returns:
        The figure, one ``go.Bar`` trace.

    Example:
        >>> fig = bar_top_tokens([" Paris", " London", " Paris"], [0.6, 0.2, 0.1], x_title="probability")
        >>> list(fig.layout.yaxis.ticktext), list(fig.data[0].y)
        (['␣Paris', '␣London', '␣Paris'], [0, 1, 2])
    """
    v = as_numpy(values, ndim=1)
    labels = token_labels(tokens)
    if len(labels) != len(v):
        raise ValueError(f"{len(labels)} tokens but {len(v)} values")
    if hover is not None and len(hover) != len(v):
        raise ValueError(f"hover has {len(hover)} entries, expected {len(v)}")
    signed = is_signed(v) if signed is None else signed
    colors = [POSITIVE_COLOR if val >= 0 else NEGATIVE_COLOR for val in v] if signed else NEUTRAL_COLOR
    xname = escape_label(x_title)
    text = []
    for i, val in enumerate(v):
        lines = [f"{i}: {labels[i]}", f"{xname}: {format_value(val)}"]
        lines += hover_lines(hover[i]) if hover is not None else []
        text.append("<br>".join(lines))
    fig = go.Figure(go.Bar(x=v, y=list(range(len(v))), orientation="h", marker={"color": colors},
                           hovertext=text, hoverinfo="text"))
    apply_theme(fig, title=title)
    fig.update_layout(width=620, height=max(240, 24 * len(v) + 110), bargap=0.25)
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(v))), ticktext=token_labels(tokens, 32),
                     autorange="reversed", showgrid=False, zeroline=False, tickfont={"family": MONO_FAMILY})
    fig.update_xaxes(title={"text": xname})
    return fig


def scatter(
    x: ArrayLike,
    y: ArrayLike,
    *,
    labels: Sequence[Any] | None = None,
    color: ArrayLike | Sequence[str] | None = None,
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    color_title: str | None = None,
    signed: bool | None = None,
) -> go.Figure:
    """A scatter plot of scores (probe outputs, feature activations), with per-point hover.

    Args:
        x: ``[n]`` x values.
        y: ``[n]`` y values.
        labels: ``[n]`` hover items (token strings, ``(token, value)`` pairs, lists of them).
        color: ``[n]`` numbers (a colour scale, centred at zero when signed) or strings (one
            legend group per distinct string, in order of first appearance).
        title: Figure title (escaped).
        x_title: Title of the x axis.
        y_title: Title of the y axis.
        color_title: Title of the colour bar or legend.
        signed: For numeric ``color``: diverging scale with ``cmid=0`` when True; ``None``
            decides from the data.

    Returns:
        The figure: one trace, or one trace per group for string colours.

    Example:
        >>> fig = scatter([0, 1, 2], [1.0, -1.0, 0.5], labels=["a", "b", "c"], color=["yes", "no", "yes"])
        >>> [t.name for t in fig.data]
        ['yes', 'no']
    """
    xs, ys = as_numpy(x, ndim=1, name="x"), as_numpy(y, ndim=1, name="y")
    n = len(xs)
    if len(ys) != n:
        raise ValueError(f"x has {n} values but y has {len(ys)}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries, expected {n}")
    xname, yname = escape_label(x_title or "x"), escape_label(y_title or "y")
    hover = []
    for i in range(n):
        lines = hover_lines(labels[i]) if labels is not None else [f"#{i}"]
        hover.append("<br>".join([*lines, f"{xname}: {format_value(xs[i])}", f"{yname}: {format_value(ys[i])}"]))
    kind = go.Scattergl if n > SCATTERGL_ABOVE else go.Scatter
    fig = go.Figure()
    groups = _string_groups(color, n)
    if groups is not None:
        for k, (name, idx) in enumerate(groups.items()):
            fig.add_trace(kind(x=xs[idx], y=ys[idx], mode="markers", name=token_label(name),
                               marker={"color": series_color(k), "size": 7, "opacity": 0.8},
                               hovertext=[hover[i] for i in idx], hoverinfo="text"))
    else:
        marker: dict[str, Any] = {"size": 7, "opacity": 0.85, "color": series_color(0)}
        if color is not None:
            c = as_numpy(color, ndim=1, name="color")
            if len(c) != n:
                raise ValueError(f"color has {len(c)} values, expected {n}")
            is_div = is_signed(c) if signed is None else signed
            cname = escape_label(color_title or "color")
            hover = [f"{h}<br>{cname}: {format_value(c[i])}" for i, h in enumerate(hover)]
            marker.update(color=c, colorscale=colorscale(is_div), showscale=True, line={"width": 0.5, "color": "#888888"},
                          colorbar={"title": {"text": cname, "side": "right"}})
            if is_div:
                marker["cmid"] = 0.0
        fig.add_trace(kind(x=xs, y=ys, mode="markers", marker=marker, hovertext=hover, hoverinfo="text",
                           showlegend=False))
    apply_theme(fig, title=title)
    fig.update_layout(width=680, height=520, legend={"title": {"text": escape_label(color_title)}} if color_title
                      and groups is not None else None)
    fig.update_xaxes(title={"text": escape_label(x_title)} if x_title else None)
    fig.update_yaxes(title={"text": escape_label(y_title)} if y_title else None)
    return fig


def _string_groups(color: Any, n: int) -> dict[str, list[int]] | None:
    if color is None or isinstance(color, str) or not isinstance(color, Sequence | np.ndarray):
        return None
    items = list(color)
    if not items or not all(isinstance(c, str | np.str_) for c in items):
        return None
    if len(items) != n:
        raise ValueError(f"color has {len(items)} entries, expected {n}")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(items):
        groups.setdefault(str(c), []).append(i)
    return groups
