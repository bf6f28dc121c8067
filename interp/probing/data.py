"""Probe examples from a trace: which token rows make each example, their labels and their activations.

An *example* is one row of the probe's design matrix. ``positions`` selects token positions by the one rule
of :mod:`interp.sites.positions` (each sequence's real tokens; ``None``: every real token; ``-1``: each
sequence's last real token; a list; a slice), and ``pool`` says what becomes of them: ``None`` makes every
selected token an example, ``"mean"`` averages the selected tokens of each sequence into one example.
Rows of a hook are read in store order (sequence by sequence, real tokens only), one hook at a time, so a
:class:`~interp.trace.TraceStore` is probed layer by layer without loading every layer at once.

Example:
    >>> ex = build_examples([3, 2], [["a", "b", "a"], ["b", "b"]], positions=-1)
    >>> ex.rows.tolist(), ex.labels, ex.groups.tolist()
    ([2, 4], ['a', 'b'], [0, 1])
    >>> build_examples([3, 2], [["a", "b", "a"], ["b", "b"]], pool="mean").example_of_row.tolist()
    [0, 0, 0, 1, 1]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from interp.errors import BadInputError, UnknownNameError, bad_value, unknown_name
from interp.probing.labels import Label
from interp.sites import (
    Component,
    Positions,
    Site,
    SiteSpec,
    UnknownHookError,
    normalize_positions,
    position_mask,
    resolve,
)
from interp.sites import resolve_positions as _resolve_positions
from interp.trace import Trace, TraceStore
from interp.trace.layout import TOKENS_COLUMN, ShardInfo, is_dense

Pool = Literal["mean"] | None
"""``None``: every selected token is an example; ``"mean"``: one example per sequence, the mean of its selected tokens."""
POOLS = (None, "mean")


def check_positions(positions: object) -> int | tuple[int, ...] | slice | None:
    """``positions`` type-checked by the rule of :mod:`interp.sites.positions` (ranges are checked per sequence).

    Raises:
        BadInputError: anything but an int, a list of ints, a slice or ``None``; the message names the value.
    """
    if isinstance(positions, str):
        hint = {"all": "None", "last": "-1", "mean": "None with pool='mean'"}.get(positions)
        raise bad_value("positions", positions, "an int, a list of ints, a slice or None (every real token); "
                        "-1 is each sequence's last real token" + (f" (write {hint})" if hint else ""))
    try:
        return normalize_positions(positions, "positions")
    except TypeError:
        raise bad_value("positions", positions, "an int, a list of ints, a slice or None (every real token)") from None


def positions_text(positions: Positions) -> str:
    """A position selection spelled as the CLI's ``--positions`` takes it: ``all``, ``-1``, ``0,3,-1``, ``2:5``.

    Example:
        >>> positions_text(None), positions_text(-1), positions_text([0, -1]), positions_text(slice(1, None))
        ('all', '-1', '0,-1', '1:')
    """
    if positions is None:
        return "all"
    if isinstance(positions, slice):
        parts = ["" if v is None else str(v) for v in (positions.start, positions.stop, positions.step)]
        return ":".join(parts if positions.step is not None else parts[:2])
    if isinstance(positions, int):
        return str(positions)
    return ",".join(str(int(p)) for p in positions)


@dataclass(frozen=True)
class Examples:
    """The examples of a probe.

    Attributes:
        rows: ``[n_rows]`` flat token-row indices (store order) that make the examples.
        example_of_row: ``[n_rows]`` the example each row belongs to (rows of one example are averaged).
        labels: one label per example.
        groups: ``[n_examples]`` the sequence of each example (the train/test split is by sequence).
        token_ids: ``[n_examples]`` the token id of each example's last row (``-1`` if unknown): the
            token type of the control task.
        tokens: the token string of each example's last row.
    """

    rows: torch.Tensor
    example_of_row: torch.Tensor
    labels: list[Label]
    groups: torch.Tensor
    token_ids: torch.Tensor
    tokens: list[str]

    @property
    def n(self) -> int:
        return len(self.labels)


def build_examples(lengths: Sequence[int], labels: Sequence[Sequence[Label | None]], *, positions: Positions = None,
                   pool: Pool = None, token_ids: Sequence[Sequence[int]] | None = None,
                   tokens: Sequence[Sequence[str]] | None = None) -> Examples:
    """Examples from per-token labels (``None``: no label) of sequences of the given lengths.

    Args:
        lengths: real tokens of each sequence.
        labels: one label (or ``None``) per real token of each sequence.
        positions: the token positions to use (:mod:`interp.sites.positions`: ``-1`` is each sequence's last
            real token; ``None`` every token).
        pool: ``None`` (each selected token is an example) or ``"mean"`` (one example per sequence: the mean
            of its selected tokens, labelled by the last of them).
        token_ids, tokens: the token ids and strings of each sequence (for the control task and display).

    Raises:
        BadInputError: a bad ``positions`` or ``pool``, a position outside some sequence's real tokens (the
            message names the sequence), labels that do not fit the lengths, or no example with a label.

    Example (the last real token of each sequence; the second one has no label there, so no example):
        >>> ex = build_examples([3, 2], [[0, 1, 0], [1, None]], positions=-1)
        >>> ex.n, ex.labels, ex.example_of_row.tolist()
        (1, [0], [0])
    """
    sel = check_positions(positions)
    if pool not in POOLS:
        raise bad_value("pool", pool, "None (every selected token is an example) or 'mean' (one per sequence)")
    lens = [int(n) for n in lengths]
    if sel is not None and not isinstance(sel, slice) and lens:
        position_mask(sel, torch.tensor(lens), size=max(lens))  # raises, naming the sequence, for an int out of range
    rows: list[int] = []
    ex_of_row: list[int] = []
    labs: list[Label] = []
    groups: list[int] = []
    tids: list[int] = []
    toks: list[str] = []
    offset = 0
    for s, (n, lab) in enumerate(zip(lens, labels, strict=True)):
        if len(lab) != n:
            raise BadInputError(f"sequence {s} has {n} tokens but {len(lab)} labels")
        picked = _resolve_positions(sel, n) if n else []
        spans = [[i] for i in picked] if pool is None else ([picked] if picked else [])
        for span in spans:
            last = lab[span[-1]]
            if last is None:
                continue
            k = len(labs)
            rows += [offset + i for i in span]
            ex_of_row += [k] * len(span)
            labs.append(last)
            groups.append(s)
            tids.append(int(token_ids[s][span[-1]]) if token_ids is not None else -1)
            toks.append(str(tokens[s][span[-1]]) if tokens is not None else "")
        offset += n
    if not labs:
        raise BadInputError(f"no example has a label at positions={positions_text(sel)} (pool={pool!r}): "
                            "check the labels")
    return Examples(torch.tensor(rows), torch.tensor(ex_of_row), labs, torch.tensor(groups), torch.tensor(tids), toks)


def _site_key(site: Site) -> tuple[int, int, str]:
    """Forward order: embed, then layer by layer (components in their order), then final norm, logits, hf:."""
    comps = list(Component)
    if site.layer is not None:
        return (site.layer + 1, comps.index(site.component), site.name)
    if site.component is Component.EMBED:
        return (0, 0, site.name)
    return (1 << 30, comps.index(site.component), site.name)


class ActivationSource:
    """Uniform read access to a :class:`Trace` or a :class:`TraceStore`: lengths, tokens, metadata, rows.

    Args:
        source: an in-memory trace or a store.

    Example:
        >>> from interp.probing import synthetic_trace
        >>> tr, _ = synthetic_trace(n_seqs=2, seq_len=3, d=4, planted=(1,), n_layers=2)
        >>> ActivationSource(tr).resolve("resid_post.-1")
        ['blocks.1.hook_resid_post']
    """

    def __init__(self, source: Trace | TraceStore) -> None:
        if not isinstance(source, Trace | TraceStore):
            raise BadInputError(f"probing reads a Trace or a TraceStore, not a {type(source).__name__}")
        self.source = source
        if isinstance(source, Trace):
            mask = source.attention_mask.bool()
            self.lengths: list[int] = mask.sum(1).tolist()
            self.token_ids: list[list[int]] = [source.input_ids[i][mask[i]].tolist() for i in range(source.n_seqs)]
            self.tokens: list[list[str]] = [list(source.tokens[i][: self.lengths[i]]) for i in range(source.n_seqs)]
            self.metadata: list[dict[str, object]] = [dict(m) for m in source.metadata]
            self.hooks: list[str] = list(source.activations)
            self.model_id = source.manifest.model_id
        else:
            ids, mask = source.tokens()
            self.lengths = mask.sum(1).tolist()
            self.token_ids = [ids[i][: self.lengths[i]].tolist() for i in range(ids.shape[0])]
            meta = source.metadata()
            self.tokens = [list(m.get(TOKENS_COLUMN, []))[: self.lengths[i]] for i, m in enumerate(meta)] if meta else \
                [[str(t) for t in row] for row in self.token_ids]
            self.metadata = [{k: v for k, v in m.items() if k != TOKENS_COLUMN} for m in meta]
            self.hooks = source.hooks
            self.model_id = source.manifest.trace.model_id

    @property
    def n_seqs(self) -> int:
        return len(self.lengths)

    def sites(self) -> list[Site]:
        """The hook points this source holds, in forward order."""
        return sorted((Site.parse(h) for h in self.hooks), key=_site_key)

    def resolve(self, hooks: SiteSpec | Sequence[SiteSpec]) -> list[str]:
        """Names of the hooks this source holds that ``hooks`` names (any :mod:`interp.sites` spelling), in
        forward order. Negative layers (``resid_post.-1``) count from the last layer the source holds.

        Raises:
            UnknownHookError: a name or pattern matches no hook of the source (the message lists what it holds).
            BadInputError: a hook that is not token-wise (``pattern``).
        """
        sites = self.sites()
        try:
            found = resolve(hooks, [s for s in sites if s.component is not Component.HF])
        except UnknownNameError:
            found = None
        held = {s.name for s in sites}
        if found is None or any(s.name not in held for s in found):
            kind = type(self.source).__name__
            raise UnknownHookError(f"the {kind} holds no hook matching {hooks!r}; it holds: {', '.join(self.hooks)}. "
                                   "Pass the model (probe(model, ...)) to capture other hooks") from None
        names = [s.name for s in found]
        check_token_wise(names)
        return names

    def column(self, name: str) -> list[object]:
        """A per-sequence metadata column.

        Raises:
            UnknownNameError: the source has no such column (the message lists its columns).
        """
        have = list(self.metadata[0]) if self.metadata else []
        if name not in have:
            raise unknown_name("metadata column", name, have,
                               hint="(pass the labels as a list, or capture from a labelled set so that they are "
                                    "stored with the trace)")
        return [m[name] for m in self.metadata]

    def features(self, hook: str, ex: Examples) -> torch.Tensor:
        """``[n_examples, d]`` float32 activations of one hook (trailing axes flattened; spans averaged)."""
        n_ex = ex.n
        if isinstance(self.source, Trace):
            t = self.source[hook]
            flat = t[self.source.attention_mask.bool().to(t.device)]
            picked = flat[ex.rows.to(t.device)].reshape(len(ex.rows), -1).float().cpu()
        else:
            found: torch.Tensor | None = None
            covered = 0
            for info, lo, hi in self._shard_ranges():
                sel = ((ex.rows >= lo) & (ex.rows < hi)).nonzero().flatten()
                if not len(sel):
                    continue
                vals = self.source.read_shard(info, [hook])[hook][ex.rows[sel] - lo].reshape(len(sel), -1).float()
                if found is None:
                    found = torch.empty(len(ex.rows), vals.shape[1])
                found[sel] = vals
                covered += len(sel)
            if found is None or covered != len(ex.rows):
                raise BadInputError(f"the store holds {covered} of the {len(ex.rows)} probed token rows: an incomplete "
                                    "capture? re-run it to finish, or probe a Trace of the finished sequences")
            picked = found
        if len(ex.rows) == n_ex:
            return picked
        out = torch.zeros(n_ex, picked.shape[1]).index_add_(0, ex.example_of_row, picked)
        return out / torch.bincount(ex.example_of_row, minlength=n_ex).clamp_min(1).unsqueeze(1)

    def _shard_ranges(self) -> Iterator[tuple[ShardInfo, int, int]]:
        assert isinstance(self.source, TraceStore)
        starts = [0]
        for n in self.lengths:
            starts.append(starts[-1] + n)
        for info in self.source.shards():
            yield info, starts[info.start], starts[info.stop]


def check_token_wise(names: Sequence[str]) -> None:
    """Raise :class:`BadInputError` for a hook without one row per token (the attention ``pattern``)."""
    for n in names:
        if is_dense(n):
            raise BadInputError(f"cannot probe {n}: probing reads hooks with one activation per token, and an "
                                "attention pattern has one row per query over every key; probe z or resid_* instead")


__all__ = ["POOLS", "ActivationSource", "Examples", "Pool", "build_examples", "check_positions",
           "check_token_wise", "positions_text"]
