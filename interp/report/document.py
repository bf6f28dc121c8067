"""``Report``: sections of text, tables and Plotly figures → one self-contained HTML file + JSON.

The HTML works offline: plotly.js is inlined once, every text is escaped, and each figure's JSON
is embedded with ``</`` escaped so that no token string can close a ``<script>`` element.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.plot import plotlyjs_source

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#fafbfc}
header{background:#1f2933;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cbd2d9;font-size:13px}
.wrap{display:flex;align-items:flex-start}
nav{position:sticky;top:0;flex:0 0 200px;padding:16px;font-size:13px}
nav a{display:block;color:#3e4c59;text-decoration:none;padding:3px 0}nav a:hover{color:#0b69a3}
main{flex:1;padding:8px 32px 64px;max-width:1200px;min-width:0}
section{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:12px 20px;margin:18px 0}
h2{font-size:18px;margin:6px 0 6px}p.intro{color:#3e4c59;font-size:14px;margin:0 0 12px}p.caption{color:#616e7c;font-size:13px;margin:2px 0 14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #e4e7eb;padding:3px 8px;text-align:left}
th{background:#f5f7fa}pre{background:#f5f7fa;padding:10px;overflow:auto;font-size:12px;max-height:360px}
.tok{background:#eef2f7;border-radius:3px;padding:0 2px;margin:0 1px;white-space:pre}
"""


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


@dataclass
class Section:
    """One section of a report; add blocks in the order they should appear.

    ``intro`` is the sentence that opens the section: what it shows and how to read it.
    """

    title: str
    anchor: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    n_figures: int = 0

    def text(self, text: str) -> Section:
        """A paragraph of plain text (escaped)."""
        self.blocks.append(f"<p>{html.escape(text)}</p>")
        return self

    def tokens(self, tokens: Sequence[str], label: str = "") -> Section:
        """A row of token strings, each shown in a box (whitespace kept visible)."""
        spans = "".join(f'<span class="tok">{html.escape(t)}</span>' for t in tokens)
        self.blocks.append(f"<p>{html.escape(label)} {spans}</p>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> Section:
        """A table of values (every cell escaped)."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f"<table><tr>{head}</tr>{body}</table>{cap}")
        return self

    def code(self, obj: Any, caption: str = "") -> Section:
        """A pretty-printed JSON block."""
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f"<pre>{html.escape(json.dumps(obj, indent=1, default=str))}</pre>{cap}")
        return self

    def figure(self, fig: Any, caption: str = "") -> Section:
        """A Plotly figure (from :mod:`interp.plot`), drawn as SVG by the inlined plotly.js."""
        self.n_figures += 1
        div_id = f"fig-{self.anchor}-{self.n_figures}"
        spec = fig.to_json().replace("</", "<\\/")
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(
            f'<div class="figure" id="{div_id}"></div>{cap}'
            f'<script>(function(){{var s={spec};Plotly.newPlot("{div_id}",s.data,s.layout,'
            '{responsive:true,displaylogo:false});})();</script>'
        )
        return self

    def result(self, res: Any, views: Sequence[str | None] = (None,), *, name: str | None = None,
               caption: str = "", **options: Any) -> Section:
        """A tool's result: its figure for each view (``None``: the default view) and its ``to_dict()`` in the
        JSON dump under ``name`` (default: the result's class name)."""
        for view in views:
            self.figure(res.plot(view, **options), caption=caption)
        key = name or type(res).__name__
        self.data[key] = res.to_dict()
        return self

    def numbers(self, name: str, values: Any, axes: Sequence[str], labels: dict[str, Sequence[Any]] | None = None
                ) -> Section:
        """Record numbers for the JSON dump as ``{"axes", "labels", "values"}``."""
        vals = values.tolist() if hasattr(values, "tolist") else values
        self.data[name] = {"axes": list(axes), "labels": {k: list(v) for k, v in (labels or {}).items()},
                           "values": vals}
        return self


class Report:
    """An HTML report built from sections.

    Example:
        >>> from interp.report import Report
        >>> from interp.plot import heatmap
        >>> rep = Report("Demo", command="python demo.py")
        >>> sec = rep.section("Numbers", "A 2 x 2 example: colour is the value.")
        >>> _ = sec.figure(heatmap([[1.0, -1.0], [0.5, 0.0]], x_labels=["a", "b"], y_labels=["0", "1"], title="demo"))
        >>> _ = sec.numbers("demo", [[1.0, -1.0], [0.5, 0.0]], axes=["row", "col"])
        >>> import tempfile, pathlib
        >>> out = rep.write(pathlib.Path(tempfile.mkdtemp()) / "demo.html")
        >>> out.with_suffix(".json").exists()
        True
    """

    def __init__(self, title: str, command: str = "", subtitle: str = "") -> None:
        self.title = title
        self.command = command
        self.subtitle = subtitle
        self.sections: list[Section] = []
        self._anchors: set[str] = set()

    def section(self, title: str, intro: str) -> Section:
        """A new section, opened by ``intro``: one sentence saying what it shows and how to read it."""
        if not intro.strip():
            raise ValueError(f"section {title!r} needs an intro sentence (what it shows and how to read it)")
        sec = Section(title=title, anchor=_slug(title, self._anchors), intro=intro)
        self.sections.append(sec)
        return sec

    def to_html(self) -> str:
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        toc = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>'
                       f'<p class="intro">{html.escape(s.intro)}</p>{"".join(s.blocks)}</section>'
                       for s in self.sections)
        sub = html.escape(self.subtitle)
        cmd = f"<p>command: <code>{html.escape(self.command)}</code> · {created}</p>" if self.command else ""
        js = plotlyjs_source().replace("</script", "<\\/script")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style><script>{js}</script></head>"
            f"<body><header><h1>{html.escape(self.title)}</h1><p>{sub}</p>{cmd}</header>"
            f"<div class='wrap'><nav><b>Contents</b>{toc}</nav><main>{body}</main></div></body></html>"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report's numbers: ``{"title", "command", "sections": {title: {name: labelled array}}}``."""
        return {"title": self.title, "command": self.command,
                "sections": {s.title: s.data for s in self.sections if s.data}}

    def write(self, path: str | Path, json_path: str | Path | None = None) -> Path:
        """Write the HTML file and the JSON dump (default: same name with ``.json``); returns the HTML path."""
        from interp.trace.layout import atomic_write_bytes

        out = Path(path)
        atomic_write_bytes(out, self.to_html().encode("utf-8"))
        jp = Path(json_path) if json_path else out.with_suffix(".json")
        atomic_write_bytes(jp, json.dumps(self.to_dict(), indent=1, default=str).encode("utf-8"))
        return out
