"""``interp probe`` end to end on a store captured from a labelled Parquet set, and the report section."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interp.cli import main
from interp.probing import ProbeResult
from interp.trace import capture


@pytest.fixture(scope="module")
def labelled_store(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe_cli")
    g = torch.Generator().manual_seed(0)
    # the label is whether the last word is w5: readable from the last token, and per token 'is w5'
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 12, (int(n),), generator=g))
             for n in torch.randint(5, 9, (40,), generator=g)]                  # different lengths: a padded batch
    labels = [t.split()[-1] == "w5" for t in texts]
    labels[:2] = [True, False]
    pq.write_table(pa.Table.from_pylist([{"text": t, "label": str(b)} for t, b in zip(texts, labels, strict=True)]),
                   tmp / "set.parquet")
    capture(tiny_llama, tmp / "set.parquet", out=tmp / "st", hooks="resid_post", progress=False)
    return tmp


def test_cli_probe_on_a_store(labelled_store, capsys) -> None:
    tmp = labelled_store
    out = tmp / "p.json"
    rc = main(["probe", "--store", str(tmp / "st"), "--labels", "label", "--positions", "-1", "--ks", "1,2",
               "--json", str(out), "--save", str(tmp / "res"), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in printed and "k=2" in printed and "positions -1" in printed
    numbers = json.loads(out.read_text())["sections"]["Probing"]["ProbeResult"]
    assert numbers["class"] == "ProbeResult" and len(numbers["arrays"]["accuracy"]["values"]) == 2
    assert numbers["arrays"]["sparse_accuracy"]["labels"]["k"] == [1, 2]
    saved = ProbeResult.load(tmp / "res")
    assert saved.positions == "-1" and saved.example_labels.shape == (40,)     # one example per sequence
    assert numbers["arrays"]["accuracy"]["values"] == pytest.approx(saved.accuracy.tolist())


def test_cli_hooks_pool_and_bad_values(labelled_store, capsys) -> None:
    tmp = labelled_store
    assert main(["probe", "--store", str(tmp / "st"), "--hooks", "resid_post.-1", "--pool", "mean",
                 "--positions", "1:", "--ks", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in printed and "blocks.0.hook_resid_post" not in printed
    assert "positions 1:, mean-pooled" in printed
    # interp's errors: one line naming the value, status 2
    assert main(["probe", "--store", str(tmp / "st"), "--positions", "9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "position 9" in err and "sequence" in err and len(err.strip().splitlines()) == 1
    assert main(["probe", "--store", str(tmp / "st"), "--hooks", "mlp_out", "--quiet"]) == 2
    assert "mlp_out" in capsys.readouterr().err
    # argparse refuses a bad spelling of a shared flag (usage error, status 2)
    with pytest.raises(SystemExit) as e:
        main(["probe", "--store", str(tmp / "st"), "--positions", "last", "--quiet"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["probe", "--store", str(tmp / "st"), "--pool", "max", "--quiet"])
    assert e.value.code == 2


@pytest.mark.slow
def test_report_section(smollm2) -> None:
    from interp.report import Report
    from interp.report.sections.context import ReportContext
    from interp.report.sections.probing import add_section

    prompt = "def f(x): return x"
    tr = smollm2.run(prompt, capture="resid_post").trace
    ctx = ReportContext(model=smollm2, prompt=prompt, corrupt=None, trace=tr, tokens=list(tr.tokens[0]), fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    nums = rep.to_dict()["sections"]["Probing"]["ProbeResult"]
    assert max(nums["arrays"]["accuracy"]["values"]) > 0.9
    assert rep.sections[0].n_figures == 3
