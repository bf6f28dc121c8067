"""Saving dataclass fields as JSON + tensors, guided by their type hints, and reading them back.

Tensors go to a flat ``{key: tensor}`` dict (a safetensors file); everything else to JSON. A top-level
tensor field is stored under its own name; a tensor nested in a dict, list or dataclass is stored under a
path key (``field/sub``) with ``{"$tensor": key}`` in the JSON. Reading uses the field's type hint to turn
JSON back into tuples, int-keyed dicts, nested dataclasses, named tuples and enums, and ignores keys the
class no longer has (so a file written before a field was removed still loads).

Example:
    >>> import torch
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     x: torch.Tensor
    ...     labels: tuple[str, ...]
    ...     names: dict[int, str]
    >>> tensors, fields = encode_fields(Demo(torch.ones(2), ("a", "b"), {3: "c"}))
    >>> sorted(tensors), fields
    (['x'], {'labels': ['a', 'b'], 'names': {'3': 'c'}})
    >>> decode_fields(Demo, tensors, {**fields, "gone": 1})
    Demo(x=tensor([1., 1.]), labels=('a', 'b'), names={3: 'c'})
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Union

import torch

from interp.errors import CorruptStoreError

log = logging.getLogger(__name__)
TENSOR_KEY = "$tensor"


def field_types(cls: type) -> dict[str, Any]:
    """The evaluated type hint of each dataclass field (``Any`` where a hint cannot be evaluated)."""
    return _field_types(cls)


@cache
def _field_types(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a hint naming something only imported under TYPE_CHECKING
        out: dict[str, Any] = {}
        ns = dict(vars(sys.modules[cls.__module__]))
        for f in dataclasses.fields(cls):
            try:
                out[f.name] = eval(f.type, ns) if isinstance(f.type, str) else f.type
            except Exception:
                out[f.name] = Any
        return out


def encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON-able data; tensors inside it are put into ``tensors`` under path keys."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {TENSOR_KEY: key}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (os.PathLike, Path)):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name), f"{key}/{f.name}", tensors) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): encode(v, f"{key}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):  # NumPy scalars
        return value.item()
    return value


def encode_fields(obj: Any, skip: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, fields)`` of a dataclass instance: top-level tensors under their field names (``None``
    tensors are left out), every other field as JSON-able data."""
    tensors: dict[str, torch.Tensor] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            tensors[f.name] = v.detach().cpu().contiguous()
        elif v is None and _is_tensor_hint(field_types(type(obj)).get(f.name)):
            continue
        else:
            fields[f.name] = encode(v, f.name, tensors)
    return tensors, fields


def _is_tensor_hint(hint: Any) -> bool:
    return hint is torch.Tensor or (_is_union(hint) and torch.Tensor in typing.get_args(hint))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def decode(data: Any, hint: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """JSON-able ``data`` back into the type ``hint`` names."""
    if isinstance(data, dict) and set(data) == {TENSOR_KEY}:
        key = data[TENSOR_KEY]
        if key not in tensors:
            raise CorruptStoreError(f"the saved result refers to tensor {key!r}, which its tensor file does not hold")
        return tensors[key]
    if hint is Any or hint is None or data is None:
        return data
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        for arg in args:
            if arg is type(None):
                continue
            if _fits(data, arg):
                return decode(data, arg, tensors)
        return data
    if origin is typing.Literal:
        return data
    if origin in (tuple, Sequence, list) or hint in (tuple, list):
        if not isinstance(data, list):
            return data
        if origin is tuple and args and args[-1] is not Ellipsis:
            out = [decode(v, a, tensors) for v, a in zip(data, args, strict=False)]
        else:
            item = args[0] if args else Any
            out = [decode(v, item, tensors) for v in data]
        return list(out) if origin is list or hint is list else tuple(out)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(data, dict):
            return data
        kt, vt = (*args, Any, Any)[:2]
        return {_key(k, kt): decode(v, vt, tensors) for k, v in data.items()}
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return hint(data)
        if hint is torch.dtype and isinstance(data, str):
            return getattr(torch, data)
        if dataclasses.is_dataclass(hint) and isinstance(data, dict):
            return decode_fields(hint, tensors, data)
        if issubclass(hint, tuple) and hasattr(hint, "_fields") and isinstance(data, list):  # NamedTuple
            hints = typing.get_type_hints(hint)
            return hint(*(decode(v, hints.get(n, Any), tensors) for n, v in zip(hint._fields, data, strict=False)))
        if hint is float and isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
    return data


def _fits(data: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if isinstance(data, dict) and set(data) == {TENSOR_KEY}:
        return hint is torch.Tensor
    if isinstance(data, list):
        return origin in (tuple, list, Sequence) or (isinstance(origin, type) and issubclass(origin, tuple))
    if isinstance(data, dict):
        return origin in (dict, Mapping) or dataclasses.is_dataclass(origin)
    if isinstance(data, bool):
        return origin is bool
    if isinstance(data, (int, float)):
        return origin in (int, float) or (isinstance(origin, type) and issubclass(origin, enum.Enum))
    if isinstance(data, str):
        return origin is str or origin is typing.Literal or (isinstance(origin, type) and issubclass(origin, enum.Enum))
    return True


def _key(k: str, hint: Any) -> Any:
    if hint is int:
        return int(k)
    if hint is float:
        return float(k)
    return k


def decode_fields(cls: type, tensors: Mapping[str, torch.Tensor], fields: Mapping[str, Any]) -> Any:
    """An instance of dataclass ``cls`` from saved ``(tensors, fields)``; unknown keys are ignored (logged),
    fields missing from the file take their defaults.

    Raises:
        CorruptStoreError: a field without a default is missing.
    """
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in fields:
            kwargs[f.name] = decode(fields[f.name], hints.get(f.name, Any), tensors)
        elif f.name in tensors:
            kwargs[f.name] = tensors[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if _is_tensor_hint(hints.get(f.name)) and type(None) in typing.get_args(hints.get(f.name)):
                kwargs[f.name] = None
            else:
                raise CorruptStoreError(f"the saved {cls.__name__} has no {f.name!r}; the file is incomplete")
    unknown = sorted(set(fields) - names)
    if unknown:
        log.debug("ignoring unknown saved fields of %s: %s", cls.__name__, ", ".join(unknown))
    return cls(**kwargs)


__all__ = ["decode", "decode_fields", "encode", "encode_fields", "field_types"]
