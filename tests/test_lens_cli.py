"""``interp lens``: real processes, real files."""


from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _interp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


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
