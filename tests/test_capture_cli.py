"""``interp capture``: real processes, real files."""


from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp.trace import TraceStore

REPO = Path(__file__).resolve().parents[1]


def _interp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


@pytest.mark.slow
def test_capture_end_to_end(tmp_path: Path, smollm2) -> None:
    store_dir = tmp_path / "store"
    out = _interp("capture", "--model", "smollm2-135m", "--quiet", "--prompt", "The capital of France is",
                  "--prompt", "Hello world", "--hooks", "resid_post", "-o", str(store_dir),
                  "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    numbers = json.loads((tmp_path / "c.json").read_text())["sections"]["Store"]["resid_post.mean_norm"]
    assert numbers["axes"] == ["layer"] and numbers["labels"]["layer"] == list(range(30))
    assert "Plotly.newPlot" in (tmp_path / "c.html").read_text()
    assert "2 sequences" in out.stdout and "blocks.29.hook_resid_post" in out.stdout
    store = TraceStore(store_dir, verify="sha256")
    store.verify()
    tr = store.trace([0])
    direct = smollm2.run("The capital of France is", capture="blocks.20.hook_resid_post").trace
    both = [smollm2.run(p, capture="blocks.20.hook_resid_post").trace["blocks.20.hook_resid_post"][0]
            for p in ("The capital of France is", "Hello world")]
    expected = float(torch.cat(both).norm(dim=-1).mean())
    assert numbers["values"][20] == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(tr["blocks.20.hook_resid_post"], direct["blocks.20.hook_resid_post"], rtol=1e-5, atol=1e-4)
    bad = _interp("capture", "--quiet", "--prompt", "x", "--hooks", "blocks.0.hook_resid_pots", "-o", str(tmp_path / "b"))
    assert bad.returncode == 2 and "blocks.0.hook_resid_post" in bad.stderr and "Traceback" not in bad.stderr




@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The char-level Llama of _trace_helpers saved as a directory the CLI loads with --model."""
    from _trace_helpers import char_llama

    d = tmp_path_factory.mktemp("char-llama")
    m = char_llama()
    m.hf.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


def test_capture_in_process_with_short_forms_and_hf_sites(model_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    data = tmp_path / "data.txt"
    data.write_text("the cat sat\non the mat\nx\n")
    argv = ["capture", "--model", str(model_dir), "--dataset", str(data), "--hooks", "resid_post", "--hooks",
            "hf:model.layers.0.mlp.act_fn", "-o", str(tmp_path / "st"), "--batch-size", "2", "--quiet",
            "--json", str(tmp_path / "c.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 sequences, 22 tokens" in out and "hf:model.layers.0.mlp.act_fn" in out
    store = TraceStore(tmp_path / "st", verify="sha256")
    store.verify()
    assert store.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "hf:model.layers.0.mlp.act_fn"]
    numbers = json.loads((tmp_path / "c.json").read_text())["sections"]["Store"]["resid_post.mean_norm"]
    rows = torch.cat(list(store.iter_tokens("resid_post.1", batch_size=64)))
    assert numbers["labels"]["layer"] == [0, 1]
    assert numbers["values"][1] == pytest.approx(float(rows.norm(dim=-1).mean()), rel=1e-5)
    assert main(argv) == 0  # a rerun finds the store complete
    assert main([*argv[:-2], "--verify", "sha256"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--dataset", "no/such/file.txt"], "no dataset file at 'no/such/file.txt'"),
    (["--prompt", "x", "--hooks", "resid_post.9"], "no hook 'resid_post.9' (blocks.9.hook_resid_post)"),
    (["--prompt", "x", "--hooks", "hf:model.nope"], "no submodule 'model.nope'"),
    (["--prompt", "x", "--dtype", "int8"], "bad dtype"),
    (["--prompt", "x", "--batch-size", "0"], "bad batch_size 0"),
])
def test_capture_bad_input_is_one_line_and_status_2(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    args: list[str], message: str) -> None:
    from interp.cli import main

    assert main(["capture", "--model", str(model_dir), "-o", str(tmp_path / "st"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("interp: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "st").exists()


def test_capture_over_foreign_files_or_another_store(model_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    base = ["capture", "--model", str(model_dir), "--prompt", "abc", "--quiet"]
    assert main([*base, "-o", str(tmp_path / "mine")]) == 2
    assert "not a trace store" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert main([*base, "-o", str(tmp_path / "st"), "--hooks", "resid_post.0"]) == 0
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "st"), "--hooks", "resid_post.1"]) == 2
    assert "captured with different hooks" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "st"), "--hooks", "resid_post.1", "--overwrite"]) == 0
    assert TraceStore(tmp_path / "st").hooks == ["blocks.1.hook_resid_post"]
