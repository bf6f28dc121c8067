"""The capture worker: loads the model once, then turns shard requests into shard files.

The same class runs in the driver's process (``backend="local"``) and as a Ray actor
(``backend="ray"``); everything it needs travels as plain values (a model name or path, or a
function that builds the model; the store URL; hook names), so a worker on another machine can
rebuild it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from typing import Any, Union

import torch
from safetensors.torch import save as st_save

from interp.errors import ModelMismatchError
from interp.hooks import make_plans
from interp.models import Model
from interp.trace.layout import ShardInfo
from interp.trace.location import StoreLocation
from interp.trace.resume import part_json, part_name
from interp.trace.trace import parse_dtype
from interp.trace.writer import compute_shard

ModelSpec = Union[str, "os.PathLike[str]", Callable[[], Model], Model]
"""How a worker gets its model: a name / hub id / local directory, a zero-argument function, or a loaded Model."""


def build_model(spec: ModelSpec) -> Model:
    """The model a spec names: a registry name / hub id / local directory, a zero-argument function
    returning a :class:`Model`, or a :class:`Model` itself.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> import interp
        >>> from interp.distributed.worker import build_model
        >>> build_model(lambda: interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)))).dims.n_layers
        1
    """
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        from interp.models import load_model as load

        return load(os.fspath(spec))
    if callable(spec):
        model = spec()
        if not isinstance(model, Model):
            raise TypeError(f"the model function returned a {type(model).__name__}, not an interp Model "
                            "(use interp.load_model or interp.from_hf)")
        return model
    raise TypeError(f"model must be a name, a path, a function returning a Model or a Model; "
                    f"got {type(spec).__name__}")


class ShardWorker:
    """Computes shards of one capture and writes them (plus its partial manifest) to the store.

    Args:
        model: see :func:`build_model`.
        url: the store's location (path or fsspec URL).
        names: hook names to capture.
        dtype: storage dtype name (``"float32"``...).
        dataset_fingerprint / model_fingerprint: the capture's identity; a worker whose model has
            another fingerprint refuses to start (it would write foreign activations).
        threads: torch intra-op threads in this worker (``None``: leave as is).
    """

    def __init__(self, model: ModelSpec, url: str, names: list[str], dtype: str, dataset_fingerprint: str,
                 model_fingerprint: str, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = build_model(model)
        if self.model.fingerprint != model_fingerprint:
            raise ModelMismatchError(f"worker loaded model {self.model.name!r} with fingerprint "
                                     f"{self.model.fingerprint}, but the store was planned with {model_fingerprint}; "
                                     "every worker must load the same weights")
        self.loc = StoreLocation(url)
        self.names = list(names)
        self.dtype = parse_dtype(dtype)
        self.plans = make_plans(self.model, self.names)
        self.needs_logits = "logits" in self.names
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.fingerprints = (dataset_fingerprint, model_fingerprint)
        self.done: list[ShardInfo] = []

    def pid(self) -> int:
        return os.getpid()

    def run(self, index: int, start: int, stop: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> tuple[dict[str, Any], bytes | None]:
        """Capture shard ``index`` (sequences ``[start, stop)``, given as their token rows).

        Returns the shard's manifest entry and, when the store is not shared between processes
        (``memory://``), the shard's bytes for the driver to write; otherwise ``None``.
        """
        tensors, n_tok = compute_shard(self.model, self.plans, self.names, input_ids, attention_mask, self.dtype,
                                       self.needs_logits)
        info = ShardInfo(index=index, start=start, stop=stop, n_tokens=n_tok, bytes=0, sha256="")
        if not self.loc.shared:
            data = st_save({k: v.contiguous() for k, v in tensors.items()})
            info = ShardInfo(index, start, stop, n_tok, len(data), hashlib.sha256(data).hexdigest())
            return info.__dict__, data
        size, digest = self.loc.write_tensors(info.file, tensors)
        info = ShardInfo(index, start, stop, n_tok, size, digest)
        self.done.append(info)
        self.loc.write_bytes(part_name(self.worker), part_json(self.worker, *self.fingerprints, self.done))
        return info.__dict__, None
