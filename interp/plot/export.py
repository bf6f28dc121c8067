"""What an HTML page needs to draw interp figures offline, so no other package imports plotly.

Example:
    >>> from interp.plot.export import plotlyjs_source
    >>> len(plotlyjs_source()) > 1_000_000
    True
"""

from __future__ import annotations

from functools import lru_cache

from plotly.offline import get_plotlyjs


@lru_cache(maxsize=1)
def plotlyjs_source() -> str:
    """The minified plotly.js bundle shipped with the installed plotly, as a string.

    Inline it once in a ``<script>`` of a self-contained page (escape ``</script`` when you
    do), then draw each figure with ``Plotly.newPlot(div, spec.data, spec.layout)`` where
    ``spec`` is ``fig.to_json()``.

    Returns:
        The JavaScript source (several MB).

    Example:
        >>> "Plotly" in plotlyjs_source()[:2000]
        True
    """
    return get_plotlyjs()
