"""Saving and tabulating the tools' result objects: one on-disk layout and one long-form table for all.

A result directory holds ``result.safetensors`` (the tensors) and ``result.json`` (metadata, with the
result's ``"kind"``), both written atomically. :func:`labelled_frame` turns a tensor with named axes
into a long-form ``pandas.DataFrame`` (one row per cell), which is what every result's ``.to_frame()``
returns.

Example:
    >>> import torch, tempfile
    >>> d = write_result(tempfile.mkdtemp(), "Demo", {"x": torch.ones(2, 3)}, {"note": "hi"})
    >>> tensors, meta = read_result(d, "Demo")
    >>> tensors["x"].shape, meta["note"]
    (torch.Size([2, 3]), 'hi')
    >>> labelled_frame(torch.arange(4.0).reshape(2, 2), ["layer", "pos"], {"pos": ["a", "b"]}).to_dict("records")[3]
    {'layer': 1, 'pos': 'b', 'value': 3.0}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from interp.trace.layout import atomic_save_tensors, atomic_write_bytes


def _map(x: Any, fn: Any) -> Any:
    return [_map(v, fn) for v in x] if isinstance(x, list) else fn(x)


def nan_to_none(x: Any) -> Any:
    """Nested lists with every float NaN replaced by ``None`` (JSON has no NaN)."""
    return _map(x, lambda v: None if isinstance(v, float) and math.isnan(v) else v)


def write_result(path: str | os.PathLike[str], kind: str, tensors: Mapping[str, torch.Tensor | None],
                 meta: Mapping[str, Any]) -> Path:
    """Write a result as ``path/result.safetensors`` (the non-``None`` tensors) and ``path/result.json``
    (``meta``, JSON-serialisable, plus ``"kind"``), each atomically; returns ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out / "result.safetensors", {n: t for n, t in tensors.items() if t is not None})
    atomic_write_bytes(out / "result.json", json.dumps({**meta, "kind": kind}, indent=1).encode("utf-8"))
    return out


def read_result(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, meta)`` written by :func:`write_result`.

    Raises:
        FileNotFoundError: ``path`` holds no saved result.
        ValueError: it holds a result of another kind.
    """
    src = Path(path)
    if not (src / "result.json").is_file() or not (src / "result.safetensors").is_file():
        raise FileNotFoundError(f"no saved result in {str(src)!r} (expected result.json and result.safetensors)")
    meta = json.loads((src / "result.json").read_text(encoding="utf-8"))
    found = meta.pop("kind", None)
    if found != kind:
        raise ValueError(f"{src} holds a {found}, not a {kind}")
    return load_file(str(src / "result.safetensors")), meta


def labelled_frame(values: torch.Tensor | Sequence[Any], axes: Sequence[str],
                   labels: Mapping[str, Sequence[Any]] | None = None, name: str = "value") -> Any:
    """A long-form ``pandas.DataFrame``: one column per axis (its labels, or the index where an axis has
    none) and a ``name`` column with the cell's value."""
    import pandas as pd

    t = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
    if t.dim() != len(axes):
        raise ValueError(f"values have {t.dim()} dims but {len(axes)} axes were named: {list(axes)}")
    labels = labels or {}
    grids = torch.meshgrid(*[torch.arange(n) for n in t.shape], indexing="ij") if t.dim() else []
    cols: dict[str, Any] = {}
    for ax, g in zip(axes, grids, strict=True):
        idx = g.flatten().tolist()
        lab = labels.get(ax)
        if lab is not None and len(lab) != t.shape[len(cols)]:
            raise ValueError(f"axis {ax!r} has {t.shape[len(cols)]} entries but {len(lab)} labels")
        cols[ax] = [lab[i] for i in idx] if lab is not None else idx
    cols[name] = t.detach().flatten().cpu().tolist()
    return pd.DataFrame(cols)


__all__ = ["labelled_frame", "nan_to_none", "read_result", "write_result"]
