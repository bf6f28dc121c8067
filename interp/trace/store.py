"""``TraceStore``: the on-disk trace format, shared by every tool.

Layout of a store directory::

    manifest.json              written atomically (tmp file + rename) after every completed shard
    tokens.safetensors         input_ids, attention_mask  [n_seqs, seq_len], right-padded
    meta.parquet               per-sequence metadata, and the token strings (column ``__tokens__``)
    shards/00000.safetensors   one shard = one batch of sequences, all captured hooks

Inside a shard, token-wise hooks (``[batch, pos, ...]``) are stored as rows of the non-padding
tokens only (``[n_tokens, ...]``, sequence by sequence), so training readers stream them without
unpadding; ``attn.hook_pattern`` is stored dense ``[batch, head, q_pos, k_pos]`` at the shard's
longest length. Every shard's sha256 and size are in the manifest. A trace saved with gradients
(:meth:`Trace.save`) keeps them in its shard under ``grad:<hook name>``, listed under ``grads``
in the manifest.

Every file is written atomically (a temporary ``.<name>.*.tmp`` file, then a rename); a capture
that resumes removes the temporary files an interrupted one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from interp.models import LoadedModel
from interp.sites import Component, Site
from interp.trace.trace import SCHEMA_VERSION, Manifest, Trace, parse_dtype

STORE_KIND = "interp-trace-store"
GRAD_PREFIX = "grad:"  # shard key prefix of the gradients a saved trace carries
TOKENS_COLUMN = "__tokens__"  # meta.parquet column of the token strings (the other columns are metadata)


class CorruptShardError(OSError):
    """A shard's bytes do not match the manifest (truncated, edited or missing)."""


class StoreMismatchError(ValueError):
    """An existing store was captured with other settings than the ones asked for."""


def is_dense(name: str) -> bool:
    """Hooks stored per sequence (not as token rows): the attention pattern."""
    return Site.parse(name).component is Component.PATTERN


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``safetensors`` file written atomically (a crash leaves the old file or none, never half of one)."""
    atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def store_tmp_files(root: Path) -> list[Path]:
    """The temporary files an interrupted store writer leaves (see :func:`atomic_write_bytes`)."""
    found = [f for name in ("manifest.json", "tokens.safetensors", "meta.parquet") for f in root.glob(f".{name}.*.tmp")]
    if (root / "shards").is_dir():
        found += list((root / "shards").glob(".[0-9]*.safetensors.*.tmp"))
    return found


def remove_stale_tmp(root: Path) -> list[Path]:
    """Delete the temporary files an interrupted writer left in a store (call only when no writer runs)."""
    found = store_tmp_files(root)
    for f in found:
        f.unlink(missing_ok=True)
    return found


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones then zeros (the layout stores and ``trace()`` assume)."""
    m = attention_mask.bool().cpu()
    lens = m.sum(1, keepdim=True)
    return bool((m == (torch.arange(m.shape[1]) < lens)).all())


@dataclass(frozen=True)
class ShardInfo:
    """One shard: sequences ``[start, stop)``, its token count, file size and sha256."""

    index: int
    start: int
    stop: int
    n_tokens: int
    bytes: int
    sha256: str

    @property
    def file(self) -> str:
        return f"shards/{self.index:05d}.safetensors"


@dataclass(frozen=True)
class StoreManifest:
    """``manifest.json``: the trace manifest plus the store's capture settings and shard list."""

    trace: Manifest
    n_seqs: int
    seq_len: int
    batch_size: int
    dataset_fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    shards: tuple[ShardInfo, ...] = ()
    grads: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        return -(-self.n_seqs // self.batch_size)

    @property
    def complete(self) -> bool:
        return {s.index for s in self.shards} == set(range(self.n_shards))

    def to_json(self) -> str:
        d = {"kind": STORE_KIND, **self.trace.to_dict(), "n_seqs": self.n_seqs, "seq_len": self.seq_len,
             "batch_size": self.batch_size, "dataset_fingerprint": self.dataset_fingerprint,
             "settings": self.settings, "complete": self.complete,
             "shards": [{"file": s.file, **s.__dict__} for s in sorted(self.shards, key=lambda s: s.index)]}
        if self.grads:
            d["grads"] = self.grads
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> StoreManifest:
        """Parse ``manifest.json``; raises ``ValueError`` naming the problem for a malformed or foreign file."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is malformed (not valid JSON: {e}); was it edited by hand?") from e
        if not isinstance(d, dict):
            raise ValueError(f"{where} is malformed (a JSON {type(d).__name__}, not an object); was it edited by hand?")
        if d.get("kind") != STORE_KIND:
            raise ValueError(f"{where} is not an interp trace store manifest (kind={d.get('kind')!r})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{where} has trace schema_version {version!r}, but this interp reads version "
                             f"{SCHEMA_VERSION}; re-capture the store with this version of interp")
        try:
            shards = tuple(_shard_info(s) for s in d["shards"])
            man = cls(trace=Manifest.from_dict(d), n_seqs=_int(d["n_seqs"], "n_seqs", 0),
                      seq_len=_int(d["seq_len"], "seq_len", 0), batch_size=_int(d["batch_size"], "batch_size", 1),
                      dataset_fingerprint=str(d["dataset_fingerprint"]), settings=dict(d.get("settings", {})),
                      shards=shards, grads={str(k): [int(x) for x in v] for k, v in d.get("grads", {}).items()})
            for h in (*man.trace.hooks, *man.grads):
                Site.parse(h)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"{where} is malformed ({what}); was it edited by hand?") from e
        indices = [s.index for s in shards]
        if len(set(indices)) != len(indices) or any(not 0 <= i < man.n_shards for i in indices):
            raise ValueError(f"{where} is malformed (shard indices {sorted(indices)} for {man.n_shards} shards); "
                             "was it edited by hand?")
        for s in shards:
            if (s.start, s.stop) != man.shard_range(s.index):
                raise ValueError(f"{where} is malformed (shard {s.index} covers sequences [{s.start}, {s.stop}), "
                                 f"expected {list(man.shard_range(s.index))}); was it edited by hand?")
        return man

    def shard_range(self, index: int) -> tuple[int, int]:
        """Sequences ``[start, stop)`` of shard ``index``."""
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.n_seqs)

    def with_shard(self, info: ShardInfo) -> StoreManifest:
        rest = tuple(s for s in self.shards if s.index != info.index)
        return replace(self, shards=(*rest, info))


def _int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}")
    return x


def _shard_info(d: Any) -> ShardInfo:
    if not isinstance(d, dict):
        raise TypeError(f"a shard entry is a {type(d).__name__}, not an object")
    info = ShardInfo(**{k: v for k, v in d.items() if k != "file"})
    for name in ("index", "start", "stop", "n_tokens", "bytes"):
        _int(getattr(info, name), f"shard {name}", 0)
    if info.stop < info.start or not isinstance(info.sha256, str):
        raise ValueError(f"bad shard entry {d!r}")
    return info


def write_shard(root: Path, index: int, start: int, tensors: dict[str, torch.Tensor], n_tokens: int,
                stop: int) -> ShardInfo:
    """Serialize one shard atomically and return its manifest entry (size and sha256)."""
    data = st_save({k: v.contiguous() for k, v in tensors.items()})
    info = ShardInfo(index=index, start=start, stop=stop, n_tokens=n_tokens, bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest())
    atomic_write_bytes(root / info.file, data)
    return info


class TraceStore:
    """A trace on disk: open it, check it, read sequences as :class:`Trace` or stream token rows.

    Args:
        path: the store directory.
        verify: ``"size"`` (default: every shard read is checked against its recorded size, which
            catches truncation), ``"sha256"`` (hash every shard when it is read), or ``"none"``.

    Example:
        >>> import interp
        >>> from interp.trace import TraceStore, capture
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> store = capture(m, ["a b c", "hello world"], "blocks.*.hook_resid_post", "/tmp/st")  # doctest: +SKIP
        >>> for rows in store.iter_tokens("blocks.3.hook_resid_post", batch_size=4):  # doctest: +SKIP
        ...     print(rows.shape)
        torch.Size([4, 576])
        torch.Size([1, 576])
    """

    def __init__(self, path: str | os.PathLike[str], verify: str = "size") -> None:
        if verify not in ("size", "sha256", "none"):
            raise ValueError(f"verify must be 'size', 'sha256' or 'none', got {verify!r}")
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"no trace store at {self.path} (missing manifest.json)")
        self.manifest = StoreManifest.from_json(mpath.read_text(), str(mpath))
        self.verify_mode = verify
        self._verified: set[int] = set()

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

    def check_model(self, model: LoadedModel) -> None:
        """Raise ``ModelMismatchError`` unless ``model`` made this store."""
        self.manifest.trace.check_model(model)

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of every sequence, ``[n_seqs, seq_len]``."""
        with safe_open(str(self.path / "tokens.safetensors"), framework="pt") as f:
            return f.get_tensor("input_ids"), f.get_tensor("attention_mask")

    def metadata(self) -> list[dict[str, Any]]:
        """Per-sequence metadata rows (empty when none was stored)."""
        p = self.path / "meta.parquet"
        if not p.exists():
            return []
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()

    # -- shards ----------------------------------------------------------------------------------
    def _check(self, info: ShardInfo) -> Path:
        p = self.path / info.file
        if not p.exists():
            raise CorruptShardError(f"shard {info.index} is missing: {p}")
        size = p.stat().st_size
        if size != info.bytes:
            raise CorruptShardError(f"shard {p} is {size} bytes, the manifest says {info.bytes}: truncated or "
                                    "replaced; re-run the capture to re-create it")
        if self.verify_mode == "sha256" and info.index not in self._verified:
            self._hash_check(info, p)
        return p

    def _hash_check(self, info: ShardInfo, p: Path) -> None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        if h.hexdigest() != info.sha256:
            raise CorruptShardError(f"shard {p} fails its sha256 check (corrupt); re-run the capture to re-create it")
        self._verified.add(info.index)

    def verify(self) -> None:
        """Hash every shard and compare with the manifest; raises :class:`CorruptShardError`."""
        for info in self.shards():
            p = self._check(info)
            self._hash_check(info, p)

    def read_shard(self, info: ShardInfo, hooks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The raw tensors of one shard (token rows, or dense patterns)."""
        p = self._check(info)
        names = self.hooks if hooks is None else [hooks] if isinstance(hooks, str) else list(hooks)
        stored = (*self.manifest.trace.hooks, *(GRAD_PREFIX + g for g in self.manifest.grads))
        for n in names:
            if n not in stored:
                raise KeyError(f"store has no hook {n!r}; it holds: {', '.join(self.hooks)}")
        try:
            with safe_open(str(p), framework="pt") as f:
                return {n: f.get_tensor(n) for n in names}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CorruptShardError(f"cannot read shard {p}: {e}") from e

    def _shard_for(self, seq: int) -> ShardInfo:
        for s in self.manifest.shards:
            if s.start <= seq < s.stop:
                return s
        raise IndexError(f"sequence {seq} is not in any finished shard (store has {self.n_seqs} sequences, "
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
                raise IndexError(f"sequence {j} out of range: the store has {n} sequences")
            out.append(j % n)
        return out

    def trace(self, seqs: int | Sequence[int] | slice | None = None, hooks: str | Sequence[str] | None = None) -> Trace:
        """Load sequences as an in-memory :class:`Trace` (padded to their longest length).

        Args:
            seqs: sequence indices (int, list of ints, slice; negative ints count from the end); all if ``None``.
            hooks: hook names to load (activations and, for a saved trace with gradients, gradients);
                all if ``None``.

        Token-wise activations are zero at padding positions; attention patterns hold what the
        model computed there.
        """
        idx = self._seq_indices(seqs)
        if not idx:
            raise ValueError("no sequences selected")
        if hooks is None:
            names, grad_names = self.hooks, list(self.manifest.grads)
        else:
            wanted = [hooks] if isinstance(hooks, str) else list(hooks)
            for n in wanted:
                if n not in self.manifest.trace.hooks and n not in self.manifest.grads:
                    raise KeyError(f"store has no hook {n!r}; it holds: {', '.join(self.hooks)}")
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
                    x = t[j][..., :length, :length]
                    pad = length - x.shape[-1]
                    parts[k].append(torch.nn.functional.pad(x, (0, pad, 0, pad)))
                else:
                    off = int(lens[:j].sum())
                    rows = t[off:off + int(lens[j])]
                    out = rows.new_zeros((length, *rows.shape[1:]))
                    out[: rows.shape[0]] = rows
                    parts[k].append(out)
        acts = {n: torch.stack(parts[n]) for n in names}
        grads = {g: torch.stack(parts[GRAD_PREFIX + g]) for g in grad_names}
        man = replace(self.manifest.trace, hooks={n: list(acts[n].shape) for n in names})
        meta = self.metadata()
        if meta and TOKENS_COLUMN in meta[0]:
            tok_strs = tuple(tuple(meta[i][TOKENS_COLUMN][:length]) + ("",) * max(0, length - len(meta[i][TOKENS_COLUMN]))
                             for i in idx)
        else:
            tok_strs = tuple(tuple(str(i) for i in row) for row in ids.tolist())
        rows = tuple({k: v for k, v in meta[i].items() if k != TOKENS_COLUMN} for i in idx) if meta else ()
        if rows and not any(rows):
            rows = ()
        return Trace(input_ids=ids, attention_mask=mask, tokens=tok_strs, activations=acts, manifest=man,
                     metadata=rows, grads=grads)

    def iter_tokens(self, hook: str, batch_size: int = 4096, shuffle: bool = False, seed: int = 0,
                    dtype: torch.dtype | None = None, drop_last: bool = False,
                    allow_incomplete: bool = False) -> Iterator[torch.Tensor]:
        """Stream the non-padding token rows of one hook: ``[batch_size, ...]`` tensors.

        Without ``shuffle`` the rows come in store order (sequence by sequence); every batch has
        ``batch_size`` rows but the last, which is dropped with ``drop_last``. With ``shuffle``
        the shard order is permuted and the rows of each shard (plus the few left over from the
        shard before) are permuted, seeded, so runs repeat exactly. Memory stays at about one shard.

        Raises:
            KeyError: the store has no such hook.
            ValueError: a dense hook (the attention pattern), ``batch_size < 1``, or an incomplete
                store (an interrupted capture; pass ``allow_incomplete=True`` to read its finished shards).
        """
        if hook not in self.manifest.trace.hooks:
            raise KeyError(f"store has no hook {hook!r}; it holds: {', '.join(self.hooks)}")
        if is_dense(hook):
            raise ValueError(f"{hook} is stored per sequence, not as token rows; use store.trace()")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not self.complete and not allow_incomplete:
            raise ValueError(f"the store at {self.path} is incomplete ({len(self.manifest.shards)} of "
                             f"{self.manifest.n_shards} shards): re-run the capture to finish it, or pass "
                             "allow_incomplete=True")
        g = torch.Generator().manual_seed(seed)
        infos = self.shards()
        if shuffle:
            infos = [infos[i] for i in torch.randperm(len(infos), generator=g).tolist()]
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


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> TraceStore:
    """Save an in-memory trace as a one-shard store (see :meth:`Trace.save`); gradients are kept too."""
    root = Path(path)
    if (root / "manifest.json").exists():
        raise FileExistsError(f"{root} already holds a trace store; choose another path or delete it")
    if trace.n_seqs == 0:
        raise ValueError("cannot save a trace of 0 sequences")
    if not is_right_padded(trace.attention_mask):
        raise ValueError("the trace's attention mask is not right-padded (real tokens first, then padding); "
                         "stores keep token rows in right-padded order only")
    mask = trace.attention_mask.bool()

    def rows(name: str, t: torch.Tensor) -> torch.Tensor:
        return (t if is_dense(name) else t[mask.to(t.device)]).detach().cpu()

    def trailing(name: str, t: torch.Tensor) -> list[int]:
        return list(t.shape[1 if is_dense(name) else 2:])

    tensors = {n: rows(n, t) for n, t in trace.activations.items()}
    tensors.update({GRAD_PREFIX + n: rows(n, t) for n, t in trace.grads.items()})
    root.mkdir(parents=True, exist_ok=True)
    write_meta(root, trace.metadata, trace.tokens)  # first: it checks the metadata
    atomic_save_tensors(root / "tokens.safetensors", {"input_ids": trace.input_ids, "attention_mask": trace.attention_mask})
    info = write_shard(root, 0, 0, tensors, int(mask.sum()), trace.n_seqs)
    man = StoreManifest(trace=replace(trace.manifest, hooks={n: trailing(n, t) for n, t in trace.activations.items()}),
                        n_seqs=trace.n_seqs, seq_len=int(trace.input_ids.shape[1]), batch_size=trace.n_seqs,
                        dataset_fingerprint=tokens_fingerprint(trace.input_ids, trace.attention_mask),
                        shards=(info,), grads={n: trailing(n, t) for n, t in trace.grads.items()})
    atomic_write_bytes(root / "manifest.json", man.to_json().encode())
    return TraceStore(root)


def write_meta(root: Path, metadata: Sequence[dict[str, Any]], tokens: Sequence[Sequence[str]] | None) -> None:
    """Write ``meta.parquet`` atomically: per-sequence metadata and, if given, the token strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(m) for m in metadata] if metadata else [{} for _ in tokens or []]
    if any(TOKENS_COLUMN in r for r in rows):
        raise ValueError(f"metadata may not have a {TOKENS_COLUMN!r} field: the store keeps the token strings there")
    if tokens is not None:
        for r, t in zip(rows, tokens, strict=True):
            r[TOKENS_COLUMN] = list(t)
    if rows:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        atomic_write_bytes(root / "meta.parquet", sink.getvalue().to_pybytes())


def tokens_fingerprint(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> str:
    """A short hash of the token ids and mask: what a resumed capture must find unchanged."""
    h = hashlib.sha256(input_ids.to("cpu", torch.int64).numpy().tobytes())
    h.update(attention_mask.to("cpu", torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["GRAD_PREFIX", "SCHEMA_VERSION", "CorruptShardError", "ShardInfo", "StoreManifest", "StoreMismatchError", "TraceStore",
           "save_trace", "tokens_fingerprint", "write_shard"]
