"""The per-layer arithmetic of the sparse attention decomposition (Franco & Crovella 2024), rotary included.

For layer ``l`` and a head, with the attention input ``n(x) = γ ⊙ P x / σ(x) + β`` (``P`` centres for LayerNorm,
identity for RMSNorm) and ``x̃ = [P x / σ(x), 1]``, the score of a query at ``i`` and a key at ``j`` is::

    s_ij = c · (x̃_i W̃_Q) R_i R_jᵀ (x̃_j W̃_K)ᵀ = x̃_i M_(i-j) x̃_jᵀ,    M_δ = c · W̃_Q R_δ R_0ᵀ W̃_Kᵀ

(``W̃`` from :func:`interp.models.circuits.augmented_qk_factors`, ``R_p`` the rotary map at position ``p``,
identity without rotary, ``c`` the attention scaling). With the thin SVD ``M_δ = U_δ diag(S_δ) V_δᵀ``::

    s_ij = Σ_k S_δ,k (x̃_i · U_δ,k)(x̃_j · V_δ,k)

one term per singular component. ``W̃_Q = Q_a R_a`` and ``W̃_K = Q_b R_b`` (QR) give ``M_δ = Q_a (c R_a R_δ R_0ᵀ
R_bᵀ) Q_bᵀ``, so only a ``d_head x d_head`` core is decomposed per offset; ``U_δ = Q_a U_c``, ``V_δ = Q_b V_c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import BadInputError
from interp.models import Model
from interp.models.circuits import attention_scaling, augmented_qk_factors, rotary_rotations
from interp.sites import Site
from interp.trace.trace import Trace


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
    Uc: torch.Tensor  # [H, O, r, r] core left singular vectors per offset (O = 1 without rotary)
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


def layer_qk(model: Model, trace: Trace, layer: int, heads: list[int], rot: torch.Tensor | None) -> LayerQK:
    """Factor one layer's QK circuits and project the captured stream on them (float64 throughout)."""
    w = model.weights
    x = trace[name(f"resid_pre.{layer}")].double().cpu()  # [B, n, d]
    sigma = model.final_norm_scale(x).double()  # same norm type and eps as the block norms in every family interp knows
    centre = w.norm == "layer"
    xc = x - x.mean(-1, keepdim=True) if centre else x
    xt = torch.cat([xc / sigma, torch.ones_like(x[..., :1])], dim=-1)  # [B, n, d+1]
    WQ, WK = augmented_qk_factors(w, layer)
    WQ, WK = WQ[heads].cpu(), WK[heads].cpu()
    Qa, Ra = torch.linalg.qr(WQ)
    Qb, Rb = torch.linalg.qr(WK)
    scale = attention_scaling(model, layer)
    if rot is not None:
        rel = rot @ rot[0].T  # R_δ R_0ᵀ: [O, r, r]
        core = scale * Ra[:, None] @ rel[None] @ Rb[:, None].transpose(-1, -2)  # [H, O, r, r]
    else:
        core = (scale * Ra @ Rb.transpose(-1, -2))[:, None]
    Uc, S, Vch = torch.linalg.svd(core)
    a = torch.einsum("bnd,hdr->bhnr", xt, Qa)
    b = torch.einsum("bnd,hdr->bhnr", xt, Qb)
    q = trace[name(f"q.{layer}")][:, :, heads].double().cpu()  # [B, n, H, r]
    k = trace[name(f"k.{layer}")][:, :, heads].double().cpu()
    scores = scale * torch.einsum("bihr,bjhr->bhij", q, k)
    return LayerQK(layer=layer, heads=heads, Qa=Qa, Qb=Qb, Uc=Uc, S=S, Vc=Vch.transpose(-1, -2), a=a, b=b,
                   sigma=sigma, centre=centre, rotary=rot is not None, scores=scores)


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


def check_scores(st: LayerQK, terms_sum: torch.Tensor, mask2: torch.Tensor, model: Model) -> float:
    """Max |Σ terms - model score| over real causal pairs; raises when the model is not what the maths assumes."""
    err = ((terms_sum - st.scores).abs() * mask2).amax()
    size = (st.scores.abs() * mask2).amax()
    if float(err) > 1e-3 * (1.0 + float(size)):
        raise BadInputError(
            f"the decomposition of layer {st.layer} does not reproduce {model.name}'s attention scores (max error "
            f"{float(err):.3g} against scores up to {float(size):.3g}): this family applies something the "
            "decomposition does not model (a q/k norm such as Qwen3's or OLMo 2's, a rotary convention other than "
            "rotate-half such as GPT-J's, or no norm in front of the attention)")
    return float(err)


def rotations(model: Model, n: int) -> torch.Tensor | None:
    rot = rotary_rotations(model, n)
    return None if rot is None else rot.cpu()


__all__ = ["LayerQK", "check_scores", "hooks_for", "layer_qk", "name", "pair_terms", "rotations", "sparse_order"]
