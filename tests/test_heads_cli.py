"""``interp heads`` as a real process on a saved tiny Llama, and the report's Heads section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from interp.cli import main
from interp.heads import composition
from interp.models import Model
from interp.report import Report
from interp.report.document import Section
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
    (a, b, score, _) = composition(tiny_llama, kinds="q", baseline_samples=10).top_pairs("q", 1)[0]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("L")]
    assert rows[0][:2] == [str(a), str(b)] and float(rows[0][2]) == pytest.approx(score, abs=1e-4)
    data = json.loads((tmp_path / "h.json").read_text())["sections"]
    comp = data["Composition"]["CompositionResult"]
    assert comp["arrays"]["scores"]["axes"] == ["kind", "layer_a", "head_a", "layer_b", "head_b"]
    assert comp["arrays"]["scores"]["labels"] == {"kind": ["q"]}
    assert data["Channel"]["ChannelResult"]["attributes"]["kind"] == "q"
    assert data["Channel"]["ChannelResult"]["attributes"]["sender"] == list(a)
    assert len(data["OV SVD"]["HeadSVD"]["arrays"]["S"]["values"][0][0]) == 16
    assert (tmp_path / "h.html").stat().st_size > 10_000


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``interp`` in this process (argparse's usage errors exit with status 2)."""
    try:
        rc = main(list(args))
    except SystemExit as e:
        rc = int(e.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_heads_in_the_one_spelling(saved_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main(capsys, "heads", "--quiet", "--model", str(saved_llama), "--kind", "v", "--heads",
                         "L1H2,L0H1", "--sender", "L0H3", "--receiver", "L1H0", "--json", str(tmp_path / "h.json"))
    assert rc == 0, err[-2000:]
    assert "channel L0H3 -> L1H0 (v)" in out and "OV of L1H2:" in out
    data = json.loads((tmp_path / "h.json").read_text())["sections"]
    assert set(data["OV SVD"]["HeadSVD"]["attributes"]["tokens"]) == {"L0H1", "L1H2"}
    assert data["Channel"]["ChannelResult"]["attributes"]["receiver"] == [1, 0]
    for args, msg in ((["--sender", "L0H9x", "--receiver", "L1H0"], "bad head 'L0H9x'"),
                      (["--heads", "L0H1,L7H0"], "L7H0"),
                      (["--sender", "L0H1"], "give both --sender and --receiver"),
                      (["--sender", "L1H1", "--receiver", "L0H0"], "must be in a later layer"),
                      (["--sender", "L0H1", "--receiver", "L1H9"], "L1H9 is out of range"),
                      (["--top", "0"], "--top 0")):
        rc, _, err = _main(capsys, "heads", "--quiet", "--model", str(saved_llama), *args)
        assert rc == 2 and msg in err and "Traceback" not in err, (args, err)


def test_report_section(tiny_llama: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[go.Figure] = []
    add_figure = Section.figure
    monkeypatch.setattr(Section, "figure", lambda self, fig, caption="": (figures.append(fig),
                                                                          add_figure(self, fig, caption))[1])
    ids = tiny_llama.tokenizer("w1 w2 w3 w1 w2 w3", return_tensors="pt").input_ids
    prompt = tiny_llama.tokenizer.decode(ids[0])
    trace = tiny_llama.run(prompt, capture=["blocks.*.hook_resid_post"]).trace
    rep = Report("t")
    heads_section.add_section(rep, ReportContext(model=tiny_llama, prompt=prompt, corrupt=None, trace=trace,
                                                 tokens=list(trace.tokens[0]), fast=True))
    html = rep.to_html()
    assert "K-composition" in html and "Channel L" in html
    (sec,) = rep.sections
    assert sec.intro.count(". ") == 0 and sec.intro.endswith(".")  # one sentence
    assert {"CompositionResult", "ChannelResult", "ChannelActivity", "HeadSVD"} <= set(sec.data)
    # every figure fits a column by itself: the graph has no fixed width, the others are at most 1000 px wide
    assert len(figures) >= 4
    assert all(f.layout.width is None or f.layout.width <= 1000 for f in figures)
    assert figures[0].layout.title.text.startswith("Top") and figures[0].layout.width is None


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_report_section_on_other_families(tiny_models: dict[str, Model], family: str) -> None:
    """GPT-2 (LayerNorm, biases) and an encoder (no unembedding: the SVD reads QK; no causal-prefix check)."""
    model = tiny_models[family]
    trace = model.run(torch.tensor([[5, 9, 14, 5, 9, 14]]), capture=["resid_post"]).trace
    rep = Report("t")
    heads_section.add_section(rep, ReportContext(model=model, prompt="", corrupt=None, trace=trace,
                                                 tokens=list(trace.tokens[0]), fast=True))
    (sec,) = rep.sections
    want = {"CompositionResult", "ChannelResult", "HeadSVD"} | ({"ChannelActivity"} if family == "gpt2" else set())
    assert set(sec.data) == want
    assert sec.data["HeadSVD"]["attributes"]["circuit"] == ("ov" if family == "gpt2" else "qk")
