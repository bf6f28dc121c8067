"""``interp patch`` end to end, the report section, and the IOI sweep on SmolLM2 against the loop."""

from __future__ import annotations

import json

import pytest

from interp.cli import main
from interp.hooks import Patch, run_with_hooks

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def test_cli_patch(tiny_llama, tmp_path, capsys) -> None:
    tiny_llama.hf.save_pretrained(tmp_path / "m")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "p.json"
    args = ["patch", "--model", str(tmp_path / "m"), "--prompt", "w1 w2 w3 w4 w5", "--corrupt", "w1 w9 w3 w4 w5",
            "--answer", "w5", "--wrong", "w6", "--json", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "exact patching of resid_pre (denoising)" in printed and " 1: w2 " in printed
    res = json.loads(out.read_text())["sections"]["Patching"]["PatchingResult"]
    vals = res["arrays"]["values"]
    assert vals["axes"] == ["layer", "pos"] and len(vals["values"]) == 2 and len(vals["values"][0]) == 5
    assert vals["labels"]["pos"][1] == "1: w2" and res["attributes"]["component"] == "resid_pre"
    # the flags of the one vocabulary: heads as L1H2, negative positions, layers from the end
    assert main([*args[:-3], "--method", "atp*", "--component", "k", "--quiet"]) == 0
    assert "atp* patching of k" in capsys.readouterr().out
    assert main([*args, "--component", "z", "--heads", "L1H2,L0H1", "--positions=-1,1", "--per-position",
                 "--layers=-1,0"]) == 0
    printed = capsys.readouterr().out
    assert "L1H2 -1: w5" in printed or "L1H2 1: w2" in printed
    vals = json.loads(out.read_text())["sections"]["Patching"]["PatchingResult"]["arrays"]["values"]
    assert vals["axes"] == ["layer", "head", "pos"] and vals["labels"]["layer"] == [1, 0]
    assert vals["labels"]["pos"] == ["4: w5", "1: w2"]
    # bad values: one line, exit status 2
    assert main([*args, "--layers", "5"]) == 2
    assert "bad layer 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*args, "--heads", "H1"])
    assert e.value.code == 2


@pytest.mark.slow
def test_ioi_sweep_on_smollm2_equals_loop(smollm2) -> None:
    from interp.patching import activation_patching, prepare

    s = prepare(smollm2, IOI_CLEAN, corrupt=IOI_CORRUPT, answer=" Mary", wrong=" John")
    assert s.clean_value > 2 and s.corrupted_value < -2  # the model does IOI
    layers, heads = [0, 14, -1], [0, 1, 4]  # heads 0 and 1 share a KV head (3 KV heads for 9 query heads)
    res = activation_patching(smollm2, s, component="resid_pre", layers=layers, progress=False)
    kres = activation_patching(smollm2, s, component="k", layers=[14], heads=heads, progress=False)
    assert res.coords["layer"] == (0, 14, 29)
    layers = list(res.coords["layer"])
    a, w = int(s.metric.answer[0]), int(s.metric.wrong[0])
    clean = run_with_hooks(smollm2, s.input_ids, capture=["blocks.*.hook_resid_pre", "blocks.14.attn.hook_k"]).activations
    for i, L in enumerate(layers):
        name = f"blocks.{L}.hook_resid_pre"
        for p in (0, 9, 13):
            lg = run_with_hooks(smollm2, s.corrupt_ids, interventions=[Patch(name, source=clean[name], positions=[p])]).logits
            assert abs(float(res.values[i, p]) - float(lg[0, -1, a] - lg[0, -1, w])) < 1e-4
    for j, h in enumerate(heads):
        k = "blocks.14.attn.hook_k"
        lg = run_with_hooks(smollm2, s.corrupt_ids, interventions=[Patch(k, source=clean[k], heads=[h])]).logits
        assert abs(float(kres.values[0, j]) - float(lg[0, -1, a] - lg[0, -1, w])) < 1e-4
    # the name swap lives at the second ' John' (position 9) early and at the last token late
    assert float(res.normalized[0, 9]) > 0.95 and float(res.normalized[2, 13]) > 0.9


@pytest.mark.slow
def test_report_section(smollm2) -> None:
    from interp.report import Report
    from interp.report.sections.context import ReportContext
    from interp.report.sections.patching import add_section

    tr = smollm2.run(IOI_CLEAN, capture="blocks.*.hook_resid_post").trace
    ctx = ReportContext(model=smollm2, prompt=IOI_CLEAN, corrupt=IOI_CORRUPT, trace=tr, tokens=list(tr.tokens[0]),
                        fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    nums = rep.to_dict()["sections"]["Patching"]
    heads = nums["patching_heads_atp"]
    assert heads["class"] == "PatchingResult" and len(heads["arrays"]["values"]["values"]) == 30
    attrs = nums["patching_resid_pre_exact"]["attributes"]
    assert abs(attrs["clean_value"] - attrs["corrupted_value"]) > 1
    rep2 = Report("t")
    add_section(rep2, ReportContext(model=smollm2, prompt=IOI_CLEAN, corrupt=None, trace=tr, tokens=[], fast=True))
    assert "Patching" not in rep2.to_dict().get("sections", {})
