"""The HTML report: escaping, self-containment, and a real headless Chromium rendering it offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interp.plot import attention_pattern, heatmap
from interp.report import Report

EVIL = "<script>alert(1)</script>"
REPO = Path(__file__).resolve().parents[1]


def _evil_report() -> Report:
    rep = Report(f"title {EVIL}", command=f"cmd {EVIL}", subtitle=EVIL)
    sec = rep.section(f"section {EVIL}")
    sec.text(EVIL).tokens([EVIL, " the", "\n"]).table(["h", EVIL], [[1, EVIL]]).code({"k": EVIL})
    sec.figure(heatmap([[1.0, -2.0]], x_labels=[EVIL, "b"], y_labels=["0"], title=EVIL))
    sec.figure(attention_pattern([[1.0, 0.0], [0.5, 0.5]], [EVIL, "x"]))
    sec.numbers("m", [[1.0, -2.0]], axes=["layer", "pos"], labels={"pos": [EVIL, "b"]})
    return rep


def test_report_escapes_every_string(tmp_path: Path) -> None:
    out = _evil_report().write(tmp_path / "r.html")
    text = out.read_text()
    assert EVIL not in text
    assert "alert(1)" in text  # present, but only as escaped text
    assert text.count("<script>") == 1 + 2  # plotly.js once + one per figure
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["sections"][f"section {EVIL}"]["m"] == {"axes": ["layer", "pos"], "labels": {"pos": [EVIL, "b"]},
                                                      "values": [[1.0, -2.0]]}


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = _evil_report().write(tmp_path / "r.html").read_text()
    assert "<script src" not in text and "<link" not in text  # nothing fetched from a CDN
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js inlined


def test_section_anchors_are_unique() -> None:
    rep = Report("t")
    a, b = rep.section("Same"), rep.section("Same")
    assert a.anchor != b.anchor
    assert f'href="#{b.anchor}"' in rep.to_html()


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def render_in_browser(html_path: Path, screenshot: Path) -> dict:
    """Open a file in headless Chromium with the network off; return figures, SVG counts and console errors."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service

    found = _chromium()
    if found is None:
        pytest.skip("Chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    browser, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,2400"):
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
        figures = drv.execute_script("return document.querySelectorAll('div.figure').length")
        with_svg = drv.execute_script(
            "return Array.from(document.querySelectorAll('div.figure')).filter(d => d.querySelector('svg.main-svg')).length")
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        drv.save_screenshot(str(screenshot))
        return {"alert": alert, "figures": figures, "with_svg": with_svg, "errors": errors}
    finally:
        drv.quit()


def test_evil_report_renders_in_chromium(tmp_path: Path) -> None:
    out = _evil_report().write(tmp_path / "r.html")
    res = render_in_browser(out, tmp_path / "shot.png")
    assert not res["alert"], "a token string ran as script"
    assert res["figures"] == 2 and res["with_svg"] == 2
    assert res["errors"] == []
    assert (tmp_path / "shot.png").stat().st_size > 10_000


@pytest.mark.slow
def test_main_job_report_renders(tmp_path: Path) -> None:
    """`interp report` on the bundled model: every figure renders offline, no console errors."""
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "interp.cli", "report", "--quiet", "--prompt",
                           f"The capital of France is {EVIL}", "--corrupt", f"The capital of Italy is {EVIL}",
                           "-o", str(out)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert {"Next-token prediction", "Residual stream", "Attention heads", "Clean vs corrupted"} <= set(data["sections"])
    norms = data["sections"]["Residual stream"]["resid_post_norm"]
    assert norms["axes"] == ["layer", "pos"] and len(norms["values"]) == 30
    kl = data["sections"]["Logit lens"]["logit_lens_kl_to_final"]
    assert len(kl["values"]) == 30 and max(kl["values"][-1]) < 1e-3  # the last layer reads the output
    res = render_in_browser(out, tmp_path / "report.png")
    assert not res["alert"]
    assert res["figures"] >= 7 and res["with_svg"] == res["figures"], res
    assert res["errors"] == [], res["errors"]
