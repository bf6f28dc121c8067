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


