"""What a head writes: the OV copying score and the direct logit attribution to the correct next token.

Copying (Elhage et al. 2021; Olsson et al. 2022): for common tokens ``c``, the full OV circuit
``M = norm(W_E[c]) · W_V W_O · W_U'[:, c]`` (input norm folded into ``W_V``, final norm into ``W_U``)
maps a token attended to onto logits. A copying head raises the logit of the token it attends to:
its eigenvalues are mostly positive (``eigen = Σλ / Σ|λ|``, computed on the small ``d_head x d_head``
matrix with the same non-zero eigenvalues) and each token's own logit is its row's largest
(``diagonal`` = fraction of such rows).

Example:
    >>> import torch
    >>> from interp.induction.ov import copying_from_weights
    >>> E = torch.eye(4)
    >>> out = copying_from_weights(E, torch.eye(4)[None, None], torch.eye(4)[None, None], torch.eye(4), "rms")
    >>> out["eigen"].item(), out["diagonal"].item()
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from interp.errors import BadInputError
from interp.induction.data import special_ids_of
from interp.models import Model


def common_token_ids(model: Model, n: int = 512) -> torch.Tensor:
    """``n`` token ids for the copying score: every non-special id of a small vocabulary, else the ``n`` ids
    after the first 1,000 (byte-level BPE vocabularies put bytes and rare merges first).

    Example:
        >>> import interp
        >>> ids = common_token_ids(interp.load_model("toy-induction"))  # 64 ids, BOS (0) left out
        >>> len(ids), int(ids[0])
        (63, 1)
    """
    vocab = model.dims.d_vocab
    banned = set(special_ids_of(model))
    start = 0 if vocab <= n + len(banned) else min(1000, vocab - n - len(banned))
    ids = [i for i in range(start, vocab) if i not in banned][:n]
    return torch.tensor(ids, dtype=torch.long)


def _normalize_rows(x: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def copying_from_weights(W_E_c: torch.Tensor, W_V: torch.Tensor, W_O: torch.Tensor, W_U_c: torch.Tensor,
                         norm: str) -> dict[str, torch.Tensor]:
    """Copying scores ``{"eigen", "diagonal"}: [layer, head]`` from ``W_E_c [n, d]``, ``W_V [L, H, d, dh]``
    (input norm folded in), ``W_O [L, H, dh, d]`` and ``W_U_c [d, n]`` (final norm folded in)."""
    E = _normalize_rows(W_E_c.float(), norm)
    P = torch.einsum("nd,lhde->lhne", E, W_V.float())  # [L, H, n, dh]
    Q = torch.einsum("lhed,dn->lhen", W_O.float(), W_U_c.float())  # [L, H, dh, n]
    lam = torch.linalg.eigvals(Q @ P)  # [L, H, dh]: the non-zero eigenvalues of P @ Q
    eigen = lam.sum(-1).real / lam.abs().sum(-1).clamp_min(1e-12)
    diag = torch.empty(eigen.shape)
    ar = torch.arange(E.shape[0])
    for layer in range(P.shape[0]):
        M = P[layer] @ Q[layer]  # [H, n, n]
        diag[layer] = (M.argmax(-1) == ar).float().mean(-1)
    return {"eigen": eigen, "diagonal": diag}


def ov_copying_scores(model: Model, *, token_ids: torch.Tensor | None = None,
                      n_common: int = 512) -> dict[str, torch.Tensor]:
    """Copying scores of every head's OV circuit on common tokens, from the weights alone.

    Args:
        model: the model.
        token_ids: the tokens ``c`` of ``W_E[c] W_OV W_U[:, c]`` (default: :func:`common_token_ids`).
        n_common: how many common tokens by default.

    Returns:
        ``{"eigen": [layer, head], "diagonal": [layer, head]}``: ``Σλ / Σ|λ|`` of the full OV circuit, and the
        fraction of tokens whose own logit is the largest of their row.

    Raises:
        BadInputError: fewer than two token ids, or ids outside the vocabulary.

    Example:
        >>> import interp
        >>> m = interp.load_model("toy-induction")
        >>> cop = ov_copying_scores(m)  # the layer-1 induction heads copy, layer 0 mostly does not
        >>> bool(cop["eigen"][1].min() > 0.9), bool(cop["eigen"][0].min() < 0)
        (True, True)
    """
    w = model.weights
    ids = common_token_ids(model, n_common) if token_ids is None else torch.as_tensor(token_ids, dtype=torch.long)
    if ids.numel() < 2 or int(ids.min()) < 0 or int(ids.max()) >= model.dims.d_vocab:
        raise BadInputError(f"bad token_ids {ids.tolist()[:8]}{'...' if ids.numel() > 8 else ''}; valid: at least "
                            f"2 ids in 0..{model.dims.d_vocab - 1}")
    W_U, _ = w.folded_unembed()
    W_V = w.ln1_w[:, None, :, None].float() * w.W_V.float()
    return copying_from_weights(w.W_E[ids].cpu(), W_V.cpu(), w.W_O.cpu(), W_U[:, ids].cpu(), w.norm)


def logit_attribution_from(model: Model, activations: Mapping[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Direct logit attribution ``[batch, pos, layer, head]`` of each head to the true token at ``pos``
    (written at ``pos - 1``; zeros at ``pos = 0``), through the final norm with its scale frozen.

    ``activations`` holds ``blocks.*.attn.hook_z`` and the last ``hook_resid_post``. The scale is read
    from the model's own final norm: for ``y = w ⊙ x̂ / s (+ b)``, ``s = Σ w²x̂² / Σ w x̂ (y - b)``.

    Example:
        >>> import interp, torch
        >>> from interp.hooks import run_with_hooks
        >>> toy = interp.load_model("toy-induction")
        >>> ids = torch.tensor([[0, 5, 9, 7, 5, 9, 7]])
        >>> out = run_with_hooks(toy, ids, capture=["resid_post.-1", "z"])
        >>> dla = logit_attribution_from(toy, out.activations, ids)  # [batch, pos, layer, head]
        >>> dla.shape, bool(dla[0, 5:, 1].sum(-1).min() > 1)  # layer 1 pushes up the repeated tokens
        (torch.Size([1, 7, 2, 4]), True)
    """
    w = model.weights
    L = model.dims.n_layers
    x = activations[f"blocks.{L - 1}.hook_resid_post"].float()  # [b, pos, d]
    xc = x - x.mean(-1, keepdim=True) if w.norm == "layer" else x
    if w.ln_final_w is None:
        raise BadInputError(f"model {model.name!r} has no final norm; the logit attribution reads through it")
    y = model.apply_final_norm(x).float()
    if w.ln_final_b is not None:
        y = y - w.ln_final_b.float()
    g = w.ln_final_w.float()
    den = (g * xc * y).sum(-1)
    # a zero residual (e.g. a BOS with a zero embedding) has no scale: its terms are zero
    s = torch.where(den != 0, (g.pow(2) * xc.pow(2)).sum(-1) / den.where(den != 0, 1.0), torch.inf)  # [b, pos]
    W_U, _ = w.folded_unembed()
    target = ids[:, 1:].to(W_U.device)
    u = W_U.float()[:, target].permute(1, 2, 0)  # [b, pos-1, d]
    if w.norm == "layer":
        u = u - u.mean(-1, keepdim=True)
    u = u / s[:, :-1, None]
    out = torch.zeros(ids.shape[0], ids.shape[1], L, model.dims.n_heads)
    for layer in range(L):
        z = activations[f"blocks.{layer}.attn.hook_z"].float()[:, :-1]  # [b, pos-1, H, dh]
        out[:, 1:, layer] = torch.einsum("bphe,hed,bpd->bph", z, w.W_O[layer].float(), u).cpu()
    return out
