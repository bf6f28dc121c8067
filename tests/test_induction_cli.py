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
    out = _interp("induction", "--model", "toy-induction", "--n-seq", "4", "--ablate", "1.2,1.3",
                  "--json", str(tmp_path / "ind.json"), "--html", str(tmp_path / "ind.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "L1H" in out.stdout and "zero-ablating L1H2, L1H3" in out.stdout
    data = json.loads((tmp_path / "ind.json").read_text())["sections"]["Induction heads"]
    ind = torch.tensor(data["induction"]["values"])
    assert data["induction"]["axes"] == ["layer", "head"] and ind.shape == (2, 4)
    assert float(ind[1].max()) > 0.5 > float(ind[0].max())  # the planted circuit
    assert (tmp_path / "ind.html").stat().st_size > 10_000


def test_cli_bad_heads_is_a_clear_error() -> None:
    import argparse

    from interp.cli.induction import _heads

    assert _heads("1.2,0.3") == [(1, 2), (0, 3)]
    with pytest.raises(argparse.ArgumentTypeError, match=r"layer\.head"):
        _heads("1-2")


def test_report_section_on_the_toy_model() -> None:
    m = interp.load_model("toy-induction")
    ids = torch.tensor([[0, 5, 6, 7, 5, 6]])
    ctx = ReportContext(model=m, prompt="", corrupt=None, trace=m.run(ids).trace, tokens=["0"] * 6, fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    data = rep.to_dict()["sections"]["Induction heads"]
    assert {"induction", "prev_token", "duplicate", "logit_attribution", "copying", "loss_per_position"} <= set(data)


@pytest.mark.slow
def test_report_section_on_smollm2(smollm2: interp.Model) -> None:
    ids, _ = smollm2.tokenize("The capital of France is")
    ctx = ReportContext(model=smollm2, prompt="x", corrupt=None, trace=smollm2.run(ids).trace, tokens=["x"], fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    ind = torch.tensor(rep.to_dict()["sections"]["Induction heads"]["induction"]["values"])
    assert ind.shape == (30, 9) and float(ind.max()) > 0.5
