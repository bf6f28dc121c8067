"""The HTML report: escaping, self-containment, the JSON layout, every section opened by its intro, and a real
headless Chromium rendering it offline at the column's width without overflow."""

from __future__ import annotations

import html
import importlib.util
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from interp.errors import BadInputError, UnknownNameError
from interp.models import Model
from interp.plot import Figure, attention_pattern, bar_top_tokens, heatmap, layered_graph
from interp.report import Report, build_report
from interp.report.document import figure_spec
from interp.sites import HeadRef
from interp.trace.results import Result

EVIL = "<script>alert(1)</script>"
REPO = Path(__file__).resolve().parents[1]
BUILT_IN = ["Model", "Next-token prediction", "Residual stream", "Attention heads", "Clean vs corrupted",
            "Trace manifest"]


def _evil_report() -> Report:
    rep = Report(f"title {EVIL}", command=f"cmd {EVIL}", subtitle=EVIL)
    sec = rep.section(f"section {EVIL}", f"An intro with {EVIL} in it.")
    sec.text(EVIL).tokens([EVIL, " the", "\n"]).table(["h", EVIL], [[1, EVIL]]).code({"k": EVIL})
    sec.figure(heatmap([[1.0, -2.0]], x_labels=[EVIL, "b"], y_labels=["0"], title=EVIL))
    sec.figure(attention_pattern([[1.0, 0.0], [0.5, 0.5]], [EVIL, "x"]))
    sec.numbers("m", [[1.0, -2.0]], axes=["layer", "pos"], labels={"pos": [EVIL, "b"]})
    return rep


def _sections(page: str) -> list[tuple[str, str, str]]:
    """``(title, first paragraph's class, its text)`` of every ``<section>`` of a page, unescaped."""
    out = []
    for body in re.findall(r"<section id=\"[^\"]+\">(.*?)</section>", page, flags=re.S):
        m = re.match(r"<h2>([^<]*)</h2><p( class=\"[^\"]*\")?>([^<]*)</p>", body)
        assert m, f"a section does not open with its title and a paragraph: {body[:200]!r}"
        out.append((html.unescape(m.group(1)), (m.group(2) or "").strip(), html.unescape(m.group(3))))
    return out


# -- the document ---------------------------------------------------------------------------------------------
def test_report_escapes_every_string(tmp_path: Path) -> None:
    out = _evil_report().write(tmp_path / "r.html")
    text = out.read_text()
    assert EVIL not in text
    assert "alert(1)" in text  # present, but only as escaped text
    assert text.count("<script>") == 1 + 2  # plotly.js (and the drawing helper) once + one per figure
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["sections"][f"section {EVIL}"]["m"] == {"axes": ["layer", "pos"], "labels": {"pos": [EVIL, "b"]},
                                                      "values": [[1.0, -2.0]]}


def test_figure_json_cannot_end_its_script(tmp_path: Path) -> None:
    """Inside the figures' scripts every '<' is written \\u003c: no token can close the element or open a comment."""
    rep = Report("t")
    raw = Figure(layout={"title": {"text": "</script><!--"}, "xaxis": {"title": {"text": "</SCRIPT >"}}})
    rep.section("s", "An intro.").figure(raw)
    text = rep.to_html()
    script = text[text.index('interpReport.plot("fig-s-1"'):]
    script = script[: script.index("</script>")]
    assert "<" not in script and "\\u003c/script>\\u003c!--" in script and "\\u003c/SCRIPT >" in script


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = _evil_report().write(tmp_path / "r.html").read_text()
    assert "<script src" not in text and "<link" not in text  # nothing fetched from a CDN
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js inlined
    assert "width=device-width" in text  # a phone gets the narrow layout, not a zoomed-out desktop page


def test_section_anchors_are_unique() -> None:
    rep = Report("t")
    a, b = rep.section("Same", "One."), rep.section("Same", "Two.")
    assert a.anchor != b.anchor
    assert f'href="#{b.anchor}"' in rep.to_html()


@pytest.mark.parametrize("intro", ["", "   ", None])
def test_a_section_needs_an_intro(intro: Any) -> None:
    with pytest.raises(BadInputError, match="intro sentence"):
        Report("t").section("Lonely", intro)


def test_every_section_opens_with_its_intro() -> None:
    rep = Report("t")
    rep.section("First", "What the first shows.").text("More text.").figure(heatmap([[1.0]]))
    rep.section("Second", "  What the second shows.  ").table(["a"], [[1]])
    assert _sections(rep.to_html()) == [("First", 'class="intro"', "What the first shows."),
                                        ("Second", 'class="intro"', "What the second shows.")]


def test_figures_take_the_column_width_and_keep_their_height() -> None:
    """A builder's fixed width (the K-composition graph asks for up to 2000 px) is dropped: the figure fills its
    column and redraws when the window changes; its height stays."""
    wide = heatmap(np.zeros((3, 400)), width=2500, height=333)
    spec = figure_spec(wide)
    assert "width" not in spec["layout"] and spec["layout"]["autosize"] is True and spec["layout"]["height"] == 333
    assert wide.layout.width == 2500  # the caller's figure is not changed
    rep = Report("t")
    rep.section("s", "An intro.").figure(wide).figure(Figure())
    text = rep.to_html()
    assert 'id="fig-s-1" style="min-height:333px"' in text and 'id="fig-s-2" style="min-height:450px"' in text
    assert "responsive:true" in text and ".figure{width:100%" in text.replace(" ", "")


# -- the JSON ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class Scores(Result):
    """Scores per head (a result for these tests)."""

    AXES = {"values": ("layer", "head")}
    VIEWS = ("heatmap", "bars")
    values: torch.Tensor

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": [f"L{i}" for i in range(self.values.shape[0])]}

    def _view_heatmap(self, title: str = "scores") -> Figure:
        return heatmap(self.values, title=title)

    def _view_bars(self, title: str = "scores") -> Figure:
        return bar_top_tokens([str(i) for i in range(self.values.numel())], self.values.flatten(), title=title)


def test_result_adds_its_views_and_its_dict() -> None:
    res = Scores(torch.tensor([[1.0, float("nan")], [0.5, -2.0]]))
    rep = Report("t", command="interp test")
    sec = rep.section("Scores", "Scores per head.")
    sec.result(res, views=["heatmap", "bars"], title="mine")
    sec.result(res, name="again")
    assert sec.n_figures == 3
    assert '"text":"mine"' in rep.to_html()  # the options went to every plot call
    data = json.loads(rep.to_json())  # strict JSON: NaN is null
    assert set(data) == {"title", "command", "sections"} and data["command"] == "interp test"
    expected = json.loads(json.dumps(res.to_dict()).replace("NaN", "null"))
    assert data["sections"]["Scores"]["Scores"] == expected
    assert data["sections"]["Scores"]["again"]["arrays"]["values"] == {
        "axes": ["layer", "head"], "labels": {"layer": ["L0", "L1"]}, "values": [[1.0, None], [0.5, -2.0]]}


def test_numbers_are_strict_json(tmp_path: Path) -> None:
    rep = Report("t")
    rep.section("n", "Numbers.").numbers("x", torch.tensor([1.0, math.inf, math.nan]), axes=["i"],
                                        labels={"i": np.arange(3)})
    rep.section("empty", "No numbers here.")
    out = rep.write(tmp_path / "r.html", json_path=tmp_path / "other.json")
    data = json.loads((tmp_path / "other.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["sections"] == {"n": {"x": {"axes": ["i"], "labels": {"i": [0, 1, 2]}, "values": [1.0, None, None]}}}
    assert out.is_file() and not out.with_suffix(".json").exists()


# -- the main job on a tiny model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_report(tiny_models: dict[str, Model]) -> tuple[Model, Report]:
    model = tiny_models["llama"]
    return model, build_report(model, "w1 w2 w3 w4 w5 w6", corrupt="w1 w2 w9 w4 w5 w6", sections=[], n_heads_shown=2,
                               command="interp report --test")


def test_built_in_sections_open_with_an_intro(tiny_report: tuple[Model, Report]) -> None:
    _, rep = tiny_report
    found = _sections(rep.to_html())
    assert [t for t, _, _ in found] == BUILT_IN
    for title, cls, intro in found:
        assert cls == 'class="intro"' and intro.endswith(".") and len(intro) > 30, title


def test_built_in_sections_speak_the_vocabulary(tiny_report: tuple[Model, Report]) -> None:
    model, rep = tiny_report
    data = rep.to_dict()["sections"]
    assert "Model" not in data  # the model card is a table, not numbers
    # resid_post per layer: checked against a capture spelled the long way
    tr = model.run("w1 w2 w3 w4 w5 w6", capture="blocks.*.hook_resid_post").trace
    norms = data["Residual stream"]["resid_post_norm"]
    assert norms["axes"] == ["layer", "pos"] and norms["labels"]["layer"] == [0, 1]
    assert norms["labels"]["pos"] == ["w1", "w2", "w3", "w4", "w5", "w6"]
    for layer in range(2):
        want = tr[f"blocks.{layer}.hook_resid_post"][0].norm(dim=-1)
        torch.testing.assert_close(torch.tensor(norms["values"][layer]), want, rtol=1e-5, atol=1e-5)
    # heads are "L1H3" labels; the focused ones are the lowest-entropy heads, entropy between 0 and log(n)
    ent = torch.tensor(data["Attention heads"]["attention_entropy"]["values"])
    assert ent.shape == (2, 4) and float(ent.min()) >= 0 and float(ent.max()) <= math.log(6) + 1e-5
    focused = data["Attention heads"]["focused_heads"]
    heads = [HeadRef.parse(h) for h in focused["labels"]["head"]]
    assert all(re.fullmatch(r"L\dH\d", h) for h in focused["labels"]["head"]) and len(heads) == 2
    assert focused["values"] == pytest.approx([float(ent[h.layer, h.head]) for h in heads])
    assert focused["values"] == sorted(focused["values"])
    page = rep.to_html()
    assert f"{heads[0]} (entropy" in page and "L0H0" in page  # titles and hover name heads the one way
    diff = data["Clean vs corrupted"]["resid_relative_difference"]
    assert max(diff["values"][0][:2]) < 1e-6 and diff["values"][0][2] > 0.01  # the change enters at w3 -> w9


def test_report_rejects_bad_inputs(tiny_llama: Model) -> None:
    with pytest.raises(BadInputError, match="non-empty"):
        build_report(tiny_llama, "  ", sections=[])
    with pytest.raises(BadInputError, match="2 tokens but the clean one has 3"):
        build_report(tiny_llama, "w1 w2 w3", corrupt="w1 w2", sections=[])
    with pytest.raises(BadInputError, match="bad top_k 0; valid: an int >= 1"):
        build_report(tiny_llama, "w1 w2 w3", top_k=0, sections=[])
    with pytest.raises(UnknownNameError, match=r"'lense'.*Did you mean lens"):
        build_report(tiny_llama, "w1 w2 w3", sections=["lense"])


# -- in a browser --------------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    """Chromium and chromedriver, or a skip that says exactly which is missing (``make browser`` installs both)."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (make browser, or apt-get install chromium)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("chromedriver not installed (make browser, or apt-get install chromium-driver)")
    return browser, driver


_LAYOUT_JS = """
var main=document.querySelector('main').getBoundingClientRect();
return {page: document.documentElement.scrollWidth, window: window.innerWidth, main: [main.left, main.right],
 figures: Array.from(document.querySelectorAll('div.figure')).map(function(d){
  var r=d.getBoundingClientRect(), svg=d.querySelector('svg.main-svg'), box=d.parentElement.getBoundingClientRect();
  return {id: d.id, left: r.left, right: r.right, width: r.width, column: box.width - 40,
          svg: svg ? svg.getBoundingClientRect().width : null,
          xticks: Array.from(d.querySelectorAll('.xtick text')).map(function(t){
            var b=t.getBoundingClientRect(); return [b.left, b.right];})};})};
"""


def render_in_browser(html_path: Path, screenshot: Path, width: int = 1400) -> dict[str, Any]:
    """Open a file in headless Chromium with the network off; return figures, SVG counts, the layout of every
    figure (:data:`_LAYOUT_JS`) and console errors."""
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},2400", "--hide-scrollbars"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.set_page_load_timeout(120)
        drv.get(html_path.resolve().as_uri())
        try:
            drv.switch_to.alert.accept()
            alert = True
        except NoAlertPresentException:
            alert = False
        count = "return document.querySelectorAll('div.figure').length"
        drawn = ("return Array.from(document.querySelectorAll('div.figure'))"
                 ".filter(d => d.querySelector('svg.main-svg')).length")
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(drawn) == d.execute_script(count))
        drv.execute_script("return new Promise(r => setTimeout(r, 500))")  # let tick thinning settle
        out: dict[str, Any] = {"alert": alert, "figures": drv.execute_script(count),
                               "with_svg": drv.execute_script(drawn), "layout": drv.execute_script(_LAYOUT_JS)}
        out["errors"] = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        drv.save_screenshot(str(screenshot))
        return out
    finally:
        drv.quit()


def _check_layout(layout: dict[str, Any]) -> None:
    """No horizontal page scroll; every figure drawn inside the column and filling it."""
    assert layout["page"] <= layout["window"], f"the page scrolls sideways: {layout['page']} > {layout['window']}"
    for fig in layout["figures"]:
        assert fig["svg"] is not None and fig["svg"] <= fig["width"] + 1, fig["id"]
        assert layout["main"][0] - 1 <= fig["left"] and fig["right"] <= layout["main"][1] + 1, fig["id"]
        assert fig["width"] >= fig["column"] - 2, f"{fig['id']} does not take the column's width"


def _no_overlap(spans: list[list[float]]) -> bool:
    spans = sorted(spans)
    return all(a[1] <= b[0] + 0.5 for a, b in itertools.pairwise(spans))


def test_evil_report_renders_in_chromium(tmp_path: Path) -> None:
    out = _evil_report().write(tmp_path / "r.html")
    res = render_in_browser(out, tmp_path / "shot.png")
    assert not res["alert"], "a token string ran as script"
    assert res["figures"] == 2 and res["with_svg"] == 2
    assert res["errors"] == []
    _check_layout(res["layout"])
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_wide_figures_fit_the_column_and_stay_readable(tmp_path: Path) -> None:
    """200 tokens x 30 layers, a 30-layer graph and a 2500 px figure in a 1000 px window: nothing overflows, the
    token labels are thinned so that none overlaps, and a wider window gives wider figures."""
    rng = np.random.default_rng(0)
    tokens = [f" tok{i}" for i in range(200)]
    rep = Report("wide")
    sec = rep.section("Wide", "Figures wider than the column.")
    sec.figure(heatmap(rng.normal(size=(30, 200)), tokens, [f"L{i}" for i in range(30)], x_title="position"))
    layers = [[f"L{la}H{h}" for h in range(3)] for la in range(30)]
    sec.figure(layered_graph(layers, [((la, 0), (la + 1, 1), 1.0) for la in range(29)]))
    sec.figure(heatmap(rng.normal(size=(3, 12)), width=2500))
    sec.table([f"column {i}" for i in range(60)], [list(range(60))])
    out = rep.write(tmp_path / "wide.html")
    narrow = render_in_browser(out, tmp_path / "narrow.png", width=1000)
    assert narrow["errors"] == [] and narrow["with_svg"] == 3
    _check_layout(narrow["layout"])
    ticks = narrow["layout"]["figures"][0]["xticks"]
    assert 20 <= len(ticks) < 200, len(ticks)  # thinned, but still many
    assert _no_overlap(ticks), "token labels overlap"
    wide = render_in_browser(out, tmp_path / "wide.png", width=1800)
    _check_layout(wide["layout"])
    assert wide["layout"]["figures"][0]["width"] > narrow["layout"]["figures"][0]["width"] + 400
    assert len(wide["layout"]["figures"][0]["xticks"]) > len(ticks)


@pytest.mark.slow
def test_main_job_report_renders(tmp_path: Path) -> None:
    """`interp report` on the bundled model (every tool's section, at its quick settings): every section opens
    with its intro, every figure renders offline inside the column, no console errors."""
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "interp.cli", "report", "--quiet", "--fast", "--prompt",
                           f"The capital of France is {EVIL}", "--corrupt", f"The capital of Italy is {EVIL}",
                           "--html", str(out)], capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(BUILT_IN[1:-1]) | {"Logit lens"} <= set(data["sections"])
    norms = data["sections"]["Residual stream"]["resid_post_norm"]
    assert norms["axes"] == ["layer", "pos"] and len(norms["values"]) == 30
    page = out.read_text()
    found = _sections(page)
    assert len(found) > len(BUILT_IN) and [t for t, _, _ in found][:5] == BUILT_IN[:5]
    for title, cls, intro in found:
        assert cls == 'class="intro"' and intro.strip(), f"section {title!r} does not open with its intro"
    res = render_in_browser(out, tmp_path / "report.png", width=1280)
    assert not res["alert"]
    assert res["figures"] >= 7 and res["with_svg"] == res["figures"], res
    assert res["errors"] == [], res["errors"]
    _check_layout(res["layout"])
