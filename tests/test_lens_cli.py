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
    assert "at token 4 ' is'" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("29 ")]
    assert rows and rows[0][1] == "'" and rows[0][2] == "Paris'" and rows[0][-2] == "0"  # top token, rank 0
    data = json.loads((tmp_path / "lens.json").read_text())["sections"]["Logit lens"]["LogitLensResult"]
    arrays = data["arrays"]
    assert data["class"] == "LogitLensResult" and arrays["top_tokens"]["axes"] == ["layer", "batch", "pos", "k"]
    assert arrays["top_tokens"]["values"][-1][0][-1][0] == " Paris" and len(arrays["top_probs"]["values"][0][0][0]) == 3
    assert max(arrays["kl_to_final"]["values"][-1][0]) < 1e-3
    html = (tmp_path / "lens.html").read_text()
    assert html.count('<div class="figure"') == 3  # grid, KL, target rank
    bad = _interp("lens", "--prompt", "x", "--target", " Paris France")
    assert bad.returncode == 2 and "interp: error: target ' Paris France' is 2 tokens" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_lens_positions_hooks_and_tuned(tmp_path: Path, smollm2) -> None:
    """The shared flags: --positions counts from the last token, --hooks takes the short forms, --tuned auto."""
    out = _interp("lens", "--quiet", "--prompt", "The capital of France is", "--positions", "0,-2",
                  "--hooks", "resid_mid.-1", "--hooks", "resid_post.-1", "--json", str(tmp_path / "a.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "at token 0 'The'" in out.stdout and "at token 3 ' France'" in out.stdout and "at token 4" not in out.stdout
    labels = [line.split()[0:2] for line in out.stdout.splitlines() if line.strip().startswith("29 ")]
    assert labels[:2] == [["29", "resid_mid"], ["29", "resid_post"]]
    arr = json.loads((tmp_path / "a.json").read_text())["sections"]["Logit lens"]["LogitLensResult"]["arrays"]
    assert arr["entropy"]["values"][0][0][4] is None and arr["entropy"]["values"][0][0][3] is not None
    tuned = _interp("lens", "--quiet", "--prompt", "The capital of France is", "--tuned", "auto",
                    "--json", str(tmp_path / "t.json"))
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert "tuned top" in tuned.stdout
    sections = json.loads((tmp_path / "t.json").read_text())["sections"]
    assert {"tuned LogitLensResult", "LensComparison"} <= set(sections["Tuned lens"])
    for bad_args, msg in ((["--positions", "9"], "position 9 is outside sequence 0"),
                          (["--hooks", "z"], "bad hook for the logit lens 'z.0'"),
                          (["--tuned", str(tmp_path)], "no tuned lens in")):
        bad = _interp("lens", "--prompt", "The capital of France is", *bad_args)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, (bad_args, bad.stderr)
