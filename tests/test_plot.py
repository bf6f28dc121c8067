"""interp.plot: labels land in the figures, signed data is centred at zero, every user string is
escaped, duplicate tokens stay distinct, big heatmaps stay readable, and plot imports nothing else
from interp."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

import interp.plot as ip
from interp.plot.theme import DIVERGING, SEQUENTIAL

PLOT = Path(__file__).resolve().parents[1] / "interp" / "plot"
EVIL = "<script>alert(1)</script>"
BOLD = "<b>"
TOKENS = ["The", " cat", EVIL, " cat", "\n", BOLD]


def _strings(fig: go.Figure) -> list[str]:
    """Every string in the serialised figure (what plotly.js will render)."""
    out: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(fig.to_json()))
    return out


def _assert_escaped(fig: go.Figure) -> None:
    strings = _strings(fig)
    assert not [s for s in strings if "<script" in s or "<b>" in s or "</script" in s]
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in s for s in strings)


# --- heatmap ---------------------------------------------------------------------------------

def test_heatmap_labels_and_shapes_land_in_the_figure() -> None:
    z = np.arange(12, dtype=float).reshape(3, 4)
    fig = ip.heatmap(z, ["a", "b", "c", "d"], ["L0", "L1", "L2"], x_title="position", y_title="layer",
                     colorbar_title="logit", title="demo")
    assert isinstance(fig, go.Figure)
    (tr,) = fig.data
    np.testing.assert_array_equal(np.asarray(tr.z), z)
    assert list(fig.layout.xaxis.ticktext) == ["a", "b", "c", "d"]
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1", "L2"]
    assert np.array(tr.hovertext).shape == (3, 4)
    assert tr.hovertext[1][2] == "layer: L1<br>position: c<br>logit: 6"
    assert tr.colorbar.title.text == "logit"
    assert fig.layout.xaxis.title.text == "position" and fig.layout.title.text == "demo"
    assert fig.layout.template.layout.font.size == 13  # the interp theme is applied


def test_signed_data_is_centred_at_zero_and_probabilities_are_not() -> None:
    signed = ip.heatmap(np.array([[-2.0, 0.5], [1.0, 3.0]]))
    assert signed.data[0].zmid == 0
    assert [tuple(c) for c in signed.data[0].colorscale] == list(DIVERGING)
    probs = ip.heatmap(np.array([[0.1, 0.9], [0.5, 0.5]]))
    assert probs.data[0].zmid is None
    assert [tuple(c) for c in probs.data[0].colorscale] == list(SEQUENTIAL)
    forced = ip.heatmap(np.array([[0.1, 0.9]]), signed=True, zmax=2.0)
    assert forced.data[0].zmid == 0 and (forced.data[0].zmin, forced.data[0].zmax) == (-2.0, 2.0)
    attn = ip.attention_pattern(np.eye(3), ["a", "b", "c"])
    assert attn.data[0].zmid is None and attn.data[0].zmin == 0


def test_heatmap_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[-1.0, 2.0]], dtype=torch.bfloat16, requires_grad=True) * 2
    fig = ip.heatmap(x)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), [[-2.0, 4.0]])
    assert ip.as_numpy(torch.ones(2, 3, dtype=torch.float16)).dtype == np.float64


def test_heatmap_hover_and_cell_text() -> None:
    hover = [[[(" Paris", 0.5), (" Lyon", 0.25)], None]]
    fig = ip.heatmap(np.array([[0.5, 0.1]]), ["x", "y"], ["L0"], hover=hover, cell_text=[[" Paris", " Rome"]])
    tr = fig.data[0]
    assert tr.hovertext[0][0].endswith("␣Paris<br>␣Paris  0.5<br>␣Lyon  0.25")
    assert list(tr.text[0]) == ["␣Paris", "␣Rome"] and tr.texttemplate == "%{text}"


def test_heatmap_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="x_labels"):
        ip.heatmap(np.zeros((2, 3)), x_labels=["a", "b"])
    with pytest.raises(ValueError, match="cell_text"):
        ip.heatmap(np.zeros((2, 3)), cell_text=[["a"] * 3])
    with pytest.raises(ValueError, match="2 dimensions"):
        ip.heatmap(np.zeros(3))


def test_duplicate_tokens_stay_distinct() -> None:
    tokens = ["the", " cat", "the", " cat"]
    fig = ip.heatmap(np.random.rand(2, 4), tokens, ["L0", "L1"])
    assert list(fig.data[0].x) == [0, 1, 2, 3]
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2, 3]
    assert list(fig.layout.xaxis.ticktext) == ["the", "␣cat", "the", "␣cat"]
    assert len(set(fig.data[0].hovertext[0])) == 4  # duplicate labels get their position in the hover
    attn = ip.attention_pattern(np.tril(np.ones((4, 4))) / 4, tokens)
    assert len({h for row in attn.data[0].hovertext for h in row}) == 16
    assert attn.data[0].hovertext[2][0].startswith("query 2: the<br>key 0: the")
    bars = ip.bar_top_tokens(tokens, [4, 3, 2, 1])
    assert list(bars.data[0].y) == [0, 1, 2, 3] and list(bars.layout.yaxis.ticktext) == ["the", "␣cat"] * 2


def test_whitespace_tokens_are_visible() -> None:
    assert ip.token_label("\n") == "\\n"
    assert ip.token_label(" ") == "␣"
    assert ip.token_label("\t x ") == "\\t x␣"
    assert ip.token_label("") == "∅"
    fig = ip.attention_pattern(np.eye(3), ["a", "\n", " "])
    assert list(fig.layout.xaxis.ticktext) == ["a", "\\n", "␣"]


def test_30_layers_by_200_tokens_is_readable() -> None:
    """Every token and layer keeps a label at the figure's own size, vertical and small; cell text too dense to
    draw stays in the hover; very wide inputs thin their ticks. (How fast this is: benchmarks/plot.py.)"""
    rng = np.random.default_rng(0)
    tokens = [f" tok{i % 37}" for i in range(200)]
    fig = ip.heatmap(rng.normal(size=(30, 200)), tokens, [f"L{i}" for i in range(30)],
                     cell_text=[[" x"] * 200] * 30, hover=[[" y"] * 200] * 30, x_title="position", y_title="layer")
    lay = fig.layout
    assert 800 <= lay.width <= 2400 and 400 <= lay.height <= 1000
    assert len(lay.xaxis.tickvals) == 200 and len(lay.yaxis.tickvals) == 30  # every token and layer labelled
    assert lay.xaxis.tickangle == -90
    plot_w = lay.width - lay.margin.l - lay.margin.r
    assert plot_w / 200 >= lay.xaxis.tickfont.size  # vertical labels one font size apart: no overlap
    assert 8 <= lay.xaxis.tickfont.size <= 11 and 8 <= lay.yaxis.tickfont.size <= 11
    assert lay.margin.b >= 0.5 * lay.xaxis.tickfont.size * max(len(t) for t in tokens)  # room for vertical labels
    assert fig.data[0].text is None  # too dense for cell text; it stays in the hover
    assert "␣x" in fig.data[0].hovertext[0][0]
    big = ip.heatmap(rng.normal(size=(30, 2000)))
    assert big.layout.width <= 2400 and len(big.layout.xaxis.tickvals) < 2000
    attn = ip.attention_pattern(rng.random((200, 200)), tokens)
    assert attn.layout.width <= 2000 and attn.layout.height <= 2000
    assert json.loads(fig.to_json())["layout"]["xaxis"]["tickangle"] == -90  # it serialises (what a page draws)
    assert np.asarray(fig.data[0].z).shape == (30, 200)


def test_attention_cells_stay_square_at_any_width() -> None:
    fig = ip.attention_pattern(np.eye(4), ["a", "b", "c", "d"])
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert fig.layout.xaxis.constrain == "domain" and fig.layout.yaxis.constrain == "domain"
    assert ip.heatmap(np.eye(4)).layout.yaxis.scaleanchor is None  # other heatmaps fill their box


def test_builders_are_typed_to_return_figures() -> None:
    import inspect

    assert ip.Figure is go.Figure
    for name in ("heatmap", "attention_pattern", "layer_curves", "bar_top_tokens", "scatter", "sankey",
                 "layered_graph", "apply_theme"):
        fn = getattr(ip, name)
        assert eval(inspect.signature(fn).return_annotation, fn.__globals__) is go.Figure, name


# --- lines -----------------------------------------------------------------------------------

def test_layer_curves_with_ribbons() -> None:
    m = {"a": np.linspace(0, 1, 5), "b": np.linspace(1, 0, 5)}
    fig = ip.layer_curves(m, lower={"a": m["a"] - 0.1}, upper={"a": m["a"] + 0.1}, y_title="p",
                          x_labels=["emb", "L0", "L1", "L2", "L3"])
    assert [t.fill for t in fig.data] == ["toself", None, None]
    assert [t.name for t in fig.data if t.fill is None] == ["a", "b"]
    assert len(fig.data[0].x) == 10
    assert list(fig.layout.xaxis.ticktext) == ["emb", "L0", "L1", "L2", "L3"]
    assert "[-0.1, 0.1]" in fig.data[1].hovertext[0]
    with pytest.raises(ValueError, match="ribbon"):
        ip.layer_curves(m, lower={"a": [0.0]}, upper={"a": [1.0]})


def test_bar_top_tokens_colours_by_sign() -> None:
    fig = ip.bar_top_tokens([" a", " b"], [1.0, -1.0], x_title="logit diff")
    assert fig.data[0].orientation == "h" and fig.layout.yaxis.autorange == "reversed"
    assert fig.data[0].marker.color[0] != fig.data[0].marker.color[1]
    assert ip.bar_top_tokens([" a", " b"], [0.7, 0.2]).data[0].marker.color == ip.bar_top_tokens(
        [" c"], [0.1]).data[0].marker.color
    with pytest.raises(ValueError):
        ip.bar_top_tokens(["a"], [1.0, 2.0])


def test_scatter_numeric_and_group_colours() -> None:
    fig = ip.scatter([0, 1, 2], [0, 1, 0], color=[-1.0, 0.0, 2.0], labels=["a", "b", "c"], color_title="score")
    assert fig.data[0].marker.cmid == 0 and fig.data[0].marker.colorbar.title.text == "score"
    fig = ip.scatter([0, 1, 2], [0, 1, 0], color=[0.1, 0.2, 0.3])
    assert fig.data[0].marker.cmid is None
    fig = ip.scatter([0, 1, 2], [0, 1, 0], color=["pos", "neg", "pos"])
    assert [t.name for t in fig.data] == ["pos", "neg"] and list(fig.data[0].x) == [0, 2]
    big = ip.scatter(np.arange(6000), np.arange(6000))
    assert isinstance(big.data[0], go.Scattergl)


# --- graph -----------------------------------------------------------------------------------

def test_sankey_links_and_signs() -> None:
    fig = ip.sankey(["a", "b", "c"], [(0, 2, 1.0), (1, 2, -0.5, "note")], value_title="attribution")
    link = fig.data[0].link
    assert list(link.source) == [0, 1] and list(link.target) == [2, 2] and list(link.value) == [1.0, 0.5]
    assert link.color[0] != link.color[1]
    assert link.customdata[1] == "b → c<br>attribution: -0.5<br>note"
    with pytest.raises(ValueError, match="outside"):
        ip.sankey(["a"], [(0, 1, 1.0)])


def test_layered_graph_nodes_and_edges() -> None:
    fig = ip.layered_graph([["f1", "f2"], ["g1"], ["h1", "h2", "h3"]],
                           [((0, 0), (1, 0), 1.0), ((0, 1), (1, 0), -0.2), ((1, 0), (2, 2), 0.5)],
                           layer_names=["L0", "L1", "L2"], node_values=[[0.1, -0.3], [1.0], [0.0, 0.2, 0.4]])
    nodes = fig.data[-1]
    assert list(nodes.text) == ["f1", "f2", "g1", "h1", "h2", "h3"]
    assert nodes.marker.cmid == 0
    mids = fig.data[-2]
    assert len(mids.hovertext) == 3 and mids.hovertext[1] == "f2 → g1<br>weight: -0.2"
    assert sum(len(t.x) for t in fig.data[:-2]) == 9  # three segments, each x0, x1, None
    assert list(fig.layout.xaxis.ticktext) == ["L0", "L1", "L2"]
    with pytest.raises(ValueError, match="not in layers"):
        ip.layered_graph([["a"]], [((0, 0), (1, 0), 1.0)])


def test_layered_graph_with_many_layers_alternates_labels() -> None:
    """At a column's width, 30 columns of labels would overlap: they alternate above and below the nodes."""
    layers = [[f"L{la}H{h}" for h in range(2)] for la in range(30)]
    fig = ip.layered_graph(layers, [((0, 0), (1, 1), 1.0)])
    where = list(fig.data[-1].textposition)
    assert where[:4] == ["top center", "top center", "bottom center", "bottom center"]
    assert fig.data[-1].textfont.size < 12 and fig.data[-1].marker.size < 16
    few = ip.layered_graph(layers[:3], [((0, 0), (1, 1), 1.0)])
    assert set(few.data[-1].textposition) == {"top center"}


# --- escaping, every builder -----------------------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda: ip.heatmap(np.random.rand(2, 6), TOKENS, [EVIL, BOLD], title=EVIL, x_title=EVIL, y_title=BOLD,
                       colorbar_title=EVIL, hover=[[EVIL] * 6] * 2, cell_text=[[EVIL] * 6] * 2),
    lambda: ip.attention_pattern(np.eye(6), TOKENS, title=EVIL, hover=[[(EVIL, 0.5)] * 6] * 6),
    lambda: ip.layer_curves({EVIL: [1.0, 2.0], BOLD: [0.0, 1.0]}, lower={EVIL: [0.5, 1.5]},
                            upper={EVIL: [1.5, 2.5]}, x_labels=[EVIL, BOLD], title=EVIL, y_title=BOLD, x_title=BOLD),
    lambda: ip.bar_top_tokens(TOKENS, np.arange(6.0), title=EVIL, x_title=BOLD, hover=[EVIL] * 6),
    lambda: ip.scatter(np.arange(6), np.arange(6), labels=TOKENS, color=[EVIL, BOLD] * 3, title=EVIL,
                       x_title=BOLD, y_title=EVIL, color_title=BOLD),
    lambda: ip.scatter(np.arange(6), np.arange(6), labels=TOKENS, color=np.arange(6.0), color_title=EVIL),
    lambda: ip.sankey(TOKENS, [(0, 2, 1.0, EVIL), (1, 5, -2.0)], title=EVIL, value_title=BOLD, node_hover=[EVIL] * 6),
    lambda: ip.layered_graph([TOKENS[:3], TOKENS[3:]], [((0, 2), (1, 2), 1.0, EVIL)], layer_names=[EVIL, BOLD],
                             node_values=[[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]], title=EVIL, weight_title=BOLD,
                             value_title=EVIL, node_hover=[[EVIL] * 3, [BOLD] * 3]),
], ids=["heatmap", "attention_pattern", "layer_curves", "bar_top_tokens", "scatter_groups", "scatter_numeric",
        "sankey", "layered_graph"])
def test_every_builder_escapes_user_text(build) -> None:
    fig = build()
    assert isinstance(fig, go.Figure)
    _assert_escaped(fig)
    if fig.layout.title.text is not None:
        assert fig.layout.title.text == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_escape_label_only_touches_what_plotly_parses() -> None:
    assert ip.escape_label('a & "b" <i>') == 'a &amp; "b" &lt;i&gt;'  # plotly would show &quot; verbatim
    assert ip.escape_label(3) == "3"


# --- house rules -----------------------------------------------------------------------------

def _imported_modules(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append(("." * node.level + (node.module or ""), id(node) in top))
    return out


@pytest.mark.parametrize("path", sorted(PLOT.glob("*.py")), ids=lambda p: p.name)
def test_plot_imports_nothing_else_from_interp(path: Path) -> None:
    for mod, top in _imported_modules(path):
        assert not mod.startswith("."), f"{path.name}: use absolute imports ({mod})"
        if mod == "interp" or mod.startswith("interp."):
            assert mod.startswith("interp.plot"), f"{path.name} imports {mod}"
        assert not (mod.split(".")[0] == "torch" and top), f"{path.name} imports torch at module level"


def _runtime_imports(path: Path) -> list[str]:
    """Modules a file imports when it runs (imports under ``if TYPE_CHECKING:`` are for type hints only)."""
    tree = ast.parse(path.read_text())
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for n in child.orelse:
                    visit(n)
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append(child.module)
            elif isinstance(child, ast.Import):
                out.extend(a.name for a in child.names)
            visit(child)

    visit(tree)
    return out


def test_plot_is_the_only_package_importing_plotly() -> None:
    """Other packages draw through interp.plot; they may name ``plotly.graph_objects.Figure`` in type hints only
    (``interp.plot.Figure`` is the same class)."""
    root = PLOT.parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if PLOT not in p.parents
                 and any(m.split(".")[0] == "plotly" for m in _runtime_imports(p))]
    assert not offenders


def test_plotlyjs_source_is_the_bundle() -> None:
    js = ip.plotlyjs_source()
    assert "plotly.js" in js[:200] and len(js) > 1_000_000


def test_importing_plot_registers_nothing() -> None:
    code = "import plotly.io as pio, interp.plot; assert 'interp' not in pio.templates; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
