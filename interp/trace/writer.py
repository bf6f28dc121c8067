"""``capture``: stream a dataset through a model into a :class:`TraceStore`, resumably."""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.hooks import forward, make_plans
from interp.hooks.engine import HookedRun
from interp.models import Model
from interp.sites import Site, resolve
from interp.trace.layout import (
    ShardInfo,
    StoreManifest,
    StoreMismatchError,
    atomic_save_tensors,
    atomic_write_bytes,
    is_dense,
    remove_stale_tmp,
    store_tmp_files,
    tokens_fingerprint,
    write_meta,
    write_shard,
)
from interp.trace.store import TraceStore
from interp.trace.trace import Manifest, parse_dtype

Dataset = Sequence[str] | str | os.PathLike[str] | Any


def load_texts(dataset: Dataset, column: str = "text") -> tuple[list[str], list[dict[str, Any]]]:
    """Texts and per-sequence metadata from a dataset.

    ``dataset`` is a list of strings, a ``.txt`` file (one sequence per non-blank line), a
    ``.parquet`` file or a Hugging Face ``datasets.Dataset``; for the last two the text is in
    ``column`` and every other column becomes metadata. Each metadata row has the text under ``"text"``.

    Raises:
        FileNotFoundError: a path that is not an existing ``.txt`` / ``.parquet`` file.
        ValueError: an empty dataset, a blank sequence, or a missing ``column``.
        TypeError: a sequence that is not a ``str``, or an unsupported dataset type.

    Example:
        >>> from interp.trace import load_texts
        >>> load_texts(["a b", "c"])
        (['a b', 'c'], [{'text': 'a b'}, {'text': 'c'}])
    """
    if isinstance(dataset, os.PathLike) and not (Path(dataset).suffix in (".txt", ".parquet") and Path(dataset).is_file()):
        raise FileNotFoundError(f"dataset {os.fspath(dataset)!r} is not an existing .txt or .parquet file")
    if isinstance(dataset, (str, os.PathLike)) and Path(dataset).suffix in (".txt", ".parquet") and Path(dataset).is_file():
        p = Path(dataset)
        if p.suffix == ".txt":
            texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
            meta: list[dict[str, Any]] = [{} for _ in texts]
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            if column not in table.column_names:
                raise BadInputError(f"{p} has no column {column!r}; columns: {', '.join(table.column_names)}")
            rows = table.to_pylist()
            texts = [r.pop(column) for r in rows]
            meta = rows
    elif isinstance(dataset, str):
        raise FileNotFoundError(f"dataset {dataset!r} is not an existing .txt or .parquet file; "
                                "pass a list of strings to capture literal text")
    elif hasattr(dataset, "column_names") and hasattr(dataset, "__getitem__"):  # datasets.Dataset
        if column not in dataset.column_names:
            raise BadInputError(f"dataset has no column {column!r}; columns: {', '.join(dataset.column_names)}")
        others = [c for c in dataset.column_names if c != column]
        texts = list(dataset[column])
        cols = {c: list(dataset[c]) for c in others}
        meta = [{c: cols[c][i] for c in others} for i in range(len(texts))]
    elif isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, bytearray)):
        texts = list(dataset)
        meta = [{} for _ in texts]
    else:
        raise TypeError(f"unsupported dataset type {type(dataset).__name__}: use a list of str, a .txt/.parquet "
                        "path or a datasets.Dataset")
    if not texts:
        raise BadInputError("the dataset is empty: nothing to capture")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"sequence {i} is a {type(t).__name__}, not a str: {t!r}")
        if not t.strip():
            raise BadInputError(f"sequence {i} is empty or blank: {t!r}; every sequence needs text")
    return texts, [{"text": t, **{k: v for k, v in m.items() if k != "text"}} for t, m in zip(texts, meta, strict=True)]


def capture(
    model: Model,
    dataset: Dataset,
    hooks: str | Site | Sequence[str | Site],
    path: str | os.PathLike[str],
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    max_tokens: int | None = 128,
    column: str = "text",
    prepend_bos: bool = False,
    memory_budget: int = 2 << 30,
    overwrite: bool = False,
    progress: bool = True,
) -> TraceStore:
    """Capture hooks for every sequence of a dataset into a store on disk.

    Batches are written as shards as soon as they are computed (a writer thread overlaps disk
    writes with the next forward); the manifest is rewritten atomically after each shard, so an
    interrupted capture resumes where it stopped when called again with the same arguments.

    Args:
        model: the model to run.
        dataset: list of str, ``.txt`` / ``.parquet`` path, or ``datasets.Dataset`` (see :func:`load_texts`).
        hooks: names or glob patterns (``"blocks.*.hook_resid_post"``).
        path: the store directory.
        batch_size: sequences per forward and per shard (lowered to fit ``memory_budget``).
        dtype: storage dtype of activations.
        max_tokens: truncate each sequence to this many tokens (``None``: the model's context).
        column: text column for Parquet files and datasets.
        prepend_bos: put the BOS token first.
        memory_budget: bytes of captured activations held per batch.
        overwrite: replace an existing store captured with other settings.
        progress: show a tqdm bar.

    Returns:
        The opened :class:`TraceStore`.

    Example:
        >>> import interp
        >>> from interp.trace import capture
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> st = capture(m, ["The cat sat.", "On the mat."], "blocks.*.hook_resid_post", "/tmp/cats")  # doctest: +SKIP
        >>> st.n_tokens, len(st.hooks)  # doctest: +SKIP
        (9, 30)
    """
    plan = plan_capture(model, dataset, hooks, batch_size=batch_size, dtype=dtype, max_tokens=max_tokens,
                        column=column, prepend_bos=prepend_bos, memory_budget=memory_budget)
    names, input_ids, attention_mask, dtype = plan.names, plan.input_ids, plan.attention_mask, plan.dtype
    batch_size, texts, meta, fresh = plan.fresh.batch_size, plan.texts, plan.meta, plan.fresh
    root = Path(path)
    manifest = _resume_or_start(root, fresh, overwrite, input_ids, attention_mask, meta, model)
    done = {s.index for s in manifest.shards if (root / s.file).exists() and (root / s.file).stat().st_size == s.bytes}
    manifest = replace(manifest, shards=tuple(s for s in manifest.shards if s.index in done))
    todo = [i for i in range(manifest.n_shards) if i not in done]
    plans = make_plans(model, names)
    needs_logits = "logits" in names
    state = {"manifest": manifest}  # touched only by the writer thread until it is joined
    errors: list[BaseException] = []
    jobs: queue.Queue[tuple[int, int, int, dict[str, torch.Tensor], int] | None] = queue.Queue(maxsize=2)

    def writer() -> None:
        while (job := jobs.get()) is not None:
            if errors:
                continue
            try:
                index, start, stop, tensors, n_tok = job
                info = write_shard(root, index, start, tensors, n_tok, stop)
                state["manifest"] = state["manifest"].with_shard(info)
                atomic_write_bytes(root / "manifest.json", state["manifest"].to_json().encode())
            except BaseException as e:  # surfaced in the main thread
                errors.append(e)

    thread = threading.Thread(target=writer, name="interp-shard-writer", daemon=True)
    thread.start()
    bar = tqdm(total=len(todo), desc=f"capture {len(names)} hooks", unit="shard", disable=not progress)
    try:
        for index in todo:
            if errors:
                break
            start, stop = index * batch_size, min((index + 1) * batch_size, len(texts))
            tensors, n_tok = compute_shard(model, plans, names, input_ids[start:stop], attention_mask[start:stop],
                                           dtype, needs_logits)
            jobs.put((index, start, stop, tensors, n_tok))
            bar.update(1)
    finally:
        jobs.put(None)
        thread.join()
        bar.close()
    if errors:
        raise errors[0]
    return TraceStore(root)


@dataclass(frozen=True)
class CapturePlan:
    """What a capture will do, worked out before any forward: the hooks, the tokenized dataset and the
    manifest a new store starts from (shared by :func:`capture` and :mod:`interp.distributed`)."""

    names: list[str]
    texts: list[str]
    meta: list[dict[str, Any]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    dtype: torch.dtype
    fresh: StoreManifest


def plan_capture(model: Model, dataset: Dataset, hooks: str | Site | Sequence[str | Site], *,
                 batch_size: int = 8, dtype: torch.dtype | str = torch.float32, max_tokens: int | None = 128,
                 column: str = "text", prepend_bos: bool = False, memory_budget: int = 2 << 30) -> CapturePlan:
    """Check the arguments of a capture, tokenize the dataset and build the new store's manifest.

    Raises:
        ValueError / TypeError / KeyError: bad arguments, as :func:`capture` documents.
    """
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise BadInputError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadInputError(f"max_tokens must be an int >= 1 or None, got {max_tokens!r}")
    sites = resolve(hooks, model.sites())
    names = [s.name for s in sites]
    texts, meta = load_texts(dataset, column)
    limit = max_tokens if max_tokens is not None else model.dims.n_ctx
    input_ids, attention_mask = model.tokenize(texts, max_tokens=limit, prepend_bos=prepend_bos)
    seq_len = int(input_ids.shape[1])
    batch_size = _fit_batch(model, names, batch_size, seq_len, dtype, memory_budget)
    settings = {"max_tokens": max_tokens, "prepend_bos": prepend_bos, "column": column,
                "meta_fingerprint": meta_fingerprint(meta)}
    hook_shapes = {n: _trailing_shape(model, Site.parse(n), seq_len) for n in names}
    fresh = StoreManifest(
        trace=Manifest.for_model(model, dtype, hook_shapes), n_seqs=len(texts), seq_len=seq_len,
        batch_size=batch_size, dataset_fingerprint=tokens_fingerprint(input_ids, attention_mask), settings=settings)
    return CapturePlan(names, texts, meta, input_ids, attention_mask, dtype, fresh)


def compute_shard(model: Model, plans: Any, names: Sequence[str], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, dtype: torch.dtype, needs_logits: bool
                  ) -> tuple[dict[str, torch.Tensor], int]:
    """One forward over a shard's sequences (right-padded ``[batch, seq_len]`` rows) → the shard's
    tensors (token rows, dense patterns) and its token count. ``plans`` is ``make_plans(model, names)``."""
    length = int(attention_mask.sum(1).max())
    ids = input_ids[:, :length].to(model.device)
    mask = attention_mask[:, :length]
    with torch.no_grad(), HookedRun(model, plans, stop_early=not needs_logits) as run:
        forward(model, ids, mask.to(model.device))
    keep = mask.bool()
    rows = None if bool(keep.all()) else keep.cpu().flatten().nonzero().squeeze(1)
    return {n: _to_storage(run.activations[n], rows, n, dtype) for n in names}, int(keep.sum())


def manifest_diffs(old: StoreManifest, fresh: StoreManifest) -> list[str]:
    """The capture settings in which an existing store differs from a new one (empty: it can resume)."""
    return [k for k, a, b in (
        ("model", old.trace.model_fingerprint, fresh.trace.model_fingerprint),
        ("hooks", list(old.trace.hooks), list(fresh.trace.hooks)),
        ("dtype", old.trace.dtype, fresh.trace.dtype),
        ("dataset", old.dataset_fingerprint, fresh.dataset_fingerprint),
        ("batch_size", old.batch_size, fresh.batch_size),
    ) if a != b]


def _to_storage(act: torch.Tensor, rows: torch.Tensor | None, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, pos, ...]`` → token rows ``[n_tokens, ...]`` (``rows``: flat indices of real tokens,
    ``None`` when there is no padding); patterns stay dense."""
    act = act.to("cpu", dtype) if act.is_floating_point() else act.cpu()
    if is_dense(name):
        return act.contiguous()
    flat = act.flatten(0, 1)
    return flat if rows is None else flat.index_select(0, rows)


def _trailing_shape(model: Model, site: Site, seq_len: int) -> list[int]:
    d = model.dims
    per_token = {"d_model": d.d_model, "d_mlp": d.d_mlp, "vocab": d.d_vocab, "head": d.n_heads, "d_head": d.d_head}
    axes = site.component.axes
    if is_dense(site.name):
        return [d.n_heads, seq_len, seq_len]
    return [per_token[a] for a in axes[2:]]


def _fit_batch(model: Model, names: list[str], batch_size: int, seq_len: int, dtype: torch.dtype,
               budget: int) -> int:
    item = torch.empty((), dtype=dtype).element_size()
    per_seq = 0
    for n in names:
        shape = _trailing_shape(model, Site.parse(n), seq_len)
        per_seq += math.prod(shape) * item * (1 if is_dense(n) else seq_len)
    fit = max(1, budget // max(per_seq, 1))
    if fit < batch_size:
        tqdm.write(f"interp: batch_size {batch_size} -> {fit} to keep captured activations within "
                   f"{budget / 2**20:.0f} MiB per batch")
        return int(fit)
    return batch_size


STORE_FILES = frozenset({"shards", "tokens.safetensors", "meta.parquet"})


def meta_fingerprint(meta: list[dict[str, Any]]) -> str:
    """A short hash of the per-sequence metadata (labels can change while the tokens do not)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resume_or_start(root: Path, fresh: StoreManifest, overwrite: bool, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, meta: list[dict[str, Any]], model: Model) -> StoreManifest:
    """The manifest to continue from: the existing one when it matches, else a new store's."""
    mpath = root / "manifest.json"
    if mpath.exists():
        old = StoreManifest.from_json(mpath.read_text(), str(mpath))
        remove_stale_tmp(root)
        diffs = manifest_diffs(old, fresh)
        if not diffs:
            if old.settings.get("meta_fingerprint") != fresh.settings.get("meta_fingerprint"):
                # same tokens, new metadata (labels...): the activations stand, the metadata is replaced
                _write_inputs(root, input_ids, attention_mask, meta, model)
                old = replace(old, settings={**old.settings, "meta_fingerprint": fresh.settings.get("meta_fingerprint")})
                atomic_write_bytes(mpath, old.to_json().encode())
            return old
        if not overwrite:
            raise StoreMismatchError(
                f"{root} already holds a store captured with different {', '.join(diffs)}; "
                "use another path, or overwrite=True (--overwrite) to replace it")
        for f in (root / "shards").glob("*.safetensors"):
            f.unlink()
        mpath.unlink()
    elif root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a directory")
        # a capture killed before its first manifest leaves only these; anything else is not ours
        ours = {p.name for p in store_tmp_files(root)} | STORE_FILES
        foreign = [p.name for p in root.iterdir() if p.name not in ours]
        shards = list((root / "shards").glob("[!.]*")) if (root / "shards").is_dir() else []
        if foreign or shards:
            raise FileExistsError(f"{root} exists and is not a trace store (no manifest.json; holds "
                                  f"{', '.join((sorted(foreign) + [str(p.relative_to(root)) for p in shards])[:5])}); "
                                  "choose an empty or new directory")
        remove_stale_tmp(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shards").mkdir(exist_ok=True)
    _write_inputs(root, input_ids, attention_mask, meta, model)
    atomic_write_bytes(mpath, fresh.to_json().encode())
    return fresh


def _write_inputs(root: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor, meta: list[dict[str, Any]],
                  model: Model) -> None:
    atomic_save_tensors(root / "tokens.safetensors", {"input_ids": input_ids, "attention_mask": attention_mask})
    write_meta(root, meta, model.to_str_tokens(input_ids) if model.tokenizer is not None else None)


__all__ = ["CapturePlan", "ShardInfo", "capture", "compute_shard", "load_texts", "manifest_diffs", "plan_capture"]
