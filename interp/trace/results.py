"""The one result surface every tool's result shares, and the versioned files results are saved in.

A result is a frozen dataclass that derives from :class:`Result`. It names the axes of its tensors in
``AXES`` and its plot views in ``VIEWS`` and gets, from the base:

- ``plot(view=None, **options)`` → ``plotly.graph_objects.Figure`` (``VIEWS[0]`` by default; an unknown view
  is an error listing the valid ones); a view ``v`` is the method ``_view_v``;
- ``to_frame()`` → ``pandas.DataFrame`` (long form: one row per cell of the first ``AXES`` tensor);
- ``to_dict()`` → the labelled-array JSON the CLI's ``--json`` writes;
- ``save(path)`` / ``load(path)``: ``result.safetensors`` + ``result.json`` recording the class, its schema
  version and the interp version; unknown keys are ignored, older schema versions are upgraded by the class's
  ``UPGRADES``, newer ones refused;
- a short ``repr`` (shapes and headline numbers) and ``summary()`` (a few lines for a notebook or the CLI).

Example:
    >>> import torch, tempfile
    >>> from dataclasses import dataclass
    >>> from interp.trace.results import Result
    >>> @dataclass(frozen=True, repr=False)
    ... class Scores(Result):
    ...     AXES = {"values": ("layer", "head")}
    ...     values: torch.Tensor
    ...     def headline(self):
    ...         return {"max": float(self.values.max())}
    >>> r = Scores(torch.arange(6.0).reshape(2, 3))
    >>> r
    Scores(values[layer=2, head=3], max=5)
    >>> Scores.load(r.save(tempfile.mkdtemp())).values.sum().item()
    15.0
    >>> r.to_frame().to_dict("records")[-1]
    {'layer': 1, 'head': 2, 'value': 5.0}
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError, unknown_name
from interp.trace.codec import decode_fields, encode, encode_fields
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.version import __version__

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

R = TypeVar("R", bound="Result")
Upgrade = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


def _map(x: Any, fn: Any) -> Any:
    return [_map(v, fn) for v in x] if isinstance(x, list) else fn(x)


def nan_to_none(x: Any) -> Any:
    """Nested lists with every float NaN replaced by ``None`` (JSON has no NaN)."""
    return _map(x, lambda v: None if isinstance(v, float) and math.isnan(v) else v)


# -- files ---------------------------------------------------------------------------------------
def write_result(path: str | os.PathLike[str], cls_name: str, tensors: Mapping[str, torch.Tensor | None],
                 fields: Mapping[str, Any], *, schema_version: int = 1, module: str = "") -> Path:
    """Write ``path/result.safetensors`` (the non-``None`` tensors) and ``path/result.json`` (the class, its
    schema version, the interp version and ``fields``), each atomically; returns ``path``."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"cannot save a result to {str(out)!r}: it is a file, and a result is a directory")
    out.mkdir(parents=True, exist_ok=True)
    head = {"class": cls_name, "module": module, "schema_version": schema_version, "interp_version": __version__}
    atomic_save_tensors(out / "result.safetensors", {n: t for n, t in tensors.items() if t is not None})
    atomic_write_bytes(out / "result.json", json.dumps({**head, "fields": dict(fields)}, indent=1).encode("utf-8"))
    return out


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON of a saved result (v0.1 files, which had ``"kind"`` and flat fields, are read as schema 0)."""
    src = Path(path)
    if not (src / "result.json").is_file() or not (src / "result.safetensors").is_file():
        raise BadInputError(f"no saved result in {str(src)!r} (expected result.json and result.safetensors)")
    try:
        raw = json.loads((src / "result.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(f"{src / 'result.json'} is not valid JSON ({e}); save the result again") from None
    if not isinstance(raw, dict):
        raise CorruptStoreError(f"{src / 'result.json'} does not hold a saved result")
    if "class" not in raw:  # interp 0.1: {"kind": name, **fields}
        kind = raw.pop("kind", None)
        return {"class": kind, "module": "", "schema_version": 0, "interp_version": "0.1.0", "fields": raw}
    return raw


def read_result(path: str | os.PathLike[str], cls_name: str | Sequence[str], *, schema_version: int = 1,
                upgrades: Mapping[int, Upgrade] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, fields)`` of a result written by :func:`write_result` (or by interp 0.1), upgraded to
    ``schema_version`` with ``upgrades[v]`` (each turns version ``v`` into ``v + 1`` in place).

    Raises:
        BadInputError: ``path`` holds no saved result, or one of another class.
        SchemaVersionError: the file was written with a newer schema than this interp reads.
    """
    head = read_header(path)
    names = [cls_name] if isinstance(cls_name, str) else list(cls_name)
    if head.get("class") not in names:
        raise BadInputError(f"{path} holds a {head.get('class')}, not a {names[0]}")
    version = head.get("schema_version")
    if not isinstance(version, int) or version < 0:
        raise CorruptStoreError(f"{path}/result.json has a bad schema_version {version!r}")
    if version > schema_version:
        raise SchemaVersionError(
            f"{path} holds a {names[0]} of schema version {version}, written by interp {head.get('interp_version')}; "
            f"this interp ({__version__}) reads up to version {schema_version}: upgrade interp to load it")
    try:
        tensors = load_file(str(Path(path) / "result.safetensors"))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CorruptStoreError(f"{path}/result.safetensors cannot be read ({e}); save the result again") from None
    fields = dict(head.get("fields") or {})
    for v in range(version, schema_version):
        if upgrades and v in upgrades:
            upgrades[v](tensors, fields)
    return tensors, fields


def load_result(path: str | os.PathLike[str]) -> Result:
    """Load any saved result, whatever its class (the class is imported from the module the file names).

    Example:
        >>> import torch, tempfile, interp
        >>> from interp.patching import PatchingResult
        >>> r = PatchingResult(values=torch.ones(1, 2), axes=("layer", "pos"), coords={"layer": (0,), "pos": (0, 1)},
        ...                    tokens=("a", "b"), component="resid_pre", method="exact", direction="denoising",
        ...                    metric="logit_diff", clean_value=1.0, corrupted_value=0.0)
        >>> type(interp.load_result(r.save(tempfile.mkdtemp()))).__name__
        'PatchingResult'
    """
    head = read_header(path)
    name, module = head.get("class"), head.get("module") or ""
    parts = module.split(".") if module else []
    candidates = [".".join(parts[:i]) for i in range(len(parts), 1, -1)]  # the module, then its packages
    candidates += [f"interp.{p}" for p in ("lens", "patching", "probing", "heads", "features", "induction",
                                           "causal", "circuits", "layers")]
    for mod_name in candidates:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        cls = getattr(mod, str(name), None)
        if isinstance(cls, type) and hasattr(cls, "load"):
            return cls.load(path)  # type: ignore[no-any-return]
    raise BadInputError(f"{path} holds a {name!r}, which is no result class this interp knows")


# -- tables --------------------------------------------------------------------------------------
def labelled_frame(values: torch.Tensor | Sequence[Any], axes: Sequence[str],
                   labels: Mapping[str, Sequence[Any]] | None = None, name: str = "value") -> pd.DataFrame:
    """A long-form ``pandas.DataFrame``: one column per axis (its labels, or the index where an axis has
    none) and a ``name`` column with the cell's value.

    Example:
        >>> labelled_frame(torch.arange(4.0).reshape(2, 2), ["layer", "pos"], {"pos": ["a", "b"]}).to_dict("records")[3]
        {'layer': 1, 'pos': 'b', 'value': 3.0}
    """
    import pandas as pd

    t = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
    if t.dim() != len(axes):
        raise BadInputError(f"values have {t.dim()} dims but {len(axes)} axes were named: {list(axes)}")
    labels = labels or {}
    grids = torch.meshgrid(*[torch.arange(n) for n in t.shape], indexing="ij") if t.dim() else []
    cols: dict[str, Any] = {}
    for ax, g in zip(axes, grids, strict=True):
        idx = g.flatten().tolist()
        lab = labels.get(ax)
        if lab is not None and len(lab) != t.shape[len(cols)]:
            raise BadInputError(f"axis {ax!r} has {t.shape[len(cols)]} entries but {len(lab)} labels")
        cols[ax] = [lab[i] for i in idx] if lab is not None else idx
    cols[name] = t.detach().flatten().cpu().tolist()
    return pd.DataFrame(cols)


def labelled_array(values: torch.Tensor, axes: Sequence[str], labels: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """``{"axes", "labels", "values"}``: one tensor as the CLI's ``--json`` writes it (NaN → ``null``)."""
    return {"axes": list(axes), "labels": {a: list(labels[a]) for a in axes if a in labels},
            "values": nan_to_none(values.detach().cpu().tolist())}


# -- the base ------------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    s = repr(x)
    return s if len(s) <= 40 else s[:37] + "..."


class Result:
    """Base of every result: plot views, tables, labelled JSON, versioned save/load, short repr, summary.

    Subclasses are ``@dataclass(frozen=True, repr=False)`` and set:

    - ``AXES``: ``{tensor field: axis names}`` (the first is the main one for ``to_frame``);
    - ``VIEWS``: plot views, the first the default; each view ``v`` is a method ``_view_v(self, **options)``;
    - ``SCHEMA_VERSION`` and ``UPGRADES`` (``{v: fn(tensors, fields)}`` turning a version-``v`` file into
      ``v + 1``; interp 0.1's files are version 0) when a field changes;
    - optionally ``labels()`` (per-axis labels), ``headline()`` (the numbers a repr shows), ``JSON_SKIP``
      (large per-example tensors that ``to_dict`` leaves out; they are still saved) and a richer ``to_frame``.
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    VIEWS: ClassVar[tuple[str, ...]] = ()
    SCHEMA_VERSION: ClassVar[int] = 1
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {}
    SAVED_AS: ClassVar[tuple[str, ...]] = ()  # earlier class names in saved files
    JSON_SKIP: ClassVar[tuple[str, ...]] = ()  # tensors left out of to_dict() (per-example arrays), still saved

    # -- plots ----------------------------------------------------------------------------------
    def plot(self, view: str | None = None, **options: Any) -> Figure:
        """A Plotly figure of one view (the class docstring lists them; ``None``: the first)."""
        if not self.VIEWS:
            raise BadInputError(f"{type(self).__name__} has no plot views")
        view = self.VIEWS[0] if view is None else view
        if view not in self.VIEWS:
            raise unknown_name("view", view, self.VIEWS, hint=f"(views of {type(self).__name__})")
        return getattr(self, f"_view_{view}")(**options)  # type: ignore[no-any-return]

    # -- tables ---------------------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        """Labels of the axes (``{"layer": [...], "pos": [...]}``); axes without labels are indexed."""
        return {}

    def to_frame(self) -> pd.DataFrame:
        """A long-form table: one row per cell of the main tensor (the first in ``AXES``)."""
        if not self.AXES:
            import pandas as pd

            return pd.DataFrame([self.headline()])
        name, axes = next(iter(self.AXES.items()))
        return labelled_frame(getattr(self, name), axes, self.labels())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"class", "schema_version", "arrays": {name: {"axes", "labels", "values"}}, "attributes"}``."""
        labels = self.labels()
        arrays = {n: labelled_array(getattr(self, n), axes, labels) for n, axes in self.AXES.items()
                  if isinstance(getattr(self, n, None), torch.Tensor) and n not in self.JSON_SKIP}
        tensors: dict[str, torch.Tensor] = {}
        attrs = {f.name: encode(getattr(self, f.name), f.name, tensors) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                 if f.name not in arrays and f.name not in self.JSON_SKIP
                 and not isinstance(getattr(self, f.name), torch.Tensor)}
        attrs = {k: v for k, v in attrs.items() if not _has_tensor(v)}
        return {"class": type(self).__name__, "schema_version": self.SCHEMA_VERSION, "arrays": arrays,
                "attributes": attrs}

    # -- files ----------------------------------------------------------------------------------
    def _to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, fields)`` to save; override for fields the type-hint codec cannot handle."""
        return encode_fields(self)

    @classmethod
    def _from_saved(cls: type[R], tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> R:
        return decode_fields(cls, tensors, fields)  # type: ignore[no-any-return]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path/result.safetensors`` and ``path/result.json`` (atomically); returns ``path``."""
        tensors, fields = self._to_saved()
        return write_result(path, type(self).__name__, tensors, fields, schema_version=self.SCHEMA_VERSION,
                            module=type(self).__module__)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a result saved by :meth:`save` (by this interp or an older one)."""
        tensors, fields = read_result(path, (cls.__name__, *cls.SAVED_AS), schema_version=cls.SCHEMA_VERSION,
                                      upgrades=cls.UPGRADES)
        return cls._from_saved(tensors, fields)

    # -- text -----------------------------------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        """The few numbers that say what this result found (shown by ``repr`` and ``summary``)."""
        return {}

    def _shapes(self) -> list[str]:
        out = []
        for n, axes in self.AXES.items():
            t = getattr(self, n, None)
            if isinstance(t, torch.Tensor):
                dims = ", ".join(f"{a}={s}" for a, s in zip(axes, t.shape, strict=False))
                out.append(f"{n}[{dims}]")
        return out

    def __repr__(self) -> str:
        parts = self._shapes()[:3] + [f"{k}={_fmt(v)}" for k, v in self.headline().items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def summary(self) -> str:
        """A few lines: what this is, its arrays and its headline numbers."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        lines = [f"{type(self).__name__}: {doc[0]}" if doc else type(self).__name__]
        lines += [f"  {s}" for s in self._shapes()]
        lines += [f"  {k}: {_fmt(v)}" for k, v in self.headline().items()]
        if self.VIEWS:
            lines.append(f"  views: {', '.join(self.VIEWS)}")
        return "\n".join(lines)


def _has_tensor(x: Any) -> bool:
    if isinstance(x, dict):
        return "$tensor" in x or any(_has_tensor(v) for v in x.values())
    if isinstance(x, list):
        return any(_has_tensor(v) for v in x)
    return False


__all__ = ["Result", "labelled_array", "labelled_frame", "load_result", "nan_to_none", "read_header", "read_result",
           "write_result"]
