"""Repeated random tokens: the test input of every induction score.

A sequence is an optional BOS token, ``half`` random tokens, and the same ``half`` tokens again. Random
tokens avoid the tokenizer's special ids (and BOS), so the only way to predict the second repeat is to
look back at the first: the induction mechanism.

Example:
    >>> import torch
    >>> from interp.induction.data import repeated_tokens_from_vocab
    >>> x = repeated_tokens_from_vocab(vocab=50, n_seq=2, half=5, bos_id=0, seed=0)
    >>> x.shape, bool((x[:, 1:6] == x[:, 6:]).all()), x[:, 0].tolist()
    (torch.Size([2, 11]), True, [0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp.errors import BadInputError


def bos_id_of(model: Any) -> int | None:
    """The model's BOS token id (tokenizer first, then config), or ``None`` when it has none."""
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    return int(bos) if isinstance(bos, int) else None


def special_ids_of(model: Any) -> list[int]:
    """Ids the random tokens must avoid: the tokenizer's special tokens and the config's BOS/EOS/pad."""
    ids: set[int] = set()
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        ids.update(int(i) for i in getattr(tok, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = getattr(model.config, name, None)
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(i) for i in v)
    return sorted(ids)


def repeated_tokens_from_vocab(vocab: int, n_seq: int, half: int, *, bos_id: int | None = None,
                               exclude: Sequence[int] = (), seed: int = 0) -> torch.Tensor:
    """``[n_seq, (bos) + 2*half]`` int64: optional BOS, ``half`` random ids, the same ids again.

    Raises:
        ValueError: on a non-positive ``n_seq`` / ``half``, or fewer than two allowed ids.
    """
    if n_seq < 1 or half < 2:
        raise BadInputError(f"need n_seq >= 1 and half >= 2, got n_seq={n_seq}, half={half}")
    banned = set(exclude) | ({bos_id} if bos_id is not None else set())
    allowed = torch.tensor([i for i in range(vocab) if i not in banned], dtype=torch.long)
    if allowed.numel() < 2:
        raise BadInputError(f"a vocabulary of {vocab} ids leaves {allowed.numel()} ids after excluding {sorted(banned)}")
    g = torch.Generator().manual_seed(seed)
    first = allowed[torch.randint(0, allowed.numel(), (n_seq, half), generator=g)]
    parts = [first, first]
    if bos_id is not None:
        parts.insert(0, torch.full((n_seq, 1), bos_id, dtype=torch.long))
    return torch.cat(parts, dim=1)


def repeated_tokens(model: Any, n_seq: int = 16, half: int = 64, *, bos: bool | None = None,
                    seed: int = 0) -> torch.Tensor:
    """Repeated random tokens for ``model``: ``[n_seq, (1) + 2*half]``, BOS first when the model has one.

    Args:
        model: a loaded model (its tokenizer's special ids and BOS are used).
        n_seq: sequences; half: random tokens per repeat.
        bos: put BOS first (default: when the model has a BOS id). ``True`` without one raises.
        seed: seeds the draw.

    Example:
        >>> import interp
        >>> m = interp.load_model("toy-induction")  # doctest: +SKIP
        >>> repeated_tokens(m, n_seq=2, half=8).shape  # doctest: +SKIP
        torch.Size([2, 17])
    """
    bos_id = bos_id_of(model)
    if bos is True and bos_id is None:
        raise BadInputError(f"bos=True but model {getattr(model, 'name', '?')!r} has no BOS token id")
    use = bos_id if bos is not False else None
    n_ctx = model.dims.n_ctx
    length = 2 * half + (use is not None)
    if n_ctx is not None and length > n_ctx:
        raise BadInputError(f"2*half{' + BOS' if use is not None else ''} = {length} tokens exceed the model's "
                         f"context of {n_ctx}; use half <= {(n_ctx - (use is not None)) // 2}")
    return repeated_tokens_from_vocab(model.dims.d_vocab, n_seq, half, bos_id=use, exclude=special_ids_of(model),
                                      seed=seed)
