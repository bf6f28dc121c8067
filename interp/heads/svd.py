"""``head_svd``: singular value decomposition of every head's OV or QK circuit, read in vocabulary space.

Following Millidge & Black (2022): each head's ``d_model x d_model`` circuit has rank at most ``d_head``;
its singular directions, projected through the embedding (read side) or the folded unembedding
(write side), often name what the head moves. The SVD is computed from the thin factors
(:func:`interp.models.circuits.factored_svd`), never from the full product.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.models.circuits import effective_rank, factored_svd, ov_factors, qk_factors
from interp.plot import bar_top_tokens, heatmap, layer_curves
from interp.trace.results import labelled_frame, read_result, write_result

Circuit = Literal["ov", "qk"]
_TENSORS = ("S", "U", "V", "eff_rank", "in_ids", "in_vals", "out_ids", "out_vals")


@dataclass(frozen=True)
class HeadSVD:
    """Singular values and vectors of one circuit (OV or QK) of every head, with vocabulary readings.

    The circuit of head ``h`` in layer ``l`` is ``U diag(S) Vᵀ`` in the ``x @ W`` convention:
    ``U`` are read directions (OV: what the head reads at the attended position; QK: the query side),
    ``V`` are write directions for OV and key-side read directions for QK. A component's sign is
    arbitrary (``u`` and ``v`` flip together), so token tables list both ends.

    Attributes:
        S: ``[layer, head, rank]`` singular values, descending (``rank = d_head``).
        U: ``[layer, head, d_model, rank]`` input singular vectors.
        V: ``[layer, head, d_model, rank]`` output (OV) / key-side (QK) singular vectors.
        eff_rank: ``[layer, head]`` entropy effective rank of ``S``.
        in_ids: ``[layer, head, comp, 2, n_tokens]`` token ids whose embeddings score highest
            (``[..., 0, :]``) and lowest (``[..., 1, :]``) on ``U[..., comp]`` (``W_E @ u``).
        in_vals: matching scores.
        out_ids: same for ``V`` (OV: through the folded unembedding ``v @ W_U``; QK: ``W_E @ v``).
        out_vals: matching scores.
        circuit: ``"ov"`` or ``"qk"``.
        id_to_str: token string of every id in the tables.
        model_id: the model; ``fold_norm``: whether ``ln1_w`` was folded into the reading weights.

    Example:
        >>> import interp
        >>> from interp.heads import head_svd
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = head_svd(m, "ov")  # doctest: +SKIP
        >>> res.S.shape, res.tokens(0, 0, component=0, side="out")[:1]  # doctest: +SKIP
        (torch.Size([30, 9, 64]), [...])
    """

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
        if self.circuit not in ("ov", "qk"):
            raise BadInputError(f"circuit={self.circuit!r}; use 'ov' or 'qk'")
        L, H, r = self.S.shape
        if self.U.shape[:2] != (L, H) or self.U.shape[-1] != r or self.V.shape != self.U.shape:
            raise BadInputError(f"U {tuple(self.U.shape)} / V {tuple(self.V.shape)} do not match S {tuple(self.S.shape)}")
        if self.eff_rank.shape != (L, H):
            raise BadInputError(f"eff_rank has shape {tuple(self.eff_rank.shape)}, expected {(L, H)}")
        for a, b in (("in_ids", "in_vals"), ("out_ids", "out_vals")):
            if getattr(self, a).shape != getattr(self, b).shape or getattr(self, a).shape[:2] != (L, H):
                raise BadInputError(f"{a}/{b} must both be [layer={L}, head={H}, comp, 2, n_tokens]")

    @property
    def n_layers(self) -> int:
        return self.S.shape[0]

    @property
    def n_heads(self) -> int:
        return self.S.shape[1]

    def _check(self, layer: int, head: int) -> None:
        if not -self.n_layers <= layer < self.n_layers:
            raise BadInputError(f"layer={layer} is out of range 0..{self.n_layers - 1}")
        if not -self.n_heads <= head < self.n_heads:
            raise BadInputError(f"head={head} is out of range 0..{self.n_heads - 1}")

    def tokens(self, layer: int, head: int, component: int = 0, side: Literal["in", "out"] = "out",
               end: Literal["top", "bottom"] = "top") -> list[tuple[str, float]]:
        """``(token, score)`` pairs at one end of one component's vocabulary reading.

        Raises:
            ValueError: for a component beyond those with token tables, or a bad ``side``/``end``.
        """
        self._check(layer, head)
        if side not in ("in", "out") or end not in ("top", "bottom"):
            raise BadInputError(f"side={side!r} must be 'in' or 'out' and end={end!r} 'top' or 'bottom'")
        ids, vals = (self.in_ids, self.in_vals) if side == "in" else (self.out_ids, self.out_vals)
        if not 0 <= component < ids.shape[2]:
            raise BadInputError(f"component={component}: token tables exist for components 0..{ids.shape[2] - 1} "
                             f"(raise top_components= in head_svd)")
        e = 0 if end == "top" else 1
        return [(self.id_to_str[int(i)], float(v)) for i, v in zip(ids[layer, head, component, e].tolist(),
                                                                      vals[layer, head, component, e].tolist(),
                                                                      strict=True)]

    def to_frame(self) -> Any:
        """Long table of singular values: columns ``layer, head, component, singular_value``."""
        return labelled_frame(self.S, ["layer", "head", "component"], name="singular_value")

    def plot(self, kind: Literal["spectrum", "rank", "tokens"] = "spectrum", layer: int = 0, head: int = 0,
             component: int = 0, side: Literal["in", "out"] = "out") -> Any:
        """A figure: ``"spectrum"`` (one head's singular values, with the layer's other heads),
        ``"rank"`` (effective rank, layer x head heatmap) or ``"tokens"`` (one component's top and
        bottom tokens)."""
        if kind == "spectrum":
            self._check(layer, head)
            series = {f"L{layer}H{h}": self.S[layer, h] for h in range(self.n_heads)}
            return layer_curves(series, x_title="component", y_title="singular value",
                                title=f"{self.circuit.upper()} singular values, layer {layer} (head {head} and peers)")
        if kind == "rank":
            return heatmap(self.eff_rank.T, x_labels=[str(i) for i in range(self.n_layers)],
                           y_labels=[f"H{h}" for h in range(self.n_heads)], x_title="layer", y_title="head",
                           colorbar_title="effective rank", title=f"{self.circuit.upper()} effective rank per head")
        if kind == "tokens":
            top = self.tokens(layer, head, component, side, "top")
            bottom = self.tokens(layer, head, component, side, "bottom")
            pairs = top + bottom[::-1]
            return bar_top_tokens([t for t, _ in pairs], [v for _, v in pairs], x_title="score",
                                  title=f"L{layer}H{head} {self.circuit.upper()} component {component} ({side})")
        raise BadInputError(f"kind={kind!r}; use 'spectrum', 'rank' or 'tokens'")

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Write to a directory (safetensors + JSON)."""
        tensors = {n: getattr(self, n).contiguous() for n in _TENSORS}
        meta = {"circuit": self.circuit, "model_id": self.model_id, "fold_norm": self.fold_norm,
                "id_to_str": {str(k): v for k, v in self.id_to_str.items()}}
        return write_result(path, "HeadSVD", tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HeadSVD:
        """Read what :meth:`save` wrote."""
        tensors, meta = read_result(path, "HeadSVD")
        meta["id_to_str"] = {int(k): v for k, v in meta["id_to_str"].items()}
        names = {f.name for f in fields(cls)}
        return cls(**tensors, **{k: v for k, v in meta.items() if k in names})


def _vocab_ends(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores [..., vocab]`` → ids and values ``[..., 2, n]`` of the top and bottom ``n``."""
    top = scores.topk(n, dim=-1)
    bot = scores.topk(n, dim=-1, largest=False)
    return torch.stack([top.indices, bot.indices], -2), torch.stack([top.values, bot.values], -2)


def head_svd(model: Any, circuit: Circuit = "ov", *, fold_norm: bool = True, top_components: int = 4,
             n_tokens: int = 10, progress: bool = True) -> HeadSVD:
    """SVD of every head's OV or QK circuit and the top/bottom tokens of its leading components.

    Args:
        model: a loaded model (``interp.load_model``); its tokenizer names the tokens.
        circuit: ``"ov"`` (``W_V W_O``) or ``"qk"`` (``W_Q W_Kᵀ``).
        fold_norm: fold the attention-input norm weight into the reading weights (see
            :mod:`interp.models.circuits`).
        top_components: how many leading components get vocabulary tables (0 for none).
        n_tokens: tokens at each end of a table.
        progress: show a tqdm bar over layers.

    Returns:
        :class:`HeadSVD`. Output directions of OV are read through the folded unembedding
        (``ln_final_w * W_U``); all input directions through ``W_E``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = head_svd(m, "qk", top_components=1)  # doctest: +SKIP
        >>> float(res.eff_rank.mean()) > 1  # doctest: +SKIP
        True
    """
    if circuit not in ("ov", "qk"):
        raise BadInputError(f"circuit={circuit!r}; use 'ov' or 'qk'")
    w = model.weights
    d_head = w.W_Q.shape[-1]
    if not 0 <= top_components <= d_head or n_tokens < 1:
        raise BadInputError(f"top_components={top_components} must be in 0..{d_head} and n_tokens={n_tokens} >= 1")
    A, B = (ov_factors if circuit == "ov" else qk_factors)(w, fold_norm=fold_norm)
    L = A.shape[0]
    W_E = w.W_E.detach().float()
    out_basis = W_E.T
    if circuit == "ov":
        if w.W_U is None:
            raise BadInputError("this model has no unembedding; OV output directions cannot be read as tokens")
        out_basis = w.folded_unembed()[0].detach().float() if w.ln_final_w is not None else w.W_U.detach().float()
    Us, Ss, Vs, ins, outs = [], [], [], [], []
    with torch.no_grad():
        for layer in tqdm(range(L), desc=f"{circuit.upper()} SVD", disable=not progress, leave=False):
            U, S, V = factored_svd(A[layer].float(), B[layer].float())
            Us.append(U)
            Ss.append(S)
            Vs.append(V)
            k = top_components
            ins.append(_vocab_ends(torch.einsum("hdk,vd->hkv", U[..., :k], W_E), n_tokens))
            outs.append(_vocab_ends(torch.einsum("hdk,dv->hkv", V[..., :k], out_basis), n_tokens))
    S_all = torch.stack(Ss)
    in_ids = torch.stack([i for i, _ in ins])
    out_ids = torch.stack([i for i, _ in outs])
    uniq = torch.cat([in_ids.flatten(), out_ids.flatten()]).unique().tolist()
    tok = getattr(model, "tokenizer", None)
    strs = tok.batch_decode([[i] for i in uniq]) if tok is not None and uniq else [str(i) for i in uniq]
    return HeadSVD(S=S_all, U=torch.stack(Us), V=torch.stack(Vs), eff_rank=effective_rank(S_all),
                   in_ids=in_ids, in_vals=torch.stack([v for _, v in ins]), out_ids=out_ids,
                   out_vals=torch.stack([v for _, v in outs]), circuit=circuit,
                   id_to_str=dict(zip(uniq, strs, strict=True)), model_id=getattr(model, "name", ""),
                   fold_norm=fold_norm)
