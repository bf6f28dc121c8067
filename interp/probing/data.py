"""Probe examples from a trace: which token rows make each example, their labels and their activations.

An *example* is one row of the probe's design matrix: a token (``position="all"``), each sequence's
last token (``"last"``), a fixed position (an int, negative from each sequence's end), or the mean
over a span of each sequence (``"mean"``: all its tokens; a ``slice``: those positions). Rows of a
hook are read in store order (sequence by sequence, real tokens only), one hook at a time, so a
:class:`~interp.trace.TraceStore` is probed layer by layer without loading every layer at once.

Example:
    >>> import torch
    >>> ex = build_examples([3, 2], [["a", "b", "a"], ["b", "b"]], position="last")
    >>> ex.rows.tolist(), ex.labels, ex.groups.tolist()
    ([2, 4], ['a', 'b'], [0, 1])
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import BadInputError
from interp.sites import Site
from interp.trace import Trace, TraceStore
from interp.trace.layout import TOKENS_COLUMN, is_dense

Position = str | int | slice
Source = Trace | TraceStore | str | os.PathLike[str]


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
    labels: list[Any]
    groups: torch.Tensor
    token_ids: torch.Tensor
    tokens: list[str]

    @property
    def n(self) -> int:
        return len(self.labels)


def build_examples(lengths: Sequence[int], labels: Sequence[Sequence[Any]], position: Position = "all",
                   token_ids: Sequence[Sequence[int]] | None = None,
                   tokens: Sequence[Sequence[str]] | None = None) -> Examples:
    """Examples from per-token labels (``None``: no label) of sequences of the given lengths.

    Raises:
        ValueError: an unknown ``position``, or no example has a label.
    """
    if not (position in ("all", "last", "mean") or isinstance(position, slice)
            or (isinstance(position, int) and not isinstance(position, bool))):
        raise BadInputError(f"position must be 'all', 'last', 'mean', an int or a slice, got {position!r}")
    rows, ex_of_row, labs, groups, tids, toks = [], [], [], [], [], []
    offset = 0
    for s, (n, lab) in enumerate(zip(lengths, labels, strict=True)):
        if len(lab) != n:
            raise BadInputError(f"sequence {s} has {n} tokens but {len(lab)} labels")
        if position == "all":
            spans = [[i] for i in range(n) if lab[i] is not None]
        elif position == "last":
            spans = [[n - 1]] if n else []
        elif position == "mean":
            spans = [list(range(n))] if n else []
        elif isinstance(position, slice):
            span = list(range(n))[position]
            spans = [span] if span else []
        else:
            spans = [[position % n]] if -n <= position < n else []
        for span in spans:
            if lab[span[-1]] is None:
                continue
            k = len(labs)
            rows += [offset + i for i in span]
            ex_of_row += [k] * len(span)
            labs.append(lab[span[-1]])
            groups.append(s)
            tids.append(int(token_ids[s][span[-1]]) if token_ids is not None else -1)
            toks.append(str(tokens[s][span[-1]]) if tokens is not None else "")
        offset += n
    if not labs:
        raise BadInputError(f"no example has a label at position={position!r}: check the labels")
    return Examples(torch.tensor(rows), torch.tensor(ex_of_row), labs, torch.tensor(groups), torch.tensor(tids), toks)


class ActivationSource:
    """Uniform read access to a :class:`Trace` or a :class:`TraceStore`: lengths, tokens, metadata, rows.

    Args:
        source: an in-memory trace, a store, or a store's path.
    """

    def __init__(self, source: Source) -> None:
        if isinstance(source, str | os.PathLike):
            source = TraceStore(source)
        if not isinstance(source, Trace | TraceStore):
            raise TypeError(f"probe a Trace, a TraceStore or a store path, not a {type(source).__name__}")
        self.source = source
        if isinstance(source, Trace):
            mask = source.attention_mask.bool()
            self.lengths = mask.sum(1).tolist()
            self.token_ids = [source.input_ids[i][mask[i]].tolist() for i in range(source.n_seqs)]
            self.tokens = [list(source.tokens[i][: self.lengths[i]]) for i in range(source.n_seqs)]
            self.metadata = [dict(m) for m in source.metadata]
            self.hooks = list(source.activations)
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

    def resolve(self, hooks: str | Sequence[str]) -> list[str]:
        """Hook names matching names or glob patterns, ordered by layer.

        Raises:
            KeyError: a name or pattern matches no token-wise hook of the source.
        """
        pats = [hooks] if isinstance(hooks, str) else list(hooks)
        out: list[str] = []
        for p in pats:
            hits = [h for h in self.hooks if fnmatch.fnmatchcase(h, p) and not is_dense(h)]
            if not hits:
                raise KeyError(f"no token-wise hook matches {p!r}; the source holds: {', '.join(self.hooks)}")
            out += [h for h in hits if h not in out]

        def key(h: str) -> tuple[int, str]:
            layer = Site.parse(h).layer
            return (-1 if layer is None else layer, h)

        return sorted(out, key=key)

    def column(self, name: str) -> list[Any]:
        """A per-sequence metadata column."""
        if not self.metadata or name not in self.metadata[0]:
            have = ", ".join(self.metadata[0]) if self.metadata else "none"
            raise KeyError(f"the trace has no metadata column {name!r} (columns: {have}); pass the labels as a "
                           "list, or capture from a labelled set so that they are stored with the trace")
        return [m[name] for m in self.metadata]

    def features(self, hook: str, ex: Examples) -> torch.Tensor:
        """``[n_examples, d]`` float32 activations of one hook (trailing axes flattened; spans averaged)."""
        n_ex = ex.n
        if isinstance(self.source, Trace):
            t = self.source[hook]
            flat = t[self.source.attention_mask.bool()]
            picked = flat[ex.rows].reshape(len(ex.rows), -1).float()
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

    def _shard_ranges(self) -> Iterator[tuple[Any, int, int]]:
        assert isinstance(self.source, TraceStore)
        starts = [0]
        for n in self.lengths:
            starts.append(starts[-1] + n)
        for info in self.source.shards():
            yield info, starts[info.start], starts[info.stop]


__all__ = ["ActivationSource", "Examples", "Position", "Source", "build_examples"]
