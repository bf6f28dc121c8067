"""The per-layer arithmetic of the sparse attention decomposition (Franco & Crovella 2024), rotary included.

For layer ``l`` and a head, with the attention input ``n(x) = γ ⊙ P x / σ(x) + β`` (``P`` centres for LayerNorm,
identity for RMSNorm) and ``x̃ = [P x / σ(x), 1]``, the score of a query at ``i`` and a key at ``j`` is::

    s_ij = c · (x̃_i W̃_Q) R_i R_jᵀ (x̃_j W̃_K)ᵀ = x̃_i M_(i-j) x̃_jᵀ,    M_δ = c · W̃_Q R_δ R_0ᵀ W̃_Kᵀ

(``W̃`` from :func:`interp.models.circuits.augmented_qk_factors`, ``R_p`` the rotary map at position ``p``,
identity without rotary, ``c`` the attention scaling). With the thin SVD ``M_δ = U_δ diag(S_δ) V_δᵀ``::

    s_ij = Σ_k S_δ,k (x̃_i · U_δ,k)(x̃_j · V_δ,k)

one term per singular component. ``W̃_Q = Q_a R_a`` and ``W̃_K = Q_b R_b`` (QR) give ``M_δ = Q_a (c R_a R_δ R_0ᵀ
R_bᵀ) Q_bᵀ``, so only a ``d_head x d_head`` core is decomposed per offset; ``U_δ = Q_a U_c``, ``V_δ = Q_b V_c``.

That is the ``per_offset`` method (one SVD per head and offset). The default, *content* method decomposes each
head once: the SVD of its position-free matrix ``c R_a R_bᵀ = U_c S V_cᵀ`` gives ``c I = P S Zᵀ`` in head space
with ``P = R_a⁻¹ U_c`` and ``Z = R_b⁻¹ V_c``, so for the pre-rotary query ``q_i = x̃_i W̃_Q`` and key ``k_j``::

    s_ij = c (q_i R_i)(k_j R_j)ᵀ = Σ_k S_k ((q_i R_i R_jᵀ) P)_k (k_j Z)_k

the key side reads the fixed key directions ``v_k = Q_b V_c,k`` and the query is carried into the key's frame
(rotated by ``R_i R_jᵀ``) before it is read. Without rotary both methods are the paper's single SVD. The content
method needs an invertible core; a layer with a rank-deficient head falls back to the per-offset SVDs.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import BadInputError
from interp.models import Model
from interp.models.circuits import attention_scaling, augmented_qk_factors, rotary_rotations
from interp.sites import Site
from interp.trace.trace import Trace


@functools.lru_cache(maxsize=4096)
def name(short: str) -> str:
    return Site.parse(short).name


def hooks_for(layers: list[int], upstream: bool) -> list[str]:
    """The hook points the decomposition of ``layers`` reads (``upstream``: also every earlier writer)."""
    out = [name(f"resid_pre.{la}") for la in layers] + [name(f"q.{la}") for la in layers] + \
        [name(f"k.{la}") for la in layers] + [name(f"pattern.{la}") for la in layers]
    if upstream and layers:
        top = max(layers)
        out += [name("resid_pre.0")] + [name(f"{c}.{la}") for la in range(top) for c in ("z", "attn_out", "mlp_out")]
    return list(dict.fromkeys(out))


@dataclass
class LayerQK:
    """One layer's decomposition state for some of its heads (``H`` of them), over a batch of ``B`` sequences."""

    layer: int
    heads: list[int]
    Qa: torch.Tensor  # [H, d+1, r] orthonormal columns, query side
    Qb: torch.Tensor  # [H, d+1, r] key side
    Uc: torch.Tensor  # [H, O, r, r] per offset: the core's left singular vectors, or the carried ones (O = 1 without rotary)
    S: torch.Tensor  # [H, O, r]
    Vc: torch.Tensor  # [H, O, r, r]
    a: torch.Tensor  # [B, H, n, r] = x̃ @ Qa
    b: torch.Tensor  # [B, H, n, r] = x̃ @ Qb
    sigma: torch.Tensor  # [B, n, 1] the norm's scale
    centre: bool  # LayerNorm: the stream is centred before scaling
    rotary: bool
    scores: torch.Tensor  # [B, H, n, n] the model's own scores c · q_i · k_j (from hook_q / hook_k)

    def offset(self, delta: int) -> int:
        return delta if self.rotary else 0


def stream(model: Model, trace: Trace, layer: int, dtype: torch.dtype = torch.float64
           ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(x̃ [B, n, d+1], σ [B, n, 1], centre)``: the normalised, augmented stream in front of ``layer``'s attention."""
    x = trace[name(f"resid_pre.{layer}")].to(dtype).cpu()  # [B, n, d]
    sigma = model.final_norm_scale(x).to(dtype)  # same norm type and eps as the block norms in every family interp knows
    centre = model.weights.norm == "layer"
    xc = x - x.mean(-1, keepdim=True) if centre else x
    return torch.cat([xc / sigma, torch.ones_like(x[..., :1])], dim=-1), sigma, centre


@dataclass
class HeadFactors:
    """One layer's heads' bias-augmented QK factors ``W̃ = Q R`` (``Q`` orthonormal columns, ``R`` upper
    triangular) and the SVD of the position-free core ``c R_a R_bᵀ = U_c diag(S) V_cᵀ``, float64."""

    WQ: torch.Tensor  # [H, d+1, r]
    WK: torch.Tensor
    Ra: torch.Tensor  # [H, r, r] upper triangular
    Rb: torch.Tensor
    Uc: torch.Tensor  # [H, r, r]
    S: torch.Tensor  # [H, r]
    Vc: torch.Tensor  # [H, r, r]
    scale: float
    Qa_: torch.Tensor | None = None  # from a Householder QR (rank-deficient factors), else computed on demand
    Qb_: torch.Tensor | None = None

    @property
    def Qa(self) -> torch.Tensor:
        return self.Qa_ if self.Qa_ is not None else torch.linalg.solve_triangular(self.Ra, self.WQ, upper=True,
                                                                                     left=False)

    @property
    def Qb(self) -> torch.Tensor:
        return self.Qb_ if self.Qb_ is not None else torch.linalg.solve_triangular(self.Rb, self.WK, upper=True,
                                                                                     left=False)

    @property
    def invertible(self) -> bool:
        """Whether every core is well conditioned (the content method needs ``R_a⁻¹`` and ``R_b⁻¹``)."""
        S = self.S
        return bool((S[:, -1] > 1e-6 * S[:, 0].clamp_min(1e-300)).all())

    def carriers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Z)`` = ``(R_a⁻¹ U_c, R_b⁻¹ V_c)`` ``[H, r, r]``: ``c I = P diag(S) Zᵀ`` in head space."""
        P = torch.linalg.solve_triangular(self.Ra, self.Uc, upper=True)
        Z = torch.linalg.solve_triangular(self.Rb, self.Vc, upper=True)
        return P, Z


def _thin_r(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``W [H, m, r] = Q R``: ``R`` by Cholesky of the Gram matrix (cheaper than Householder for m >> r; ``Q`` is
    then ``W R⁻¹``), else by QR, which also returns ``Q`` (rank-deficient or ill-conditioned factors)."""
    G = W.transpose(-1, -2) @ W
    L, info = torch.linalg.cholesky_ex(G)
    if int(info.abs().max()) == 0:
        d = L.diagonal(dim1=-2, dim2=-1)
        if bool((d.amin(-1) > 1e-5 * d.amax(-1)).all()):
            return L.transpose(-1, -2), None
    Q, R = torch.linalg.qr(W)
    return R, Q


def head_factors(model: Model, layer: int, heads: list[int]) -> HeadFactors:
    """Factor the QK circuits of ``heads`` of ``layer`` once (no positions involved)."""
    WQ, WK = augmented_qk_factors(model.weights, layer)
    WQ, WK = WQ[heads].cpu(), WK[heads].cpu()
    Ra, Qa = _thin_r(WQ)
    Rb, Qb = _thin_r(WK)
    scale = attention_scaling(model, layer)
    Uc, S, Vch = torch.linalg.svd(scale * Ra @ Rb.transpose(-1, -2))
    return HeadFactors(WQ=WQ, WK=WK, Ra=Ra, Rb=Rb, Uc=Uc, S=S, Vc=Vch.transpose(-1, -2), scale=scale, Qa_=Qa, Qb_=Qb)


def model_scores(trace: Trace, layer: int, heads: list[int], scale: float) -> torch.Tensor:
    """``[B, H, n, n]`` the model's own scores ``c · q_i · k_j`` from ``hook_q`` / ``hook_k`` (float64)."""
    q = trace[name(f"q.{layer}")][:, :, heads].double().cpu()  # [B, n, H, r]
    k = trace[name(f"k.{layer}")][:, :, heads].double().cpu()
    return scale * torch.einsum("bihr,bjhr->bhij", q, k)


def layer_qk(model: Model, trace: Trace, layer: int, heads: list[int], rot: torch.Tensor | None,
             per_offset: bool = False) -> LayerQK:
    """Factor one layer's QK circuits and project the captured stream on them (float64 throughout).

    ``Uc``, ``S``, ``Vc`` hold one entry per offset with rotary: per-offset SVDs (``per_offset``), or the content
    method's offset-dependent query directions ``R_a R_δ R_0ᵀ R_a⁻¹ U_c`` with the fixed ``S`` and ``V_c``.
    """
    xt, sigma, centre = stream(model, trace, layer)
    f = head_factors(model, layer, heads)
    Qa, Qb, Ra, Rb, scale = f.Qa, f.Qb, f.Ra, f.Rb, f.scale
    if rot is not None and (per_offset or not f.invertible):
        rel = rot @ rot[0].T  # R_δ R_0ᵀ: [O, r, r]
        core = scale * Ra[:, None] @ rel[None] @ Rb[:, None].transpose(-1, -2)  # [H, O, r, r]
        Uc, S, Vch = torch.linalg.svd(core)
    elif rot is not None:
        rel = rot @ rot[0].T
        P, _ = f.carriers()
        n_off = rel.shape[0]
        Uc = Ra[:, None] @ rel[None] @ P[:, None]  # [H, O, r, r] (in Qa coordinates)
        S = f.S[:, None].expand(-1, n_off, -1)
        Vch = f.Vc.transpose(-1, -2)[:, None].expand(-1, n_off, -1, -1)
    else:
        Uc, S, Vch = f.Uc[:, None], f.S[:, None], f.Vc.transpose(-1, -2)[:, None]
    a = torch.einsum("bnd,hdr->bhnr", xt, Qa)
    b = torch.einsum("bnd,hdr->bhnr", xt, Qb)
    scores = model_scores(trace, layer, heads, scale)
    return LayerQK(layer=layer, heads=heads, Qa=Qa, Qb=Qb, Uc=Uc, S=S, Vc=Vch.transpose(-1, -2), a=a, b=b,
                   sigma=sigma, centre=centre, rotary=rot is not None, scores=scores)


class RowMaps:
    """Per-position row-vector maps ``v ↦ v @ M[p]`` for a fixed list of positions, applied elementwise when each
    column of ``M`` has at most one off-diagonal entry (rotary's 2 x 2 planes, whatever the pairing), else by a
    dense product."""

    def __init__(self, M: torch.Tensor, pos: torch.Tensor) -> None:  # M [n, r, r], pos [P]
        r = M.shape[-1]
        self.M, self.pos = M, pos
        off = M.masked_fill(torch.eye(r, dtype=torch.bool), 0.0)
        nz = (off != 0).any(0)  # [r(row), r(col)]
        self.sparse = bool((nz.sum(0) <= 1).all())
        self.partner = nz.int().argmax(0)  # [r]: the row feeding each column (0, with a zero coefficient, if none)
        self.diag = M.diagonal(dim1=-2, dim2=-1)[pos]  # [P, r]
        self.coef = off[:, self.partner, torch.arange(r)][pos]  # [P, r]

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``v [..., P, r]`` with row ``t`` mapped by ``M[pos[t]]``."""
        if self.sparse:
            return torch.addcmul(v * self.diag, v[..., self.partner], self.coef)
        return torch.einsum("...pr,prs->...ps", v, self.M[self.pos])


@dataclass
class ContentTerms:
    """The content method's per-pair terms of one layer (causal pairs ``(ti[p], tj[p])`` only)."""

    terms: torch.Tensor  # [B, H, P, r] float32
    S: torch.Tensor  # [H, r]
    scores: torch.Tensor  # [B, H, n, n] the model's scores (float64)


def causal_pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dest, src)`` of every causal pair, dest-major."""
    ij = torch.tril_indices(n, n)
    return ij[0], ij[1]


_CARRIERS: dict[int, tuple[weakref.ref[Any], dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, ...] | None]]] = {}


def carriers(model: Model, layer: int, heads: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(P, Z, S)`` of :meth:`HeadFactors.carriers` (float32 ``P``, ``Z``; float64 ``S``), or ``None`` for a
    singular core. They depend on the weights only, so they are kept per model (with its cached weight views:
    a model whose weight views are rebuilt gets new ones)."""
    w = model.weights
    entry = _CARRIERS.get(id(w))
    if entry is None or entry[0]() is not w:
        for dead in [k for k, (ref, _) in _CARRIERS.items() if ref() is None]:
            del _CARRIERS[dead]
        entry = (weakref.ref(w), {})
        _CARRIERS[id(w)] = entry
    key = (layer, tuple(heads))
    if key not in entry[1]:
        f = head_factors(model, layer, heads)
        if f.invertible:
            P, Z = f.carriers()
            entry[1][key] = (P.float(), Z.float(), f.S)
        else:
            entry[1][key] = None
    got = entry[1][key]
    return None if got is None else (got[0], got[1], got[2])


def content_terms(model: Model, trace: Trace, layer: int, heads: list[int], rot: torch.Tensor | None,
                  back: RowMaps | None, pairs: tuple[torch.Tensor, torch.Tensor]) -> ContentTerms | None:
    """Every causal pair's terms with one SVD per head (``None`` when a core is singular: use per-offset SVDs).

    ``back`` holds the maps ``R_jᵀ`` (``rot`` transposed, at each pair's source) that carry the rotated query into
    the key's frame. Per-token work is float32 GEMMs; per-pair work is one ``[P, r] @ [r, r]`` product per head
    and a few elementwise products.
    """
    ti, tj = pairs
    xt, _, _ = stream(model, trace, layer, torch.float32)  # [B, n, d+1]
    scale = attention_scaling(model, layer)
    scores = model_scores(trace, layer, heads, scale)
    c = carriers(model, layer, heads)
    if c is None:
        if rot is not None:
            return None
        f = head_factors(model, layer, heads)  # rank-deficient factors: the orthonormal bases from a QR
        U, V = (f.Qa @ f.Uc).float(), (f.Qb @ f.Vc).float()
        alpha = torch.einsum("bnd,hdr->bhnr", xt, U)[:, :, ti]
        beta = torch.einsum("bnd,hdr->bhnr", xt, V * f.S.float()[:, None, :])[:, :, tj]
        return ContentTerms(terms=alpha.mul_(beta), S=f.S, scores=scores)
    P, Z, S = c
    WQ, WK = augmented_qk_factors(model.weights, layer, torch.float32)
    WQ, WK = WQ[heads].cpu(), WK[heads].cpu()
    beta = torch.einsum("bnd,hdr->bhnr", xt, WK @ (Z * S.float()[:, None, :]))[:, :, tj]  # S_k (x̃_j · v_k)
    if rot is None:
        alpha = torch.einsum("bnd,hdr->bhnr", xt, WQ @ P)[:, :, ti]  # x̃_i · u_k
    elif back is None:
        return None
    else:
        q = torch.einsum("bnd,hdr->bhnr", xt, WQ)  # pre-rotary queries (biases included)
        q = torch.einsum("bhnr,nrs->bhns", q, rot.float())  # q_i R_i
        alpha = back.apply(q[:, :, ti]) @ P[None]  # (q_i R_i R_jᵀ) P
    return ContentTerms(terms=alpha.mul_(beta), S=S, scores=scores)


def sorted_terms(terms: torch.Tensor, scores: torch.Tensor, share: float, top_k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`sparse_order` over ``terms [..., r]`` (float32), with one full sort per row.

    The component index rides in the low bits of the float64 copy of each float32 term (below float32's
    precision, so the order of distinct terms is untouched), which lets a values-only sort (numpy's vectorised
    one) order the terms and their indices together.
    """
    import numpy as np

    r = terms.shape[-1]
    bits = max(1, (r - 1).bit_length())
    if bits > 28:
        return sparse_order(terms, scores.to(terms.dtype), share, top_k)
    low = np.int64(2 ** bits - 1)
    pos = (scores >= 0).numpy()[..., None]
    key = terms.numpy().astype(np.float64)
    np.negative(key, out=key, where=pos)  # -(term toward the score's sign): ascending = largest first
    ik = key.view(np.int64)
    ik |= np.arange(r, dtype=np.int64)
    key.sort(axis=-1)
    k = min(top_k, r)
    idx = ik[..., :k] & low
    ik &= ~low
    csum = torch.from_numpy(key).cumsum(-1)  # minus the running sum toward the score's sign
    target = share * scores.abs().double()[..., None]
    reached = csum <= -(target - 1e-6 * (1 + target))
    reached[..., -1] = True  # all r components make the whole score (n_sparse = r if rounding keeps it short)
    n_sparse = (reached.to(torch.uint8).argmax(-1) + 1).int()  # the first prefix reaching the share
    vals = key[..., :k].astype(np.float32)
    np.negative(vals, out=vals, where=pos)  # the terms themselves
    return torch.from_numpy(idx), torch.from_numpy(vals), n_sparse


def pair_terms(st: LayerQK, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every causal pair's per-component terms ``[B, H, dest, src, r]`` (zero where ``src > dest``)."""
    n = st.a.shape[2]
    Uc, Vc, S = st.Uc.to(dtype), st.Vc.to(dtype), st.S.to(dtype)
    a, b = st.a.to(dtype), st.b.to(dtype)
    if not st.rotary:
        pa = a @ Uc[:, 0]  # [B, H, n, r]
        pb = b @ Vc[:, 0]
        out = S[None, :, 0, None, None, :] * pa[:, :, :, None, :] * pb[:, :, None, :, :]
        return out * torch.ones(n, n, dtype=torch.bool).tril()[None, None, :, :, None]
    # offset-major: row δ, column t holds the pair (dest t + δ, src t)
    t = torch.arange(n)
    dest = (t[None, :] + t[:, None]).clamp(max=n - 1)  # [δ, t]
    a_sh = a[:, :, dest]  # [B, H, δ, t, r]
    pa = torch.einsum("bhdtr,hdrk->bhdtk", a_sh, Uc[:, :n])
    pb = torch.einsum("bhtr,hdrk->bhdtk", b, Vc[:, :n])
    terms = S[None, :, :n, None, :] * pa * pb  # [B, H, δ, t, r]
    delta = (t[:, None] - t[None, :])  # [dest, src]
    valid = delta >= 0
    out = terms[:, :, delta.clamp(min=0), t[None, :].expand(n, n)]  # [B, H, dest, src, r]
    return out * valid[None, None, :, :, None]


def sparse_order(terms: torch.Tensor, scores: torch.Tensor, share: float,
                 top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Terms ordered toward the score's sign, the ``top_k`` first, and how many reach ``share`` of the score.

    For a positive score the terms are taken largest first, for a negative one most negative first; the sparse
    set is the shortest such prefix whose sum reaches ``share`` of the score (the whole sum is the score, so one
    always exists). Returns ``(index [.., k], value [.., k], n_sparse [..])``.
    """
    sgn = torch.where(scores >= 0, 1.0, -1.0).to(terms.dtype)[..., None]
    signed = terms * sgn
    k = min(top_k, terms.shape[-1])
    target = share * (scores.abs().to(terms.dtype))
    vals, idx = signed.topk(k, dim=-1)
    csum = vals.cumsum(-1)
    reached = csum >= target[..., None] - 1e-6 * (1 + target[..., None])
    n_sparse = torch.where(reached.any(-1), reached.int().argmax(-1) + 1, torch.zeros_like(target, dtype=torch.int32))
    missing = ~reached.any(-1)
    if missing.any():  # the sparse set is longer than top_k: sort those pairs fully
        full = signed[missing].sort(-1, descending=True).values.cumsum(-1)
        ok = full >= target[missing][..., None] - 1e-6 * (1 + target[missing][..., None])
        n_full = torch.where(ok.any(-1), ok.int().argmax(-1) + 1, torch.full_like(ok[..., 0], terms.shape[-1], dtype=torch.int64))
        n_sparse[missing] = n_full.to(n_sparse.dtype)
    return idx, vals * sgn, n_sparse


def check_scores(total: torch.Tensor, scores: torch.Tensor, real: torch.Tensor, layer: int, model: Model) -> float:
    """Max |Σ terms - model score| over the ``real`` (causal, unpadded) pairs; raises when the model is not what
    the maths assumes."""
    err = ((total - scores).abs() * real).amax()
    size = (scores.abs() * real).amax()
    if float(err) > 1e-3 * (1.0 + float(size)):
        raise BadInputError(
            f"the decomposition of layer {layer} does not reproduce {model.name}'s attention scores (max error "
            f"{float(err):.3g} against scores up to {float(size):.3g}): this family applies something the "
            "decomposition does not model (a q/k norm such as Qwen3's or OLMo 2's, a rotary convention other than "
            "rotate-half such as GPT-J's, or no norm in front of the attention)")
    return float(err)


def rotations(model: Model, n: int) -> torch.Tensor | None:
    rot = rotary_rotations(model, n)
    return None if rot is None else rot.cpu()


__all__ = ["ContentTerms", "HeadFactors", "LayerQK", "RowMaps", "carriers", "causal_pairs", "check_scores",
           "content_terms",
           "head_factors", "hooks_for", "layer_qk", "model_scores", "name", "pair_terms", "rotations", "sorted_terms",
           "sparse_order", "stream"]
