"""``interp features`` end to end, and the report's Features section."""

from __future__ import annotations

import json

import pytest

from interp.cli import main
from interp.features import SparseAutoencoder, load_saes
from interp.trace import capture


def test_cli_train_writes_a_loadable_sae(tiny_llama, tmp_path, capsys) -> None:
    texts = [" ".join(f"w{(5 * i + j) % 100}" for j in range(12)) for i in range(16)]
    capture(tiny_llama, texts, out=tmp_path / "st", hooks="resid_post.1", batch_size=8, progress=False)
    rc = main(["features", "train", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "sae"), "--d-sae", "64",
               "--k", "4", "--n-tokens", "2048", "--batch-size", "64", "--quiet", "--json", str(tmp_path / "o.json")])
    assert rc == 0
    sae = SparseAutoencoder.load(tmp_path / "sae")
    assert sae.hook == "blocks.1.hook_resid_post" and sae.d_sae == 64 and sae.config.k == 4
    assert "train-set EV" in capsys.readouterr().out
    assert "SAE training" in json.loads((tmp_path / "o.json").read_text())["sections"]


def test_cli_reports_missing_arguments(tiny_llama, tmp_path, capsys) -> None:
    assert main(["features", "flow"]) == 2
    assert "needs --hook, --feature" in capsys.readouterr().err
    capture(tiny_llama, ["w1 w2 w3"], out=tmp_path / "st", hooks="resid_post.1", progress=False)
    assert main(["features", "train", "--store", str(tmp_path / "st"), "--hook", "resid_post.0", "--out",
                 str(tmp_path / "sae")]) == 2
    assert "unknown hook 'blocks.0.hook_resid_post'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_flow_and_steer_on_shipped_saes(tmp_path, capsys) -> None:
    saes = load_saes()
    rc = main(["features", "flow", "--hook", "resid_post.4", "--feature", "3", "--threshold", "0.3",
               "--json", str(tmp_path / "f.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "features of blocks.4.hook_resid_post by origin" in out and "FlowGraph(backward from r5 #3" in out
    flow = json.loads((tmp_path / "f.json").read_text())["sections"]["Feature flow"]
    assert flow["FlowGraph"]["class"] == "FlowGraph" and flow["FeatureClasses"]["arrays"]["scores"]["axes"] == [
        "source", "feature"]
    assert main(["features", "steer", "--hook", "blocks.4.hook_resid_post", "--feature", "3", "--scale", "1",
                 "--prompt", "The capital of France is", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    before = next(x for x in lines if x.startswith("before:"))
    after = next(x for x in lines if x.startswith("after:"))
    assert before.split(":", 1)[1].strip() == after.split(":", 1)[1].strip()  # scale 1 changes nothing
    assert main(["features", "steer", "--hook", "resid_post.4", "--feature", "3", "--path",
                 "--threshold", "0.1", "--scale", "0", "--prompt", "The capital of France is",
                 "--max-new-tokens", "2"]) == 0
    assert "steering 2 features on the path" in capsys.readouterr().out
    assert len(saes) == 4
    assert main(["features", "steer", "--hook", "resid_post.3", "--feature", "5000", "--prompt", "Hi"]) == 2
    assert "bad feature 5000" in capsys.readouterr().err
    assert main(["features", "flow", "--hook", "resid_post", "--feature", "3"]) == 2
    assert "names 30 hook points; an SAE reads one" in capsys.readouterr().err


@pytest.mark.slow
def test_report_features_section(smollm2) -> None:
    from interp.report import Report
    from interp.report.sections import features as section
    from interp.report.sections.context import ReportContext

    prompt = "The capital of France is"
    trace = smollm2.run(prompt, capture=["blocks.*.hook_resid_post"]).trace
    rep = Report("t")
    section.add_section(rep, ReportContext(model=smollm2, prompt=prompt, corrupt=None, trace=trace,
                                           tokens=list(trace.tokens[0]), fast=True))
    d = rep.to_dict()["sections"]["Features"]
    assert "feature_acts_last_token" in d and "flow_edges" in d
