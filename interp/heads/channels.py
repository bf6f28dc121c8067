"""Communication channels between two heads ("Talking Heads", Merullo et al. 2024).

A sender head ``a`` writes ``x @ W_OV^a = Σ_i s_i (x·u_i) v_iᵀ``; a receiver ``b`` in a later layer
reads the residual stream through its query, key or value weights. :func:`channel` splits the
composition score of the pair over the sender's singular components and measures how much of each
output direction ``v_i`` falls in the receiver's top-``k`` input subspace; :func:`channel_activity`
checks on real text that the signal along those components is present where the receiver attends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import torch

from interp.errors import BadInputError
from interp.hooks import run_with_hooks
from interp.models.circuits import KINDS, factored_norm, factored_svd, ov_factors, qk_factors
from interp.plot import layer_curves
from interp.trace.results import labelled_frame, read_result, write_result

_TENSORS = ("sender_S", "contribution", "overlap")


def _head(x: Any, what: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    if not (isinstance(x, tuple | list) and len(x) == 2 and all(isinstance(i, int) for i in x)):
        raise BadInputError(f"{what}={x!r} must be a (layer, head) pair of ints")
    la, h = x
    if not (0 <= la < n_layers and 0 <= h < n_heads):
        raise BadInputError(f"{what}={x!r} is out of range: layers 0..{n_layers - 1}, heads 0..{n_heads - 1}")
    return la, h


def _pair(weights: Any, sender: Any, receiver: Any, kind: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Checked ``(layer, head)`` of a sender and a later receiver, and a known ``kind``."""
    L, H = weights.W_Q.shape[:2]
    la, ha = _head(sender, "sender", L, H)
    lb, hb = _head(receiver, "receiver", L, H)
    if lb <= la:
        raise BadInputError(f"receiver layer {lb} must come after sender layer {la}")
    if kind not in KINDS:
        raise BadInputError(f"kind={kind!r}; use one of {KINDS}")
    return (la, ha), (lb, hb)


def receiver_factors(weights: Any, layer: int, head: int, kind: str, fold_norm: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin factors ``(A, B)`` of what the receiver reads: QK (``"q"``), QKᵀ (``"k"``) or OV (``"v"``)."""
    if kind == "q":
        return qk_factors(weights, layer, head, fold_norm=fold_norm)
    if kind == "k":
        a, b = qk_factors(weights, layer, head, fold_norm=fold_norm)
        return b.T, a.T
    if kind == "v":
        return ov_factors(weights, layer, head, fold_norm=fold_norm)
    raise BadInputError(f"kind={kind!r}; use one of {KINDS}")


@dataclass(frozen=True)
class ChannelResult:
    """How a receiver head reads a sender head's output, per singular component of the sender's OV.

    Attributes:
        sender_S: ``[rank]`` the sender's OV singular values.
        contribution: ``[rank]`` ``s_i ‖v_iᵀ Y‖_F / (‖W_OV‖_F ‖Y‖_F)`` with ``Y`` the receiver's
            reading circuit; the squares sum to the square of the pair's composition score.
        overlap: ``[rank]`` norm of the projection of ``v_i`` on the receiver's top-``top_k`` input
            singular directions (1: inside the subspace, 0: orthogonal).
        sender: ``(layer, head)``; ``receiver``: ``(layer, head)``; ``kind``: ``"q"``, ``"k"`` or ``"v"``.
        top_k: size of the receiver subspace used for ``overlap``.
        score: the pair's composition score.

    Example:
        >>> import interp
        >>> from interp.heads import channel
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> ch = channel(m, sender=(2, 1), receiver=(5, 3), kind="k")  # doctest: +SKIP
        >>> ch.components(3)  # doctest: +SKIP
        [12, 0, 7]
    """

    sender_S: torch.Tensor
    contribution: torch.Tensor
    overlap: torch.Tensor
    sender: tuple[int, int]
    receiver: tuple[int, int]
    kind: str
    top_k: int
    score: float
    fold_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", tuple(self.sender))
        object.__setattr__(self, "receiver", tuple(self.receiver))
        if not (self.sender_S.shape == self.contribution.shape == self.overlap.shape) or self.sender_S.dim() != 1:
            raise BadInputError("sender_S, contribution and overlap must all be [rank]")
        if self.kind not in KINDS:
            raise BadInputError(f"kind={self.kind!r}; use one of {KINDS}")

    def components(self, n: int = 5) -> list[int]:
        """Indices of the ``n`` sender components the receiver reads most (by ``contribution``)."""
        return self.contribution.topk(min(n, self.contribution.numel())).indices.tolist()

    def to_frame(self) -> Any:
        """Columns ``component, singular_value, contribution, overlap``."""
        df = labelled_frame(self.sender_S, ["component"], name="singular_value")
        df["contribution"] = self.contribution.tolist()
        df["overlap"] = self.overlap.tolist()
        return df

    def plot(self) -> Any:
        """Contribution and subspace overlap per sender component."""
        (la, ha), (lb, hb) = self.sender, self.receiver
        return layer_curves({"contribution": self.contribution, "overlap": self.overlap}, x_title="sender component",
                            y_title="value", title=f"L{la}H{ha} → L{lb}H{hb} ({self.kind.upper()}), "
                                                   f"score {self.score:.3f}")

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Write to a directory (safetensors + JSON)."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _TENSORS}
        meta["channel_kind"] = meta.pop("kind")  # "kind" is the result type in write_result
        return write_result(path, "ChannelResult", {n: getattr(self, n).contiguous() for n in _TENSORS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChannelResult:
        """Read what :meth:`save` wrote."""
        tensors, meta = read_result(path, "ChannelResult")
        meta["kind"] = meta.pop("channel_kind")
        return cls(**tensors, **meta)


def channel(model: Any, sender: tuple[int, int], receiver: tuple[int, int], kind: str = "k", *,
            top_k: int = 8, fold_norm: bool = True) -> ChannelResult:
    """Split the sender → receiver composition over the sender's OV singular components.

    Args:
        model: a loaded model (or anything with ``.weights``).
        sender: ``(layer, head)`` of the writing head.
        receiver: ``(layer, head)`` of the reading head, in a later layer.
        kind: which input of the receiver: ``"q"``, ``"k"`` or ``"v"``.
        top_k: receiver input subspace size for ``overlap``.
        fold_norm: fold attention-input norm weights into reading weights.

    Returns:
        :class:`ChannelResult`.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> channel(m, (0, 0), (4, 2), "q").contribution.shape  # doctest: +SKIP
        torch.Size([64])
    """
    w = model.weights
    d_head = w.W_Q.shape[-1]
    (la, ha), (lb, hb) = _pair(w, sender, receiver, kind)
    if not 1 <= top_k <= d_head:
        raise BadInputError(f"top_k={top_k} must be in 1..{d_head}")
    with torch.no_grad():
        oa, ob = (t.double() for t in ov_factors(w, la, ha, fold_norm=fold_norm))
        ya, yb = (t.double() for t in receiver_factors(w, lb, hb, kind, fold_norm=fold_norm))
        _, S, V = factored_svd(oa, ob)
        read = (V.T @ ya) @ yb  # [rank, d_model]: v_iᵀ Y
        contribution = S * read.norm(dim=-1) / factored_norm(oa, ob) / factored_norm(ya, yb)
        Ub = factored_svd(ya, yb)[0][:, :top_k]
        overlap = (V.T @ Ub).norm(dim=-1)
    return ChannelResult(sender_S=S.float(), contribution=contribution.float(), overlap=overlap.float(),
                         sender=(la, ha), receiver=(lb, hb), kind=kind, top_k=top_k,
                         score=float(contribution.pow(2).sum().sqrt()), fold_norm=fold_norm)


@dataclass(frozen=True)
class ChannelActivity:
    """A trace-level check of a channel: the sender's output along chosen components, where the receiver looks.

    Attributes:
        coef: ``[batch, pos, comp]`` the sender head's output ``z W_O`` projected on its OV output directions.
        attended: ``[batch, pos, comp]`` per receiver query position: for ``"k"``/``"v"`` the
            attention-weighted mean of ``|coef|`` over key positions; for ``"q"``, ``|coef|`` at the query.
        uniform: ``[batch, pos, comp]`` the same with uniform attention over the causal prefix.
        ratio: ``[comp]`` ``Σ attended / Σ uniform`` over real positions (> 1: the receiver looks where the
            signal is).
        components: the sender components used; ``tokens``: token strings per sequence.
    """

    coef: torch.Tensor
    attended: torch.Tensor
    uniform: torch.Tensor
    ratio: torch.Tensor
    components: tuple[int, ...]
    tokens: tuple[tuple[str, ...], ...]


def channel_activity(model: Any, inputs: Any, sender: tuple[int, int], receiver: tuple[int, int],
                     components: list[int] | tuple[int, ...], kind: str = "k", *,
                     fold_norm: bool = True) -> ChannelActivity:
    """Project the sender's output on its OV components over real text, weighted by the receiver's attention.

    Args:
        model: a loaded model (``interp.load_model``).
        inputs: text, texts, or token ids ``[batch, pos]``.
        sender: ``(layer, head)``; receiver: ``(layer, head)`` in a later layer.
        components: sender OV singular components (e.g. ``channel(...).components(3)``).
        kind: ``"q"`` reads the signal at the query position, ``"k"``/``"v"`` at attended keys.
        fold_norm: which SVD the components refer to (as in :func:`channel`).

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> act = channel_activity(m, "a b c a b c", (1, 0), (3, 2), [0, 1])  # doctest: +SKIP
        >>> act.ratio.shape  # doctest: +SKIP
        torch.Size([2])
    """
    w = model.weights
    d_head = w.W_Q.shape[-1]
    (la, ha), (lb, hb) = _pair(w, sender, receiver, kind)
    comps = tuple(int(c) for c in components)
    if not comps or any(not 0 <= c < d_head for c in comps):
        raise BadInputError(f"components={list(components)} must be a non-empty list of ints in 0..{d_head - 1}")
    ids, mask = model.encode(inputs) if hasattr(model, "encode") else (inputs, torch.ones_like(inputs))
    z_name, p_name = f"blocks.{la}.attn.hook_z", f"blocks.{lb}.attn.hook_pattern"
    with torch.no_grad():
        out = run_with_hooks(model, ids, mask, capture=[z_name, p_name])
        _, _, V = factored_svd(*ov_factors(w, la, ha, fold_norm=fold_norm))
        z = out.activations[z_name][:, :, ha].float()  # [batch, pos, d_head]
        coef = z @ w.W_O[la, ha].float() @ V[:, list(comps)].float()  # [batch, pos, comp]
        pat = out.activations[p_name][:, hb].float()  # [batch, q, k]
        m = mask.to(coef.device).float()
        mag = coef.abs() * m[..., None]
        causal = torch.tril(torch.ones(pat.shape[-2:], device=pat.device)) * m[:, None, :]
        uni = causal / causal.sum(-1, keepdim=True).clamp_min(1)
        if kind == "q":
            attended = mag
            uniform = uni @ mag
        else:
            attended = pat @ mag
            uniform = uni @ mag
        attended, uniform = attended * m[..., None], uniform * m[..., None]
        ratio = attended.sum((0, 1)) / uniform.sum((0, 1)).clamp_min(1e-12)
    toks = tuple(tuple(r) for r in model.to_str_tokens(ids.cpu())) if hasattr(model, "to_str_tokens") else ()
    return ChannelActivity(coef=coef.cpu(), attended=attended.cpu(), uniform=uniform.cpu(), ratio=ratio.cpu(),
                           components=comps, tokens=toks)
