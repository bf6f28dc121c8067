"""Synthetic traces with a planted feature: ground truth for testing probes and k-sparse probing.

Example:
    >>> tr, labels = synthetic_trace(n_seqs=4, seq_len=5, d=8, planted=(2,), seed=0)
    >>> tr["blocks.0.hook_resid_post"].shape, len(labels[0])
    (torch.Size([4, 5, 8]), 5)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import BadInputError
from interp.trace import Manifest, Trace


def synthetic_trace(n_seqs: int = 64, seq_len: int = 16, d: int = 64, planted: Sequence[int] = (3, 17, 40),
                    n_layers: int = 1, planted_layer: int = 0, shift: float = 1.5, vocab: int = 50,
                    seed: int = 0) -> tuple[Trace, list[list[int]]]:
    """A trace of Gaussian noise in which only the ``planted`` dimensions carry a binary per-token label.

    Every token gets a random label ``y`` in {0, 1}; at ``blocks.{planted_layer}.hook_resid_post`` the
    planted dimensions are shifted by ``shift * (2y - 1)``; every other dimension, and every other
    layer, is independent N(0, 1) noise. Token ids are random in ``[0, vocab)``.

    Returns:
        ``(trace, labels)``: labels are one list of ints per sequence (one per token).

    Raises:
        ValueError: a planted dimension outside ``[0, d)`` or a ``planted_layer`` outside the layers.
    """
    if any(not 0 <= p < d for p in planted) or len(set(planted)) != len(planted):
        raise BadInputError(f"planted dimensions must be distinct and in [0, {d}), got {list(planted)}")
    if not 0 <= planted_layer < n_layers:
        raise BadInputError(f"planted_layer must be in [0, {n_layers}), got {planted_layer}")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n_seqs, seq_len), generator=g)
    acts = {}
    for L in range(n_layers):
        x = torch.randn(n_seqs, seq_len, d, generator=g)
        if planted_layer == L:
            x[..., list(planted)] += shift * (2 * y - 1).unsqueeze(-1).float()
        acts[f"blocks.{L}.hook_resid_post"] = x
    ids = torch.randint(0, vocab, (n_seqs, seq_len), generator=g)
    man = Manifest(model_id="synthetic", model_fingerprint="synthetic", dtype="float32",
                   hooks={k: list(v.shape) for k, v in acts.items()})
    tokens = tuple(tuple(f"t{i}" for i in row) for row in ids.tolist())
    trace = Trace(input_ids=ids, attention_mask=torch.ones_like(ids), tokens=tokens, activations=acts, manifest=man)
    return trace, y.tolist()


__all__ = ["synthetic_trace"]
