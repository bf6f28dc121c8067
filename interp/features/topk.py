"""The TopK training step's math, by hand: only ``k`` (and ``aux_k``) features per row carry gradient, so only the
encoder's forward product is dense. The decode is an ``embedding_bag`` over the active rows, ``d act`` an SDDMM on
the active pattern, the two weight gradients CSR products; the top-k itself runs in two exact stages
(:func:`_group_topk`). :class:`interp.features.train.Fitter` drives it (Adam, the decoder projection), and
:mod:`interp.features.clt` reuses :func:`sparse_back` for cross-layer transcoders.

Example:
    >>> import torch
    >>> sparse_decode(torch.tensor([[0, 2]]), torch.tensor([[1.0, 2.0]]), torch.eye(3)).tolist()
    [[1.0, 0.0, 2.0]]
"""

from __future__ import annotations

import warnings

import torch
from torch.nn import functional as F  # noqa: N812

from interp.features.sae import SAEConfig


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]``: ``[B, k]``, ``[B, k]``, ``[d_sae, d]`` → ``[B, d]``."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")


GROUP = 8  # features per group in :func:`_group_topk`


def _group_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre.topk(k, dim=-1, sorted=False)`` in two cheaper stages, exact (up to the choice among tied values).

    The ``S`` features of a row are split into ``S / GROUP`` strided groups (``{g, g + S/GROUP, ...}``, so that the
    group maxima are one vectorised reduction over contiguous rows). The row's top ``k`` lie in the ``k`` groups
    with the largest maxima: an element outside them is beaten by ``k`` group maxima. So the top ``k`` of the
    group maxima pick ``k * GROUP`` candidates, and the top ``k`` of those are the answer. On one CPU thread this
    is ~25-30% faster than ``torch.topk`` over ``[1024, 4096]`` at ``k = 32`` (``torch.topk`` pays per element of
    the row; the candidates are an eighth of it). Falls back to ``torch.topk`` where that does not pay."""
    B, S = pre.shape
    nb = S // GROUP
    if S < 1024 or S % GROUP or k * GROUP * 4 > S:
        return pre.topk(k, dim=-1, sorted=False)
    maxima = pre.view(B, GROUP, nb).amax(1)
    groups = maxima.topk(k, dim=-1, sorted=False).indices
    cand = (groups.unsqueeze(-1) + torch.arange(0, S, nb)).view(B, k * GROUP)
    vals, j = pre.gather(1, cand).topk(k, dim=-1, sorted=False)
    return vals, cand.gather(1, j)


def _sorted_topk(pre: torch.Tensor, k: int, columns: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` values and indices per row, ordered by feature index (as CSR rows need). ``columns``: the
    features ``pre``'s columns stand for (a subset of them; default all)."""
    vals, idx = _group_topk(pre, k)
    if columns is not None:
        idx = columns[idx]
    idx, order = idx.sort(dim=-1)
    return vals.gather(-1, order), idx


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def sparse_back(grads: dict[str, torch.Tensor], names: tuple[str, str, str], ix: torch.Tensor, v: torch.Tensor,
                act: torch.Tensor, g_out: torch.Tensor, W_dec: torch.Tensor, u: torch.Tensor,
                bufs: dict[str, torch.Tensor] | None = None) -> None:
    """Accumulate into ``grads[names]`` (decoder, encoder ``[d_sae, d_in]``, encoder bias) the gradients of
    ``out = sum_j act_j W_dec[ix_j]`` with ``act = ReLU(v)``, ``v`` the pre-activations from inputs ``u``, given
    ``g_out = d loss / d out`` (``ix`` sorted per row): an SDDMM for ``d act``, then the transposed pattern's CSR
    times ``g_out`` and ``u``, written into the gradient buffers. ``bufs``: storage kept from step to step (a fresh
    ``[d_sae, d]`` allocation each step costs more in page faults than the sparse product itself)."""
    S = W_dec.shape[0]
    n, kk = ix.shape
    flat = ix.reshape(-1)
    pattern = _csr(torch.arange(0, n * kk + 1, kk), flat, torch.ones(n * kk, dtype=g_out.dtype), (n, S))
    g_act = torch.sparse.sampled_addmm(pattern, g_out, W_dec.T, beta=0.0).values().view(n, kk)
    g_pre = (g_act * (v > 0)).reshape(-1)
    order = torch.argsort(flat, stable=True)
    rows = torch.div(order, kk, rounding_mode="floor").to(torch.int32)
    crow = torch.zeros(S + 1, dtype=torch.int32)
    crow[1:] = torch.bincount(flat, minlength=S).cumsum(0)
    for name, val, dense in ((names[0], act.reshape(-1)[order], g_out), (names[1], g_pre[order], u)):
        first = name not in grads
        acc = grads[name] if not first else _buffer(bufs, name, (S, dense.shape[1]))
        grads[name] = torch.addmm(acc, _csr(crow, rows, val, (S, n)), dense, beta=0.0 if first else 1.0, out=acc)
    gb = torch.zeros(S).index_add_(0, flat, g_pre)
    grads[names[2]] = gb if names[2] not in grads else grads[names[2]].add_(gb)


def _buffer(bufs: dict[str, torch.Tensor] | None, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float tensor of ``shape``: the one kept in ``bufs`` under ``name`` when it fits."""
    if bufs is None:
        return torch.empty(shape)
    t = bufs.get(name)
    if t is None or tuple(t.shape) != shape:
        t = bufs[name] = torch.empty(shape)
    return t


def _topk_grads(p: dict[str, torch.Tensor], x: torch.Tensor, cfg: SAEConfig, since_fired: torch.Tensor
                ) -> tuple[dict[str, float], torch.Tensor]:
    """:func:`_topk_backward` on weights in the saved layout (``W_enc [d_in, d_sae]``); sets their ``.grad``."""
    q = {n: (t.detach().T.contiguous() if n == "W_enc" else t.detach()) for n, t in p.items()}
    out = _topk_backward(q, x, cfg, since_fired)
    for n, t in p.items():
        g = q[n].grad
        assert g is not None
        t.grad = g.T.contiguous() if n == "W_enc" else g
    return out


@torch.no_grad()
def _topk_backward(p: dict[str, torch.Tensor], x: torch.Tensor, cfg: SAEConfig, since_fired: torch.Tensor,
                   y: torch.Tensor | None = None, bufs: dict[str, torch.Tensor] | None = None
                   ) -> tuple[dict[str, float], torch.Tensor]:
    """TopK with AuxK, gradients by hand (``p["W_enc"]`` transposed, ``[d_sae, d_in]``): only ``k`` (and ``aux_k``)
    features per row carry gradient, so only the encoder's forward product is dense. The rest are sparse: the
    decode is an ``embedding_bag`` over the active rows, ``d act`` an SDDMM on the active pattern, and the two
    weight gradients are CSR products (the pattern transposed by one sort of the active indices). ``y``: a
    transcoder's targets (then the encoder reads ``x`` as it is and ``p`` may hold a skip ``W_skip [d_in, d_out]``).
    """
    W_enc, b_enc, W_dec, b_dec = p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"]
    S = W_dec.shape[0]
    B = x.shape[0]
    t = x if y is None else y
    u = x - b_dec if (cfg.apply_b_dec_to_input and y is None) else x
    pre = torch.addmm(b_enc, u, W_enc.T, out=_buffer(bufs, "pre", (B, S)))
    vals, idx = _sorted_topk(pre, cfg.k)
    a = vals.clamp_min(0)
    out = sparse_decode(idx, a, W_dec) + b_dec
    if "W_skip" in p:
        out.addmm_(x, p["W_skip"])
    err = out - t  # x_hat - x
    total_var = float((t - t.mean(0)).pow(2).sum()) / B
    fvu = float(err.pow(2).sum()) / B / max(total_var, 1e-12)
    grads: dict[str, torch.Tensor] = {}

    def back(ix: torch.Tensor, v: torch.Tensor, act: torch.Tensor, g_out: torch.Tensor) -> None:
        sparse_back(grads, ("W_dec", "W_enc", "b_enc"), ix, v, act, g_out, W_dec, u, bufs)

    c = 2.0 / (B * max(total_var, 1e-12))
    g_out = err * c
    back(idx, vals, a, g_out)
    g_bdec = g_out.sum(0)
    if "W_skip" in p:
        grads["W_skip"] = x.T @ g_out
    aux = 0.0
    dead = since_fired >= cfg.dead_after
    n_dead = int(dead.sum())
    if cfg.aux_k and n_dead and cfg.aux_coeff:
        cols = dead.nonzero().squeeze(1)  # only the dead features' columns (few, once training settles)
        dvals, didx = _sorted_topk(pre.index_select(1, cols), min(cfg.aux_k, n_dead), cols)
        da = dvals.clamp_min(0)
        e = -err  # the residual the dead features should explain
        e_var = float((e - e.mean(0)).pow(2).sum()) / B
        if e_var > 0:
            r = sparse_decode(didx, da, W_dec) - e
            aux = float(r.pow(2).sum()) / B / e_var
            back(didx, dvals, da, r * (cfg.aux_coeff * 2.0 / (B * e_var)))
    if cfg.apply_b_dec_to_input and y is None:
        g_bdec -= grads["b_enc"] @ W_enc  # pre = (x - b_dec) W_enc + b_enc
    grads["b_dec"] = g_bdec
    for n, g in grads.items():
        p[n].grad = g
    fired = torch.zeros(S, dtype=torch.bool)
    fired[idx[a > 0]] = True
    return ({"loss": fvu + cfg.aux_coeff * aux, "fvu": fvu, "aux": aux, "l0": float((a > 0).sum(-1).float().mean()),
             "ev": 1.0 - fvu}, fired)


__all__ = ["sparse_back", "sparse_decode"]
