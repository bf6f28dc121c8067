"""House rules of DESIGN.md that code can check: import direction, no pickle, no import side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "interp"
# model -> hooks -> trace -> tools -> report / cli ; sites is below everything, plot beside the flow.
RANK = {"sites": 0, "models": 1, "hooks": 2, "trace": 3, "lens": 4, "patching": 4, "probing": 4, "heads": 4,
        "features": 4, "induction": 4, "distributed": 4, "report": 5, "cli": 6}
TOOLS = {"lens", "patching", "probing", "heads", "features", "induction"}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m == "interp" or m.startswith("interp.")]


def _modules() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_flow(path: Path) -> None:
    here = _layer(path)
    for mod in _imports(path):
        parts = mod.split(".")
        if len(parts) < 2:  # the package facade re-exports everything: only the top layers may use it
            assert here in ("report", "cli"), f"{path}: import the specific module, not the interp facade"
            continue
        there = parts[1]
        if here == "plot":
            assert there == "plot", f"{path} imports {mod}: plot must import nothing else from interp"
            continue
        if there == "plot":
            continue
        assert RANK[there] <= RANK[here], f"{path} ({here}) imports {mod} ({there}), against the flow"
        if here in TOOLS and there in TOOLS:
            assert there == here, f"tool {here} imports tool {there}: tools meet in Trace and hooks"


def test_no_unpickling() -> None:
    for p in ROOT.rglob("*.py"):
        text = p.read_text()
        assert "pickle" not in text, p
        assert "trust_remote_code=True" not in text, p
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{p}: {line.strip()}"


def test_import_has_no_side_effects() -> None:
    code = ("import transformers, interp, interp.cli, interp.trace.interop; "
            "from transformers import AttentionInterface; assert 'interp' not in AttentionInterface._global_mapping; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
