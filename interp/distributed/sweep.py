"""``map_items``: split a sweep (patching cells, lens / SAE evaluation batches...) over Ray workers.

Each worker loads the model once and applies ``fn(model, item)`` to the items it is given; the
results come back in the order of ``items``. A worker that dies has its item re-run on a fresh one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from interp.distributed.pool import run_pool
from interp.distributed.worker import ModelSpec, build_model
from interp.errors import BadInputError
from interp.models import Model
from interp.progress import progress as progress_bar


class ItemWorker:
    """Holds one model and applies a function to items (the actor behind :func:`map_items`)."""

    def __init__(self, model: ModelSpec, fn: Callable[[Model, Any], Any], threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = build_model(model)
        self.fn = fn

    def pid(self) -> int:
        return os.getpid()

    def run(self, item: Any) -> Any:
        with torch.no_grad():
            return self.fn(self.model, item)


def map_items(model: ModelSpec, items: Sequence[Any], *, fn: Callable[[Model, Any], Any], workers: int = 2,
              backend: str = "ray", address: str | None = None, threads_per_worker: int | None = 1,
              max_worker_failures: int = 8, progress: bool | None = None) -> list[Any]:
    """``[fn(model, item) for item in items]``, computed by ``workers`` Ray actors (model loaded once each).

    Args:
        model: a name / path / function building the model (``backend="local"`` also takes a loaded model).
        items: the work, e.g. ``[(layer, pos) for layer in ... for pos in ...]`` for a patching sweep.
        fn: ``(model, item) -> result``; results must be serialisable (tensors, numbers, dicts...).
            With Ray, define it at module level of an importable module or inline (it is shipped by value).
        workers / backend / address / threads_per_worker / max_worker_failures / progress:
            as :func:`interp.distributed.capture`.

    Returns:
        The results, in the order of ``items``.

    Example:
        >>> from interp.distributed import map_items
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> import interp
        >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> map_items(m, [1, 2, 3], fn=lambda model, n: model.dims.n_layers * n, backend="local", progress=False)
        [2, 4, 6]
    """
    if backend not in ("ray", "local"):
        raise BadInputError(f"bad backend {backend!r}; valid: ray, local")
    if not callable(fn):
        raise TypeError(f"fn must be a function (model, item) -> result, got {type(fn).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BadInputError(f"bad workers {workers!r}; valid: an int >= 1")
    items = list(items)
    out: list[Any] = [None] * len(items)
    bar = progress_bar(total=len(items), enabled=progress, desc=f"map over {workers} workers", unit="item")

    def done(i: Any, value: Any) -> None:
        out[i] = value
        bar.update(1)

    try:
        if backend == "local":
            worker = ItemWorker(model, fn)
            for i, item in enumerate(items):
                done(i, worker.run(item))
        else:
            if isinstance(model, Model):
                raise TypeError("with backend='ray' pass the model as a name/path or a function that builds it "
                                "(each worker loads its own copy), not a loaded model")
            run_pool(ItemWorker, (model, fn), {"threads": threads_per_worker}, "run",
                     [(i, (item,)) for i, item in enumerate(items)], done, workers=workers,
                     max_failures=max_worker_failures, address=address)
    finally:
        bar.close()
    return out
