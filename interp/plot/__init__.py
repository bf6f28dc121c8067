"""Generic Plotly figure builders: labelled arrays in, ``plotly.graph_objects.Figure`` out.

``plot`` knows nothing of models, traces or tools and imports nothing else from interp; it is
the only package that imports plotly (other packages name the figure type as ``interp.plot.Figure``, which is
``plotly.graph_objects.Figure``). Every builder applies the interp theme, centres signed
data at zero, and HTML-escapes every user string (tokens, labels, titles) so that a prompt
containing ``<script>`` shows as text.

Example:
    >>> import numpy as np
    >>> import interp.plot as ip
    >>> fig = ip.heatmap(np.array([[0.1, -0.2]]), x_labels=["<b>", " x"], y_labels=["L0"])
    >>> list(fig.layout.xaxis.ticktext)
    ['&lt;b&gt;', '␣x']
"""

from plotly.graph_objects import Figure

from interp.plot.arrays import ArrayLike, as_numpy
from interp.plot.export import plotlyjs_source
from interp.plot.graph import layered_graph, placed_graph, sankey
from interp.plot.heatmaps import attention_pattern, heatmap, is_signed
from interp.plot.labels import escape_label, token_label, token_labels
from interp.plot.lines import bar_top_tokens, layer_curves, scatter
from interp.plot.theme import (
    DIVERGING,
    QUALITATIVE,
    SEQUENTIAL,
    TEMPLATE_NAME,
    apply_theme,
    colorscale,
    interp_template,
    register_template,
)

__all__ = [
    "DIVERGING", "QUALITATIVE", "SEQUENTIAL", "TEMPLATE_NAME", "ArrayLike", "Figure", "apply_theme", "as_numpy",
    "attention_pattern", "bar_top_tokens", "colorscale", "escape_label", "heatmap", "interp_template",
    "is_signed", "layer_curves", "layered_graph", "placed_graph", "plotlyjs_source", "register_template", "sankey", "scatter", "token_label",
    "token_labels",
]
