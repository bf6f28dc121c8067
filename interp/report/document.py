"""``Report``: sections of text, tables and Plotly figures → one self-contained HTML file + JSON.

The HTML works offline: plotly.js is inlined once, every text is escaped, and each figure's JSON
is embedded with every ``<`` written ``\\u003c``, so that no token string can close a ``<script>`` element.

The page is responsive: every figure takes the full width of the text column (its fixed width, if
the builder set one, is dropped; its height is kept) and redraws when the window is resized; tick
labels that would overlap at the width the figure gets are thinned out in the browser (every
label stays in the hover). Tables and code blocks scroll inside their box instead of overflowing.

The JSON dump (:meth:`Report.to_dict`, what the CLI's ``--json`` writes) is
``{"title", "command", "sections": {section title: {name: data}}}``, where ``data`` is a labelled
array ``{"axes", "labels", "values"}`` (:meth:`Section.numbers`) or a result's ``to_dict()``
(:meth:`Section.result`). NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from interp.errors import BadInputError
from interp.plot import plotlyjs_source

if TYPE_CHECKING:
    from interp.plot import Figure

DEFAULT_FIGURE_HEIGHT = 450  # px, for figures whose builder set no height (Plotly's own default)

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#fafbfc}
header{background:#1f2933;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px;overflow-wrap:anywhere}
header p{margin:4px 0 0;color:#cbd2d9;font-size:13px;overflow-wrap:anywhere}
.wrap{display:flex;align-items:flex-start}
nav{position:sticky;top:0;flex:0 0 200px;padding:16px;font-size:13px;max-height:100vh;overflow-y:auto}
nav a{display:block;color:#3e4c59;text-decoration:none;padding:3px 0}nav a:hover{color:#0b69a3}
main{flex:1 1 auto;padding:8px 32px 64px;max-width:1280px;min-width:0}
section{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:12px 20px;margin:18px 0;min-width:0}
h2{font-size:18px;margin:6px 0 6px}p{overflow-wrap:anywhere}section p{font-size:14px;margin:6px 0 10px}
p.intro{color:#3e4c59;font-size:14px;margin:0 0 12px}p.caption{color:#616e7c;font-size:13px;margin:2px 0 14px}
.figure{width:100%;max-width:100%;margin:4px 0}
.table{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #e4e7eb;padding:3px 8px;text-align:left}
th{background:#f5f7fa}pre{background:#f5f7fa;padding:10px;overflow:auto;font-size:12px;max-height:360px;max-width:100%}
.tok{background:#eef2f7;border-radius:3px;padding:0 2px;margin:0 1px;white-space:pre;display:inline-block}
@media (max-width:800px){.wrap{display:block}nav{position:static;max-height:none}main{padding:8px 12px 48px}
section{padding:10px 12px}}
"""

# Draws one figure at the width of its box and keeps it readable there: tick labels given as an explicit list
# (token strings, layer names) are thinned to every n-th one when they would overlap at the width the figure got,
# and x labels the builder set at a fixed angle are turned (0, -45 or -90 degrees) to what that width needs.
_JS = """
var interpReport=(function(){
function plain(t){return String(t).replace(/&[a-z]+;|&#[0-9]+;/g,'x').replace(/<[^>]*>/g,'');}
function extent(angle,chars,font){var w=chars*font*0.62;
 return angle===0?font+6:Math.abs(angle)<80?0.72*w+8:w+8;}
function fit(gd){
 var fl=gd._fullLayout,t=gd._interpTicks,upd={},any=false;if(!fl||!t||gd._interpBusy)return;
 Object.keys(t).forEach(function(n){
  var ax=fl[n],s=t[n];if(!ax||!ax._length||!ax.range)return;
  var units=Math.abs(ax.range[1]-ax.range[0]);if(!units)return;
  var px=ax._length*s.step/units,font=(ax.tickfont&&ax.tickfont.size)||12,tall=font+2,angle=s.angle,stride;
  if(n.charAt(0)==='x'&&s.angle!==null){
   if(px>=s.chars*font*0.62+6){angle=0;stride=1;}else if(px>=font*1.45+2){angle=-45;stride=1;}
   else{angle=-90;stride=Math.ceil(tall/px);}
  }else{stride=Math.max(1,Math.ceil(tall/px));}
  if(stride!==s.stride||angle!==s.now){s.stride=stride;s.now=angle;any=true;
   upd[n+'.tickvals']=s.vals.filter(function(v,i){return i%stride===0;});
   upd[n+'.ticktext']=s.text.filter(function(v,i){return i%stride===0;});
   if(angle!==null&&angle!==s.shown){
    upd[n+'.tickangle']=angle;
    if(s.bottom!==null){  // the bottom margin was sized for the labels at the old angle: resize it with them
     var d=extent(s.shown,s.chars,font)-extent(angle,s.chars,font),lay=gd.layout;
     upd['margin.b']=Math.max(20,lay.margin.b-d);
     if(lay.height){upd.height=lay.height-(lay.margin.b-upd['margin.b']);gd.style.minHeight=upd.height+'px';}
    }
    s.shown=angle;}}
 });
 if(any){gd._interpBusy=true;Plotly.relayout(gd,upd).then(function(){gd._interpBusy=false;},
  function(){gd._interpBusy=false;});}
}
function plot(id,spec){
 var gd=document.getElementById(id),ticks={};
 Object.keys(spec.layout).forEach(function(n){
  var a=spec.layout[n];
  if(/^[xy]axis[0-9]*$/.test(n)&&a&&a.tickmode==='array'&&a.tickvals&&a.ticktext&&a.tickvals.length>1){
   var vals=a.tickvals.slice(),text=a.ticktext.slice(),step=Math.abs(vals[1]-vals[0])||1;
   var angle=typeof a.tickangle==='number'?a.tickangle:null;
   var m=spec.layout.margin,bottom=(n==='xaxis'&&m&&typeof m.b==='number')?m.b:null;
   ticks[n]={vals:vals,text:text,step:step,stride:1,angle:angle,now:angle,shown:angle,bottom:bottom,
    chars:Math.max.apply(null,text.map(function(x){return plain(x).length;}))};}
 });
 return Plotly.newPlot(gd,spec.data,spec.layout,{responsive:true,displaylogo:false}).then(function(){
  gd._interpTicks=ticks;fit(gd);gd.on('plotly_afterplot',function(){fit(gd);});});
}
return {plot:plot,fit:fit};
})();
"""


class _Plottable(Protocol):
    """What :meth:`Section.result` needs of a result (every :class:`interp.Result` has it)."""

    def plot(self, view: str | None = None, **options: Any) -> Figure: ...

    def to_dict(self) -> dict[str, Any]: ...


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def jsonable(x: Any) -> Any:
    """``x`` with tensors and arrays as nested lists and every NaN or infinity as ``None`` (JSON has neither).

    Example:
        >>> jsonable({"a": [1.0, float("nan")], "b": (2, float("inf"))})
        {'a': [1.0, None], 'b': [2, None]}
    """
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if hasattr(x, "detach"):  # a torch tensor (report does not need torch to check)
        x = x.detach().cpu().tolist()
    elif hasattr(x, "tolist"):  # numpy arrays and scalars
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float):
        return jsonable(x)
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


_NUMBERS_LIST = re.compile(r"\[\s*(-?[0-9.eE+-]+(?:,\s*-?[0-9.eE+-]+)*)\s*\]")


def _pretty_json(obj: Any) -> str:
    """Indented JSON with lists of numbers (shapes, small vectors) kept on one line."""
    text = json.dumps(obj, indent=1, default=str)
    return _NUMBERS_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def figure_spec(fig: Figure) -> dict[str, Any]:
    """The figure as Plotly JSON, made to fill the width of its box: no fixed width, its height kept.

    Example:
        >>> from interp.plot import heatmap
        >>> spec = figure_spec(heatmap([[1.0, 2.0]], width=3000, height=300))
        >>> "width" in spec["layout"], spec["layout"]["height"], spec["layout"]["autosize"]
        (False, 300, True)
    """
    spec = json.loads(fig.to_json())
    layout = spec.setdefault("layout", {})
    layout.pop("width", None)
    layout["autosize"] = True
    layout.setdefault("height", DEFAULT_FIGURE_HEIGHT)
    return spec


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
        """A table of values (every cell escaped); a wide one scrolls inside the column."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f'<div class="table"><table><tr>{head}</tr>{body}</table></div>{cap}')
        return self

    def code(self, obj: Any, caption: str = "") -> Section:
        """A pretty-printed JSON block."""
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f"<pre>{html.escape(_pretty_json(obj))}</pre>{cap}")
        return self

    def figure(self, fig: Figure, caption: str = "") -> Section:
        """A Plotly figure (from :mod:`interp.plot`), drawn by the inlined plotly.js at the column's full width."""
        self.n_figures += 1
        div_id = f"fig-{self.anchor}-{self.n_figures}"
        spec = figure_spec(fig)
        # "<" only occurs inside JSON strings: as \u003c no text can end the <script> element or open a comment
        text = json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(
            f'<div class="figure" id="{div_id}" style="min-height:{int(spec["layout"]["height"])}px"></div>{cap}'
            f'<script>interpReport.plot("{div_id}",{text});</script>'
        )
        return self

    def result(self, res: _Plottable, views: Sequence[str | None] = (None,), *, name: str | None = None,
               caption: str = "", **options: Any) -> Section:
        """A tool's result: its figure for each view (``None``: the default view; ``options`` go to every
        ``plot`` call) and its ``to_dict()`` in the JSON dump under ``name`` (default: the result's class name)."""
        for view in views:
            self.figure(res.plot(view, **options), caption=caption)
        key = name or type(res).__name__
        self.data[key] = jsonable(res.to_dict())
        return self

    def numbers(self, name: str, values: Any, axes: Sequence[str], labels: Mapping[str, Sequence[Any]] | None = None
                ) -> Section:
        """Record numbers for the JSON dump as ``{"axes", "labels", "values"}`` (NaN → ``null``)."""
        self.data[name] = {"axes": list(axes), "labels": {k: jsonable(list(v)) for k, v in (labels or {}).items()},
                           "values": jsonable(values)}
        return self


# bidirectional controls (they reorder the text around them) and invisible characters (zero-width, soft hyphen, BOM)
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\u206a-\u206f\ufeff]")


def visible(text: str) -> str:
    r"""``text`` with bidirectional controls and zero-width characters written as escapes (``\u202e``), so that a
    prompt shows what it holds and cannot reorder the page around it.

    Example:
        >>> visible("abc\u202edef\u200b")
        'abc\\u202edef\\u200b'
    """
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Report:
    """An HTML report built from sections.

    Example:
        >>> from interp.report import Report
        >>> from interp.plot import heatmap
        >>> rep = Report("Demo", command="python demo.py")
        >>> sec = rep.section("Numbers", "A 2 x 2 example: colour is the value.")
        >>> _ = sec.figure(heatmap([[1.0, -1.0], [0.5, 0.0]], x_labels=["a", "b"], y_labels=["0", "1"], title="demo"))
        >>> _ = sec.numbers("demo", [[1.0, -1.0], [0.5, float("nan")]], axes=["row", "col"])
        >>> rep.to_dict()["sections"]["Numbers"]["demo"]["values"]
        [[1.0, -1.0], [0.5, None]]
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
        """A new section, opened by ``intro``: one sentence saying what it shows and how to read it.

        Raises:
            BadInputError: ``intro`` is empty.
        """
        if not isinstance(intro, str) or not intro.strip():
            raise BadInputError(f"section {title!r} needs an intro sentence (what it shows and how to read it), "
                                f"got {intro!r}")
        sec = Section(title=title, anchor=_slug(title, self._anchors), intro=intro.strip())
        self.sections.append(sec)
        return sec

    def to_html(self) -> str:
        """The self-contained page: plotly.js inlined once, a table of contents, one ``<section>`` per section."""
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        toc = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>'
                       f'<p class="intro">{html.escape(s.intro)}</p>{"".join(s.blocks)}</section>'
                       for s in self.sections)
        sub = html.escape(visible(self.subtitle))
        cmd = f"<p>command: <code>{html.escape(visible(self.command))}</code> · {created}</p>" if self.command else ""
        js = plotlyjs_source().replace("</script", "<\\/script")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(visible(self.title))}</title><style>{_CSS}</style><script>{js}\n{_JS}</script></head>"
            f"<body><header><h1>{html.escape(visible(self.title))}</h1><p>{sub}</p>{cmd}</header>"
            f"<div class='wrap'><nav><b>Contents</b>{toc}</nav><main>{body}</main></div></body></html>"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report's numbers: ``{"title", "command", "sections": {title: {name: data}}}`` (sections without
        numbers are left out; ``data`` is a labelled array or a result's ``to_dict()``)."""
        return {"title": self.title, "command": self.command,
                "sections": {s.title: s.data for s in self.sections if s.data}}

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON text (NaN and infinities as ``null``)."""
        return json.dumps(jsonable(self.to_dict()), indent=1, allow_nan=False)

    def write(self, path: str | Path, json_path: str | Path | None = None) -> Path:
        """Write the HTML file and the JSON dump (default: same name with ``.json``); returns the HTML path."""
        from interp.fileio import atomic_write_bytes

        out = Path(path)
        atomic_write_bytes(out, self.to_html().encode("utf-8"))
        jp = Path(json_path) if json_path else out.with_suffix(".json")
        atomic_write_bytes(jp, self.to_json().encode("utf-8"))
        return out


__all__ = ["Report", "Section", "figure_spec", "jsonable", "visible"]
