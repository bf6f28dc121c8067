"""Build ``english.txt``: English prose paragraphs from the Python standard library's docstrings.

The tuned lens (and anything else that needs ordinary English text) trains on this corpus. It is made
offline from text every Python installation carries: the docstrings of every module, class and function in
the standard library's source files (parsed with ``ast``) and the language reference's help topics
(``pydoc_data.topics``) (Python Software Foundation License). Paragraphs that look like
code (doctest prompts, indented blocks, many symbols) are dropped; each remaining paragraph of at least
10 words becomes one line, de-duplicated, in a fixed order.

Run ``python data/corpus/build.py`` to rebuild; the output depends on the Python version, which is why
the built file is shipped (built with the version recorded in ``english.json``).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"idlelib", "tkinter", "turtledemo", "test", "lib2to3", "pydoc_data", "site-packages", "config-3.11-x86_64-linux-gnu"}
MIN_WORDS = 10


def _docstrings() -> list[str]:
    """Docstrings of every module, class and function in the standard library's source (parsed, not imported)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in SKIP or "site-packages" in rel or any(p in ("test", "tests") for p in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
    from pydoc_data.topics import topics  # the language reference's help topics, as plain text

    docs += [topics[k] for k in sorted(topics)]
    return docs


def _is_prose(par: str) -> bool:
    if ">>>" in par or "::" in par or par.lstrip().startswith(("-", "*", "+", "|")):
        return False
    lines = par.splitlines()
    if any(line.startswith(("    ", "\t")) for line in lines):
        return False
    words = par.split()
    if len(words) < MIN_WORDS:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in par)
    return letters / len(par) > 0.88 and sum(w[0].isalpha() for w in words) / len(words) > 0.85


def build() -> list[str]:
    seen: set[str] = set()
    out = []
    for doc in _docstrings():
        for par in re.split(r"\n\s*\n", doc):
            text = " ".join(par.split())
            if _is_prose(par) and text not in seen:
                seen.add(text)
                out.append(text)
    return out


if __name__ == "__main__":
    paragraphs = build()
    (HERE / "english.txt").write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    info = {"paragraphs": len(paragraphs), "characters": sum(map(len, paragraphs)),
            "python": sys.version.split()[0], "source": "Python standard library docstrings and pydoc help topics (PSF License)",
            "builder": "data/corpus/build.py"}
    (HERE / "english.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(info)
