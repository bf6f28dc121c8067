"""Repeated random tokens, the default input of every induction score, and the ``inputs`` the tools accept.

A sequence is an optional BOS token, ``half`` random tokens, and the same ``half`` tokens again. Random
tokens avoid the tokenizer's special ids (and BOS), so the only way to predict the second repeat is to
look back at the first: the induction mechanism.

Example:
    >>> import interp
    >>> from interp.induction import repeated_tokens
    >>> toy = interp.load_model("toy-induction")
    >>> x = repeated_tokens(toy, n_seq=2, half=5, seed=0)
    >>> x.shape, bool((x[:, 1:6] == x[:, 6:]).all()), x[:, 0].tolist()  # BOS (id 0) first
    (torch.Size([2, 11]), True, [0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import BadInputError
from interp.models import Inputs, Model
from interp.trace.store import TraceStore
from interp.trace.trace import Trace


def bos_id_of(model: Model) -> int | None:
    """The model's BOS token id (tokenizer first, then config), or ``None`` when it has none.

    Example:
        >>> import interp
        >>> bos_id_of(interp.load_model("toy-induction"))
        0
    """
    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    return int(bos) if isinstance(bos, int) else None


def special_ids_of(model: Model) -> list[int]:
    """Ids the random tokens must avoid: the tokenizer's special tokens and the config's BOS/EOS/pad.

    Example:
        >>> import interp
        >>> special_ids_of(interp.load_model("toy-induction"))  # BOS, EOS and padding are all id 0
        [0]
    """
    ids: set[int] = set()
    tok = model.tokenizer
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
        BadInputError: ``n_seq < 1`` or ``half < 2``, or fewer than two allowed ids.

    Example:
        >>> x = repeated_tokens_from_vocab(vocab=50, n_seq=2, half=5, bos_id=0, seed=0)
        >>> x.shape, bool((x[:, 1:6] == x[:, 6:]).all()), x[:, 0].tolist()
        (torch.Size([2, 11]), True, [0, 0])
    """
    if n_seq < 1 or half < 2:
        raise BadInputError(f"bad n_seq={n_seq}, half={half}; valid: n_seq >= 1 and half >= 2")
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


def repeated_tokens(model: Model, *, n_seq: int = 16, half: int = 64, bos: bool | None = None,
                    seed: int = 0) -> torch.Tensor:
    """Repeated random tokens for ``model``: ``[n_seq, (1) + 2*half]``, BOS first when the model has one.

    Args:
        model: the model (its tokenizer's special ids and BOS are avoided; BOS goes first).
        n_seq: sequences.
        half: random tokens per repeat.
        bos: put BOS first (default: when the model has a BOS id). ``True`` without one raises.
        seed: seeds the draw.

    Raises:
        BadInputError: ``bos=True`` for a model without BOS, or sequences longer than the model's context.

    Example:
        >>> import interp
        >>> m = interp.load_model("toy-induction")
        >>> repeated_tokens(m, n_seq=2, half=8).shape
        torch.Size([2, 17])
        >>> repeated_tokens(m, n_seq=2, half=8, bos=False).shape
        torch.Size([2, 16])
    """
    bos_id = bos_id_of(model)
    if bos is True and bos_id is None:
        raise BadInputError(f"bad bos=True: model {model.name!r} has no BOS token id; valid: bos=False or None")
    use = bos_id if bos is not False else None
    n_ctx = model.dims.n_ctx
    length = 2 * half + (use is not None)
    if n_ctx is not None and length > n_ctx:
        raise BadInputError(f"bad half={half}: 2*half{' + BOS' if use is not None else ''} = {length} tokens exceed "
                            f"the model's context of {n_ctx}; valid: half <= {(n_ctx - (use is not None)) // 2}")
    return repeated_tokens_from_vocab(model.dims.d_vocab, n_seq, half, bos_id=use, exclude=special_ids_of(model),
                                      seed=seed)


def encode_inputs(model: Model, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[batch, pos]`` on the CPU for any ``inputs`` (texts, ids, ``(ids, mask)``,
    a Trace or a TraceStore of this model), checked: integer ids inside the vocabulary, right padding.

    Raises:
        BadInputError: float "ids", ids outside the vocabulary, or a mask of another shape.
        ModelMismatchError: a Trace or TraceStore made by another model.

    Example:
        >>> import interp, torch
        >>> m = interp.load_model("toy-induction")
        >>> ids, mask = encode_inputs(m, (torch.tensor([[0, 5, 6], [0, 7, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])))
        >>> mask.sum(1).tolist()
        [3, 2]
    """
    if isinstance(inputs, (Trace, TraceStore)):
        inputs.check_model(model)
    raw = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 2 else inputs
    if isinstance(raw, torch.Tensor) and (raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool):
        raise BadInputError(f"bad token ids of dtype {raw.dtype} and shape {tuple(raw.shape)}; valid: an integer "
                            "tensor [batch, pos] (or [pos])")
    ids, mask = model.encode(inputs)
    ids, mask = ids.cpu().long(), mask.cpu().long()
    if mask.shape != ids.shape:
        raise BadInputError(f"bad attention mask of shape {tuple(mask.shape)}; valid: the ids' shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise BadInputError(f"bad token ids of shape {tuple(ids.shape)}; valid: at least one token")
    vocab = model.dims.d_vocab
    real = ids[mask.bool()]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
        bad = int(real.max()) if int(real.max()) >= vocab else int(real.min())
        raise BadInputError(f"bad token id {bad}; valid: ids in 0..{vocab - 1} (the model's vocabulary)")
    return ids, mask


__all__ = ["bos_id_of", "encode_inputs", "repeated_tokens", "repeated_tokens_from_vocab", "special_ids_of"]
