"""``TraceStore``: the on-disk trace format, shared by every tool.

Layout of a store directory::

    manifest.json              written atomically (tmp file + rename) after every completed shard
    tokens.safetensors         input_ids, attention_mask  [n_seqs, seq_len], right-padded
    meta.parquet               per-sequence metadata, and the token strings (column ``__tokens__``)
    shards/00000.safetensors   one shard = one batch of sequences, all captured hooks
    manifest.part-<worker>.json  only while :mod:`interp.distributed` writes: each worker's finished
                               shards, merged into manifest.json by the driver (and on resume)

Inside a shard, token-wise hooks (``[batch, pos, ...]``) are stored as rows of the non-padding
tokens only (``[n_tokens, ...]``, sequence by sequence), so training readers stream them without
unpadding; ``attn.hook_pattern`` is stored dense ``[batch, head, q_pos, k_pos]`` at the shard's
longest length. An encoder–decoder's decoder trace keeps its cross-attention keys and values
(``[batch, src_pos, head, d_head]``) and pattern (``[batch, head, q_pos, src_pos]``) dense too: their source
axis is another token axis than the trace's, kept at the length it was captured with. Every shard's sha256 and size are in the manifest. A trace saved with gradients
(:meth:`Trace.save`) keeps them in its shard under ``grad:<hook name>``, listed under ``grads``
in the manifest.

Every file is written atomically (a temporary ``.<name>.*.tmp`` file, fsync, then a rename); a capture
that resumes removes the temporary files an interrupted one left. One writer at a time holds
``writer.lock`` (:mod:`interp.trace.lock`).

Safety: every path the store reads is resolved inside its directory (a symbolic link leading out is refused
with :class:`~interp.trace.layout.UnsafePathError`). The manifest holds the sha256 of every shard and (since
interp 0.2.1) of ``tokens.safetensors`` and ``meta.parquet``; the token ids are checked against the dataset
fingerprint, each shard's header (tensor names, dtypes, shapes) against the manifest's hooks and token counts
when it is first read, and :meth:`TraceStore.verify` checks everything. Any disagreement raises
:class:`~interp.errors.CorruptStoreError`, whose message says what to run. ``manifest.json`` records the trace
schema version (1, unchanged since interp 0.1, whose stores read as they are) and the interp version
that wrote it; a store of a newer schema is refused with :class:`~interp.errors.SchemaVersionError`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from interp.errors import BadInputError, InterpError
from interp.models import Model
from interp.sites import Site, SiteSpec, UnknownHookError, resolve
from interp.trace.layout import (
    GRAD_PREFIX,
    TOKENS_COLUMN,
    VERIFY_FAILED,
    CorruptShardError,
    CorruptStoreError,
    MissingFileError,
    OutputExistsError,
    ShardInfo,
    StoreManifest,
    StoreMismatchError,
    atomic_write_bytes,
    confined,
    dense_to_length,
    is_dense,
    is_right_padded,
    sha256_file,
    stack_padded,
    tokens_fingerprint,
    write_shard,
)
from interp.trace.location import StoreLocation
from interp.trace.trace import Trace, parse_dtype


class SequenceRangeError(BadInputError, IndexError):
    """A sequence index outside the store (or in a shard an interrupted capture has not written)."""


class TraceStore:
    """A trace on disk: open it, check it, read sequences as :class:`Trace` or stream token rows.

    Hooks are named in any single-site spelling of :mod:`interp.sites` (``"blocks.3.hook_resid_post"``,
    ``"resid_post.3"``, ``("resid_post", 3)``, ``"hf:model.layers.3.mlp"``); :meth:`trace` also takes globs and
    short forms that name several (``"resid_post"``: every stored layer).

    Args:
        path: the store directory.
        verify: ``"size"`` (default: every shard read is checked against its recorded size, which
            catches truncation), ``"sha256"`` (hash every shard when it is read), or ``"none"``.

    Opening reads the manifest and checks the first shard's header against it (cheap); each file is checked
    when first read (the token ids against their hash and the dataset fingerprint, each shard's header against
    the hooks, dtype and token counts); :meth:`verify` checks everything.

    Raises:
        MissingFileError: no store at ``path`` (no ``manifest.json``).
        ManifestError / SchemaVersionError: a malformed manifest (a ``CorruptStoreError``) / one written by a newer
            interp.
        UnsafePathError: a file of the store is a symbolic link that leads outside it.
        CorruptShardError: the first shard disagrees with the manifest.

    Example:
        >>> import interp, tempfile
        >>> from interp.trace import TraceStore, capture
        >>> m = interp.load_model("smollm2-135m")
        >>> path = tempfile.mkdtemp() + "/st"
        >>> _ = capture(m, ["a b c", "hello world"], hooks="resid_post", out=path, progress=False)
        >>> store = TraceStore(path)
        >>> [tuple(rows.shape) for rows in store.iter_tokens("resid_post.3", batch_size=4)]
        [(4, 576), (1, 576)]
        >>> store.trace([1], hooks="resid_post.29")["resid_post.29"].shape
        torch.Size([1, 2, 576])
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: str = "size") -> None:
        if verify not in ("size", "sha256", "none"):
            raise BadInputError(f"bad verify {verify!r}; valid: 'size', 'sha256', 'none'")
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise MissingFileError(f"no trace store at {str(self.path)!r} (missing manifest.json)")
        mpath = self._file("manifest.json")
        self.manifest = StoreManifest.from_json(mpath.read_bytes().decode(errors="replace"), str(mpath))
        self.verify_mode = verify
        self._verified: set[int] = set()
        self._headers: set[int] = set()
        self._tokens: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.manifest.shards:
            self._check_header(self.shards()[0])

    def _file(self, rel: str) -> Path:
        """``self.path / rel``, refused when it leads outside the store."""
        return confined(self.path, rel)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"TraceStore({str(self.path)!r}, {m.n_seqs} seqs, {self.n_tokens} tokens, {len(self.hooks)} hooks, "
                f"model={m.trace.model_id!r}, dtype={m.trace.dtype}, "
                f"{'complete' if self.complete else f'{len(m.shards)} of {m.n_shards} shards'})")

    # -- names -----------------------------------------------------------------------------------
    def _stored(self) -> list[str]:
        return [*self.manifest.trace.hooks, *(g for g in self.manifest.grads if g not in self.manifest.trace.hooks)]

    def _key(self, name: SiteSpec) -> str:
        """The stored name of one hook in any single-site spelling; ``UnknownHookError`` (a ``KeyError``) if absent."""
        stored = self._stored()
        if isinstance(name, str) and name in stored:
            return name
        try:
            key = Site.parse(name).name
        except UnknownHookError:
            key = str(name)
        if key not in stored:
            raise self._unknown(str(name))
        return key

    def _unknown(self, name: str) -> UnknownHookError:
        stored = self._stored()
        shorts = [Site.parse(h).short for h in stored]
        close = difflib.get_close_matches(name, stored + shorts, n=3, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        return UnknownHookError(f"store has no hook {name!r}.{hint} It holds {len(stored)}: "
                                f"{', '.join(stored[:8])}{'...' if len(stored) > 8 else ''}")

    def _keys(self, hooks: SiteSpec | Sequence[SiteSpec]) -> list[str]:
        """Stored names for several spellings (globs and short forms naming several stored hooks included)."""
        out: list[str] = []
        for item in _spellings(hooks):
            if isinstance(item, str) and re.search(r"\.-[0-9]+$", item) and item not in self._stored():
                raise BadInputError(f"bad hook {item!r} for a store: a negative layer counts from the model's last "
                                    "layer, which a store does not record; name the layer (e.g. resid_post.29)")
            try:
                names = [self._key(item)]
            except UnknownHookError:
                try:
                    names = [s.name for s in resolve(item, [Site.parse(h) for h in self._stored()])]
                except UnknownHookError:
                    raise self._unknown(str(item)) from None
            out += [n for n in names if n not in out]
        return out

    # -- metadata --------------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.manifest.trace.hooks)

    @property
    def dtype(self) -> torch.dtype:
        return parse_dtype(self.manifest.trace.dtype)

    @property
    def n_seqs(self) -> int:
        return self.manifest.n_seqs

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.manifest.shards)

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def shards(self) -> list[ShardInfo]:
        return sorted(self.manifest.shards, key=lambda s: s.index)

    def check_model(self, model: Model) -> None:
        """Raise ``ModelMismatchError`` unless ``model`` made this store."""
        self.manifest.trace.check_model(model)

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of every sequence, ``[n_seqs, seq_len]``.

        Checked on first read: the file's sha256 (stores written since interp 0.2.1), the ids and mask against
        the manifest's dataset fingerprint, the mask's layout and every finished shard's token count.

        Raises:
            CorruptStoreError: ``tokens.safetensors`` is missing, truncated, of the wrong shape, or its ids or mask
                are not the ones captured.
        """
        if self._tokens is not None:
            return self._tokens
        p = self._file("tokens.safetensors")
        fix = self._repair_hint()
        if not p.is_file():
            raise CorruptStoreError(f"{p} is missing; {fix}")
        if self.manifest.tokens_sha256 and sha256_file(p) != self.manifest.tokens_sha256:
            raise CorruptStoreError(f"{p} fails its sha256 check (the token ids or mask were edited or damaged); {fix}")
        try:
            with safe_open(str(p), framework="pt") as f:
                ids, mask = f.get_tensor("input_ids"), f.get_tensor("attention_mask")
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CorruptStoreError(f"{p} is unreadable (truncated or corrupt: {e}); {fix}") from e
        want = (self.n_seqs, self.manifest.seq_len)
        if tuple(ids.shape) != want or tuple(mask.shape) != want or ids.is_floating_point() or mask.is_floating_point():
            raise CorruptStoreError(f"{p} holds input_ids {tuple(ids.shape)} / attention_mask {tuple(mask.shape)}, "
                                    f"the manifest says {list(want)}: the file or manifest.json was replaced or "
                                    f"edited; {fix}")
        if tokens_fingerprint(ids, mask) != self.manifest.dataset_fingerprint:
            raise CorruptStoreError(f"{p} holds other token ids or mask than the ones captured (its fingerprint is "
                                    f"not the manifest's dataset_fingerprint); {fix}")
        if not bool(((mask == 0) | (mask == 1)).all()) or not is_right_padded(mask):
            raise CorruptStoreError(f"{p} has an attention mask that is not right-padded ones and zeros; {fix}")
        lens = mask.sum(1)
        for info in self.manifest.shards:
            n = int(lens[info.start:info.stop].sum())
            if n != info.n_tokens:
                raise CorruptStoreError(f"shard {info.index} is recorded with {info.n_tokens} tokens but its sequences "
                                        f"have {n} (manifest.json or tokens.safetensors was edited); {fix}")
        self._tokens = (ids, mask)
        return ids, mask

    def metadata(self, *, tokens: bool = True) -> list[dict[str, Any]]:
        """Per-sequence metadata rows (empty when none was stored); with ``tokens`` (the default) each row also
        holds the sequence's token strings under ``"__tokens__"``, without it only the metadata itself
        (what :meth:`Trace.metadata` holds, and what ``model.run(..., metadata=)`` takes).

        Raises:
            CorruptStoreError: ``meta.parquet`` is truncated or holds another number of rows.
        """
        p = self._file("meta.parquet")
        fix = self._repair_hint()
        if not p.exists():
            if self.manifest.meta_sha256:
                raise CorruptStoreError(f"{p} is missing (the manifest records its sha256); {fix}")
            return []
        if self.manifest.meta_sha256 and sha256_file(p) != self.manifest.meta_sha256:
            raise CorruptStoreError(f"{p} fails its sha256 check (edited or damaged); {fix}")
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow's ArrowInvalid and friends
            raise CorruptStoreError(f"{p} is unreadable (truncated or corrupt: {e}); {fix}") from e
        if len(rows) != self.n_seqs:
            raise CorruptStoreError(f"{p} has {len(rows)} rows, the manifest says {self.n_seqs} sequences; {fix}")
        return rows if tokens else [{k: v for k, v in r.items() if k != TOKENS_COLUMN} for r in rows]

    # -- shards ----------------------------------------------------------------------------------
    def _repair_hint(self, shards: Sequence[int] = ()) -> str:
        """What to run to repair this store (the capture that made it, again; or save the trace again)."""
        cmd = self.manifest.trace.command
        which = f" (and captures shard{'s' if len(shards) > 1 else ''} {', '.join(map(str, shards))} again)" if shards else ""
        if not self.manifest.settings:  # a saved trace (Trace.save), not a capture
            return f"save the trace again to a new path (trace.save(...)); this copy at {self.path} cannot be repaired"
        if " capture " in f" {cmd} " and ("-o" in cmd.split() or "--out" in cmd):
            how = f"run the capture again: {cmd}"
        else:
            how = (f"run the same capture again: interp.trace.capture(model, inputs, out={str(self.path)!r}, ...) with "
                   "the arguments that made it")
        return f"to repair it, {how} -- it checks every file's sha256, re-writes what is damaged{which}"

    def _check(self, info: ShardInfo) -> Path:
        p = self._file(info.file)
        if not p.exists():
            raise CorruptShardError(f"shard {info.index} is missing: {p}; {self._repair_hint([info.index])}")
        size = p.stat().st_size
        if size != info.bytes:
            raise CorruptShardError(f"shard {p} is {size} bytes, the manifest says {info.bytes}: truncated or "
                                    f"replaced; {self._repair_hint([info.index])}")
        if info.index not in self._headers:
            self._check_header(info, p)
        if self.verify_mode == "sha256" and info.index not in self._verified:
            self._hash_check(info, p)
        return p

    def _check_header(self, info: ShardInfo, p: Path | None = None) -> None:
        """The shard's safetensors header against the manifest: exactly the stored hooks (and gradients), the
        store's dtype, ``[n_tokens, *shape]`` token rows and ``[n_seqs, *shape]`` patterns."""
        p = self._file(info.file) if p is None else p
        fix = self._repair_hint([info.index])
        if not p.exists():
            raise CorruptShardError(f"shard {info.index} is missing: {p}; {fix}")
        try:
            with open(p, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if n > min(p.stat().st_size, 100 << 20):
                    raise ValueError(f"header of {n} bytes")
                header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not an object")
        except (OSError, ValueError) as e:
            raise CorruptShardError(f"cannot read shard {p}: bad header ({e}); {fix}") from e
        header.pop("__metadata__", None)
        man = self.manifest
        want = {**man.trace.hooks, **{GRAD_PREFIX + g: s for g, s in man.grads.items()}}
        if set(header) != set(want):
            raise CorruptShardError(f"shard {p} holds {sorted(header)[:6]}, the manifest lists {sorted(want)[:6]}; {fix}")
        dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}.get(man.trace.dtype)
        for name, shape in want.items():
            entry = header[name]
            raw = entry.get("shape") if isinstance(entry, dict) else None
            got: list[Any] = list(raw) if isinstance(raw, list) and all(type(g) is int for g in raw) else []
            dense = is_dense(name.removeprefix(GRAD_PREFIX))
            lead = (info.stop - info.start) if dense else info.n_tokens
            ok = len(got) == len(shape) + 1 and got[0] == lead
            if ok and dense:  # [seqs, head, q, k]: q, k up to the stored length
                ok = got[1:2] == shape[:1] and all(g <= s for g, s in zip(got[2:], shape[1:], strict=True))
            elif ok:
                ok = got[1:] == list(shape)
            if ok and not name.startswith(GRAD_PREFIX) and dtype is not None:
                ok = entry.get("dtype") == dtype
            if not ok:
                raise CorruptShardError(f"shard {p} holds {name} as {entry.get('dtype') if isinstance(entry, dict) else '?'}"
                                        f" {got}, the manifest says {man.trace.dtype} {[lead, *shape]}; {fix}")
        self._headers.add(info.index)

    def _hash_check(self, info: ShardInfo, p: Path) -> None:
        if sha256_file(p) != info.sha256:
            raise CorruptShardError(f"shard {p} fails its sha256 check (corrupt); {self._repair_hint([info.index])}")
        self._verified.add(info.index)

    def verify(self) -> None:
        """Check everything against the manifest: every shard's size, header and sha256, the token ids (hash,
        dataset fingerprint, token counts) and the metadata (hash, row count).

        A failure raises :class:`~interp.errors.CorruptStoreError` (:class:`CorruptShardError` for a shard) whose
        message says what to run, and leaves ``verify-failed.json`` in the store (when it is writable), so that
        running the capture again checks every shard's sha256 and captures the damaged ones again.
        """
        bad: list[int] = []
        first: CorruptStoreError | None = None
        checks: list[tuple[int | None, Any]] = [(None, self.tokens), (None, lambda: self.metadata())]
        checks += [(info.index, lambda info=info: self._hash_check(info, self._check(info))) for info in self.shards()]
        self._tokens, self._headers = None, set()
        for index, check in checks:
            try:
                check()
            except CorruptStoreError as e:
                first = first or e
                if index is not None:
                    bad.append(index)
        if first is None:
            return
        with contextlib.suppress(OSError, InterpError):  # a read-only store: the message still says what to run
            atomic_write_bytes(self._file(VERIFY_FAILED), json.dumps({"corrupt_shards": bad, "error": str(first)}).encode())
        if len(bad) > 1 and isinstance(first, CorruptShardError):
            raise CorruptShardError(f"{len(bad)} shards fail their check (shards {', '.join(map(str, bad))}); first: "
                                    f"{first}") from first
        raise first

    def read_shard(self, info: ShardInfo, hooks: SiteSpec | Sequence[SiteSpec] | None = None
                   ) -> dict[str, torch.Tensor]:
        """The raw tensors of one shard (token rows, or dense patterns), by stored name (gradients of a saved
        trace under ``grad:<name>``)."""
        p = self._check(info)
        self.tokens()  # the token counts the rows are cut by
        items: list[SiteSpec] = list(self.hooks) if hooks is None else _spellings(hooks)
        grads = {GRAD_PREFIX + g for g in self.manifest.grads}
        names = [n if isinstance(n, str) and n in grads else self._key(n) for n in items]
        try:
            with safe_open(str(p), framework="pt") as f:
                return {n: f.get_tensor(n) for n in names}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CorruptShardError(f"cannot read shard {p}: {e}; {self._repair_hint([info.index])}") from e

    def _shard_for(self, seq: int) -> ShardInfo:
        for s in self.manifest.shards:
            if s.start <= seq < s.stop:
                return s
        raise SequenceRangeError(f"sequence {seq} is not in any finished shard (store has {self.n_seqs} sequences, "
                         f"complete={self.complete})")

    def _seq_indices(self, seqs: int | Sequence[int] | slice | range | None) -> list[int]:
        n = self.n_seqs
        if seqs is None:
            return list(range(n))
        if isinstance(seqs, slice):
            return list(range(n))[seqs]
        if isinstance(seqs, torch.Tensor):
            seqs = seqs.tolist()
        items = [seqs] if isinstance(seqs, int) or (not hasattr(seqs, "__len__") and hasattr(seqs, "__index__")) else seqs
        if isinstance(items, str | bytes) or not hasattr(items, "__iter__"):
            raise TypeError(f"seqs must be an int, a sequence of ints or a slice, got {type(seqs).__name__}")
        out = []
        for i in items:
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise TypeError(f"sequence indices must be ints, got {type(i).__name__}: {i!r}")
            j = int(i)
            if not -n <= j < n:
                raise SequenceRangeError(f"sequence {j} out of range: the store has {n} sequences")
            out.append(j % n)
        return out

    def trace(self, seqs: int | Sequence[int] | slice | None = None, *,
              hooks: SiteSpec | Sequence[SiteSpec] | None = None) -> Trace:
        """Load sequences as an in-memory :class:`Trace` (padded to their longest length).

        Args:
            seqs: sequence indices (int, list of ints, slice; negative ints count from the end); all if ``None``.
            hooks: hooks to load in any spelling (activations and, for a saved trace with gradients,
                gradients); all if ``None``.

        Token-wise activations are zero at padding positions; attention patterns hold what the
        model computed there.
        """
        idx = self._seq_indices(seqs)
        if not idx:
            raise BadInputError("no sequences selected")
        if hooks is None:
            names, grad_names = self.hooks, list(self.manifest.grads)
        else:
            wanted = self._keys(hooks)
            names = [n for n in wanted if n in self.manifest.trace.hooks]
            grad_names = [n for n in wanted if n in self.manifest.grads]
        keys = [*names, *(GRAD_PREFIX + g for g in grad_names)]
        ids_all, mask_all = self.tokens()
        ids, mask = ids_all[idx], mask_all[idx]
        length = int(mask.sum(1).max())
        ids, mask = ids[:, :length], mask[:, :length]
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        cache: dict[int, dict[str, torch.Tensor]] = {}
        for seq in idx:
            info = self._shard_for(seq)
            if info.index not in cache:
                cache = {info.index: self.read_shard(info, keys)}
            shard = cache[info.index]
            lens = mask_all[info.start:info.stop].sum(1)
            j = seq - info.start
            for k in keys:
                t = shard[k]
                if is_dense(k.removeprefix(GRAD_PREFIX)):
                    parts[k].append(dense_to_length(k.removeprefix(GRAD_PREFIX), t[j], length))
                else:
                    off = int(lens[:j].sum())
                    rows = t[off:off + int(lens[j])]
                    out = rows.new_zeros((length, *rows.shape[1:]))
                    out[: rows.shape[0]] = rows
                    parts[k].append(out)
        acts = {n: stack_padded(parts[n]) for n in names}
        grads = {g: stack_padded(parts[GRAD_PREFIX + g]) for g in grad_names}
        man = replace(self.manifest.trace, hooks={n: list(acts[n].shape) for n in names})
        meta = self.metadata()
        if meta and TOKENS_COLUMN in meta[0]:
            tok_strs = tuple(tuple(meta[i][TOKENS_COLUMN][:length]) + ("",) * max(0, length - len(meta[i][TOKENS_COLUMN]))
                             for i in idx)
        else:
            tok_strs = tuple(tuple(str(i) for i in row) for row in ids.tolist())
        meta_rows = tuple({k: v for k, v in meta[i].items() if k != TOKENS_COLUMN} for i in idx) if meta else ()
        if meta_rows and not any(meta_rows):
            meta_rows = ()
        return Trace(input_ids=ids, attention_mask=mask, tokens=tok_strs, activations=acts, manifest=man,
                     metadata=meta_rows, grads=grads)

    def iter_tokens(self, hook: SiteSpec, *, batch_size: int = 4096, shuffle: bool = False, seed: int = 0,
                    dtype: torch.dtype | str | None = None, drop_last: bool = False,
                    allow_incomplete: bool = False) -> Iterator[torch.Tensor]:
        """Stream the non-padding token rows of one hook: ``[batch_size, ...]`` tensors.

        Without ``shuffle`` the rows come in store order (sequence by sequence); every batch has
        ``batch_size`` rows but the last, which is dropped with ``drop_last``. With ``shuffle``
        the shard order is permuted and the rows of each shard (plus the few left over from the
        shard before) are permuted, seeded, so runs repeat exactly. Memory stays at about one shard.

        Raises:
            UnknownHookError: the store has no such hook (also a ``KeyError``).
            BadInputError: a non-floating ``dtype``, a dense hook (the attention pattern), ``batch_size < 1``, or an
                incomplete store (an interrupted capture; pass ``allow_incomplete=True`` to read its finished shards).
        """
        hook = self._key(hook)
        if hook not in self.manifest.trace.hooks:
            raise self._unknown(hook)
        if is_dense(hook):
            raise BadInputError(f"{hook} is stored per sequence, not as token rows; use store.trace()")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BadInputError(f"bad batch_size {batch_size!r}; valid: an int >= 1")
        if isinstance(dtype, str):
            dtype = parse_dtype(dtype)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise BadInputError(f"bad dtype {dtype!r}; valid: a floating torch dtype (float32, bfloat16...) or None")
        if not self.complete and not allow_incomplete:
            raise BadInputError(f"the store at {self.path} is incomplete ({len(self.manifest.shards)} of "
                             f"{self.manifest.n_shards} shards): re-run the capture to finish it, or pass "
                             "allow_incomplete=True")
        g = torch.Generator().manual_seed(seed)
        infos = self.shards()
        if shuffle:
            infos = [infos[i] for i in torch.randperm(len(infos), generator=g).tolist()]
        if not shuffle:  # shards smaller than a batch are joined once per batch, not once per shard
            pending: list[torch.Tensor] = []
            n_pending = 0
            for info in infos:
                rows = self.read_shard(info, [hook])[hook]
                pending.append(rows if dtype is None else rows.to(dtype))
                n_pending += rows.shape[0]
                if n_pending < batch_size:
                    continue
                rows = pending[0] if len(pending) == 1 else torch.cat(pending)
                n_full = rows.shape[0] // batch_size * batch_size
                yield from rows[:n_full].split(batch_size)
                pending, n_pending = ([rows[n_full:]] if rows.shape[0] > n_full else []), rows.shape[0] - n_full
            if n_pending and not drop_last:
                yield pending[0] if len(pending) == 1 else torch.cat(pending)
            return
        carry: torch.Tensor | None = None
        for info in infos:
            rows = self.read_shard(info, [hook])[hook]
            if dtype is not None:
                rows = rows.to(dtype)
            if carry is not None and carry.shape[0]:
                rows = torch.cat([carry, rows])
            if shuffle:
                rows = rows[torch.randperm(rows.shape[0], generator=g)]
            n_full = rows.shape[0] // batch_size * batch_size
            if n_full:  # (split of an empty tensor would yield one empty batch)
                yield from rows[:n_full].split(batch_size)
            carry = rows[n_full:]
        if carry is not None and carry.shape[0] and not drop_last:
            yield carry


def _spellings(hooks: SiteSpec | Sequence[SiteSpec]) -> list[SiteSpec]:
    """One spelling or several, as a list (a ``(short, layer)`` pair is one spelling)."""
    if isinstance(hooks, (str, Site)):
        return [hooks]
    if isinstance(hooks, tuple) and len(hooks) == 2 and isinstance(hooks[0], str) and isinstance(hooks[1], int):
        return [(hooks[0], hooks[1])]
    out: list[SiteSpec] = []
    for h in hooks:
        if not isinstance(h, (str, Site, tuple)):
            raise TypeError(f"hooks must be hook names (str), Sites or (short, layer) pairs, got {h!r}")
        out.append(h)
    return out


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> TraceStore:
    """Save an in-memory trace as a one-shard store (see :meth:`Trace.save`); gradients are kept too."""
    root = Path(path)
    if (root / "manifest.json").exists():
        raise OutputExistsError(f"{root} already holds a trace store; choose another path or delete it")
    if trace.n_seqs == 0:
        raise BadInputError("cannot save a trace of 0 sequences")
    for name, t in [*trace.activations.items(), *trace.grads.items()]:
        if not is_dense(name) and tuple(t.shape[:2]) != tuple(trace.attention_mask.shape):
            raise BadInputError(f"bad activation {name!r} of shape {tuple(t.shape)} for a store: it keeps "
                                "[batch, pos, ...] activations as token rows")
    if not is_right_padded(trace.attention_mask):
        raise BadInputError("the trace's attention mask is not right-padded (real tokens first, then padding); "
                         "stores keep token rows in right-padded order only")
    mask = trace.attention_mask.bool()

    def rows(name: str, t: torch.Tensor) -> torch.Tensor:
        return (t if is_dense(name) else t[mask.to(t.device)]).detach().cpu()

    def trailing(name: str, t: torch.Tensor) -> list[int]:
        return list(t.shape[1 if is_dense(name) else 2:])

    tensors = {n: rows(n, t) for n, t in trace.activations.items()}
    tensors.update({GRAD_PREFIX + n: rows(n, t) for n, t in trace.grads.items()})
    from interp.trace.lock import store_lock
    from interp.trace.resume import StoreInputs, write_inputs

    with store_lock(root):
        if (root / "manifest.json").exists():
            raise OutputExistsError(f"{root} already holds a trace store; choose another path or delete it")
        loc = StoreLocation(os.fspath(root))
        t_sha, m_sha = write_inputs(loc, StoreInputs(trace.input_ids, trace.attention_mask, trace.metadata,
                                                     trace.tokens))
        size, digest = loc.write_tensors(ShardInfo(0, 0, 0, 0, 0, "").file, tensors)
        info = ShardInfo(index=0, start=0, stop=trace.n_seqs, n_tokens=int(mask.sum()), bytes=size, sha256=digest)
        man = StoreManifest(trace=replace(trace.manifest, hooks={n: trailing(n, t) for n, t in trace.activations.items()}),
                            n_seqs=trace.n_seqs, seq_len=int(trace.input_ids.shape[1]), batch_size=trace.n_seqs,
                            dataset_fingerprint=tokens_fingerprint(trace.input_ids, trace.attention_mask),
                            shards=(info,), grads={n: trailing(n, t) for n, t in trace.grads.items()},
                            tokens_sha256=t_sha, meta_sha256=m_sha)
        loc.write_bytes("manifest.json", man.to_json().encode())
    return TraceStore(root)


__all__ = ["GRAD_PREFIX", "CorruptShardError", "CorruptStoreError", "MissingFileError", "OutputExistsError", "ShardInfo",
           "SequenceRangeError", "StoreManifest", "StoreMismatchError", "TraceStore", "save_trace", "tokens_fingerprint", "write_shard"]
