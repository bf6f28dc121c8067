"""``interp probe`` end to end on a store captured from a labelled Parquet set, and the report section."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interp.cli import main
from interp.trace import capture


def test_cli_probe_on_a_store(tiny_llama, tmp_path, capsys) -> None:
    g = torch.Generator().manual_seed(0)
    # the label is whether the last word is w5: readable from the last token, and per token 'is w5'
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 12, (8,), generator=g)) for _ in range(40)]
    labels = [t.split()[-1] == "w5" for t in texts]
    labels[:2] = [True, False]
    pq.write_table(pa.Table.from_pylist([{"text": t, "label": str(b)} for t, b in zip(texts, labels, strict=True)]),
                   tmp_path / "set.parquet")
    capture(tiny_llama, tmp_path / "set.parquet", "blocks.*.hook_resid_post", tmp_path / "st", progress=False)
    out = tmp_path / "p.json"
    rc = main(["probe", "--store", str(tmp_path / "st"), "--labels", "label", "--position", "last", "--ks", "1,2",
               "--json", str(out), "--save", str(tmp_path / "res"), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in printed and "k=2" in printed
    numbers = json.loads(out.read_text())["sections"]["Probing"]
    assert len(numbers["accuracy"]["values"]) == 2 and numbers["sparse_accuracy"]["labels"]["k"] == [1, 2]
    assert (tmp_path / "res" / "result.json").exists()
    assert main(["probe", "--store", str(tmp_path / "st"), "--position", "first", "--quiet"]) != 0


@pytest.mark.slow
def test_report_section(smollm2) -> None:
    from interp.report import Report
    from interp.report.sections.context import ReportContext
    from interp.report.sections.probing import add_section

    prompt = "def f(x): return x"
    tr = smollm2.run(prompt, capture="blocks.*.hook_resid_post").trace
    ctx = ReportContext(model=smollm2, prompt=prompt, corrupt=None, trace=tr, tokens=list(tr.tokens[0]), fast=True)
    rep = Report("t")
    add_section(rep, ctx)
    nums = rep.to_dict()["sections"]["Probing"]
    assert max(nums["probe_accuracy"]["values"]) > 0.9
