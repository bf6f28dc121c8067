"""Labelled sets and the per-token / per-sequence labels a probe is trained on.

A labelled set is sequences plus labels: a Parquet file (``text``, ``label``, ``char_labels``...,
see ``data/probing/build.py``) or plain Python lists. Labels travel with the trace as per-sequence
metadata (``capture`` keeps every Parquet column but ``text`` as metadata; ``model.run(...,
metadata=...)`` does the same in memory), so a store captured from a labelled set can be probed
without the set at hand.

Label kinds, per sequence:

- a scalar (``"python"``, ``3``, ``0.7``): one label for the whole sequence;
- ``char_labels``: a list with one value per character of the sequence's text (``-1``: no label);
  a token takes the label of its last character, found by concatenating the token strings;
- a per-token list (one value per real token; ``None`` for no label).

Example:
    >>> align_char_labels(["def", " f", "(x"], [1, 1, 1, -1, 0, 0, 1])
    [1, 0, 1]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.errors import BadInputError, unknown_name

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "probing"
BUILTIN_SETS = ("python_prose", "digits", "list_position")
IGNORE = -1

Label = str | int | float | bool
"""One label: a class (any scalar) or a regression target."""
SequenceLabels = Label | Sequence[Label | None] | None
"""The labels of one sequence: a scalar for the whole sequence, a per-character list or a per-token list."""


def align_char_labels(tokens: Sequence[str], char_labels: Sequence[Label | None]) -> list[Label | None]:
    """Per-token labels from per-character labels: each token takes the label of its last character.

    Args:
        tokens: the real (non-padding) token strings of one sequence; their concatenation must be a
            prefix of the labelled text (a truncated sequence is fine).
        char_labels: one label per character of the text.

    Returns:
        One label per token (``-1`` where the last character has none, or for an empty token).

    Raises:
        BadInputError: the token strings do not line up with the characters (non-ASCII text whose
            tokens split characters, or labels of another text).

    Example:
        >>> align_char_labels(["The", " cat", " sat"], [0, 0, 0, None, 1, 1, 1, None, 2, 2, 2])
        [0, 1, 2]
    """
    out: list[Label | None] = []
    pos = 0
    for t in tokens:
        pos += len(t)
        if pos > len(char_labels):
            raise BadInputError(f"the tokens run past the {len(char_labels)} character labels (at token {t!r}): "
                                "the labels belong to another text, or the text is not ASCII")
        out.append(char_labels[pos - 1] if t else IGNORE)
    return out


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class LabelledSet:
    """Sequences with their labels, as read from ``data/probing/<name>.parquet`` or built from lists.

    Attributes:
        texts: the sequences.
        metadata: one dict per sequence with every other column (``label``, ``char_labels``...).
        name: the set's name.

    Example:
        >>> ds = LabelledSet.load("digits")
        >>> len(ds), sorted(ds.metadata[0])
        (300, ['char_labels', 'label', 'source'])
        >>> LabelledSet.from_lists(["a b", "1 2"], label=["letters", "digits"]).column("label")
        ['letters', 'digits']
    """

    texts: tuple[str, ...]
    metadata: tuple[dict[str, object], ...]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.metadata):
            raise BadInputError(f"{len(self.texts)} texts but {len(self.metadata)} metadata rows")

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], text_column: str = "text") -> LabelledSet:
        """Read a shipped set by name (``"python_prose"``, ``"digits"``, ``"list_position"``) or a Parquet path."""
        import pyarrow.parquet as pq

        p = Path(name_or_path)
        if not p.suffix and str(name_or_path) in BUILTIN_SETS:
            p = DATA_DIR / f"{name_or_path}.parquet"
        if not p.is_file():
            if not p.suffix and len(p.parts) == 1:
                raise unknown_name("labelled set", str(name_or_path), BUILTIN_SETS,
                                   hint="(or give the path of a Parquet file; the shipped sets are built by "
                                        "data/probing/build.py)")
            raise BadInputError(f"no labelled set file at {str(name_or_path)!r}: give a Parquet path or one of "
                                f"{', '.join(BUILTIN_SETS)}")
        rows = pq.read_table(p).to_pylist()
        if rows and text_column not in rows[0]:
            raise BadInputError(f"{p} has no column {text_column!r}; columns: {', '.join(rows[0])}")
        texts = tuple(r.pop(text_column) for r in rows)
        return cls(texts, tuple(rows), p.stem)

    @classmethod
    def from_lists(cls, texts: Sequence[str], name: str = "", **columns: Sequence[object]) -> LabelledSet:
        """Build a set from a list of texts and label columns of the same length."""
        for k, v in columns.items():
            if len(v) != len(texts):
                raise BadInputError(f"column {k!r} has {len(v)} values for {len(texts)} texts")
        meta = tuple({k: v[i] for k, v in columns.items()} for i in range(len(texts)))
        return cls(tuple(texts), meta, name)

    def column(self, name: str) -> list[object]:
        """One metadata column as a list.

        Raises:
            UnknownNameError: no such column (the message lists the columns).
        """
        if self.metadata and name not in self.metadata[0]:
            raise unknown_name("column", name, list(self.metadata[0]), hint=f"(of labelled set {self.name!r})")
        return [m[name] for m in self.metadata]

    def select(self, n: int) -> LabelledSet:
        """The first ``n`` sequences."""
        return LabelledSet(self.texts[:n], self.metadata[:n], self.name)


def token_labels(tokens: Sequence[Sequence[str]], labels: Sequence[object]) -> list[list[Label | None]]:
    """Per-token labels of every sequence from per-sequence, per-character or per-token labels.

    Args:
        tokens: the real token strings of each sequence.
        labels: per sequence, a scalar (broadcast to every token), a per-character list (its length
            is at least the tokens' total length in characters, more than the token count), or a
            per-token list.

    Returns:
        One list per sequence with one label per token; ``None`` where there is none.

    Raises:
        BadInputError: a label list fits neither the tokens nor the characters, or the number of entries is not
            the number of sequences.

    Example:
        >>> token_labels([["a", "b"], ["cd"]], ["x", [7]])
        [['x', 'x'], [7]]
    """
    if len(tokens) != len(labels):
        raise BadInputError(f"{len(labels)} label entries for {len(tokens)} sequences")
    out: list[list[Label | None]] = []
    for i, (toks, lab) in enumerate(zip(tokens, labels, strict=True)):
        tolist = getattr(lab, "tolist", None)
        if not isinstance(lab, str) and callable(tolist):  # NumPy arrays and scalars, tensors
            lab = tolist()
        if isinstance(lab, str) or not isinstance(lab, Sequence):
            out.append([None if _missing(lab) else _scalar(lab, i)] * len(toks))
            continue
        n_chars = sum(len(t) for t in toks)
        if len(lab) == len(toks) and len(lab) != n_chars:
            per_tok = list(lab)
        elif len(lab) >= n_chars and len(lab) > len(toks):
            per_tok = [None if v == IGNORE else v for v in align_char_labels(toks, lab)]
        elif len(lab) == len(toks):
            per_tok = list(lab)
        else:
            raise BadInputError(f"sequence {i}: {len(lab)} labels fit neither its {len(toks)} tokens nor its "
                                f"{n_chars} characters")
        out.append([None if _missing(v) else _scalar(v, i) for v in per_tok])
    return out


def _scalar(v: object, seq: int) -> Label:
    """A label as a plain scalar (NumPy scalars become Python ones)."""
    if isinstance(v, str | int | float | bool):
        return v
    item = getattr(v, "item", None)
    if callable(item):
        out = item()
        if isinstance(out, str | int | float | bool):
            return out
    raise BadInputError(f"sequence {seq}: label {v!r} is not a scalar (a str, int, float or bool)")


__all__ = ["BUILTIN_SETS", "DATA_DIR", "IGNORE", "Label", "LabelledSet", "SequenceLabels", "align_char_labels",
           "token_labels"]
