"""``interp heads`` as a real process on a saved tiny Llama, and the report's Heads section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from interp.heads import composition
from interp.models import Model
from interp.report import Report
from interp.report.sections import heads as heads_section
from interp.report.sections.context import ReportContext

REPO = Path(__file__).resolve().parents[1]


def _interp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


@pytest.fixture(scope="module")
def saved_llama(tiny_llama: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama.hf.save_pretrained(d)
    tiny_llama.tokenizer.save_pretrained(d)
    return d


def test_cli_end_to_end(saved_llama: Path, tiny_llama: Model, tmp_path: Path) -> None:
    out = _interp("heads", "--quiet", "--model", str(saved_llama), "--kind", "q", "--top", "3",
                  "--json", str(tmp_path / "h.json"), "--html", str(tmp_path / "h.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    (a, b, score, _) = composition(tiny_llama, kinds=("q",), baseline_samples=10).top_pairs("q", 1)[0]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("L")]
    assert rows[0][:2] == [f"L{a[0]}H{a[1]}", f"L{b[0]}H{b[1]}"] and float(rows[0][2]) == pytest.approx(score, abs=1e-4)
    data = json.loads((tmp_path / "h.json").read_text())["sections"]
    assert data["Composition"]["composition"]["axes"] == ["layer_a", "head_a", "layer_b", "head_b"]
    assert len(data["OV SVD"]["singular_values"]["values"][0][0]) == 16
    assert (tmp_path / "h.html").stat().st_size > 10_000
    bad = _interp("heads", "--model", str(saved_llama), "--sender", "L0H9x", "--receiver", "L1H0")
    assert bad.returncode == 2 and "is not a head" in bad.stderr and "Traceback" not in bad.stderr


def test_report_section(tiny_llama: Model) -> None:
    ids = tiny_llama.tokenizer("w1 w2 w3 w1 w2 w3", return_tensors="pt").input_ids
    prompt = tiny_llama.tokenizer.decode(ids[0])
    trace = tiny_llama.run(prompt, capture=["blocks.*.hook_resid_post"]).trace
    rep = Report("t")
    heads_section.add_section(rep, ReportContext(model=tiny_llama, prompt=prompt, corrupt=None, trace=trace,
                                                 tokens=list(trace.tokens[0]), fast=True))
    html = rep.to_html()
    assert "K-composition" in html and "Channel L" in html
