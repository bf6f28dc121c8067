"""auto-circuit itself (in its own virtual environment, .venv-autocircuit, made by `make autocircuit`)
against interp's EAP and exact edge patching: the same tiny GPT-2, prompts and edges give the same edge scores
(auto-circuit's EAP scores are negated: it differentiates ``-avg_diff``) and the same single-edge patching effects. The script builds the model and runs interp in a subprocess of ``.venv``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUTOCIRCUIT_PY = ROOT / ".venv-autocircuit" / "bin" / "python"
pytestmark = [pytest.mark.oracle, pytest.mark.slow,
              pytest.mark.skipif(not AUTOCIRCUIT_PY.exists(),
                                 reason="auto-circuit venv missing: run `make autocircuit`")]


def test_eap_scores_and_edge_patching_equal_auto_circuits() -> None:
    out = subprocess.run([str(AUTOCIRCUIT_PY), str(ROOT / "benchmarks" / "circuits_autocircuit.py"), "--layers", "2",
                          "--repeats", "1"], check=True, capture_output=True, text=True, timeout=600).stdout
    edges = re.search(r"edges: interp (\d+), auto-circuit (\d+), auto-circuit edges not in interp's graph (\d+)", out)
    assert edges is not None, out
    assert edges.group(1) == edges.group(2) and edges.group(3) == "0"
    rel = [float(x) for x in re.findall(r"max relative ([0-9.e+-]+)", out)]
    assert len(rel) == 2 and max(rel) <= 1e-4, out
    # exact edge patching, every edge alone: the same effects as auto-circuit's patch masks
    exact = re.search(r"max \|interp - auto-circuit\| / max \|effect\| = ([0-9.e+-]+)", out)
    assert exact is not None and float(exact.group(1)) <= 1e-4, out
