"""Score every head in one forward per batch: induction, previous-token, duplicate-token, and the loss per position.

The pattern scores are computed inside the attention hooks, layer by layer, so no pattern is kept
(except sequence 0's, for plotting the top heads); the per-token loss comes from the same forward.
With ``attribution=True`` the same pass also captures ``hook_z`` and the final residual stream for the
direct logit attribution of each head to the correct next token; ``copying=True`` adds the OV copying
scores (from the weights alone).

Example:
    >>> import interp
    >>> from interp.induction import induction_scores
    >>> toy = interp.load_model("toy-induction")
    >>> s = induction_scores(toy, n_seq=4, half=20)  # repeated random tokens: BOS + 20 + the same 20
    >>> s.top("induction", 1)[0][0].layer, s.loss_second < 1 < s.loss_first
    (1, True)
"""

from __future__ import annotations

import torch

from interp.errors import BadInputError
from interp.hooks import forward, hooks
from interp.induction.data import bos_id_of, encode_inputs, repeated_tokens
from interp.induction.ov import logit_attribution_from, ov_copying_scores
from interp.induction.patterns import KINDS, Normalize, detection_patterns, pattern_scores
from interp.induction.result import InductionScores
from interp.models import Inputs, Model
from interp.progress import progress as progress_bar
from interp.sites import HeadRef, Site


def per_token_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None,
                   chunk: int = 4) -> torch.Tensor:
    """``[batch, pos]`` cross-entropy of predicting token ``t`` from the prefix before it: NaN at ``t = 0`` and
    where token ``t`` is padding (``mask``); computed a few sequences at a time to bound memory.

    Example:
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> per_token_loss(logits, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]]))
        tensor([[   nan, 1.3863,    nan]])
    """
    out = torch.full(ids.shape, float("nan"), dtype=torch.float32)
    for i in range(0, ids.shape[0], chunk):
        lg = logits[i:i + chunk, :-1]
        tgt = ids[i:i + chunk, 1:].to(lg.device)
        nll = lg.float().logsumexp(-1)
        out[i:i + chunk, 1:] = (nll - lg.gather(-1, tgt[..., None])[..., 0].float()).cpu()
    if mask is not None:
        out = out.masked_fill(~mask.cpu().bool(), float("nan"))
    return out


def repeat_offset(ids: torch.Tensor, bos_id: int | None) -> int:
    """1 when every sequence starts with BOS, else 0.

    Example:
        >>> repeat_offset(torch.tensor([[0, 5, 6, 5, 6]]), bos_id=0), repeat_offset(torch.tensor([[5, 6, 5, 6]]), 0)
        (1, 0)
    """
    return int(bos_id is not None and bool((ids[:, 0] == bos_id).all()))


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadInputError(f"bad {name} {value!r}; valid: an int >= {low}")


def scoring_tokens(model: Model, inputs: Inputs | None, *, n_seq: int | None, half: int | None, bos: bool | None,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of ``inputs`` (on the CPU), or repeated random tokens when ``inputs`` is ``None``.

    Example:
        >>> import interp
        >>> toy = interp.load_model("toy-induction")
        >>> ids, mask = scoring_tokens(toy, None, n_seq=2, half=4, bos=None, seed=0)
        >>> ids.shape, int(mask.sum())
        (torch.Size([2, 9]), 18)
    """
    if inputs is None:
        ids = repeated_tokens(model, n_seq=16 if n_seq is None else n_seq, half=64 if half is None else half,
                              bos=bos, seed=seed)
        return ids, torch.ones_like(ids)
    given = [f"{k}={v!r}" for k, v in (("n_seq", n_seq), ("half", half), ("bos", bos)) if v is not None]
    if given:
        raise BadInputError(f"bad {', '.join(given)} with inputs: these shape the repeated random tokens made when "
                            "inputs is None; valid: leave them out, or leave out inputs")
    return encode_inputs(model, inputs)


def induction_scores(
    model: Model,
    inputs: Inputs | None = None,
    *,
    n_seq: int | None = None,
    half: int | None = None,
    seed: int = 0,
    bos: bool | None = None,
    normalize: Normalize = "target_rows",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    attribution: bool = False,
    copying: bool = False,
    top_k: int = 4,
    batch_size: int = 16,
    progress: bool | None = None,
) -> InductionScores:
    """Induction, previous-token and duplicate-token scores of every head, and the loss per position.

    Args:
        model: the model.
        inputs: what to score on. ``None`` (the default): ``n_seq`` sequences of repeated random tokens
            (:func:`~interp.induction.repeated_tokens`: BOS when the model has one, ``half`` random tokens,
            the same tokens again). Otherwise any ``inputs`` (texts, token ids ``[batch, pos]``, ``(ids, mask)``,
            a Trace or TraceStore, whose tokens are run): the pattern scores work on any tokens (padding is
            left out); the repeat losses read the first and the second half of the sequence.
        n_seq, half, bos, seed: the repeated random tokens (defaults 16 sequences, ``half=64``, BOS when the
            model has one, seed 0); ``n_seq``/``half``/``bos`` only without ``inputs``.
        normalize: ``"target_rows"`` (mean over queries that have a target) or ``"all_rows"``
            (TransformerLens' ``detect_head`` ``"mul"`` measure).
        exclude_bos / exclude_current_token: as in TransformerLens' detector.
        attribution: also compute each head's direct logit attribution to the correct next token.
        copying: also compute the OV copying scores (eigenvalues and diagonal of W_E W_OV W_U).
        top_k: keep sequence 0's pattern of this many top induction heads.
        batch_size: sequences per forward.
        progress: a progress bar over batches (``None``: the library switch, see :mod:`interp.progress`).

    Returns:
        An :class:`InductionScores`.

    Raises:
        BadInputError: bad token ids, ``n_seq``/``half``/``bos`` together with ``inputs``, or a bad option.

    Example:
        >>> import interp, torch
        >>> toy = interp.load_model("toy-induction")
        >>> s = induction_scores(toy, n_seq=8, half=26, copying=True)
        >>> s.top("induction", 2)  # doctest: +ELLIPSIS
        [(HeadRef(1, 2), 0.7...), (HeadRef(1, 3), 0.7...)]
        >>> ids = torch.tensor([[0, 5, 9, 7, 5, 9, 7, 5], [0, 3, 8, 3, 8, 0, 0, 0]])  # padded batch, any tokens
        >>> s2 = induction_scores(toy, (ids, (torch.arange(8) < torch.tensor([[8], [5]])).long()))
        >>> s2.induction.shape, bool(s2.loss[-1].isnan())  # the last column is padding in sequence 2 only
        (torch.Size([2, 4]), False)
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("top_k", top_k, 1)
    if normalize not in ("target_rows", "all_rows"):
        raise BadInputError(f"bad normalize {normalize!r}; valid: 'target_rows', 'all_rows'")
    ids_all, mask_all = scoring_tokens(model, inputs, n_seq=n_seq, half=half, bos=bos, seed=seed)
    L, H = model.dims.n_layers, model.dims.n_heads
    offset = repeat_offset(ids_all, bos_id_of(model))
    if ids_all.shape[1] - offset < 2:
        raise BadInputError(f"bad inputs of {ids_all.shape[1]} tokens; valid: at least 2 tokens"
                            f"{' after BOS' if offset else ''}")
    rep_half = (ids_all.shape[1] - offset) // 2
    sums = {k: torch.zeros(L, H) for k in KINDS}
    dla_sum = torch.zeros(L, H) if attribution else None
    dla_n = 0
    first_patterns: list[torch.Tensor | None] = [None] * L
    losses = []
    for start in progress_bar(range(0, ids_all.shape[0], batch_size), enabled=progress, desc="induction scores"):
        ids = ids_all[start:start + batch_size].to(model.device)
        mask = mask_all[start:start + batch_size].to(model.device)
        dets = detection_patterns(ids, mask)

        def score(act: torch.Tensor, site: Site, dets: dict[str, torch.Tensor] = dets, mask: torch.Tensor = mask,
                  first: bool = start == 0) -> None:
            got = pattern_scores(act, dets, normalize=normalize, exclude_bos=exclude_bos,
                                 exclude_current_token=exclude_current_token, mask=mask)
            assert site.layer is not None
            for k, v in got.items():
                sums[k][site.layer] += v.sum(0).cpu()
            if first:
                first_patterns[site.layer] = act[0].detach().float().cpu()

        capture = [f"blocks.{L - 1}.hook_resid_post", "blocks.*.attn.hook_z"] if attribution else []
        with torch.no_grad(), hooks(model, {"blocks.*.attn.hook_pattern": score}, capture=capture) as run:
            logits = forward(model, ids, mask)
        losses.append(per_token_loss(logits, ids, mask))
        if dla_sum is not None:
            dla = logit_attribution_from(model, run.activations, ids)  # [batch, pos, layer, head]
            lo, hi = offset + rep_half + 1, offset + 2 * rep_half
            real = mask[:, lo:hi].cpu().float()[:, :, None, None]  # the target token is real
            count = real.sum(1)  # [batch, 1, 1]
            per_seq = (dla[:, lo:hi] * real).sum(1) / count.clamp_min(1)
            dla_sum += per_seq.sum(0)
            dla_n += int((count[:, 0, 0] > 0).sum())
        del logits
    n = ids_all.shape[0]
    loss = torch.cat(losses).nanmean(0)
    stacked = torch.stack([p for p in first_patterns if p is not None])  # [layer, head, q, k]
    ind = sums["induction"] / n
    order = ind.flatten().argsort(descending=True, stable=True)[:top_k]
    top = tuple(HeadRef(int(i) // H, int(i) % H) for i in order)
    cop = ov_copying_scores(model) if copying else None
    return InductionScores(
        induction=ind, prev_token=sums["prev_token"] / n, duplicate=sums["duplicate"] / n, loss=loss,
        tokens=tuple(model.to_str_tokens(ids_all[:1])[0]), half=rep_half, offset=offset,
        patterns=torch.stack([stacked[lh.layer, lh.head] for lh in top]), pattern_heads=top,
        logit_attribution=None if dla_sum is None else dla_sum / max(dla_n, 1),
        copying=None if cop is None else cop["eigen"], copying_diag=None if cop is None else cop["diagonal"],
        model_name=str(model.name), n_seq=n, normalize=normalize,
    )


__all__ = ["induction_scores", "per_token_loss", "repeat_offset", "scoring_tokens"]
