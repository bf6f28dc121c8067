"""Factored OV/QK circuits of attention heads and the composition-score math shared by tools.

Conventions follow :class:`~interp.models.adapters.WeightViews` (and TransformerLens): activations
are row vectors multiplied on the right, ``x @ W``. For head ``h`` of layer ``l``:

- the OV circuit is ``W_OV = W_V[l, h] @ W_O[l, h]`` (``d_model x d_model``, rank ≤ ``d_head``): a
  residual vector ``x`` read at a key position is written out as ``x @ W_OV``;
- the QK circuit is ``W_QK = W_Q[l, h] @ W_K[l, h]ᵀ``: the attention score is ``x_q @ W_QK @ x_kᵀ``.

Both are kept as a pair of thin factors ``(A [.., d_model, d_head], B [.., d_head, d_model])`` and
never multiplied out: the SVD of ``A @ B`` comes from a QR of each factor and an SVD of the
``d_head x d_head`` core, and Frobenius norms of products from ``d_head x d_head`` Gram matrices.

In the SVD ``A @ B = U diag(S) Vᵀ`` the columns of ``U`` are the *input* (read) directions and the
columns of ``V`` the *output* (write) directions: for OV, ``V`` lives where the head writes and
``U`` where it reads; for QK, ``U`` are query-side and ``V`` key-side read directions.

Norm folding: with ``fold_norm=True`` the weight of the norm in front of the attention (``ln1_w``)
is multiplied into the rows of ``W_Q``, ``W_K`` and ``W_V`` (the reading side), as
TransformerLens' ``fold_ln`` does. The RMS/LayerNorm scaling itself (a positive scalar per
position) and LayerNorm's centring are not folded; for RMSNorm models (Llama, SmolLM2) scaling by
``ln1_w`` is the whole fold. ``fold_norm=False`` gives the raw weights, which is what
TransformerLens' ``TransformerBridge.all_composition_scores`` uses on an unprocessed bridge.

Composition scores (Elhage et al. 2021), for a sender head ``A`` in an earlier layer and a
receiver head ``B`` in a later one, all ``‖X @ Y‖_F / (‖X‖_F ‖Y‖_F)``:

- ``"q"``: ``X = W_OV^A``, ``Y = W_QK^B`` (A's output feeds B's queries);
- ``"k"``: ``X = W_OV^A``, ``Y = (W_QK^B)ᵀ`` (A's output feeds B's keys);
- ``"v"``: ``X = W_OV^A``, ``Y = W_OV^B`` (A's output feeds B's values).

This is exactly TransformerLens' ``utils.composition_scores(OV_A, QK_B)`` with the same modes.

Example:
    >>> import torch
    >>> A, B = torch.randn(2, 16, 4), torch.randn(2, 4, 16)
    >>> U, S, V = factored_svd(A, B)
    >>> torch.allclose(U @ torch.diag_embed(S) @ V.transpose(-1, -2), A @ B, atol=1e-4)
    True
    >>> torch.allclose(factored_norm(A, B), torch.linalg.matrix_norm(A @ B), atol=1e-4)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from interp.errors import BadInputError
from interp.models.adapters import WeightViews

if TYPE_CHECKING:
    from interp.models.model import Model

Kind = Literal["q", "k", "v"]
KINDS: tuple[Kind, ...] = ("q", "k", "v")

__all__ = [
    "KINDS", "Kind", "composition_baseline", "composition_scores", "effective_rank", "factored_norm",
    "factored_svd", "ov_factors", "pair_composition", "qk_factors", "receiver_factors", "rotation_baseline",
]


def _select(w: torch.Tensor, layer: int | None, head: int | None, n_layers: int, n_heads: int) -> torch.Tensor:
    if layer is not None:
        if not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise BadInputError(f"layer={layer!r} is out of range; valid layers are 0..{n_layers - 1}")
        w = w[layer]
    if head is not None:
        if layer is None:
            raise BadInputError("head= needs layer= as well")
        if not isinstance(head, int) or not -n_heads <= head < n_heads:
            raise BadInputError(f"head={head!r} is out of range; valid heads are 0..{n_heads - 1}")
        w = w[head]
    return w


def _fold(weights: WeightViews, w: torch.Tensor, fold_norm: bool) -> torch.Tensor:
    """Multiply ``ln1_w [layer, d_model]`` into the rows of ``w [layer, head, d_model, d_head]``."""
    if not fold_norm:
        return w
    return weights.ln1_w[:, None, :, None].to(w.dtype) * w


def ov_factors(weights: WeightViews, layer: int | None = None, head: int | None = None,
               fold_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The OV circuit of heads as thin factors ``(W_V, W_O)``, so that ``W_OV = W_V @ W_O``.

    Args:
        weights: the model's weight views (``model.weights``).
        layer: one layer, or ``None`` for all (leading axis ``layer``).
        head: one head of ``layer``, or ``None`` for all (axis ``head``).
        fold_norm: multiply the attention input norm's weight into ``W_V`` (see module docstring).

    Returns:
        ``A [*lead, d_model, d_head]`` and ``B [*lead, d_head, d_model]`` where ``*lead`` is
        ``[layer, head]``, ``[head]`` or ``[]``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> A, B = ov_factors(m.weights, layer=3)
        >>> A.shape, B.shape
        (torch.Size([9, 576, 64]), torch.Size([9, 64, 576]))
    """
    n_layers, n_heads = weights.W_V.shape[:2]
    A = _select(_fold(weights, weights.W_V, fold_norm), layer, head, n_layers, n_heads)
    B = _select(weights.W_O, layer, head, n_layers, n_heads)
    return A.detach(), B.detach()


def qk_factors(weights: WeightViews, layer: int | None = None, head: int | None = None,
               fold_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The QK circuit of heads as thin factors ``(W_Q, W_Kᵀ)``, so that ``W_QK = W_Q @ W_Kᵀ``.

    Same arguments and shapes as :func:`ov_factors`. Rotary position embeddings act between the two
    factors at run time and are not part of these weights (as in TransformerLens).

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> A, B = qk_factors(m.weights)
        >>> A.shape, B.shape
        (torch.Size([30, 9, 576, 64]), torch.Size([30, 9, 64, 576]))
    """
    n_layers, n_heads = weights.W_Q.shape[:2]
    A = _select(_fold(weights, weights.W_Q, fold_norm), layer, head, n_layers, n_heads)
    B = _select(_fold(weights, weights.W_K, fold_norm), layer, head, n_layers, n_heads).transpose(-1, -2)
    return A.detach(), B.detach()


def _check_pair(A: torch.Tensor, B: torch.Tensor) -> None:
    if A.ndim < 2 or B.ndim < 2 or A.shape[-1] != B.shape[-2]:
        raise BadInputError(f"factors must be A [..., m, r] and B [..., r, n]; got {tuple(A.shape)} and {tuple(B.shape)}")


def factored_svd(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``A @ B`` without forming it: ``A @ B = U @ diag(S) @ Vᵀ``.

    ``A = Q_a R_a``, ``Bᵀ = Q_b R_b`` (QR), so ``A @ B = Q_a (R_a R_bᵀ) Q_bᵀ``; the SVD of the small
    core ``R_a R_bᵀ = U_c S V_cᵀ`` gives ``U = Q_a U_c`` and ``V = Q_b V_c``. Computed in float64
    for accuracy, returned in the input dtype. Batched over leading axes.

    Args:
        A: ``[..., m, r]``.
        B: ``[..., r, n]`` (``r`` small, e.g. ``d_head``).

    Returns:
        ``U [..., m, r]``, ``S [..., r]`` (descending), ``V [..., n, r]``.

    Example:
        >>> import torch
        >>> U, S, V = factored_svd(torch.eye(3)[:, :2], 2 * torch.eye(3)[:2])
        >>> S.tolist()
        [2.0, 2.0]
    """
    _check_pair(A, B)
    dtype = A.dtype
    qa, ra = torch.linalg.qr(A.double())
    qb, rb = torch.linalg.qr(B.double().transpose(-1, -2))
    uc, s, vch = torch.linalg.svd(ra @ rb.transpose(-1, -2))
    return (qa @ uc).to(dtype), s.to(dtype), (qb @ vch.transpose(-1, -2)).to(dtype)


def factored_norm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of ``A @ B`` from ``r x r`` Gram matrices: ``‖AB‖² = Σ (AᵀA) ⊙ (BBᵀ)``.

    Example:
        >>> import torch
        >>> float(factored_norm(torch.ones(4, 1), torch.ones(1, 4)))
        4.0
    """
    _check_pair(A, B)
    ga = A.transpose(-1, -2) @ A
    gb = B @ B.transpose(-1, -2)
    return (ga * gb).sum((-2, -1)).clamp_min(0).sqrt()


def effective_rank(S: torch.Tensor) -> torch.Tensor:
    """Entropy effective rank (Roy & Vetterli 2007) of singular values ``S [..., r]``: ``exp(H(S/ΣS))``.

    Example:
        >>> import torch
        >>> round(float(effective_rank(torch.tensor([1.0, 1.0, 0.0]))), 4)
        2.0
    """
    p = S / S.sum(-1, keepdim=True).clamp_min(torch.finfo(S.dtype).tiny)
    h = -(p * torch.log(p.clamp_min(torch.finfo(S.dtype).tiny))).sum(-1)
    return torch.exp(h)


def _collapsed(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``M = A @ B = U S Vᵀ``: ``S Vᵀ [.., r, n]`` (collapse_l), ``U S [.., m, r]`` (collapse_r), ``‖M‖``."""
    qa, ra = torch.linalg.qr(A.float())
    qb, rb = torch.linalg.qr(B.float().transpose(-1, -2))
    core = ra @ rb.transpose(-1, -2)  # M = qa core qbᵀ
    left = core @ qb.transpose(-1, -2)  # = qaᵀ M: same row space and norms as S Vᵀ
    right = qa @ core  # = M qb: same as U S up to an orthogonal factor
    return left, right, torch.linalg.matrix_norm(core)


def _check_kind(kind: object) -> None:
    if kind not in KINDS:
        raise BadInputError(f"kind={kind!r} is not a composition kind; use one of {', '.join(map(repr, KINDS))}")


def receiver_factors(weights: WeightViews, kind: Kind, layer: int | None = None, head: int | None = None,
                     fold_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin factors ``(A, B)`` of what a receiving head reads a sender's output with, by composition kind.

    ``"q"``: its QK circuit ``W_Q @ W_Kᵀ`` (the sender feeds its queries); ``"k"``: the transpose
    ``W_K @ W_Qᵀ`` (the sender feeds its keys); ``"v"``: its OV circuit ``W_V @ W_O`` (the sender feeds its
    values). Same selection and shapes as :func:`ov_factors`.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> A, B = receiver_factors(m.weights, "k", layer=5, head=1)
        >>> Q, K = qk_factors(m.weights, layer=5, head=1)
        >>> torch.equal(A, K.T) and torch.equal(B, Q.T)
        True
    """
    _check_kind(kind)
    if kind == "v":
        return ov_factors(weights, layer, head, fold_norm=fold_norm)
    A, B = qk_factors(weights, layer, head, fold_norm=fold_norm)
    if kind == "k":
        return B.transpose(-1, -2), A.transpose(-1, -2)
    return A, B


def composition_scores(weights: WeightViews, kind: Kind, fold_norm: bool = False,
                       fill: float = 0.0) -> torch.Tensor:
    """All-pairs composition scores ``[layer_a, head_a, layer_b, head_b]`` (sender a, receiver b).

    ``score = ‖W_OV^a @ Y^b‖_F / (‖W_OV^a‖_F ‖Y^b‖_F)`` with ``Y`` the receiver's QK (``"q"``),
    QKᵀ (``"k"``) or OV (``"v"``) circuit; see the module docstring. Only pairs with
    ``layer_b > layer_a`` are computed; the others hold ``fill`` (0 by default, as TransformerLens).

    The sender side is orthogonalised once per head (``qaᵀ W_OV``, ``r x d_model``) and the receiver
    side once (``Y qb``, ``d_model x r``); each pair then costs one ``r x d_model x r`` product,
    done layer by layer as one matrix product (in float32; scores agree with float64 to ~1e-6).

    Args:
        weights: the model's weight views.
        kind: ``"q"``, ``"k"`` or ``"v"``.
        fold_norm: fold the receiver's attention-input norm weight into its reading weights (and
            the sender's into its ``W_V``); see the module docstring.
        fill: value for pairs that cannot compose (``layer_b <= layer_a``), e.g. ``float("nan")``.

    Returns:
        float32 tensor ``[n_layers, n_heads, n_layers, n_heads]``.

    Example:
        >>> import interp
        >>> toy = interp.load_model("toy-induction")  # 2 layers x 4 heads
        >>> s = composition_scores(toy.weights, "k", fill=float("nan"))
        >>> s.shape, bool(s[1, 0, 0].isnan().all()), round(float(s[0, 2, 1, 3]), 2)
        (torch.Size([2, 4, 2, 4]), True, 0.3)
    """
    _check_kind(kind)
    ov_a, ov_b = ov_factors(weights, fold_norm=fold_norm)
    ya, yb = receiver_factors(weights, kind, fold_norm=fold_norm)
    L, H = ov_a.shape[:2]
    left, _, norm_a = _collapsed(ov_a, ov_b)  # [L, H, r, d], [L, H]
    _, right, norm_b = _collapsed(ya, yb)  # [L, H, d, r], [L, H]
    r = left.shape[-2]
    out = torch.full((L, H, L, H), float(fill), dtype=torch.float64)
    for la in range(L - 1):
        lhs = left[la].reshape(H * r, -1)  # [H r, d]
        rhs = right[la + 1:].permute(2, 0, 1, 3).reshape(lhs.shape[1], -1)  # [d, (L' H r)]
        prod = (lhs @ rhs).reshape(H, r, L - la - 1, H, r)
        num = prod.pow(2).sum((1, 4)).sqrt()  # [H, L', H]
        out[la, :, la + 1:] = num / norm_a[la][:, None, None] / norm_b[la + 1:][None]
    return out.float()


def pair_composition(x: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Composition score ``‖XY‖/(‖X‖‖Y‖)`` of two factored matrices ``X = x[0] @ x[1]``, ``Y = y[0] @ y[1]``.

    Batched over matching leading axes.

    Example:
        >>> import torch
        >>> e = torch.eye(4)
        >>> float(pair_composition((e[:, :1], e[:1]), (e[:, :1], e[:1])))
        1.0
    """
    xa, xb = x
    ya, yb = y
    _check_pair(xa, xb)
    _check_pair(ya, yb)
    core = xb @ ya  # [.., r1, r2]
    num = factored_norm(xa, core @ yb)
    return num / factored_norm(xa, xb) / factored_norm(ya, yb)


def composition_baseline(d_model: int, d_head: int, n_samples: int = 200, seed: int = 0,
                         kind: Kind = "q") -> tuple[float, float]:
    """Mean and standard deviation of the composition score of random heads (the Elhage et al. baseline).

    Factors are i.i.d. Gaussian with the shapes of real heads (``d_model x d_head`` and
    ``d_head x d_model``), so a score well above the mean (by several standard deviations) means the
    two heads' subspaces are aligned more than chance. The score's distribution does not depend on
    ``kind`` for Gaussian factors; the argument is accepted for symmetry.

    Example:
        >>> mean, std = composition_baseline(64, 8, n_samples=50)
        >>> 0.05 < mean < 0.5 and std < mean
        True
    """
    _check_kind(kind)
    if d_head < 1 or d_model < d_head or n_samples < 2:
        raise BadInputError(f"need 1 <= d_head <= d_model and n_samples >= 2; got d_model={d_model}, "
                         f"d_head={d_head}, n_samples={n_samples}")
    g = torch.Generator().manual_seed(seed)
    shape = (n_samples,)
    x = (torch.randn(*shape, d_model, d_head, generator=g, dtype=torch.float64),
         torch.randn(*shape, d_head, d_model, generator=g, dtype=torch.float64))
    y = (torch.randn(*shape, d_model, d_head, generator=g, dtype=torch.float64),
         torch.randn(*shape, d_head, d_model, generator=g, dtype=torch.float64))
    s = pair_composition(x, y)
    return float(s.mean()), float(s.std())


def rotation_baseline(x: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor],
                      n_samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """Composition of real heads whose subspaces are randomly rotated: a spectrum-preserving baseline.

    Draws ``n_samples`` (sender, receiver) pairs from the stacks ``x = (A [N, d, r], B [N, r, d])``
    and ``y`` (same layout), rotates the receiver by a Haar-random orthogonal ``Q`` (``Y -> Qᵀ Y Q``,
    same singular values, random subspaces) and returns the mean and standard deviation of the
    score. Real heads have uneven spectra, so this baseline can be wider than the Gaussian
    :func:`composition_baseline`.

    Example:
        >>> import torch
        >>> x = (torch.randn(5, 32, 4), torch.randn(5, 4, 32))
        >>> mean, std = rotation_baseline(x, x, n_samples=20)
        >>> 0.0 < mean < 1.0
        True
    """
    xa, xb = x
    ya, yb = y
    if xa.dim() != 3 or ya.dim() != 3:
        raise BadInputError(f"x and y must be stacks of factors [N, d, r] / [N, r, d]; got {tuple(xa.shape)}, "
                         f"{tuple(ya.shape)}")
    if n_samples < 2:
        raise BadInputError(f"n_samples={n_samples} must be >= 2")
    g = torch.Generator().manual_seed(seed)
    d = xa.shape[-2]
    i = torch.randint(xa.shape[0], (n_samples,), generator=g)
    j = torch.randint(ya.shape[0], (n_samples,), generator=g)
    n_rot = min(n_samples, 16)  # a few full rotations, each used for a share of the pairs
    q, r = torch.linalg.qr(torch.randn(n_rot, d, d, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar measure
    parts = []
    for k in range(n_rot):
        ik, jk = i[k::n_rot], j[k::n_rot]
        ra = q[k].T @ ya[jk].double()
        rb = yb[jk].double() @ q[k]
        parts.append(pair_composition((xa[ik].double(), xb[ik].double()), (ra, rb)))
    s = torch.cat(parts)
    return float(s.mean()), float(s.std())


# -- attention scores taken apart (Franco & Crovella 2024; used by interp.heads.decompose) -----------------
def augmented_qk_factors(weights: WeightViews, layer: int, dtype: torch.dtype = torch.float64
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bias-augmented, norm-folded query and key weights of every head of one layer.

    The attention input of layer ``layer`` is ``n(x) = γ ⊙ P x / σ(x) + β`` (``P`` centres for LayerNorm and is
    the identity for RMSNorm; ``σ`` is the per-token scale). With ``x̂ = P x / σ(x)`` and the augmented row
    ``x̃ = [x̂, 1]`` the pre-rotary query is ``q = x̃ @ W̃_Q`` with ``W̃_Q = [diag(γ) W_Q ; β W_Q + b_Q]``, and
    likewise the key; the paper's augmented QK matrix (GPT-2, no rotary) is ``W̃_Q @ W̃_Kᵀ``.

    Returns:
        ``(W̃_Q, W̃_K)``, each ``[head, d_model + 1, d_head]`` (grouped-query keys expanded per query head), in
        ``dtype`` (float64 unless asked).

    Example:
        >>> import interp
        >>> toy = interp.load_model("toy-induction")
        >>> WQ, WK = augmented_qk_factors(toy.weights, 1)
        >>> WQ.shape[1] == toy.weights.W_Q.shape[2] + 1
        True
    """
    n_layers = weights.W_Q.shape[0]
    if not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise BadInputError(f"layer={layer!r} is out of range; valid layers are 0..{n_layers - 1}")
    g = weights.ln1_w[layer].detach().to(dtype)
    beta = weights.ln1_b[layer].detach().to(dtype) if weights.ln1_b is not None else torch.zeros_like(g)
    out = []
    for W, b in ((weights.W_Q[layer], weights.b_Q[layer]), (weights.W_K[layer], weights.b_K[layer])):
        W = W.detach().to(dtype)  # [head, d_model, d_head]
        top = g[None, :, None] * W
        bottom = (beta @ W) + b.detach().to(dtype)  # [head, d_head]
        out.append(torch.cat([top, bottom[:, None, :]], dim=1))
    return out[0], out[1]


def rotary_rotations(model: Model, n_positions: int, layer: int = 0) -> torch.Tensor | None:
    """Row-vector rotary maps ``R [n_positions, d_head, d_head]`` with ``q_rot(p) = q @ R[p]``, or ``None``.

    Found from the model's own rotary-embedding module (a submodule whose name ends in ``rotary_emb``; the
    ``rotate_half`` convention of Llama, Mistral, Qwen, GPT-NeoX; a partial rotary leaves the remaining
    dimensions unrotated). ``None`` when the model has no such module (learned or no positions: GPT-2).
    Callers must check the result against the model's own ``hook_q``/``hook_k`` (other conventions exist:
    GPT-J rotates neighbouring pairs): :func:`interp.heads.attention_decomposition` does and says when not.

    For the standard rotary embedding ``R[i] R[j]ᵀ = R[i - j] R[0]ᵀ``, so the score of a query at ``i`` and
    a key at ``j`` reads ``q R[i] R[j]ᵀ kᵀ``: the QK matrix depends on the offset ``i - j`` only.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> R = rotary_rotations(m, 4)
        >>> R.shape, bool(torch.allclose(R[2] @ R[1].T, R[1] @ R[0].T, atol=1e-5))
        (torch.Size([4, 64, 64]), True)
    """
    hf = model.hf
    mods = [(n, mod) for n, mod in hf.named_modules() if n.endswith("rotary_emb")]
    if not mods:
        return None
    mods.sort(key=lambda nm: (f"layers.{layer}." not in nm[0], len(nm[0])))  # a per-layer one first, else the model's
    rot = mods[0][1]
    w = model.weights
    d_head = int(w.W_Q.shape[-1])
    dev = next(hf.parameters()).device
    pos = torch.arange(n_positions, device=dev)[None]
    with torch.no_grad():
        cos, sin = rot(torch.zeros(1, device=dev, dtype=torch.float32), pos)
    cos, sin = cos[0].double().cpu(), sin[0].double().cpu()  # [pos, rot_dim]
    rd = cos.shape[-1]
    half = rd // 2
    R = torch.eye(d_head, dtype=torch.float64).repeat(n_positions, 1, 1)
    R[:, :rd, :rd] = torch.diag_embed(cos)
    idx = torch.arange(half)
    # q @ Rh = rotate_half(q) = [-q[half:], q[:half]]: column m < half reads -q[m + half], column m >= half reads q[m - half]
    R[:, idx + half, idx] -= sin[:, idx]
    R[:, idx, idx + half] += sin[:, idx + half]
    return R


def attention_scaling(model: Model, layer: int) -> float:
    """The factor the scores ``q · k`` are multiplied by (the attention module's ``scaling``, else ``d_head^-½``).

    Example:
        >>> import interp
        >>> attention_scaling(interp.load_model("smollm2-135m"), 0)
        0.125
    """
    w = model.weights
    d_head = int(w.W_Q.shape[-1])
    mod = model.module(model.adapter.attn.format(L=layer))
    s = getattr(mod, "scaling", None)
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    if getattr(mod, "scale_attn_weights", True) is False:
        return 1.0
    scale = float(d_head) ** -0.5
    if getattr(mod, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(layer + 1)
    return scale


__all__ += ["attention_scaling", "augmented_qk_factors", "rotary_rotations"]
