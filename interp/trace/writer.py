"""``capture``: stream a dataset through a model into a :class:`TraceStore`, resumably.

The planning (:func:`plan_capture`: hooks, tokens, the manifest a new store starts from), the shard
computation (:func:`compute_shard`) and the start/resume/merge logic (:mod:`interp.trace.resume`) are the
ones :func:`interp.distributed.capture` uses too, so both write the same store.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from interp.errors import BadInputError
from interp.hooks import HookedRun, forward, make_plans
from interp.hooks import forward as _probe_forward
from interp.models import Model
from interp.models.memory import activation_shape
from interp.sites import Component, Site, SiteSpec, resolve
from interp.trace.dataset import Dataset, load_texts
from interp.trace.layout import ShardInfo, StoreManifest, is_dense, is_right_padded, tokens_fingerprint
from interp.trace.location import StoreLocation
from interp.trace.lock import check_unlocked, store_lock
from interp.trace.resume import StoreInputs, meta_fingerprint, start_or_resume
from interp.trace.store import TraceStore
from interp.trace.trace import Manifest, Trace, parse_dtype

if TYPE_CHECKING:
    from interp.hooks.engine import _SitePlan

log = logging.getLogger(__name__)


def capture(
    model: Model,
    inputs: Dataset,
    *,
    out: str | os.PathLike[str],
    hooks: SiteSpec | Sequence[SiteSpec] = "resid_post",
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    max_tokens: int | None = 128,
    column: str = "text",
    prepend_bos: bool = False,
    memory_budget: int = 2 << 30,
    overwrite: bool = False,
    verify: str = "size",
    progress: bool | None = None,
) -> TraceStore:
    """Capture hooks for every sequence of a dataset into a store on disk.

    Batches are written as shards as soon as they are computed (a writer thread overlaps disk writes with
    the next forward); the manifest is rewritten atomically after each shard, so an interrupted capture
    resumes where it stopped when called again with the same arguments.

    Args:
        model: the model to run.
        inputs: a text, a list of texts, a ``.txt`` / ``.parquet`` path, a ``datasets.Dataset``, a labelled set
            (``texts`` + ``metadata``), token ids ``[batch, pos]`` or ``(ids, mask)``, a Trace or a TraceStore
            (see :mod:`interp.trace.dataset`). Texts keep their metadata (Parquet columns, labels).
        out: the store directory.
        hooks: hook points in any :mod:`interp.sites` spelling: ``"resid_post"`` (every layer, the default),
            ``"blocks.*.hook_z"``, ``"mlp_out.3"``, ``"hf:model.layers.3.mlp.act_fn"`` (any submodule whose
            activation is ``[batch, pos, ...]``).
        batch_size: sequences per forward and per shard (lowered to fit ``memory_budget``).
        dtype: storage dtype of activations.
        max_tokens: truncate each sequence to this many tokens (``None``: the model's context).
        column: text column for Parquet files and datasets.
        prepend_bos: put the BOS token first (texts only).
        memory_budget: bytes of captured activations held per batch.
        overwrite: replace an existing store captured with other settings.
        verify: how finished shards are checked when a capture resumes: ``"size"`` (default: size and token
            count), ``"sha256"`` (and hash) or ``"none"`` (as ``"size"``); a shard that fails is captured again.
            After a failed :meth:`TraceStore.verify` the next resume checks sha256 anyway.
        progress: show a progress bar (``None``: the library switch, see :mod:`interp.progress`).

    Returns:
        The opened :class:`TraceStore`.

    Raises:
        StoreMismatchError: ``out`` holds a store captured with other settings (and not ``overwrite``).
        OutputExistsError: ``out`` holds files that are not a store's.
        StoreLockedError: another writer is capturing into ``out`` (the message names it).
        UnsafePathError: a path of the store leads outside it (a symbolic link); nothing is written or deleted.
        UnknownHookError / BadInputError / TypeError: bad hooks, inputs or options (nothing is written).

    Example:
        >>> import interp, tempfile
        >>> from interp.trace import capture
        >>> m = interp.load_model("smollm2-135m")
        >>> st = capture(m, ["The cat sat.", "On the mat."], hooks="resid_post", out=tempfile.mkdtemp() + "/st",
        ...              progress=False)
        >>> st.n_tokens, len(st.hooks), st.complete
        (8, 30, True)
    """
    loc = StoreLocation(os.fspath(out)) if isinstance(out, (str, os.PathLike)) else None
    if loc is None or not loc.is_local:
        raise BadInputError(f"bad out {out!r}; valid: a local directory (interp.distributed.capture writes to "
                            "fsspec URLs such as s3://...)")
    check_unlocked(loc.local_path)  # another writer: fail before tokenizing anything
    plan = plan_capture(model, inputs, hooks=hooks, batch_size=batch_size, dtype=dtype, max_tokens=max_tokens,
                        column=column, prepend_bos=prepend_bos, memory_budget=memory_budget)
    with store_lock(loc.local_path):
        return _capture_locked(model, loc, plan, overwrite=overwrite, verify=verify, progress=progress)


def _capture_locked(model: Model, loc: StoreLocation, plan: CapturePlan, *, overwrite: bool, verify: str,
                    progress: bool | None) -> TraceStore:
    """The body of :func:`capture`, run while it holds the store's writer lock."""
    manifest = start_or_resume(loc, plan.fresh, plan.inputs, overwrite=overwrite, verify=verify).manifest
    done = {s.index for s in manifest.shards}
    todo = [i for i in range(manifest.n_shards) if i not in done]
    if done and todo:
        log.info("resuming %s: %d of %d shards already captured", loc.url, len(done), manifest.n_shards)
    plans = make_plans(model, plan.names)
    needs_logits = "logits" in plan.names
    state = {"manifest": manifest}  # touched only by the writer thread until it is joined
    errors: list[BaseException] = []
    jobs: queue.Queue[tuple[int, int, int, dict[str, torch.Tensor], int] | None] = queue.Queue(maxsize=2)

    def writer() -> None:
        while (job := jobs.get()) is not None:
            if errors:
                continue
            try:
                info = write_shard(loc, *job)
                state["manifest"] = state["manifest"].with_shard(info)
                loc.write_bytes("manifest.json", state["manifest"].to_json().encode())
            except BaseException as e:  # surfaced in the main thread
                errors.append(e)

    from interp.progress import progress as progress_bar

    thread = threading.Thread(target=writer, name="interp-shard-writer", daemon=True)
    thread.start()
    bar = progress_bar(total=len(todo), enabled=progress, desc=f"capture {len(plan.names)} hooks", unit="shard")
    try:
        for index in todo:
            if errors:
                break
            start, stop = manifest.shard_range(index)
            tensors, n_tok = compute_shard(model, plans, plan.names, plan.input_ids[start:stop],
                                           plan.attention_mask[start:stop], plan.dtype, needs_logits)
            jobs.put((index, start, stop, tensors, n_tok))
            bar.update(1)
    finally:
        jobs.put(None)
        thread.join()
        bar.close()
    if errors:
        raise errors[0]
    return TraceStore(loc.local_path)


def write_shard(loc: StoreLocation, index: int, start: int, stop: int, tensors: dict[str, torch.Tensor],
                n_tokens: int) -> ShardInfo:
    """Write one shard (atomically) and return its manifest entry with size and sha256."""
    info = ShardInfo(index=index, start=start, stop=stop, n_tokens=n_tokens, bytes=0, sha256="")
    size, digest = loc.write_tensors(info.file, tensors)
    return ShardInfo(index, start, stop, n_tokens, size, digest)


@dataclass(frozen=True)
class CapturePlan:
    """What a capture will do, worked out before any forward: the hooks, the tokenized dataset and the
    manifest a new store starts from (shared by :func:`capture` and :mod:`interp.distributed`)."""

    names: list[str]
    inputs: StoreInputs
    dtype: torch.dtype
    fresh: StoreManifest

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs.input_ids

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs.attention_mask


def plan_capture(model: Model, inputs: Dataset, *, hooks: SiteSpec | Sequence[SiteSpec] = "resid_post",
                 batch_size: int = 8, dtype: torch.dtype | str = torch.float32, max_tokens: int | None = 128,
                 column: str = "text", prepend_bos: bool = False, memory_budget: int = 2 << 30) -> CapturePlan:
    """Check the arguments of a capture, tokenize the dataset and build the new store's manifest.

    ``hf:`` sites are measured by one small forward (their trailing shape is not in the config).

    Raises:
        BadInputError / TypeError / UnknownHookError: bad arguments, as :func:`capture` documents.

    Example:
        >>> import torch, interp
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.trace.writer import plan_capture
        >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> plan = plan_capture(m, torch.tensor([[1, 2, 3], [4, 5, 6]]), hooks=["resid_post", "hf:transformer.h.0.mlp.c_fc"],
        ...                     batch_size=1)
        >>> plan.fresh.n_shards, plan.fresh.trace.hooks
        (2, {'blocks.0.hook_resid_post': [32], 'blocks.1.hook_resid_post': [32], 'hf:transformer.h.0.mlp.c_fc': [128]})
    """
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise BadInputError(f"bad dtype {dtype!r}; valid: a floating torch dtype (float32, bfloat16, float16)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"bad batch_size {batch_size!r}; valid: an int >= 1")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadInputError(f"bad max_tokens {max_tokens!r}; valid: an int >= 1 or None")
    sites = resolve(hooks, model.sites(), (n for n, _ in model.hf.named_modules() if n))
    names = [s.name for s in sites]
    limit = max_tokens if max_tokens is not None else model.dims.n_ctx  # None: the model has no fixed context
    store_inputs = _store_inputs(model, inputs, limit, column, prepend_bos)
    input_ids, attention_mask = store_inputs.input_ids, store_inputs.attention_mask
    seq_len = int(input_ids.shape[1])
    hook_shapes = {**{s.name: _trailing_shape(model, s, seq_len) for s in sites if s.component is not Component.HF},
                   **_probe_shapes(model, [s.name for s in sites if s.component is Component.HF], input_ids,
                                   attention_mask)}
    hook_shapes = {n: hook_shapes[n] for n in names}
    batch_size = _fit_batch(hook_shapes, batch_size, seq_len, dtype, memory_budget)
    settings = {"max_tokens": max_tokens, "prepend_bos": prepend_bos, "column": column,
                "meta_fingerprint": meta_fingerprint(store_inputs.metadata)}
    fresh = StoreManifest(
        trace=Manifest.for_model(model, dtype, hook_shapes), n_seqs=int(input_ids.shape[0]), seq_len=seq_len,
        batch_size=batch_size, dataset_fingerprint=tokens_fingerprint(input_ids, attention_mask), settings=settings)
    return CapturePlan(names, store_inputs, dtype, fresh)


def _store_inputs(model: Model, inputs: Dataset, limit: int | None, column: str, prepend_bos: bool) -> StoreInputs:
    """Token ids, mask, metadata and token strings of a capture's inputs (texts or token ids)."""
    tokens: list[list[str]] | None
    if isinstance(inputs, (torch.Tensor, Trace, TraceStore)) or (
            isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, torch.Tensor) for t in inputs)):
        ids, mask = (t.cpu() for t in model.encode(inputs))  # type: ignore[arg-type]
        if ids.is_floating_point() or ids.dim() != 2 or ids.shape[0] == 0:
            raise BadInputError(f"bad token ids of shape {tuple(ids.shape)} and dtype {ids.dtype}; valid: integer "
                                "ids [batch, pos] with batch >= 1")
        if not is_right_padded(mask):
            raise BadInputError("the attention mask is not right-padded (real tokens first, then padding); "
                                "stores keep token rows in right-padded order only")
        empty = (mask.sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise BadInputError(f"sequence {empty[0]} has no real tokens (its attention mask is all zeros)")
        width = int(mask.sum(1).max()) if limit is None else min(limit, int(mask.sum(1).max()))
        ids, mask = ids[:, :width].contiguous(), mask[:, :width].contiguous()
        if isinstance(inputs, Trace):
            meta = [dict(m) for m in inputs.metadata]
        elif isinstance(inputs, TraceStore):
            meta = inputs.metadata(tokens=False)
        else:
            meta = []
        tokens = model.to_str_tokens(ids) if model.tokenizer is not None else None
        return StoreInputs(ids, mask, meta if any(meta) else [], tokens)
    texts, meta = load_texts(inputs, column=column)
    ids, mask = model.tokenize(texts, max_tokens=limit, prepend_bos=prepend_bos)
    return StoreInputs(ids, mask, meta, model.to_str_tokens(ids))


def compute_shard(model: Model, plans: dict[Site, _SitePlan], names: Sequence[str], input_ids: torch.Tensor,
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


def _to_storage(act: torch.Tensor, rows: torch.Tensor | None, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, pos, ...]`` → token rows ``[n_tokens, ...]`` (``rows``: flat indices of real tokens,
    ``None`` when there is no padding); patterns stay dense."""
    act = act.to("cpu", dtype) if act.is_floating_point() else act.cpu()
    if is_dense(name):
        return act.contiguous()
    flat = act.flatten(0, 1)
    return flat if rows is None else flat.index_select(0, rows)


def _trailing_shape(model: Model, site: Site, seq_len: int) -> list[int]:
    """A named hook's shape after ``[batch, pos]`` (patterns: ``[head, seq_len, seq_len]``, stored dense)."""
    shape = activation_shape(model.dims, site, 1, seq_len)
    return list(shape[1:] if is_dense(site.name) else shape[2:])


def _probe_shapes(model: Model, names: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor
                  ) -> dict[str, list[int]]:
    """The trailing shapes of ``hf:`` sites, from one forward over (at most) the first two sequences.

    Raises:
        BadInputError: a module whose activation is not ``[batch, pos, ...]`` (a store keeps token rows).
    """
    if not names:
        return {}
    k = min(2, int(input_ids.shape[0]))
    length = int(attention_mask[:k].sum(1).max())
    with torch.no_grad(), HookedRun(model, make_plans(model, names), stop_early=True) as run:
        _probe_forward(model, input_ids[:k, :length].to(model.device), attention_mask[:k, :length].to(model.device))
    out = {}
    for n in names:
        t = run.activations[n]
        if t.dim() < 2 or t.shape[0] != k or t.shape[1] != length:
            raise BadInputError(f"bad hook {n!r} for a store: its activation has shape {tuple(t.shape)} on a batch of "
                                f"{k} x {length} tokens; a store keeps [batch, pos, ...] activations as token rows "
                                "(capture it in memory with model.run instead)")
        out[n] = list(t.shape[2:])
    return out


def _fit_batch(shapes: dict[str, list[int]], batch_size: int, seq_len: int, dtype: torch.dtype, budget: int) -> int:
    item = torch.empty((), dtype=dtype).element_size()
    per_seq = sum(math.prod(shape) * item * (1 if is_dense(n) else seq_len) for n, shape in shapes.items())
    fit = max(1, budget // max(per_seq, 1))
    if fit < batch_size:
        log.warning("batch_size %d -> %d to keep captured activations within %.0f MiB per batch", batch_size, fit,
                    budget / 2**20)
        return int(fit)
    return batch_size


__all__ = ["CapturePlan", "capture", "compute_shard", "load_texts", "plan_capture", "write_shard"]
