"""Score every head on repeated random tokens in one forward: induction, previous-token, duplicate-token.

The pattern scores are computed inside the attention hooks, layer by layer, so no pattern is kept
(except sequence 0's, for plotting the top heads); the per-token loss comes from the same forward.
With ``attribution=True`` the same pass also captures ``hook_z`` and the final residual stream for the
direct logit attribution of each head to the correct next token; ``copying=True`` adds the OV copying
scores (from the weights alone).

Example:
    >>> import interp
    >>> from interp.induction import induction_scores
    >>> m = interp.load_model("toy-induction")  # doctest: +SKIP
    >>> s = induction_scores(m, n_seq=8, half=20)  # doctest: +SKIP
    >>> s.top("induction", 1)[0][0][0]  # doctest: +SKIP
    1
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.hooks import forward, hooks
from interp.induction.data import bos_id_of, repeated_tokens
from interp.induction.ov import logit_attribution_from, ov_copying_scores
from interp.induction.patterns import KINDS, Normalize, detection_patterns, pattern_scores
from interp.induction.result import InductionScores
from interp.sites import Site


def per_token_loss(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """``[batch, pos]`` cross-entropy of predicting token ``t`` from the prefix before it (NaN at ``t = 0``);
    computed a few sequences at a time to bound memory."""
    out = torch.full(ids.shape, float("nan"), dtype=torch.float32)
    for i in range(0, ids.shape[0], chunk):
        lg = logits[i:i + chunk, :-1]
        tgt = ids[i:i + chunk, 1:].to(lg.device)
        nll = lg.float().logsumexp(-1)
        out[i:i + chunk, 1:] = (nll - lg.gather(-1, tgt[..., None])[..., 0].float()).cpu()
    return out


def repeat_offset(ids: torch.Tensor, bos_id: int | None) -> int:
    """1 when every sequence starts with BOS (and BOS does not recur), else 0."""
    return int(bos_id is not None and bool((ids[:, 0] == bos_id).all()))


def induction_scores(
    model: Any,
    tokens: torch.Tensor | None = None,
    *,
    n_seq: int = 16,
    half: int = 64,
    seed: int = 0,
    bos: bool | None = None,
    normalize: Normalize = "target_rows",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    attribution: bool = False,
    copying: bool = False,
    top_k: int = 4,
    batch_size: int = 16,
    progress: bool = False,
) -> InductionScores:
    """Induction, previous-token and duplicate-token scores of every head, and the loss per position.

    Args:
        model: a loaded (hooked) model.
        tokens: ``[batch, pos]`` repeated random tokens (default: :func:`repeated_tokens` with ``n_seq``,
            ``half``, ``seed``, ``bos``), without padding. Any ids work for the pattern scores; the repeat
            losses assume the layout BOS? + half + half.
        normalize: ``"target_rows"`` (mean over queries that have a target) or ``"all_rows"``
            (TransformerLens' ``detect_head`` ``"mul"`` measure).
        exclude_bos / exclude_current_token: as in TransformerLens' detector.
        attribution: also compute each head's direct logit attribution to the correct next token.
        copying: also compute the OV copying scores (eigenvalues and diagonal of W_E W_OV W_U).
        top_k: keep sequence 0's pattern of this many top induction heads.
        batch_size: sequences per forward.
        progress: show a progress bar over batches.

    Returns:
        An :class:`InductionScores`.
    """
    if tokens is None:
        tokens = repeated_tokens(model, n_seq=n_seq, half=half, bos=bos, seed=seed)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise BadInputError(f"tokens must be an integer tensor [batch, pos], got {getattr(tokens, 'shape', tokens)!r}")
    if batch_size < 1 or top_k < 1:
        raise BadInputError(f"batch_size and top_k must be >= 1, got batch_size={batch_size}, top_k={top_k}")
    tokens = tokens.long()
    L, H = model.dims.n_layers, model.dims.n_heads
    offset = repeat_offset(tokens, bos_id_of(model))
    rep_half = (tokens.shape[1] - offset) // 2
    sums = {k: torch.zeros(L, H) for k in KINDS}
    dla_sum = torch.zeros(L, H) if attribution else None
    first_patterns: list[torch.Tensor | None] = [None] * L
    losses = []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="induction scores", disable=not progress):
        ids = tokens[start:start + batch_size].to(model.device)
        dets = detection_patterns(ids)

        def score(act: torch.Tensor, site: Site, dets: dict[str, torch.Tensor] = dets, first: bool = start == 0) -> None:
            got = pattern_scores(act, dets, normalize=normalize, exclude_bos=exclude_bos,
                                 exclude_current_token=exclude_current_token)
            for k, v in got.items():
                sums[k][site.layer] += v.sum(0).cpu()
            if first:
                first_patterns[site.layer] = act[0].detach().float().cpu()
            return None

        capture = [f"blocks.{L - 1}.hook_resid_post", "blocks.*.attn.hook_z"] if attribution else []
        with torch.no_grad(), hooks(model, {"blocks.*.attn.hook_pattern": score}, capture=capture) as run:
            logits = forward(model, ids, torch.ones_like(ids))
        losses.append(per_token_loss(logits, ids))
        if attribution:
            assert dla_sum is not None
            dla = logit_attribution_from(model, run.activations, ids)  # [batch, pos, layer, head]
            sel = dla[:, offset + rep_half + 1: offset + 2 * rep_half]
            dla_sum += sel.mean(1).sum(0).cpu()
        del logits
    n = tokens.shape[0]
    loss = torch.cat(losses).nanmean(0)
    stacked = torch.stack([p for p in first_patterns if p is not None])  # [layer, head, q, k]
    ind = sums["induction"] / n
    order = ind.flatten().argsort(descending=True)[:top_k]
    top = tuple((int(i) // H, int(i) % H) for i in order)
    cop = ov_copying_scores(model) if copying else None
    return InductionScores(
        induction=ind, prev_token=sums["prev_token"] / n, duplicate=sums["duplicate"] / n, loss=loss,
        tokens=tuple(model.to_str_tokens(tokens[:1])[0]), half=rep_half, offset=offset,
        patterns=torch.stack([stacked[lh] for lh in top]), pattern_heads=top,
        logit_attribution=None if dla_sum is None else dla_sum / n,
        copying=None if cop is None else cop["eigen"], copying_diag=None if cop is None else cop["diagonal"],
        model_name=str(model.name), n_seq=n, normalize=normalize,
    )
