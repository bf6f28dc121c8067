"""What a capture reads: texts with per-sequence metadata, or token ids, from any of the inputs it takes.

A capture's ``inputs`` are the ``inputs`` of every tool (a text, a list of texts, token ids ``[batch, pos]``,
``(ids, mask)``, a :class:`~interp.trace.Trace`, a :class:`~interp.trace.TraceStore`) plus datasets: a ``.txt``
file (one sequence per non-blank line), a ``.parquet`` file, a Hugging Face ``datasets.Dataset``, or a labelled
set (any object with ``texts`` and ``metadata``, like :class:`interp.probing.LabelledSet`).

Example:
    >>> from interp.trace.dataset import load_texts
    >>> load_texts(["a b", "c"])
    (['a b', 'c'], [{'text': 'a b'}, {'text': 'c'}])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union, cast, runtime_checkable

from interp.errors import BadInputError
from interp.models import Inputs
from interp.trace.layout import MissingFileError

DATA_SUFFIXES = (".txt", ".parquet")
_FILE_LIKE = (*DATA_SUFFIXES, ".csv", ".tsv", ".json", ".jsonl", ".arrow")  # a str ending so names a file


@runtime_checkable
class LabelledTexts(Protocol):
    """Texts with one metadata dict each (:class:`interp.probing.LabelledSet` is one)."""

    @property
    def texts(self) -> Sequence[str]: ...

    @property
    def metadata(self) -> Sequence[dict[str, Any]]: ...


@runtime_checkable
class ColumnDataset(Protocol):
    """A table of columns (a Hugging Face ``datasets.Dataset``)."""

    @property
    def column_names(self) -> list[str]: ...

    def __getitem__(self, key: str) -> Any: ...


Dataset = Union[Inputs, "os.PathLike[str]", LabelledTexts, ColumnDataset]
"""What :func:`interp.trace.capture` takes as ``inputs``: any tool's inputs, a dataset file, a labelled set or a
``datasets.Dataset``."""


def load_texts(inputs: Dataset, *, column: str = "text") -> tuple[list[str], list[dict[str, Any]]]:
    """Texts and per-sequence metadata from a text dataset.

    ``inputs`` is a text, a list of texts, a ``.txt`` file (one sequence per non-blank line), a ``.parquet``
    file, a Hugging Face ``datasets.Dataset`` or a labelled set (``texts`` + ``metadata``). For Parquet and
    datasets the text is in ``column`` and every other column becomes metadata. Each metadata row has the
    text under ``"text"``. A string is a file when it names an existing file or ends like one (``.txt``,
    ``.parquet``, ``.csv``...); otherwise it is one text.

    Raises:
        MissingFileError: a file that does not exist (a :class:`BadInputError` and a ``FileNotFoundError``).
        BadInputError: an empty dataset, a blank sequence, a missing ``column``, an unsupported file type.
        TypeError: a sequence that is not a ``str``, or an unsupported dataset type.

    Example:
        >>> from interp.trace import load_texts
        >>> load_texts("The cat sat.")
        (['The cat sat.'], [{'text': 'The cat sat.'}])
    """
    meta: list[dict[str, Any]]
    path = _as_path(inputs)
    if path is not None:
        texts, meta = _read_file(path, column)
    elif isinstance(inputs, str):
        texts, meta = [inputs], [{}]
    elif isinstance(inputs, LabelledTexts) and not isinstance(inputs, (str, Sequence)):
        texts, meta = list(inputs.texts), [dict(m) for m in inputs.metadata]
        if len(texts) != len(meta):
            raise BadInputError(f"the labelled set has {len(texts)} texts but {len(meta)} metadata rows")
    elif isinstance(inputs, ColumnDataset):  # datasets.Dataset
        names = list(inputs.column_names)
        if column not in names:
            raise BadInputError(f"dataset has no column {column!r}; columns: {', '.join(names)}")
        others = [c for c in names if c != column]
        texts = list(inputs[column])
        cols = {c: list(inputs[c]) for c in others}
        meta = [{c: cols[c][i] for c in others} for i in range(len(texts))]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, (bytes, bytearray)):
        texts = list(cast("Sequence[str]", inputs))  # each is checked below
        meta = [{} for _ in texts]
    else:
        raise TypeError(f"unsupported dataset type {type(inputs).__name__}: use a text, a list of texts, a "
                        ".txt/.parquet path, a datasets.Dataset, a labelled set, token ids, a Trace or a TraceStore")
    if not texts:
        raise BadInputError("the dataset is empty: nothing to capture")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"sequence {i} is a {type(t).__name__}, not a str: {t!r}")
        if not t.strip():
            raise BadInputError(f"sequence {i} is empty or blank: {t!r}; every sequence needs text")
    return texts, [{"text": t, **{k: v for k, v in m.items() if k != "text"}} for t, m in zip(texts, meta, strict=True)]


def _as_path(inputs: object) -> Path | None:
    """The dataset file ``inputs`` names, or ``None`` when it is not a file name."""
    if isinstance(inputs, os.PathLike):
        p = Path(inputs)
    elif isinstance(inputs, str) and "\n" not in inputs and len(inputs) < 4096:
        p = Path(inputs)
        try:
            exists = p.is_file()
        except OSError:  # a text too odd to be a path
            return None
        if not exists and p.suffix.lower() not in _FILE_LIKE:
            return None
    else:
        return None
    if not p.is_file():
        raise MissingFileError(f"no dataset file at {os.fspath(p)!r} (not an existing file); give a .txt or "
                               ".parquet path, or pass the texts themselves as a list")
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise BadInputError(f"unsupported dataset file {os.fspath(p)!r}: use a .txt (one sequence per line) or a "
                            ".parquet file")
    return p


def _read_file(p: Path, column: str) -> tuple[list[str], list[dict[str, Any]]]:
    if p.suffix.lower() == ".txt":
        texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, [{} for _ in texts]
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    if column not in table.column_names:
        raise BadInputError(f"{p} has no column {column!r}; columns: {', '.join(table.column_names)}")
    rows = table.to_pylist()
    return [r.pop(column) for r in rows], rows


__all__ = ["DATA_SUFFIXES", "ColumnDataset", "Dataset", "LabelledTexts", "load_texts"]
