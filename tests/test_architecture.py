"""House rules of DESIGN.md that code can check: import direction, no pickle, no import side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "interp"
# model -> hooks -> trace -> tools -> report / cli ; sites, errors, progress, stats and version are below
# everything, plot beside the flow.
TOOLS = {"lens", "patching", "probing", "heads", "features", "induction", "causal", "circuits", "layers"}
RANK = {"errors": 0, "version": 0, "progress": 0, "sites": 0, "fileio": 0, "stats": 0, "models": 1, "hooks": 2, "trace": 3,
        **dict.fromkeys(TOOLS, 4), "distributed": 4, "report": 5, "cli": 6}
# The one upward edge: Model.run / Model.hooks hand over to the hook engine and build a Trace. They import
# those packages when called (and for type hints), never when interp.models is imported.
CALL_TIME = {("models/model.py", "hooks"), ("models/model.py", "trace"),
             ("models/encdec.py", "hooks"), ("models/encdec.py", "trace"),  # EncoderDecoder.run: the same edge
             ("models/encdec_view.py", "trace")}  # DecoderView.trace: EncoderDecoder.run's trace, renamed


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return []


def _imports(path: Path, module_level: bool | None = None) -> list[str]:
    """interp modules imported by ``path``: all, or only those run at import time (``module_level=True``: not
    inside a function or an ``if TYPE_CHECKING:`` block), or only the others (``False``)."""
    tree = ast.parse(path.read_text())
    eager: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for n in child.orelse:
                    visit(n)
                continue
            if _names(child):
                eager.add(id(child))
            visit(child)

    visit(tree)
    out = [m for node in ast.walk(tree) for m in _names(node)
           if module_level is None or (id(node) in eager) == module_level]
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
        if (str(path.relative_to(ROOT)), there) in CALL_TIME and mod not in _imports(path, module_level=True):
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
