"""``interp induction`` and the report's "Induction heads" section, end to end on the shipped toy model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interp
from interp.report import Report
from interp.report.sections.context import ReportContext
from interp.report.sections.induction import add_section

REPO = Path(__file__).resolve().parents[1]


def _interp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


def test_cli_on_the_toy_model(tmp_path: Path) -> None:
    out = _interp("induction", "--model", "toy-induction", "--n-seq", "4", "--heads", "L1H2,L1H3",
                  "--json", str(tmp_path / "ind.json"), "--html", str(tmp_path / "ind.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "L1H" in out.stdout and "zero-ablating L1H2, L1H3: repeat loss" in out.stdout
    data = json.loads((tmp_path / "ind.json").read_text())["sections"]["Induction heads"]
    arrays = data["InductionScores"]["arrays"]
    ind = torch.tensor(arrays["induction"]["values"])
    assert arrays["induction"]["axes"] == ["layer", "head"] and ind.shape == (2, 4)
    assert float(ind[1].max()) > 0.5 > float(ind[0].max())  # the planted circuit
    assert data["AblationResult"]["attributes"]["heads"] == [[1, 2], [1, 3]]
    roles = data["HeadRoles"]["attributes"]
    assert roles["induction_heads"] and all(r["head"].startswith("L1H") for r in roles["induction_heads"])
    assert (tmp_path / "ind.html").stat().st_size > 10_000


def test_cli_ablates_at_negative_positions_with_mean() -> None:
    out = _interp("induction", "--model", "toy-induction", "--n-seq", "2", "--half", "8", "--heads", "L1H0",
                  "--positions", "-2", "--method", "mean", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mean-ablating L1H0 at positions -2: repeat loss" in out.stdout


@pytest.mark.parametrize(("args", "named"), [
    (("--heads", "1.2"), "bad head '1.2'"),
    (("--heads", "L7H0"), "head L7H0 is out of range"),
    (("--positions", "x"), "bad positions 'x'"),
    (("--prompt", "a text"), "no tokenizer"),
    (("--prompt", "a text", "--n-seq", "3"), "--n-seq"),
    (("--n-seq", "2", "--top-k", "0"), "top_k 0"),
])
def test_cli_bad_values_are_one_line_errors(args: tuple[str, ...], named: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    try:
        status = main(["induction", "--model", "toy-induction", "--quiet", *args])
    except SystemExit as e:  # argparse's usage errors
        status = int(e.code or 0)
    err = capsys.readouterr().err
    assert status == 2 and named in err and "Traceback" not in err, err


def test_report_section_on_the_toy_model() -> None:
    m = interp.load_model("toy-induction")
    ids = torch.tensor([[0, 5, 6, 7, 5, 6]])
    ctx = ReportContext(model=m, prompt="", corrupt=None, trace=m.run(ids).trace, tokens=["0"] * 6, fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    data = rep.to_dict()["sections"]["Induction heads"]
    assert {"InductionScores", "HeadRoles", "AblationResult"} <= set(data)
    arrays = data["InductionScores"]["arrays"]
    assert {"induction", "prev_token", "duplicate", "logit_attribution", "copying", "loss"} <= set(arrays)
    assert rep.sections[0].intro and rep.sections[0].n_figures >= 5


@pytest.mark.slow
def test_report_section_on_smollm2(smollm2: interp.Model) -> None:
    ids, _ = smollm2.tokenize("The capital of France is")
    ctx = ReportContext(model=smollm2, prompt="x", corrupt=None, trace=smollm2.run(ids).trace, tokens=["x"], fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    ind = torch.tensor(rep.to_dict()["sections"]["Induction heads"]["InductionScores"]["arrays"]["induction"]["values"])
    assert ind.shape == (30, 9) and float(ind.max()) > 0.5
