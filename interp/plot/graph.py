"""Flow views: Sankey diagrams and layered node-link graphs (e.g. feature flow across layers).

Example:
    >>> from interp.plot import sankey
    >>> fig = sankey(["a", "b", "c"], [(0, 2, 1.0), (1, 2, -0.5)])
    >>> list(fig.data[0].link.value)
    [1.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from interp.plot.arrays import ArrayLike, as_numpy
from interp.plot.heatmaps import is_signed
from interp.plot.labels import escape_label, format_value, hover_lines, token_label
from interp.plot.theme import NEGATIVE_COLOR, NEUTRAL_COLOR, POSITIVE_COLOR, apply_theme, colorscale

EDGE_BINS = 4  # edges are drawn in this many width/opacity classes per sign (one trace each)
NODE_LABEL_CHARS = 18
DENSE_LAYERS = 10  # more columns than this: node labels alternate above / below the nodes


def sankey(
    labels: Sequence[str],
    links: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    value_title: str = "value",
    node_hover: Sequence[Any] | None = None,
) -> go.Figure:
    """A Sankey diagram of flows between labelled nodes.

    Args:
        labels: ``[n]`` node labels (escaped, whitespace made visible).
        links: ``(source, target, value)`` or ``(source, target, value, hover)`` tuples; source and
            target index ``labels``. A negative value is drawn with its magnitude, in blue (positive
            flows are red) and with its sign in the hover. ``hover`` is an extra hover item.
        title: Figure title (escaped).
        value_title: What a link value is (hover).
        node_hover: ``[n]`` extra hover items per node.

    Returns:
        The figure, one ``go.Sankey`` trace.

    Raises:
        ValueError: If a link points outside ``labels`` or has the wrong arity.

    Example:
        >>> fig = sankey(["<in>", "out"], [(0, 1, 2.0, "via L3")])
        >>> fig.data[0].link.customdata[0]
        '&lt;in&gt; → out<br>value: 2<br>via L3'
    """
    names = [token_label(t) for t in labels]
    n = len(names)
    if node_hover is not None and len(node_hover) != n:
        raise ValueError(f"node_hover has {len(node_hover)} entries, expected {n}")
    vname = escape_label(value_title)
    src, dst, val, colors, hover = [], [], [], [], []
    for link in links:
        if len(link) not in (3, 4):
            raise ValueError(f"a link is (source, target, value[, hover]), got {link!r}")
        s, t, v = int(link[0]), int(link[1]), float(link[2])
        if not (0 <= s < n and 0 <= t < n):
            raise ValueError(f"link {link!r} points outside the {n} nodes")
        src.append(s)
        dst.append(t)
        val.append(abs(v))
        colors.append(_rgba(POSITIVE_COLOR if v >= 0 else NEGATIVE_COLOR, 0.35))
        lines = [f"{names[s]} → {names[t]}", f"{vname}: {format_value(v)}"]
        lines += hover_lines(link[3]) if len(link) == 4 else []
        hover.append("<br>".join(lines))
    node_text = []
    for i, name in enumerate(names):
        inflow = sum(v for v, t in zip(val, dst, strict=True) if t == i)
        outflow = sum(v for v, s in zip(val, src, strict=True) if s == i)
        lines = [f"{i}: {name}", f"in: {format_value(inflow)}  out: {format_value(outflow)}"]
        lines += hover_lines(node_hover[i]) if node_hover is not None else []
        node_text.append("<br>".join(lines))
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node={"label": [token_label(t, NODE_LABEL_CHARS) for t in labels], "customdata": node_text,
              "hovertemplate": "%{customdata}<extra></extra>", "color": NEUTRAL_COLOR, "pad": 14, "thickness": 14},
        link={"source": src, "target": dst, "value": val, "color": colors, "customdata": hover,
              "hovertemplate": "%{customdata}<extra></extra>"},
    ))
    apply_theme(fig, title=title)
    fig.update_layout(width=900, height=max(360, min(1400, 26 * n + 160)))
    return fig


def layered_graph(
    layers: Sequence[Sequence[str]],
    edges: Sequence[Sequence[Any]],
    *,
    layer_names: Sequence[str] | None = None,
    node_values: Sequence[ArrayLike] | None = None,
    node_hover: Sequence[Sequence[Any]] | None = None,
    title: str | None = None,
    weight_title: str = "weight",
    value_title: str = "value",
    max_edge_width: float = 8.0,
) -> go.Figure:
    """A node-link graph with one column of nodes per layer and weighted edges between them.

    Args:
        layers: Per layer, the labels of its nodes (top to bottom; escaped).
        edges: ``((src_layer, src_node), (dst_layer, dst_node), weight)`` tuples, optionally with a
            fourth hover item. Width and opacity grow with ``|weight|``; positive edges are red,
            negative blue (all grey-blue when no weight is negative).
        layer_names: Tick text under each column (default the layer index).
        node_values: Per layer, ``[nodes]`` numbers colouring the nodes (diverging at zero if signed).
        node_hover: Per layer, per node extra hover items.
        title: Figure title (escaped).
        weight_title: What an edge weight is (hover).
        value_title: What a node value is (hover, colour bar).
        max_edge_width: Line width of the strongest edge, in pixels.

    Returns:
        The figure: edge traces (one per width class and sign), an invisible trace of edge
        midpoints carrying the edge hover, and the node trace last.

    Raises:
        ValueError: If an edge names a node that does not exist, or a per-node list has the wrong length.

    Example:
        >>> fig = layered_graph([["f1", "f2"], ["g1"]], [((0, 0), (1, 0), 0.9), ((0, 1), (1, 0), -0.3)],
        ...                     layer_names=["L0", "L1"])
        >>> list(fig.data[-1].text)
        ['f1', 'f2', 'g1']
    """
    pos = {}
    node_labels, node_xy, node_text, values = [], [], [], []
    for li, nodes in enumerate(layers):
        vals = None if node_values is None else as_numpy(node_values[li], ndim=1, name=f"node_values[{li}]")
        if vals is not None and len(vals) != len(nodes):
            raise ValueError(f"node_values[{li}] has {len(vals)} values for {len(nodes)} nodes")
        if node_hover is not None and len(node_hover[li]) != len(nodes):
            raise ValueError(f"node_hover[{li}] has {len(node_hover[li])} entries for {len(nodes)} nodes")
        for ni, label in enumerate(nodes):
            xy = (float(li), (len(nodes) - 1) / 2 - ni)
            pos[(li, ni)] = xy
            node_xy.append(xy)
            node_labels.append(token_label(label, NODE_LABEL_CHARS))
            layer = escape_label(layer_names[li]) if layer_names is not None else str(li)
            lines = [f"{token_label(label)}", f"layer {layer}, node {ni}"]
            if vals is not None:
                values.append(vals[ni])
                lines.append(f"{escape_label(value_title)}: {format_value(vals[ni])}")
            lines += hover_lines(node_hover[li][ni]) if node_hover is not None else []
            node_text.append("<br>".join(lines))

    fig = go.Figure()
    weights = np.array([float(e[2]) for e in edges]) if edges else np.zeros(0)
    top = float(np.abs(weights).max()) if weights.size and np.abs(weights).max() > 0 else 1.0
    signed = bool((weights < 0).any())
    groups: dict[tuple[bool, int], list[int]] = {}
    mid_x, mid_y, mid_text = [], [], []
    wname = escape_label(weight_title)
    for k, edge in enumerate(edges):
        if len(edge) not in (3, 4):
            raise ValueError(f"an edge is ((layer, node), (layer, node), weight[, hover]), got {edge!r}")
        a, b = (int(edge[0][0]), int(edge[0][1])), (int(edge[1][0]), int(edge[1][1]))
        if a not in pos or b not in pos:
            raise ValueError(f"edge {edge!r} names a node that is not in layers")
        frac = abs(weights[k]) / top
        groups.setdefault((weights[k] < 0, min(int(frac * EDGE_BINS), EDGE_BINS - 1)), []).append(k)
        (x0, y0), (x1, y1) = pos[a], pos[b]
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        lines = [f"{node_labels[_flat(layers, a)]} → {node_labels[_flat(layers, b)]}", f"{wname}: {format_value(weights[k])}"]
        lines += hover_lines(edge[3]) if len(edge) == 4 else []
        mid_text.append("<br>".join(lines))
    for (negative, width_class), members in sorted(groups.items()):
        frac = (width_class + 1) / EDGE_BINS
        color = (NEGATIVE_COLOR if negative else POSITIVE_COLOR) if signed else NEUTRAL_COLOR
        xs: list[float | None] = []
        ys: list[float | None] = []
        for k in members:
            (x0, y0), (x1, y1) = pos[(int(edges[k][0][0]), int(edges[k][0][1]))], pos[(int(edges[k][1][0]), int(edges[k][1][1]))]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"color": _rgba(color, 0.25 + 0.6 * frac), "width": 0.5 + max_edge_width * frac}))
    fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", marker={"size": 10, "opacity": 0}, hovertext=mid_text,
                             hoverinfo="text", showlegend=False))
    dense = len(layers) > DENSE_LAYERS
    marker: dict[str, Any] = {"size": 11 if dense else 16, "color": NEUTRAL_COLOR,
                              "line": {"width": 1, "color": "#666666"}}
    if values:
        v = np.array(values)
        div = is_signed(v)
        marker.update(color=v, colorscale=colorscale(div), showscale=True,
                      colorbar={"title": {"text": escape_label(value_title), "side": "right"}})
        if div:
            marker["cmid"] = 0.0
    # Many columns get narrow when the figure is drawn at a column's width: labels then go above the nodes of
    # even columns and below those of odd ones, in a smaller font, so neighbours do not overlap.
    where = [("bottom center" if dense and li % 2 else "top center") for li, nodes in enumerate(layers) for _ in nodes]
    fig.add_trace(go.Scatter(x=[p[0] for p in node_xy], y=[p[1] for p in node_xy], mode="markers+text",
                             text=node_labels, textposition=where, textfont={"size": 10 if dense else 12},
                             marker=marker, hovertext=node_text, hoverinfo="text", showlegend=False,
                             cliponaxis=False))
    apply_theme(fig, title=title)
    tallest = max((len(n) for n in layers), default=1)
    pad = 0.45 if dense else 0.2
    fig.update_layout(width=int(min(2000, max(500, 180 * len(layers) + 160))),
                      height=int(min(1400, max(320, 48 * tallest + 160))), hovermode="closest")
    ticks = [escape_label(t) for t in layer_names] if layer_names is not None else [str(i) for i in range(len(layers))]
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(layers))), ticktext=ticks, showgrid=False,
                     zeroline=False, range=[-0.5, len(layers) - 0.5])
    fig.update_yaxes(visible=False, range=[-(tallest / 2) - pad, tallest / 2 + pad])
    return fig


def _flat(layers: Sequence[Sequence[str]], node: tuple[int, int]) -> int:
    return sum(len(layers[i]) for i in range(node[0])) + node[1]


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("#"):
        r, g, b = (int(color[k : k + 2], 16) for k in (1, 3, 5))
    else:
        r, g, b = (int(c) for c in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
    return f"rgba({r},{g},{b},{alpha:.2f})"


def placed_graph(
    nodes: Sequence[tuple[float, float, str, str]],
    edges: Sequence[tuple[int, int, float, str]],
    *,
    group_colors: dict[str, str],
    x_labels: Sequence[str] = (),
    x_title: str = "",
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
    title: str | None = None,
    height: int = 650,
) -> go.Figure:
    """A node-link graph whose nodes sit where the caller places them (e.g. token position × layer).

    Args:
        nodes: ``(x, y, group, hover)`` per node; ``group`` picks the colour (``group_colors``) and the legend
            entry; a group named ``"error"`` is drawn as squares. Hover text is escaped; ``\n`` breaks a line.
        edges: ``(source index, target index, weight, hover)``; width and opacity grow with ``|weight|``,
            positive edges red, negative blue.
        group_colors: colour per group, in legend order.
        x_labels: tick text at x = 0, 1, ... (escaped).

    Example:
        >>> from interp.plot import placed_graph
        >>> fig = placed_graph([(0, 0, "a", "first"), (1, 1, "b", "second")], [(0, 1, 0.5, "a to b")],
        ...                    group_colors={"a": "#7f8c8d", "b": "#27ae60"}, x_labels=["x", "y"])
        >>> len(fig.data)
        3
    """
    top = max((abs(w) for _, _, w, _ in edges), default=1.0) or 1.0
    fig = go.Figure()
    for s, t, w, hover in edges:
        fig.add_trace(go.Scatter(x=[nodes[s][0], nodes[t][0]], y=[nodes[s][1], nodes[t][1]], mode="lines",
                                 line={"width": 0.5 + 6 * abs(w) / top,
                                       "color": POSITIVE_COLOR if w > 0 else NEGATIVE_COLOR},
                                 opacity=0.25 + 0.6 * abs(w) / top, hoverinfo="text", showlegend=False,
                                 text=escape_label(hover)))
    for group, color in group_colors.items():
        idx = [i for i, n in enumerate(nodes) if n[2] == group]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=[nodes[i][0] for i in idx], y=[nodes[i][1] for i in idx], mode="markers", name=escape_label(group),
            marker={"size": 7 if group == "error" else 9, "color": color,
                    "symbol": "square" if group == "error" else "circle"},
            hoverinfo="text", text=[escape_label(nodes[i][3]).replace("\n", "<br>") for i in idx]))
    fig.update_layout(height=height,
                      xaxis={"tickmode": "array", "tickvals": list(range(len(x_labels))),
                             "ticktext": [escape_label(x) for x in x_labels], "title": x_title},
                      yaxis={"title": y_title, **({"range": list(y_range)} if y_range else {})})
    return apply_theme(fig, title=title)
