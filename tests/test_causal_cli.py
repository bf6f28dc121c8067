"""``interp causal`` end to end on the shipped IIT models, and the report section."""

from __future__ import annotations

import json

import pytest

from interp.causal import IIATable, SubspaceResult
from interp.cli import main
from interp.models import Model


def test_cli_scores_a_shipped_alignment_and_sweeps(tmp_path, capsys) -> None:
    out = tmp_path / "c.json"
    rc = main(["causal", "--iit-model", "iit-equality", "--component", "mlp_out", "--n", "48", "--json", str(out),
               "--html", str(tmp_path / "c.html"), "--save", str(tmp_path / "t"), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "IIA of WX at mlp_out.0@1 (n=48): 1.000" in printed and "IIA of WY at mlp_out.0@3 (n=48): 1.000" in printed
    assert "every variable interchanged at once, each from its own source (n=48): " in printed
    assert "best 1.000 at mlp_out.0 position 1" in printed
    sections = json.loads(out.read_text())["sections"]
    assert sections["Alignment"]["IIAResult"]["arrays"]["iia"]["values"][0] >= 0.95
    table = sections["Interchange intervention accuracy"]["IIATable"]
    assert table["arrays"]["iia"]["axes"] == ["layer", "pos", "size"]
    assert IIATable.load(tmp_path / "t").iia.shape == (2, 5, 1)
    assert (tmp_path / "c.html").read_text().count("plotly") > 0


def test_cli_das(tmp_path, capsys) -> None:
    rc = main(["causal", "--iit-model", "iit-ioi", "--variable", "S", "--das", "1", "--hook", "resid_post.0",
               "--positions", "-1", "--steps", "20", "--n", "64", "--save", str(tmp_path / "s"), "--quiet"])
    assert rc == 0
    assert "das k=1 at blocks.0.hook_resid_post positions -1: held-out IIA" in capsys.readouterr().out
    assert SubspaceResult.load(tmp_path / "s").basis.shape == (1, 64)


@pytest.mark.parametrize(("argv", "message"), [
    (["--iit-model", "iit-equality", "--layers", "7"], "layer 7 is out of range"),
    (["--iit-model", "no-such-model"], "unknown IIT model 'no-such-model'"),
    (["--iit-model", "iit-equality", "--das", "1"], "--das needs --hook"),
    (["--iit-model", "iit-equality", "--variable", "Q"], "variable 'Q'"),
    (["--iit-model", "iit-equality", "--component", "mlp"], "mlp"),
])
def test_cli_bad_input_is_one_line_and_status_2(argv: list[str], message: str, capsys) -> None:
    assert main(["causal", *argv, "--n", "8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_report_section_skips_a_model_without_the_names(tiny_llama: Model) -> None:
    from interp.report import Report
    from interp.report.sections import causal
    from interp.report.sections.context import ReportContext

    tr = tiny_llama.run("w1 w2 w3", capture=["resid_post", "pattern"]).trace
    rep = Report("t")
    causal.add_section(rep, ReportContext(model=tiny_llama, prompt="w1 w2 w3", corrupt=None, trace=tr,
                                          tokens=list(tr.tokens[0]), fast=True))
    assert "does not spell the task&#x27;s names as one token" in rep.to_html()


@pytest.mark.slow
def test_report_section_on_smollm2(smollm2: Model) -> None:
    from interp.report import Report
    from interp.report.sections import causal
    from interp.report.sections.context import ReportContext

    tr = smollm2.run("The capital of France is", capture=["resid_post", "pattern"]).trace
    rep = Report("t")
    causal.add_section(rep, ReportContext(model=smollm2, prompt="The capital of France is", corrupt=None, trace=tr,
                                          tokens=list(tr.tokens[0]), fast=True))
    data = rep.to_dict()["sections"]["Causal abstraction"]["IIATable"]
    assert data["arrays"]["iia"]["labels"]["layer"] == [0, 10, 20, 29]
    assert all(0.0 <= v <= 1.0 for row in data["arrays"]["iia"]["values"] for p in row for v in p)
    assert data["attributes"]["base_accuracy"] >= 0.9  # SmolLM2 answers the IOI prompts
