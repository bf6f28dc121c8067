"""Synthetic traces with a planted feature: ground truth for testing probes and k-sparse probing.

Example:
    >>> tr, labels = synthetic_trace(n_seqs=4, seq_len=5, d=8, planted=(2,), seed=0)
    >>> tr["resid_post.0"].shape, len(labels[0])
    (torch.Size([4, 5, 8]), 5)
    >>> tr, labels = synthetic_trace(n_seqs=2, seq_len=5, d=8, planted=(2,), lengths=[5, 3])
    >>> tr.lengths.tolist(), [len(lab) for lab in labels]
    ([5, 3], [5, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import BadInputError
from interp.trace import Manifest, Trace


def synthetic_trace(*, n_seqs: int = 64, seq_len: int = 16, d: int = 64, planted: Sequence[int] = (3, 17, 40),
                    n_layers: int = 1, planted_layer: int = 0, shift: float = 1.5, vocab: int = 50,
                    lengths: Sequence[int] | None = None, seed: int = 0) -> tuple[Trace, list[list[int]]]:
    """A trace of Gaussian noise in which only the ``planted`` dimensions carry a binary per-token label.

    Every token gets a random label ``y`` in {0, 1}; at ``blocks.{planted_layer}.hook_resid_post`` the
    planted dimensions are shifted by ``shift * (2y - 1)``; every other dimension, and every other
    layer, is independent N(0, 1) noise. Token ids are random in ``[0, vocab)``. The trace's model is
    ``"synthetic"``: probe it with ``probe(None, trace, ...)``.

    Args:
        lengths: real tokens of each sequence (right padding up to ``seq_len``; default: all ``seq_len``).
            Padding positions hold zeros and token id 0.

    Returns:
        ``(trace, labels)``: labels are one list of ints per sequence (one per real token).

    Raises:
        BadInputError: a planted dimension outside ``[0, d)``, a ``planted_layer`` outside the layers, or
            ``lengths`` that do not fit.

    Example:
        >>> trace, labels = synthetic_trace(n_seqs=8, seq_len=4, d=16, planted=(3,))
        >>> trace, labels[0]
        (Trace(8 seqs x 4 tokens, 1 hooks, model='synthetic', dtype=float32), [0, 1, 1, 0])
    """
    if any(not 0 <= p < d for p in planted) or len(set(planted)) != len(planted):
        raise BadInputError(f"bad planted {list(planted)}; valid: distinct dimensions in [0, {d})")
    if not 0 <= planted_layer < n_layers:
        raise BadInputError(f"bad planted_layer {planted_layer}; valid: 0..{n_layers - 1}")
    lens = [seq_len] * n_seqs if lengths is None else [int(n) for n in lengths]
    if len(lens) != n_seqs or any(not 1 <= n <= seq_len for n in lens):
        raise BadInputError(f"bad lengths {list(lens)}; valid: {n_seqs} ints in [1, {seq_len}]")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n_seqs, seq_len), generator=g)
    mask = (torch.arange(seq_len)[None, :] < torch.tensor(lens)[:, None]).long()
    acts = {}
    for L in range(n_layers):
        x = torch.randn(n_seqs, seq_len, d, generator=g)
        if planted_layer == L:
            x[..., list(planted)] += shift * (2 * y - 1).unsqueeze(-1).float()
        acts[f"blocks.{L}.hook_resid_post"] = x * mask.unsqueeze(-1)
    ids = torch.randint(0, vocab, (n_seqs, seq_len), generator=g) * mask
    man = Manifest(model_id="synthetic", model_fingerprint="synthetic", dtype="float32",
                   hooks={k: list(v.shape) for k, v in acts.items()})
    tokens = tuple(tuple(f"t{i}" for i in row) for row in ids.tolist())
    trace = Trace(input_ids=ids, attention_mask=mask, tokens=tokens, activations=acts, manifest=man)
    return trace, [row[:n] for row, n in zip(y.tolist(), lens, strict=True)]


__all__ = ["synthetic_trace"]
