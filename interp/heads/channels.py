"""Communication channels between two heads ("Talking Heads", Merullo et al. 2024).

A sender head ``a`` writes ``x @ W_OV^a = Σ_i s_i (x·u_i) v_iᵀ``; a receiver ``b`` in a later layer
reads the residual stream through its query, key or value weights (the composition *kind*). :func:`channel`
splits the composition score of the pair over the sender's singular components and measures how much of
each output direction ``v_i`` falls in the receiver's top-``k`` input subspace; :func:`channel_activity`
checks on real text that the signal along those components is present where the receiver attends.

Example:
    >>> import interp
    >>> from interp.heads import channel, channel_activity
    >>> m = interp.load_model("smollm2-135m")
    >>> ch = channel(m, sender="L17H8", receiver="L18H7", kind="k")
    >>> act = channel_activity(m, "The cat sat on the mat. The cat", sender="L17H8", receiver="L18H7",
    ...                        components=ch.components(2))
    >>> act.ratio.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.heads._common import check_kind, one_head
from interp.models import Inputs, Model
from interp.models.adapters import WeightViews
from interp.models.circuits import Kind, factored_norm, factored_svd, ov_factors, receiver_factors
from interp.plot import bar_top_tokens, layer_curves
from interp.sites import HeadRef, HeadSpec, Positions, normalize_positions, position_mask
from interp.sites.positions import index_list
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result, Upgrade, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure


def _pair(weights: WeightViews, sender: HeadSpec, receiver: HeadSpec, kind: object) -> tuple[HeadRef, HeadRef]:
    """Checked sender and receiver (in a later layer), and a known ``kind``."""
    a = one_head(sender, weights, "sender")
    b = one_head(receiver, weights, "receiver")
    if b.layer <= a.layer:
        raise BadInputError(f"receiver {b} must be in a later layer than sender {a}: a head reads only what "
                            "earlier layers wrote")
    check_kind(kind)
    return a, b


def _label(sender: HeadRef, receiver: HeadRef, kind: str) -> str:
    return f"{sender}→{receiver} ({kind})"


def _rename_kind(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """interp 0.1 saved ``kind`` as ``channel_kind`` (``kind`` named the result type in its file header)."""
    if "channel_kind" in fields:
        fields["kind"] = fields.pop("channel_kind")


@dataclass(frozen=True, repr=False)
class ChannelResult(Result):
    """How a receiver head reads a sender head's output, per singular component of the sender's OV.

    Views: ``"components"`` (default): contribution and subspace overlap per sender component.

    Attributes:
        sender_S: ``[component]`` the sender's OV singular values.
        contribution: ``[component]`` ``s_i ‖v_iᵀ Y‖_F / (‖W_OV‖_F ‖Y‖_F)`` with ``Y`` the receiver's
            reading circuit; the squares sum to the square of the pair's composition score.
        overlap: ``[component]`` norm of the projection of ``v_i`` on the receiver's top-``top_k`` input
            singular directions (1: inside the subspace, 0: orthogonal).
        sender: the writing head; ``receiver``: the reading head (a later layer).
        kind: which input of the receiver reads: ``"q"``, ``"k"`` or ``"v"``.
        top_k: size of the receiver subspace used for ``overlap``.
        score: the pair's composition score.
        fold_norm: whether the attention-input norm weights were folded into the reading weights.

    Example:
        >>> import interp
        >>> from interp.heads import channel
        >>> m = interp.load_model("smollm2-135m")
        >>> ch = channel(m, sender=(2, 1), receiver="L5H3", kind="q")
        >>> ch
        ChannelResult(contribution[component=64], overlap[component=64], sender_S[component=64], channel='L2H1→L5H3 (q)', score=...)
        >>> len(ch.components(3)), round(float(ch.contribution.pow(2).sum().sqrt()), 6) == round(ch.score, 6)
        (3, True)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"contribution": ("component",), "overlap": ("component",),
                                                  "sender_S": ("component",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("components",)
    UPGRADES: ClassVar[dict[int, Upgrade]] = {0: _rename_kind}

    sender_S: torch.Tensor
    contribution: torch.Tensor
    overlap: torch.Tensor
    sender: HeadRef
    receiver: HeadRef
    kind: str
    top_k: int
    score: float
    fold_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", HeadRef.parse(self.sender))
        object.__setattr__(self, "receiver", HeadRef.parse(self.receiver))
        if not (self.sender_S.shape == self.contribution.shape == self.overlap.shape) or self.sender_S.dim() != 1:
            raise BadInputError("sender_S, contribution and overlap must all be [component]")
        check_kind(self.kind)

    def components(self, n: int = 5) -> list[int]:
        """Indices of the ``n`` sender components the receiver reads most (by ``contribution``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad_value("n", n, "an int >= 1")
        return self.contribution.topk(min(n, self.contribution.numel())).indices.tolist()

    def headline(self) -> dict[str, Any]:
        return {"channel": _label(self.sender, self.receiver, self.kind), "score": self.score}

    def to_frame(self) -> pd.DataFrame:
        """Columns ``component, singular_value, contribution, overlap``."""
        df = labelled_frame(self.sender_S, ["component"], name="singular_value")
        df["contribution"] = self.contribution.tolist()
        df["overlap"] = self.overlap.tolist()
        return df

    def _view_components(self) -> Figure:
        return layer_curves({"contribution": self.contribution, "overlap": self.overlap}, x_title="sender component",
                            y_title="value", title=f"{self.sender} → {self.receiver} ({self.kind.upper()}), "
                                                   f"score {self.score:.3f}")


def channel(model: Model, *, sender: HeadSpec, receiver: HeadSpec, kind: Kind = "k", top_k: int = 8,
            fold_norm: bool = True) -> ChannelResult:
    """Split the sender → receiver composition over the sender's OV singular components.

    Args:
        model: a loaded model (``interp.load_model``).
        sender: the writing head: ``"L3H2"`` or ``(3, 2)``.
        receiver: the reading head, in a later layer.
        kind: which input of the receiver: ``"q"`` (queries), ``"k"`` (keys) or ``"v"`` (values).
        top_k: receiver input subspace size for ``overlap``.
        fold_norm: fold attention-input norm weights into reading weights.

    Returns:
        :class:`ChannelResult`.

    Raises:
        BadInputError: a bad head, a receiver not in a later layer, an unknown kind or a bad ``top_k``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> channel(m, sender="L0H0", receiver="L4H2", kind="q").contribution.shape
        torch.Size([64])
    """
    w = model.weights
    d_head = w.W_Q.shape[-1]
    a, b = _pair(w, sender, receiver, kind)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= d_head:
        raise bad_value("top_k", top_k, f"an int in 1..{d_head}")
    with torch.no_grad():
        oa, ob = (t.double() for t in ov_factors(w, a.layer, a.head, fold_norm=fold_norm))
        ya, yb = (t.double() for t in receiver_factors(w, kind, b.layer, b.head, fold_norm=fold_norm))
        _, S, V = factored_svd(oa, ob)
        read = (V.T @ ya) @ yb  # [rank, d_model]: v_iᵀ Y
        contribution = S * read.norm(dim=-1) / factored_norm(oa, ob) / factored_norm(ya, yb)
        Ub = factored_svd(ya, yb)[0][:, :top_k]
        overlap = (V.T @ Ub).norm(dim=-1)
    return ChannelResult(sender_S=S.float(), contribution=contribution.float(), overlap=overlap.float(),
                         sender=a, receiver=b, kind=kind, top_k=top_k,
                         score=float(contribution.pow(2).sum().sqrt()), fold_norm=fold_norm)


@dataclass(frozen=True, repr=False)
class ChannelActivity(Result):
    """A check of a channel on text: the sender's output along chosen components, where the receiver looks.

    Views (``res.plot(view, ...)``):

    - ``"ratio"`` (default): attended / uniform signal per component (> 1: the receiver looks where the
      sender's signal is);
    - ``"positions"``: for one sequence (``seq=0``), the attended and uniform signal (summed over the
      components) at each query position.

    Attributes:
        coef: ``[batch, pos, component]`` the sender head's output ``z W_O`` projected on its OV output
            directions (0 at padding).
        attended: ``[batch, pos, component]`` per receiver query position: for ``"k"``/``"v"`` the
            attention-weighted mean of ``|coef|`` over key positions; for ``"q"``, ``|coef|`` at the query.
        uniform: ``[batch, pos, component]`` the same with uniform attention over the causal prefix.
        ratio: ``[component]`` ``Σ attended / Σ uniform`` over the counted query positions.
        counted: ``[batch, pos]`` the query positions counted in ``ratio`` (real tokens selected by ``positions``).
        components: the sender components along the ``component`` axis.
        tokens: token strings per sequence (real tokens only).
        sender, receiver: the heads; ``kind``: ``"q"``, ``"k"`` or ``"v"``.
        fold_norm: which SVD the components refer to.

    Example:
        >>> import interp
        >>> from interp.heads import channel_activity
        >>> m = interp.load_model("smollm2-135m")
        >>> act = channel_activity(m, ["a b c a b c", "x y"], sender="L1H0", receiver="L3H2", positions=-1)
        >>> tuple(act.coef.shape[::2]), act.counted.sum(-1).tolist()  # 3 components by default; each last token
        ((2, 3), [1, 1])
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        "ratio": ("component",), "coef": ("batch", "pos", "component"),
        "attended": ("batch", "pos", "component"), "uniform": ("batch", "pos", "component")}
    VIEWS: ClassVar[tuple[str, ...]] = ("ratio", "positions")

    coef: torch.Tensor
    attended: torch.Tensor
    uniform: torch.Tensor
    ratio: torch.Tensor
    counted: torch.Tensor
    components: tuple[int, ...]
    tokens: tuple[tuple[str, ...], ...]
    sender: HeadRef
    receiver: HeadRef
    kind: str
    fold_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", HeadRef.parse(self.sender))
        object.__setattr__(self, "receiver", HeadRef.parse(self.receiver))
        object.__setattr__(self, "components", tuple(int(c) for c in self.components))
        object.__setattr__(self, "tokens", tuple(tuple(t) for t in self.tokens))
        check_kind(self.kind)
        shape = self.coef.shape
        if self.coef.dim() != 3 or self.attended.shape != shape or self.uniform.shape != shape:
            raise BadInputError("coef, attended and uniform must all be [batch, pos, component]")
        if self.ratio.shape != (shape[2],) or len(self.components) != shape[2]:
            raise BadInputError(f"ratio and components need one entry per component ({shape[2]})")
        if self.counted.shape != shape[:2] or len(self.tokens) != shape[0]:
            raise BadInputError(f"counted must be [batch, pos] = {tuple(shape[:2])} and tokens one list per sequence")

    def labels(self) -> dict[str, list[Any]]:
        return {"component": list(self.components)}

    def headline(self) -> dict[str, Any]:
        return {"channel": _label(self.sender, self.receiver, self.kind), "mean_ratio": float(self.ratio.mean())}

    def to_frame(self) -> pd.DataFrame:
        """One row per real token and component: ``batch, pos, token, component, coef, attended, uniform, counted``."""
        import pandas as pd

        rows = []
        for b, toks in enumerate(self.tokens):
            for p, t in enumerate(toks):
                for j, c in enumerate(self.components):
                    rows.append((b, p, t, c, float(self.coef[b, p, j]), float(self.attended[b, p, j]),
                                 float(self.uniform[b, p, j]), bool(self.counted[b, p])))
        return pd.DataFrame(rows, columns=["batch", "pos", "token", "component", "coef", "attended", "uniform",
                                           "counted"])

    def _view_ratio(self) -> Figure:
        return bar_top_tokens([f"component {c}" for c in self.components], self.ratio, x_title="attended / uniform",
                              title=f"{self.sender} → {self.receiver} ({self.kind.upper()}): signal where the "
                                    "receiver looks, vs uniform attention")

    def _view_positions(self, seq: int = 0) -> Figure:
        if isinstance(seq, bool) or not isinstance(seq, int) or not -len(self.tokens) <= seq < len(self.tokens):
            raise bad_value("seq", seq, f"a sequence index in 0..{len(self.tokens) - 1}")
        n = len(self.tokens[seq])
        return layer_curves({"attended": self.attended[seq, :n].sum(-1), "uniform": self.uniform[seq, :n].sum(-1)},
                            x_labels=list(self.tokens[seq]), x_title="receiver query position",
                            y_title=f"|signal| on components {list(self.components)}",
                            title=f"{self.sender} → {self.receiver} ({self.kind.upper()}), sequence {seq}")


def channel_activity(model: Model, inputs: Inputs, *, sender: HeadSpec, receiver: HeadSpec, kind: Kind = "k",
                     components: Sequence[int] | None = None, positions: Positions = None,
                     fold_norm: bool = True) -> ChannelActivity:
    """Project the sender's output on its OV components over real text, weighted by the receiver's attention.

    Args:
        model: a loaded model (``interp.load_model``).
        inputs: a text, texts, token ids ``[batch, pos]``, or a ``Trace``/``TraceStore`` of this model (used as
            is when it holds ``z`` of the sender's layer and ``pattern`` of the receiver's).
        sender: the writing head (``"L1H0"``); receiver: the reading head, in a later layer.
        kind: ``"q"`` reads the signal at the query position, ``"k"``/``"v"`` at attended keys.
        components: sender OV singular components (``None``: the 3 the receiver reads most,
            ``channel(...).components(3)``).
        positions: the receiver's query positions counted in ``ratio`` (each sequence's real tokens; ``-1``
            is each sequence's last token; ``None``: all).
        fold_norm: which SVD the components refer to (as in :func:`channel`).

    Returns:
        :class:`ChannelActivity`.

    Raises:
        BadInputError: a bad head, kind, component or position.
        ModelMismatchError: a trace made by another model.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> act = channel_activity(m, "a b c a b c", sender=(1, 0), receiver="L3H2", components=[0, 1])
        >>> act.ratio.shape
        torch.Size([2])
    """
    w = model.weights
    d_head = w.W_Q.shape[-1]
    a, b = _pair(w, sender, receiver, kind)
    if components is None:
        comps = tuple(channel(model, sender=a, receiver=b, kind=kind, fold_norm=fold_norm).components(3))
    else:
        try:
            comps = tuple(index_list(components, "components"))
        except TypeError:
            comps = ()
        if not comps or any(not 0 <= c < d_head for c in comps):
            raise bad_value("components", components, f"a non-empty list of ints in 0..{d_head - 1}")
    positions = normalize_positions(positions)
    tr = ensure_trace(model, inputs, [f"z.{a.layer}", f"pattern.{b.layer}"])
    mask = tr.attention_mask.bool().cpu()
    lengths = mask.sum(-1)
    size = mask.shape[1]
    counted = mask if positions is None else position_mask(positions, lengths, size) & mask
    with torch.no_grad():
        _, _, V = factored_svd(*ov_factors(w, a.layer, a.head, fold_norm=fold_norm))
        z = tr[f"z.{a.layer}"][:, :, a.head].float().cpu()  # [batch, pos, d_head]
        coef = z @ w.W_O[a.layer, a.head].float().cpu() @ V[:, list(comps)].float().cpu()  # [batch, pos, comp]
        pat = tr[f"pattern.{b.layer}"][:, b.head].float().cpu()  # [batch, q, k]
        m = mask.float()
        coef = coef * m[..., None]
        mag = coef.abs()
        causal = torch.tril(torch.ones(size, size)) * m[:, None, :]
        uni = causal / causal.sum(-1, keepdim=True).clamp_min(1)
        attended = mag if kind == "q" else pat @ mag
        uniform = uni @ mag
        attended, uniform = attended * m[..., None], uniform * m[..., None]
        c = counted.float()[..., None]
        ratio = (attended * c).sum((0, 1)) / (uniform * c).sum((0, 1)).clamp_min(1e-12)
    tokens = tuple(tuple(t[: int(n)]) for t, n in zip(tr.tokens, lengths.tolist(), strict=True))
    return ChannelActivity(coef=coef, attended=attended, uniform=uniform, ratio=ratio, counted=counted,
                           components=comps, tokens=tokens, sender=a, receiver=b, kind=kind, fold_norm=fold_norm)


__all__ = ["ChannelActivity", "ChannelResult", "channel", "channel_activity"]
