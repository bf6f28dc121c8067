"""Build the labelled probing sets in ``data/probing/`` from text that ships with Python or is generated here.

Run from the repository root::

    .venv/bin/python data/probing/build.py

Every set is a Parquet file with one row per sequence:

- ``text``: the sequence (ASCII only, so token strings concatenate back to it exactly);
- ``label``: a per-sequence label (a string);
- ``char_labels``: one int per character of ``text`` (``-1``: no label); a token takes the label of its
  last character (see :func:`interp.probing.token_labels`);
- ``source``: where the text came from.

Sets:

- ``python_prose.parquet``: chunks of Python source (stdlib modules, parsed and unparsed with ``ast``
  so that comments and docstrings are gone) vs English prose (paragraphs of the Python reference
  manual shipped as ``pydoc_data.topics``). ``label`` is ``"python"`` or ``"prose"``; every character
  carries 1 (Python) or 0 (prose).
- ``digits.parquet``: generated sentences with numbers in them (years, prices, counts, times);
  ``char_labels`` is 1 on digit characters, 0 elsewhere; ``label`` is ``"has_digits"``.
- ``list_position.parquet``: generated lists of 3-7 nouns (``"Items: apple, river, lamp."``);
  ``char_labels`` is the position (0-based) of the word a character belongs to, -1 on separators
  and the prefix; ``label`` is the list length as a string.

Deterministic: fixed seeds and sorted sources; the Python version that produced the text is stored
in each file's Parquet metadata.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent
STDLIB_MODULES = ("argparse", "calendar", "configparser", "csv", "dataclasses", "difflib", "fractions", "ftplib",
                  "gettext", "heapq", "inspect", "ipaddress", "json.decoder", "json.encoder", "logging",
                  "mailbox", "netrc", "optparse", "pathlib", "pprint", "queue", "random", "sched", "shlex",
                  "shutil", "statistics", "string", "tabnanny", "textwrap", "threading", "tokenize", "trace",
                  "turtle", "uuid", "wave", "zipfile")
N_PER_CLASS = 160
CHUNK_CHARS = (280, 420)
NOUNS = ("apple", "river", "lamp", "chair", "stone", "bird", "table", "cloud", "horse", "garden", "window",
         "bread", "music", "paper", "forest", "coin", "shirt", "ocean", "pencil", "bottle", "mountain", "door",
         "cat", "tree", "road", "glass", "book", "flower", "ship", "candle", "engine", "island", "letter")
PREFIXES = ("Items:", "The list is", "We need", "Shopping list:", "Remember these words:", "She packed")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _chunks(lines: list[str], rng: random.Random) -> list[str]:
    out, cur = [], []
    target = rng.randint(*CHUNK_CHARS)
    for line in lines:
        cur.append(line)
        if sum(len(c) + 1 for c in cur) >= target:
            out.append("\n".join(cur))
            cur, target = [], rng.randint(*CHUNK_CHARS)
    return out


def python_chunks(rng: random.Random) -> list[tuple[str, str]]:
    chunks: list[tuple[str, str]] = []
    for mod in STDLIB_MODULES:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        code = ast.unparse(_strip_docstrings(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))))
        lines = [ln for ln in code.splitlines() if ln.strip() and ln.isascii()]
        chunks += [(c, mod) for c in _chunks(lines, rng)]
    return chunks


def prose_chunks(rng: random.Random) -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    chunks: list[tuple[str, str]] = []
    for name in sorted(topics):
        paras = topics[name].split("\n\n")
        sentences: list[str] = []
        for p in paras:
            lines = p.splitlines()
            if (not lines or any(ln.startswith(" ") for ln in lines) or not p.isascii()
                    or any(set(ln.strip()) <= set("*=-") for ln in lines) or ">>>" in p or "::=" in p):
                continue
            text = " ".join(ln.strip() for ln in lines)
            letters = sum(ch.isalpha() or ch == " " for ch in text)
            if len(text) < 120 or letters < 0.9 * len(text):
                continue
            sentences.append(text)
        buf = ""
        target = rng.randint(*CHUNK_CHARS)
        for s in sentences:
            buf = f"{buf} {s}".strip()
            if len(buf) >= target:
                cut = buf.rfind(" ", 0, target + 40)
                chunks.append((buf[:cut if cut > 0 else len(buf)], f"pydoc_data.topics:{name}"))
                buf, target = "", rng.randint(*CHUNK_CHARS)
    return chunks


def build_python_prose(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    py, prose = python_chunks(rng), prose_chunks(rng)
    if len(py) < N_PER_CLASS or len(prose) < N_PER_CLASS:
        raise RuntimeError(f"not enough text: {len(py)} Python and {len(prose)} prose chunks, need {N_PER_CLASS}")
    rows = [{"text": t, "label": "python", "char_labels": [1] * len(t), "source": s}
            for t, s in rng.sample(py, N_PER_CLASS)]
    rows += [{"text": t, "label": "prose", "char_labels": [0] * len(t), "source": s}
             for t, s in rng.sample(prose, N_PER_CLASS)]
    rng.shuffle(rows)
    return rows


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randint(1900, 2030))
    if kind == 1:
        return f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if kind == 2:
        return f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    if kind == 3:
        return str(rng.randint(2, 99))
    return str(rng.randint(100, 99999))


def build_digits(n: int = 300, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    templates = ("In {n} the town had {n} houses and {n} bridges.", "The ticket cost {n} dollars at {n}.",
                 "She ran {n} miles in {n} minutes, then rested for {n} hours.",
                 "Room {n} is on floor {n}, next to the {w}.", "We counted {n} birds near the {w} and {n} by the {w}.",
                 "The train leaves at {n} from platform {n}.", "Order {n} contains {n} items and one {w}.",
                 "About {n} people saw the {w} in {n}.")
    rows = []
    for _ in range(n):
        parts = [rng.choice(templates) for _ in range(rng.randint(2, 4))]
        text = " ".join(parts)
        while "{n}" in text or "{w}" in text:
            text = text.replace("{n}", _number(rng), 1).replace("{w}", rng.choice(NOUNS), 1)
        rows.append({"text": text, "label": "has_digits", "char_labels": [int(c.isdigit()) for c in text],
                     "source": "generated"})
    return rows


def build_list_position(n: int = 300, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(3, 7)
        words = rng.sample(NOUNS, k)
        text, labels = rng.choice(PREFIXES), []
        labels = [-1] * len(text)
        for i, w in enumerate(words):
            sep = " " if i == 0 else ", "
            text += sep + w
            labels += [-1] * (len(sep) - 1) + [i] * (len(w) + 1)  # the space before a word belongs to it
        text += "."
        labels.append(-1)
        rows.append({"text": text, "label": str(k), "char_labels": labels, "source": "generated"})
    return rows


def write(rows: list[dict], name: str) -> Path:
    for r in rows:
        assert len(r["char_labels"]) == len(r["text"]) and r["text"].isascii(), r["text"][:60]
    schema = pa.schema([("text", pa.string()), ("label", pa.string()), ("char_labels", pa.list_(pa.int16())),
                        ("source", pa.string())], metadata={"python": sys.version.split()[0], "builder": "build.py"})
    table = pa.Table.from_pylist(rows, schema=schema)
    path = OUT / f"{name}.parquet"
    pq.write_table(table, path, compression="zstd")
    return path


def main() -> None:
    for name, rows in (("python_prose", build_python_prose()), ("digits", build_digits()),
                       ("list_position", build_list_position())):
        p = write(rows, name)
        print(f"{p}: {len(rows)} sequences, {p.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
