"""``attention_decomposition``: every attention score split over the singular components of its head's QK matrix.

Franco & Crovella (2024), "Sparse Attention Decomposition Applied to Circuit Tracing": the score of head ``h``
between a destination (query) token ``i`` and a source (key) token ``j`` is ``x̃_i M x̃_jᵀ`` with ``x̃ = [x̂, 1]``
the normalised residual augmented with a 1 (so the query and key biases are part of the bias-augmented QK
matrix ``M``); with the SVD ``M = U diag(S) Vᵀ`` the score is ``Σ_k S_k (x̃_i · u_k)(x̃_j · v_k)``, one term per
singular component, and a few components usually carry most of it (the score is *sparse* in them).

How interp handles what the paper did not have to (it worked on GPT-2):

- **norms**: ``x̂ = P x / σ(x)`` with ``σ`` the per-token scale of the norm in front of the attention (RMSNorm or
  LayerNorm) and ``P`` LayerNorm's centring (identity for RMSNorm); the norm's weight ``γ`` and bias ``β`` are
  folded into the augmented weights (``[diag(γ) W_Q ; β W_Q + b_Q]``), so ``x̂`` is linear in the residual
  stream once ``σ`` is frozen at its value (as TransformerLens' ``apply_ln_to_stack`` does);
- **rotary embeddings**: the query at ``i`` is rotated by ``R_i`` and the key at ``j`` by ``R_j``, so the matrix
  that scores the pair, ``W̃_Q R_i R_jᵀ W̃_Kᵀ``, depends on the offset ``i - j``. By default (the *content*
  method) each head is decomposed once, by the SVD of its position-free matrix ``W̃_Q W̃_Kᵀ``: the key reads the
  fixed directions ``v_k`` and the query is carried into the key's frame first, ``u_k(i, j) = W̃_Q R_i R_jᵀ
  W̃_Q⁺ u_k``, so component ``k`` is the same at every pair. ``per_offset=True`` takes instead one SVD per head
  and offset (the exact SVD of each offset's matrix; components numbered within each offset; ~10x slower).
  Models without rotary have one matrix, and both are the paper's decomposition.

Every result checks itself: the terms of each pair sum to the score computed from the model's own ``hook_q`` and
``hook_k`` (``max_error``); a family whose attention the maths does not model (a q/k norm, GPT-J's interleaved
rotary) raises instead of returning wrong numbers.

Example:
    >>> import interp
    >>> from interp.heads import attention_decomposition
    >>> m = interp.load_model("smollm2-135m")
    >>> dec = attention_decomposition(m, "When Mary and John went to the store, John gave a drink to", heads="L9H1,L10H5")
    >>> dec.max_error < 1e-4, dec.values.shape[-1]
    (True, 16)
    >>> comps = dec.sparse_components("L9H1", dest=-1)  # the sparse set at the most-attended source
    >>> 1 <= len(comps) <= 64
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.heads import _qk
from interp.heads._common import fit_width, heads_of
from interp.models import Model
from interp.models.model import Inputs
from interp.plot import bar_top_tokens, heatmap
from interp.progress import progress as progress_bar
from interp.sites import HeadRef, HeadSpec
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class AttentionDecomposition(Result):
    """Attention scores of some heads, split over the singular components of their (effective) QK matrices.

    Views (``res.plot(view, ...)``):

    - ``"pair"`` (default): the terms of one head's score at one (dest, src) pair, sparse set highlighted
      (``head=``, ``seq=0``, ``dest=-1``, ``src=None``: the most-attended source);
    - ``"sparsity"``: per head and destination, how many components reach ``share`` of the score at the
      most-attended source.

    Attributes:
        scores: ``[seq, head, dest, src]`` the model's scores ``c · q_i · k_j`` (pre-mask, pre-softmax); NaN
            where ``src > dest`` or a token is padding.
        pattern: ``[seq, head, dest, src]`` the model's attention weights.
        n_sparse: ``[seq, head, dest, src]`` how many components (taken toward the score's sign, largest first)
            reach ``share`` of the score (0 where masked).
        components: ``[seq, head, dest, src, rank]`` the ``top_k`` first components in that order (indices into
            the SVD at that pair's offset; the sparse set is the first ``n_sparse``).
        values: ``[seq, head, dest, src, rank]`` their terms ``S_k (x̃_i·u_k)(x̃_j·v_k)``.
        singular_values: ``[head, offset, component]`` (offset axis of length 1 unless ``per_offset``).
        heads: the heads, ``"L3H1"``.
        tokens: per sequence, its token strings.
        share: the share of the score the sparse set reaches.
        max_error: max |Σ all terms − score| over real pairs (float32 terms against the model's scores).
        rotary: whether the effective QK matrix depends on the offset (rotary models).
        per_offset: whether each offset has its own SVD (else one SVD per head: the content method).
        model_id: the model.
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        "scores": ("seq", "head", "dest", "src"), "pattern": ("seq", "head", "dest", "src"),
        "n_sparse": ("seq", "head", "dest", "src"), "components": ("seq", "head", "dest", "src", "rank"),
        "values": ("seq", "head", "dest", "src", "rank"), "singular_values": ("head", "offset", "component")}
    VIEWS: ClassVar[tuple[str, ...]] = ("pair", "sparsity")
    JSON_SKIP: ClassVar[tuple[str, ...]] = ("components", "values", "pattern")

    scores: torch.Tensor
    pattern: torch.Tensor
    n_sparse: torch.Tensor
    components: torch.Tensor
    values: torch.Tensor
    singular_values: torch.Tensor
    heads: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    share: float = 0.9
    max_error: float = 0.0
    rotary: bool = False
    per_offset: bool = False
    model_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(str(h) for h in self.heads))
        object.__setattr__(self, "tokens", tuple(tuple(t) for t in self.tokens))
        if self.scores.dim() != 4 or self.scores.shape[1] != len(self.heads):
            raise BadInputError(f"scores must be [seq, head={len(self.heads)}, dest, src]; got {tuple(self.scores.shape)}")

    # -- access ---------------------------------------------------------------------------------
    def _h(self, head: HeadSpec | None) -> int:
        if head is None:
            return 0
        label = str(HeadRef.parse(head))
        if label not in self.heads:
            raise bad_value("head", head, f"one of the decomposed heads ({', '.join(self.heads)})")
        return self.heads.index(label)

    def _pair(self, seq: int, h: int, dest: int, src: int | None) -> tuple[int, int]:
        n = len(self.tokens[seq])
        d = dest + n if dest < 0 else dest
        if not 0 <= d < n:
            raise bad_value("dest", dest, f"a position of sequence {seq} ({-n}..{n - 1})")
        if src is None:
            return d, int(torch.nan_to_num(self.pattern[seq, h, d, :d + 1], nan=-1.0).argmax())
        s = src + n if src < 0 else src
        if not 0 <= s <= d:
            raise bad_value("src", src, f"a position at or before dest {d}")
        return d, s

    def sparse_components(self, head: HeadSpec | None = None, *, seq: int = 0, dest: int = -1,
                          src: int | None = None) -> list[tuple[int, float]]:
        """The sparse set at one pair: ``[(component, term), ...]`` (``src=None``: the most-attended source).

        Only the stored ``top_k`` components are listed when the sparse set is longer (see ``n_sparse``).
        """
        h = self._h(head)
        d, s = self._pair(seq, h, dest, src)
        k = min(int(self.n_sparse[seq, h, d, s]), self.components.shape[-1])
        return [(int(c), float(v)) for c, v in zip(self.components[seq, h, d, s, :k], self.values[seq, h, d, s, :k],
                                                     strict=True)]

    def sparsity(self, min_weight: float = 0.0) -> torch.Tensor:
        """``[head]``: mean ``n_sparse`` over real pairs whose attention weight is at least ``min_weight``."""
        sel = (self.pattern >= min_weight) & torch.isfinite(self.scores)
        ns = self.n_sparse.double() * sel
        return ns.sum((0, 2, 3)) / sel.sum((0, 2, 3)).clamp_min(1)

    # -- the result surface -----------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        return {"head": list(self.heads)}

    def headline(self) -> dict[str, Any]:
        sp = self.sparsity(0.1)
        return {"share": self.share, "mean_n_sparse(att>=0.1)": round(float(sp.mean()), 2) if len(sp) else None,
                "max_error": self.max_error, "rotary": self.rotary, "per_offset": self.per_offset}

    def to_frame(self) -> pd.DataFrame:
        """One row per real pair: ``seq, head, dest, src, score, attention, n_sparse``."""
        df = labelled_frame(self.scores, ["seq", "head", "dest", "src"], {"head": list(self.heads)}, name="score")
        df["attention"] = self.pattern.flatten().numpy()
        df["n_sparse"] = self.n_sparse.flatten().numpy()
        return df[df["score"].notna()].reset_index(drop=True)

    def _view_pair(self, head: HeadSpec | None = None, seq: int = 0, dest: int = -1, src: int | None = None) -> Figure:
        h = self._h(head)
        d, s = self._pair(seq, h, dest, src)
        comps = self.components[seq, h, d, s].tolist()
        vals = self.values[seq, h, d, s]
        ns = int(self.n_sparse[seq, h, d, s])
        labels = [f"{'★' if i < ns else ''}σ{c}" for i, c in enumerate(comps)]
        toks = self.tokens[seq]
        return bar_top_tokens(labels, vals, signed=True, x_title="term of the score",
                              title=f"{self.heads[h]}: score {float(self.scores[seq, h, d, s]):.2f} of {toks[d]!r}→"
                                    f"{toks[s]!r} ({d}→{s}); ★ = sparse set ({ns} reach {self.share:.0%})")

    def _view_sparsity(self, seq: int = 0) -> Figure:
        n = len(self.tokens[seq])
        pat = torch.nan_to_num(self.pattern[seq, :, :n, :n], nan=-1.0)
        top = pat.argmax(-1)  # [head, dest]
        ns = self.n_sparse[seq, :, :n, :n].gather(-1, top[..., None])[..., 0]
        fig = heatmap(ns.double(), x_labels=list(self.tokens[seq]), y_labels=list(self.heads), x_title="destination",
                      y_title="head", colorbar_title="n_sparse",
                      title=f"Components reaching {self.share:.0%} of the score at each destination's most-attended "
                            "source")
        return fit_width(fig)


def attention_decomposition(model: Model, inputs: Inputs, *, heads: HeadSpec | Iterable[HeadSpec] | None = None,
                            share: float = 0.9, top_k: int = 16, per_offset: bool = False,
                            max_tokens: int | None = None, progress: bool | None = None) -> AttentionDecomposition:
    """Split every attention score of ``heads`` over the singular components of the head's QK matrix.

    Args:
        model: a loaded model.
        inputs: a text, texts, token ids, a Trace or a TraceStore (see docs/conventions.md).
        heads: the heads (``"L9H1,L10H5"``, ``[(9, 1)]``; ``None``: every head).
        share: the share of each score the sparse set must reach (0 < share <= 1).
        top_k: how many components to keep per pair (ordered toward the score's sign, largest first).
        per_offset: rotary models only: one SVD per head *and offset* (the exact SVD of the effective matrix
            ``W̃_Q R_δ R_0ᵀ W̃_Kᵀ`` scoring each pair; ~10x slower) instead of one SVD per head with the query carried
            into the key's frame (the default; see the module docstring).
        max_tokens: truncate texts to this many tokens.
        progress: a progress bar over layers (``None``: the library switch).

    Returns:
        :class:`AttentionDecomposition`.

    Raises:
        BadInputError: a bad ``share`` or ``top_k``, an encoder model, or a family whose attention the
            decomposition does not reproduce (a q/k norm; an interleaved rotary).

    Example:
        >>> import interp
        >>> from interp.heads import attention_decomposition
        >>> toy = interp.load_model("toy-induction")
        >>> dec = attention_decomposition(toy, torch.tensor([[1, 5, 9, 1, 5]]), heads="L1H3", top_k=4)
        >>> dec.scores.shape, dec.max_error < 1e-4
        (torch.Size([1, 1, 5, 5]), True)
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise bad_value("share", share, "a number in (0, 1]")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise bad_value("top_k", top_k, "an int >= 1")
    if not model.adapter.is_causal:
        raise BadInputError(f"{model.name} is an encoder; the decomposition is for causal attention")
    hs = heads_of(heads, model.weights)
    layers = sorted({h.layer for h in hs})
    trace = ensure_trace(model, inputs, _qk.hooks_for(layers, upstream=False), max_tokens=max_tokens)
    mask = trace.attention_mask.bool().cpu()
    B, n = mask.shape
    mask2 = (mask[:, :, None] & mask[:, None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
    rot = _qk.rotations(model, n)
    r = int(model.weights.W_Q.shape[-1])
    k = min(top_k, r)
    H = len(hs)
    scores = torch.full((B, H, n, n), float("nan"))
    pattern = torch.full((B, H, n, n), float("nan"))
    n_sparse = torch.zeros(B, H, n, n, dtype=torch.int32)
    comps = torch.zeros(B, H, n, n, k, dtype=torch.int32)
    vals = torch.zeros(B, H, n, n, k)
    sv = torch.zeros(H, n if rot is not None and per_offset else 1, r)
    err = 0.0
    col = 0
    fell_back: list[int] = []  # rotary layers whose position-free core is singular: per-offset SVDs there
    ti, tj = _qk.causal_pairs(n)
    back = _qk.RowMaps(rot.transpose(-1, -2).float(), tj) if rot is not None and not per_offset else None
    mpairs = mask2[:, None, ti, tj]  # [B, 1, P] real causal pairs
    with torch.no_grad():
        for la in progress_bar(layers, desc="decompose", unit="layer", enabled=progress):
            idx = [h.head for h in hs if h.layer == la]
            sl = slice(col, col + len(idx))
            ct = None if per_offset else _qk.content_terms(model, trace, la, idx, rot, back, (ti, tj))
            if ct is not None:  # one SVD per head: terms of the causal pairs only
                raw = ct.scores
                err = max(err, _qk.check_scores(ct.terms.sum(-1).double(), raw[..., ti, tj], mpairs, la, model))
                ci, cv, ns = _qk.sorted_terms(ct.terms, raw[..., ti, tj].float(), share, k)
                n_sparse[:, sl, ti, tj] = ns * mpairs
                comps[:, sl, ti, tj] = ci.int() * mpairs[..., None]
                vals[:, sl, ti, tj] = cv * mpairs[..., None]
                sv[sl] = ct.S.float()[:, None]
            else:  # per-offset SVDs (asked for, or a singular core)
                if not per_offset and rot is not None:
                    fell_back.append(la)
                st = _qk.layer_qk(model, trace, la, idx, rot, per_offset=True)
                raw = st.scores
                terms = _qk.pair_terms(st)
                err = max(err, _qk.check_scores(terms.sum(-1).double(), st.scores, mask2[:, None], la, model))
                ci, cv, ns = _qk.sparse_order(terms, st.scores.float(), share, k)
                m4 = mask2[:, None]
                n_sparse[:, sl] = ns * m4
                comps[:, sl] = ci.int() * m4[..., None]
                vals[:, sl] = cv * m4[..., None]
                sv[sl] = st.S.float()[:, :sv.shape[1]]
            m4 = mask2[:, None]
            scores[:, sl] = torch.where(m4, raw.float(), float("nan"))
            pat = trace[_qk.name(f"pattern.{la}")][:, idx].float().cpu()
            pattern[:, sl] = torch.where(m4, pat, float("nan"))
            col += len(idx)
    if fell_back:
        log.warning("layers %s have a singular position-free QK core: decomposed with per-offset SVDs "
                    "(per_offset=True in the result)", fell_back)
    return AttentionDecomposition(scores=scores, pattern=pattern, n_sparse=n_sparse, components=comps, values=vals,
                                  singular_values=sv, heads=tuple(str(h) for h in _ordered(hs, layers)),
                                  tokens=trace.tokens, share=float(share), max_error=err, rotary=rot is not None,
                                  per_offset=bool((per_offset or fell_back) and rot is not None),
                                  model_id=model.name)


def _ordered(hs: list[HeadRef], layers: list[int]) -> list[HeadRef]:
    return [h for la in layers for h in hs if h.layer == la]


__all__ = ["AttentionDecomposition", "attention_decomposition"]
