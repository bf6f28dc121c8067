"""The one look of every interp figure: fonts, colours, colour scales, the ``interp`` template.

* :data:`DIVERGING` (blue < 0 < red, white at zero) is for signed quantities (logit
  differences, patching effects, attributions); builders pair it with ``zmid=0`` so that zero
  is always white, whatever the range.
* :data:`SEQUENTIAL` (viridis) is for non-negative quantities such as probabilities and
  attention weights.
* :data:`QUALITATIVE` (Okabe-Ito, colour-blind safe) is the colour cycle of lines and groups.

Nothing is registered at import (the house has no import side effects): builders put
:func:`interp_template` on each figure they make, and :func:`register_template` adds it to
``plotly.io.templates`` under the name ``"interp"`` for users who want it as their default.

Example:
    >>> from interp.plot.theme import colorscale, DIVERGING
    >>> colorscale(signed=True) == DIVERGING
    True
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

from interp.plot.labels import escape_label

TEMPLATE_NAME = "interp"
FONT_FAMILY = "Inter, 'Helvetica Neue', Arial, sans-serif"
MONO_FAMILY = "'JetBrains Mono', Menlo, Consolas, monospace"
FONT_SIZE = 13
TEXT_COLOR = "#222222"
GRID_COLOR = "#e6e6e6"
AXIS_COLOR = "#9a9a9a"
POSITIVE_COLOR = "rgb(178,24,43)"
NEGATIVE_COLOR = "rgb(33,102,172)"
NEUTRAL_COLOR = "#4c72b0"

# Reversed ColorBrewer RdBu: negative blue, zero white-ish, positive red.
DIVERGING: tuple[tuple[float, str], ...] = (
    (0.0, "rgb(5,48,97)"), (0.1, "rgb(33,102,172)"), (0.2, "rgb(67,147,195)"), (0.3, "rgb(146,197,222)"),
    (0.4, "rgb(209,229,240)"), (0.5, "rgb(247,247,247)"), (0.6, "rgb(253,219,199)"), (0.7, "rgb(244,165,130)"),
    (0.8, "rgb(214,96,77)"), (0.9, "rgb(178,24,43)"), (1.0, "rgb(103,0,31)"),
)
# Viridis: perceptually uniform, readable for small probabilities.
SEQUENTIAL: tuple[tuple[float, str], ...] = (
    (0.0, "#440154"), (1 / 9, "#482878"), (2 / 9, "#3e4989"), (3 / 9, "#31688e"), (4 / 9, "#26828e"),
    (5 / 9, "#1f9e89"), (6 / 9, "#35b779"), (7 / 9, "#6ece58"), (8 / 9, "#b5de2b"), (1.0, "#fde725"),
)
# Okabe & Ito (2008), colour-blind safe.
QUALITATIVE: tuple[str, ...] = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
)


def colorscale(signed: bool) -> tuple[tuple[float, str], ...]:
    """The colour scale for signed (diverging) or non-negative (sequential) data.

    Example:
        >>> colorscale(signed=False)[0]
        (0.0, '#440154')
    """
    return DIVERGING if signed else SEQUENTIAL


def series_color(i: int, alpha: float | None = None) -> str:
    """The ``i``-th colour of the qualitative cycle, optionally as ``rgba`` with ``alpha``.

    Example:
        >>> series_color(0)
        '#0072B2'
        >>> series_color(0, alpha=0.2)
        'rgba(0,114,178,0.2)'
    """
    hex_color = QUALITATIVE[i % len(QUALITATIVE)]
    if alpha is None:
        return hex_color
    r, g, b = (int(hex_color[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:g})"


def interp_template() -> go.layout.Template:
    """A fresh Plotly template with the interp look.

    Example:
        >>> interp_template().layout.font.size
        13
    """
    axis = {
        "showgrid": True, "gridcolor": GRID_COLOR, "zeroline": True, "zerolinecolor": AXIS_COLOR,
        "zerolinewidth": 1, "linecolor": AXIS_COLOR, "showline": True, "ticks": "outside",
        "tickcolor": AXIS_COLOR, "automargin": True, "title": {"standoff": 8},
    }
    colorbar = {"outlinewidth": 0, "ticks": "outside", "thickness": 14}
    return go.layout.Template(
        layout={
            "font": {"family": FONT_FAMILY, "size": FONT_SIZE, "color": TEXT_COLOR},
            "title": {"x": 0.0, "xanchor": "left", "xref": "paper", "font": {"size": FONT_SIZE + 3}},
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "colorway": list(QUALITATIVE),
            "colorscale": {"sequential": [list(p) for p in SEQUENTIAL], "diverging": [list(p) for p in DIVERGING]},
            "xaxis": axis,
            "yaxis": axis,
            "hoverlabel": {"font": {"family": MONO_FAMILY, "size": 12}, "align": "left", "namelength": -1},
            "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
            "margin": {"l": 60, "r": 30, "t": 60, "b": 50},
        },
        data={
            "heatmap": [{"colorscale": [list(p) for p in SEQUENTIAL], "colorbar": colorbar}],
            "scatter": [{"marker": {"line": {"width": 0}}}],
        },
    )


def register_template(name: str = TEMPLATE_NAME) -> str:
    """Add :func:`interp_template` to ``plotly.io.templates`` (idempotent) and return its name.

    Then ``plotly.io.templates.default = "interp"`` makes it the default of every figure.

    Example:
        >>> import plotly.io as pio
        >>> register_template()
        'interp'
        >>> "interp" in pio.templates
        True
    """
    pio.templates[name] = interp_template()
    return name


def apply_theme(fig: go.Figure, *, title: str | None = None) -> go.Figure:
    """Put the interp template on ``fig`` and set its title (HTML-escaped here); returns ``fig``.

    Example:
        >>> fig = apply_theme(go.Figure(), title="<b>demo</b>")
        >>> fig.layout.title.text
        '&lt;b&gt;demo&lt;/b&gt;'
    """
    fig.update_layout(template=interp_template())
    if title is not None:
        fig.update_layout(title={"text": escape_label(title)})
    return fig
