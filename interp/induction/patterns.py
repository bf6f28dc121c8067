"""Detection patterns and pattern scores (previous-token, duplicate-token, induction), from token ids.

The patterns follow TransformerLens' head detector: a ``[q_pos, k_pos]`` 0/1 matrix per sequence saying
where a head of that kind should attend. A head's score is the attention it puts on the pattern's cells,
divided by the attention in the rows considered: every row (``normalize="all_rows"``, TransformerLens'
``"mul"`` measure) or only the rows where the pattern has a cell (``"target_rows"``, the default: on
repeated random tokens this is the mean attention from each second-repeat token to the token after its
first occurrence, the induction score of Olsson et al. 2022).

Example:
    >>> import torch
    >>> ids = torch.tensor([[0, 5, 6, 7, 5, 6, 7]])
    >>> detection_patterns(ids)["induction"][0, 5].tolist()  # ' 6' at 5 looks at what followed ' 6' at 2
    [False, False, False, True, False, False, False]
"""

from __future__ import annotations

from typing import Literal

import torch

from interp.errors import BadInputError, bad_value

KINDS = ("induction", "prev_token", "duplicate")
Normalize = Literal["target_rows", "all_rows"]


def detection_patterns(ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Boolean ``[batch, q_pos, k_pos]`` patterns of the three head kinds for token ids ``[batch, pos]``.

    ``duplicate[q, k]``: an earlier occurrence ``k < q`` of token ``q``; ``induction[q, k]``: ``k <= q``
    follows an earlier occurrence of token ``q`` (``duplicate`` shifted right by one);
    ``prev_token[q, k]``: ``k = q - 1``. With an attention ``mask`` ``[batch, pos]`` (right padding), padded
    query rows have no cells (padded keys never precede a real query).

    Example (``A B A B``: the second ``A`` attends back to the first ``B`` as an induction head would):
        >>> import torch
        >>> p = detection_patterns(torch.tensor([[5, 6, 5, 6]]))
        >>> p["induction"][0].int().tolist()
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
        >>> p["duplicate"][0].int().tolist()
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    """
    if ids.dim() != 2:
        raise BadInputError(f"bad ids of shape {tuple(ids.shape)}; valid: [batch, pos]")
    if mask is not None and mask.shape != ids.shape:
        raise BadInputError(f"bad mask of shape {tuple(mask.shape)}; valid: the ids' shape {tuple(ids.shape)}")
    n = ids.shape[1]
    q = torch.arange(n, device=ids.device)
    earlier = q[None, :] < q[:, None]  # [q, k]: k < q
    dup = (ids[:, :, None] == ids[:, None, :]) & earlier
    ind = torch.zeros_like(dup)
    ind[:, :, 1:] = dup[:, :, :-1]
    ind &= (q[None, :] <= q[:, None])
    prev = (q[None, :] == q[:, None] - 1).expand_as(dup)
    if mask is not None:
        real = mask.to(ids.device).bool()[:, :, None]
        dup, ind, prev = dup & real, ind & real, prev & real
    return {"induction": ind, "prev_token": prev, "duplicate": dup}


def pattern_scores(pattern: torch.Tensor, detections: dict[str, torch.Tensor], *, normalize: Normalize = "target_rows",
                   exclude_bos: bool = False, exclude_current_token: bool = False,
                   mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per sequence and head, the attention on each detection pattern: ``{kind: [batch, head]}``.

    Args:
        pattern: ``[batch, head, q_pos, k_pos]`` attention of one layer.
        detections: from :func:`detection_patterns`.
        normalize: ``"target_rows"`` or ``"all_rows"`` (see the module docstring).
        exclude_bos: ignore attention to position 0; exclude_current_token: ignore the diagonal.
        mask: ``[batch, pos]`` attention mask: with ``"all_rows"``, only real query rows count.

    Example:
        >>> A = torch.eye(3)[None, None].roll(-1, -1).tril()  # every row on its previous token
        >>> A[0, 0, 0, 0] = 1.0
        >>> pattern_scores(A, detection_patterns(torch.tensor([[1, 2, 3]])))["prev_token"]
        tensor([[1.]])
    """
    if normalize not in ("target_rows", "all_rows"):
        raise bad_value("normalize", normalize, "'target_rows' or 'all_rows'")
    a = pattern
    if exclude_bos or exclude_current_token:
        a = a.clone()
        if exclude_bos:
            a[..., 0] = 0.0
        if exclude_current_token:
            a.diagonal(dim1=-2, dim2=-1).zero_()
        rows = a.float().sum(-1)  # [batch, head, q]
    else:
        rows = None  # softmax rows sum to one
    B, H = a.shape[:2]
    out = {}
    for kind, det in detections.items():
        # the patterns are sparse: gather the attention at their cells instead of multiplying everything
        b, q, k = det.nonzero(as_tuple=True)
        num = torch.zeros(B, H, dtype=torch.float32, device=a.device).index_add_(0, b, a[b, :, q, k].float())
        if normalize == "all_rows":
            considered = (torch.ones(det.shape[:2], dtype=torch.bool, device=a.device) if mask is None
                          else mask.to(a.device).bool())
        else:
            considered = det.any(-1)
        if rows is None:
            den = considered.sum(-1, dtype=torch.float32)[:, None].expand(B, H)
        else:
            den = (rows * considered[:, None, :]).sum(-1)
        out[kind] = num / den.clamp_min(1e-12)
    return out
