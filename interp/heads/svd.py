"""``head_svd``: singular value decomposition of heads' OV or QK circuits, read in vocabulary space.

Following Millidge & Black (2022): each head's ``d_model x d_model`` circuit has rank at most ``d_head``;
its singular directions, projected through the embedding (read side) or the folded unembedding
(write side), often name what the head moves. The SVD is computed from the thin factors
(:func:`interp.models.circuits.factored_svd`), never from the full product.

Example:
    >>> import interp
    >>> from interp.heads import head_svd
    >>> m = interp.load_model("smollm2-135m")
    >>> svd = head_svd(m, heads="L5H1,L17H8", top_components=1, n_tokens=3, progress=False)
    >>> svd.S.shape, [str(h) for h in svd.heads]  # the [layer, head] grid; heads not analysed are NaN
    (torch.Size([30, 9, 64]), ['L5H1', 'L17H8'])
    >>> len(svd.tokens("L17H8", component=0, side="out"))
    3
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.heads._common import fit_width, grid, heads_of
from interp.models import Model
from interp.models.circuits import effective_rank, factored_svd, ov_factors, qk_factors
from interp.plot import bar_top_tokens, heatmap, layer_curves
from interp.progress import progress as progress_bar
from interp.sites import HeadRef, HeadSpec
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

Circuit = Literal["ov", "qk"]
CIRCUITS = ("ov", "qk")
Side = Literal["in", "out"]
End = Literal["top", "bottom"]


@dataclass(frozen=True, repr=False)
class HeadSVD(Result):
    """Singular values and vectors of one circuit (OV or QK) of every head, with vocabulary readings.

    The circuit of a head is ``U diag(S) Vᵀ`` in the ``x @ W`` convention: ``U`` are read directions (OV:
    what the head reads at the attended position; QK: the query side), ``V`` are write directions for OV and
    key-side read directions for QK. A component's sign is arbitrary (``u`` and ``v`` flip together), so
    token tables list both ends. Tensors lie on the model's ``[layer, head]`` grid; heads that were not
    analysed (``head_svd(heads=...)``) hold ``NaN`` (ids ``-1``); :attr:`heads` lists the analysed ones.

    Views (``res.plot(view, ...)``):

    - ``"rank"`` (default): effective rank per head, a layer x head heatmap;
    - ``"spectrum"``: the singular values of one head (``head=``, default the first analysed) and of the
      other analysed heads of its layer;
    - ``"tokens"``: the top and bottom tokens of one component (``head=``, ``component=0``, ``side="out"``).

    Attributes:
        S: ``[layer, head, component]`` singular values, descending (``component`` runs over ``d_head``).
        U: ``[layer, head, d_model, component]`` input singular vectors.
        V: ``[layer, head, d_model, component]`` output (OV) / key-side (QK) singular vectors.
        eff_rank: ``[layer, head]`` entropy effective rank of ``S``.
        in_ids: ``[layer, head, component, end, n_tokens]`` for the leading ``top_components`` components: token
            ids whose embeddings score highest (``end`` 0) and lowest (``end`` 1) on ``U`` (``W_E @ u``).
        in_vals: matching scores.
        out_ids: the same for ``V`` (OV: through the folded unembedding ``v @ W_U``; QK: ``W_E @ v``).
        out_vals: matching scores.
        circuit: ``"ov"`` or ``"qk"``.
        id_to_str: token string of every id in the tables.
        model_id: the model; ``fold_norm``: whether ``ln1_w`` was folded into the reading weights.

    Example:
        >>> import interp
        >>> from interp.heads import head_svd
        >>> m = interp.load_model("smollm2-135m")
        >>> res = head_svd(m, heads="L5H0,L5H4", top_components=1, n_tokens=5, progress=False)
        >>> res
        HeadSVD(S[layer=30, head=9, component=64], eff_rank[layer=30, head=9], circuit='ov', mean_eff_rank=..., lowest_rank=...)
        >>> res.spectrum("L5H4").shape, res.plot("tokens", head="L5H4").layout.title.text
        (torch.Size([64]), 'L5H4 OV component 0 (out)')
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"S": ("layer", "head", "component"), "eff_rank": ("layer", "head")}
    VIEWS: ClassVar[tuple[str, ...]] = ("rank", "spectrum", "tokens")

    S: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    eff_rank: torch.Tensor
    in_ids: torch.Tensor
    in_vals: torch.Tensor
    out_ids: torch.Tensor
    out_vals: torch.Tensor
    circuit: str
    id_to_str: dict[int, str]
    model_id: str = ""
    fold_norm: bool = True

    def __post_init__(self) -> None:
        if self.circuit not in CIRCUITS:
            raise bad_value("circuit", self.circuit, "'ov' or 'qk'")
        if self.S.dim() != 3:
            raise BadInputError(f"S must be [layer, head, component]; got {tuple(self.S.shape)}")
        L, H, r = self.S.shape
        if self.U.dim() != 4 or self.U.shape[:2] != (L, H) or self.U.shape[-1] != r or self.V.shape != self.U.shape:
            raise BadInputError(f"U {tuple(self.U.shape)} / V {tuple(self.V.shape)} do not match S {tuple(self.S.shape)}")
        if self.eff_rank.shape != (L, H):
            raise BadInputError(f"eff_rank has shape {tuple(self.eff_rank.shape)}, expected {(L, H)}")
        for a, b in (("in_ids", "in_vals"), ("out_ids", "out_vals")):
            ids, vals = getattr(self, a), getattr(self, b)
            if ids.shape != vals.shape or ids.dim() != 5 or ids.shape[:2] != (L, H) or ids.shape[3] != 2:
                raise BadInputError(f"{a}/{b} must both be [layer={L}, head={H}, component, 2, n_tokens]; got "
                                    f"{tuple(ids.shape)} and {tuple(vals.shape)}")

    # -- access ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.S.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.S.shape[1])

    @property
    def heads(self) -> list[HeadRef]:
        """The analysed heads, in layer order (every head unless ``head_svd`` was given ``heads=``)."""
        done = ~self.S.isnan().all(-1)
        return [HeadRef(int(la), int(h)) for la, h in done.nonzero().tolist()]

    def _head(self, head: HeadSpec) -> HeadRef:
        try:
            h = HeadRef.parse(head).check(self.n_layers, self.n_heads)
        except BadInputError as e:
            raise BadInputError(f"head={head!r}: {e}") from None
        if bool(self.S[h.layer, h.head].isnan().all()):
            raise BadInputError(f"head {h} was not analysed; pass it in head_svd(heads=...)")
        return h

    def spectrum(self, head: HeadSpec) -> torch.Tensor:
        """``[component]`` singular values of one head (``"L5H1"``, ``(5, 1)``)."""
        h = self._head(head)
        return self.S[h.layer, h.head]

    def tokens(self, head: HeadSpec, component: int = 0, side: Side = "out", end: End = "top"
               ) -> list[tuple[str, float]]:
        """``(token, score)`` pairs at one end of one component's vocabulary reading.

        Args:
            head: the head, ``"L5H1"`` or ``(5, 1)``.
            component: which singular component (0 = largest); tables exist for the leading ``top_components``.
            side: ``"in"`` (what it reads) or ``"out"`` (what it writes, for OV; the key side for QK).
            end: ``"top"`` or ``"bottom"`` (a component's sign is arbitrary: read both).

        Raises:
            BadInputError: a head not analysed, a component without a table, a bad ``side`` or ``end``.
        """
        h = self._head(head)
        if side not in ("in", "out"):
            raise bad_value("side", side, "'in' or 'out'")
        if end not in ("top", "bottom"):
            raise bad_value("end", end, "'top' or 'bottom'")
        ids, vals = (self.in_ids, self.in_vals) if side == "in" else (self.out_ids, self.out_vals)
        n = ids.shape[2]
        if isinstance(component, bool) or not isinstance(component, int) or not 0 <= component < n:
            valid = f"0..{n - 1}" if n else "none (head_svd ran with top_components=0)"
            raise bad_value("component", component, f"{valid}; raise top_components= in head_svd for more")
        e = 0 if end == "top" else 1
        return [(self.id_to_str[int(t)], float(v))
                for t, v in zip(ids[h.layer, h.head, component, e].tolist(),
                                vals[h.layer, h.head, component, e].tolist(), strict=True)]

    # -- the result surface -----------------------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        if bool(self.eff_rank.isnan().all()):
            return {"circuit": self.circuit}
        r = torch.nan_to_num(self.eff_rank.float(), nan=float("inf"))
        la, h = divmod(int(r.argmin()), self.n_heads)
        return {"circuit": self.circuit, "mean_eff_rank": float(self.eff_rank.float().nanmean()),
                "lowest_rank": f"{HeadRef(la, h)} ({float(r[la, h]):.1f})"}

    def to_frame(self) -> pd.DataFrame:
        """Long table of singular values of the analysed heads: columns ``layer, head, component, singular_value``."""
        df = labelled_frame(self.S, ["layer", "head", "component"], name="singular_value")
        return df[df["singular_value"].notna()].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """The labelled arrays ``S`` and ``eff_rank`` (``null`` for heads not analysed) and, under
        ``attributes.tokens``, the token tables: ``{"L5H1": {"in"|"out": [[top, bottom] per component]}}``."""
        out = super().to_dict()
        out["attributes"].pop("id_to_str", None)  # the token strings are in the tables
        sides: tuple[Side, ...] = ("in", "out")
        ends: tuple[End, ...] = ("top", "bottom")
        out["attributes"]["tokens"] = {
            str(h): {side: [[self.tokens(h, c, side, e) for e in ends] for c in range(self.in_ids.shape[2])]
                     for side in sides} for h in self.heads}
        return out

    def _view_rank(self) -> Figure:
        layers = sorted({h.layer for h in self.heads}) or list(range(self.n_layers))
        fig = heatmap(self.eff_rank[layers].T, x_labels=[str(la) for la in layers],
                      y_labels=[f"H{h}" for h in range(self.n_heads)], x_title="layer", y_title="head",
                      colorbar_title="effective rank",
                      title=f"{self.circuit.upper()} effective rank per head (of {self.S.shape[-1]})")
        return fit_width(fig)

    def _first(self, head: HeadSpec | None) -> HeadRef:
        if head is not None:
            return self._head(head)
        heads = self.heads
        if not heads:
            raise BadInputError("this result holds no analysed head")
        return heads[0]

    def _view_spectrum(self, head: HeadSpec | None = None) -> Figure:
        h = self._first(head)
        series = {str(p): self.S[p.layer, p.head] for p in self.heads if p.layer == h.layer}
        return layer_curves(series, x_title="component", y_title="singular value",
                            title=f"{self.circuit.upper()} singular values of {h} and the other heads of layer {h.layer}")

    def _view_tokens(self, head: HeadSpec | None = None, component: int = 0, side: Side = "out") -> Figure:
        h = self._first(head)
        top = self.tokens(h, component, side, "top")
        bottom = self.tokens(h, component, side, "bottom")
        pairs = top + bottom[::-1]
        return bar_top_tokens([t for t, _ in pairs], [v for _, v in pairs], x_title="score",
                              title=f"{h} {self.circuit.upper()} component {component} ({side})")


def _vocab_ends(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores [..., vocab]`` → ids and values ``[..., 2, n]`` of the top and bottom ``n``."""
    top = scores.topk(n, dim=-1)
    bot = scores.topk(n, dim=-1, largest=False)
    return torch.stack([top.indices, bot.indices], -2), torch.stack([top.values, bot.values], -2)


def head_svd(model: Model, *, circuit: Circuit = "ov", heads: HeadSpec | Iterable[HeadSpec] | None = None,
             fold_norm: bool = True, top_components: int = 4, n_tokens: int = 10,
             progress: bool | None = None) -> HeadSVD:
    """SVD of heads' OV or QK circuits and the top/bottom tokens of their leading components.

    Args:
        model: a loaded model (``interp.load_model``); its tokenizer names the tokens.
        circuit: ``"ov"`` (``W_V W_O``) or ``"qk"`` (``W_Q W_Kᵀ``).
        heads: which heads (``"L5H1,L6H9"``, ``[(5, 1), "L6H9"]``); ``None``: every head, in layer order.
        fold_norm: fold the attention-input norm weight into the reading weights (see
            :mod:`interp.models.circuits`).
        top_components: how many leading components get vocabulary tables (0 for none).
        n_tokens: tokens at each end of a table.
        progress: a progress bar over layers (``None``: the library switch, see :mod:`interp.progress`).

    Returns:
        :class:`HeadSVD`. Output directions of OV are read through the folded unembedding
        (``ln_final_w * W_U``); all input directions through ``W_E``.

    Raises:
        BadInputError: a bad circuit, head, ``top_components`` or ``n_tokens``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> res = head_svd(m, circuit="qk", heads=[(0, 0), "L29H8"], top_components=1, progress=False)
        >>> float(res.eff_rank[0, 0]) > 1, float(res.eff_rank[29, 8]) > 1, bool(res.eff_rank[5, 5].isnan())
        (True, True, True)
    """
    if circuit not in CIRCUITS:
        raise bad_value("circuit", circuit, "'ov' or 'qk'")
    w = model.weights
    chosen = heads_of(heads, w)
    d_head = w.W_Q.shape[-1]
    for name, v, lo, hi in (("top_components", top_components, 0, d_head), ("n_tokens", n_tokens, 1, None)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise bad_value(name, v, f"an int in {lo}..{hi}" if hi is not None else f"an int >= {lo}")
    factors = ov_factors if circuit == "ov" else qk_factors
    W_E = w.W_E.detach().float()
    out_basis = W_E.T
    if circuit == "ov":
        if w.W_U is None:
            raise BadInputError("this model has no unembedding; OV output directions cannot be read as tokens "
                                "(use circuit='qk')")
        out_basis = w.folded_unembed()[0].detach().float() if w.ln_final_w is not None else w.W_U.detach().float()
    n_tokens = min(n_tokens, W_E.shape[0])
    n_layers, n_heads = grid(w)
    d_model, k = W_E.shape[1], top_components
    nan = float("nan")
    S_all = torch.full((n_layers, n_heads, d_head), nan)
    U_all, V_all = torch.full((n_layers, n_heads, d_model, d_head), nan), torch.full((n_layers, n_heads, d_model, d_head), nan)
    ids_shape = (n_layers, n_heads, k, 2, n_tokens)
    in_ids, out_ids = torch.full(ids_shape, -1, dtype=torch.long), torch.full(ids_shape, -1, dtype=torch.long)
    in_vals, out_vals = torch.full(ids_shape, nan), torch.full(ids_shape, nan)
    by_layer: dict[int, list[int]] = {}
    for h in chosen:
        by_layer.setdefault(h.layer, []).append(h.head)
    with torch.no_grad():
        for layer in progress_bar(sorted(by_layer), enabled=progress, desc=f"{circuit.upper()} SVD", leave=False):
            idx = torch.tensor(by_layer[layer])
            A, B = factors(w, layer, fold_norm=fold_norm)
            U, S, V = factored_svd(A[idx].float(), B[idx].float())
            U_all[layer, idx], S_all[layer, idx], V_all[layer, idx] = U, S, V
            i_ids, i_vals = _vocab_ends(torch.einsum("hdk,vd->hkv", U[..., :k], W_E), n_tokens)
            o_ids, o_vals = _vocab_ends(torch.einsum("hdk,dv->hkv", V[..., :k], out_basis), n_tokens)
            in_ids[layer, idx], in_vals[layer, idx], out_ids[layer, idx], out_vals[layer, idx] = i_ids, i_vals, o_ids, o_vals
    uniq = torch.cat([in_ids.flatten(), out_ids.flatten()]).unique()
    uniq_ids = uniq[uniq >= 0].tolist()
    tok = model.tokenizer
    strs = tok.batch_decode([[i] for i in uniq_ids]) if tok is not None and uniq_ids else [str(i) for i in uniq_ids]
    return HeadSVD(S=S_all, U=U_all, V=V_all, eff_rank=effective_rank(S_all), in_ids=in_ids, in_vals=in_vals,
                   out_ids=out_ids, out_vals=out_vals, circuit=circuit, id_to_str=dict(zip(uniq_ids, strs, strict=True)),
                   model_id=model.name, fold_norm=fold_norm)


__all__ = ["HeadSVD", "head_svd"]
