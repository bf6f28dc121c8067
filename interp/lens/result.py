"""``LogitLensResult``: what a lens reads at every layer and position, with its views and tables.

Example:
    >>> import torch
    >>> from interp.lens import LogitLensResult
    >>> res = LogitLensResult(
    ...     top_ids=torch.tensor([[[[3], [4]]], [[[4], [5]]]]), top_probs=torch.tensor([[[[0.5], [0.4]]], [[[0.9], [0.8]]]]),
    ...     entropy=torch.ones(2, 1, 2), kl_to_final=torch.tensor([[[0.7, 0.6]], [[0.0, 0.0]]]),
    ...     next_token_ce=torch.ones(2, 1, 2), attention_mask=torch.ones(1, 2, dtype=torch.long),
    ...     layer_labels=("0", "1"), tokens=(("a", "b"),), id_to_str={3: "x", 4: "y", 5: "z"})
    >>> res.top_tokens(layer=-1, pos=-1)
    ['z']
    >>> res
    LogitLensResult(top_ids[layer=2, batch=1, pos=2, k=1], top_probs[layer=2, batch=1, pos=2, k=1], entropy[layer=2, batch=1, pos=2], lens='logit', top_token='z', mean_kl_first=0.65)
    >>> res.to_frame()[["layer", "pos", "token", "top_token", "kl_to_final"]].to_dict("records")[1]
    {'layer': '0', 'pos': 1, 'token': 'b', 'top_token': 'y', 'kl_to_final': 0.6000000238418579}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.plot import heatmap, layer_curves
from interp.sites import resolve_positions
from interp.trace.results import Result, labelled_array, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

_LBP = ("layer", "batch", "pos")
_LBPK = ("layer", "batch", "pos", "k")
LENSES = ("logit", "tuned")


@dataclass(frozen=True, repr=False)
class LogitLensResult(Result):
    """The lens reading of a batch: each layer's residual stream decoded as if it were the last.

    Floats are ``NaN`` and ids/ranks ``-1`` at padding positions and at positions the lens was not asked to
    read (``positions=``), and ``next_token_ce`` at each sequence's last real token (no next token).
    Probabilities and entropies are in nats.

    Views (``res.plot(view)``): ``"grid"`` (default: layer x position, cell text = top token, colour = its
    probability, ``color="entropy"`` for the entropy; ``batch=``), ``"kl"`` (``KL(final || layer)`` per layer,
    mean over the read tokens and at the last one; ``batch=``), ``"target_rank"`` (the target's rank per layer
    at one position, ``pos=-1``: the last real token; ``batch=``).

    Attributes:
        top_ids: ``[layer, batch, pos, k]`` the ``k`` most likely token ids.
        top_probs: ``[layer, batch, pos, k]`` their probabilities.
        entropy: ``[layer, batch, pos]`` entropy of the decoded distribution.
        kl_to_final: ``[layer, batch, pos]`` ``KL(final || layer)`` to the model's output distribution.
        next_token_ce: ``[layer, batch, pos]`` cross-entropy to the actual next token.
        attention_mask: ``[batch, pos]``, 1 at real tokens.
        layer_labels: one label per row of the layer axis (``"3"``, or ``"3 resid_mid"`` with several components).
        tokens: the input token strings per sequence.
        id_to_str: the string of every token id that appears in ``top_ids`` (and the target).
        target_rank: ``[layer, batch, pos]`` rank of the target token (0 = top), ``None`` without target.
        target_prob: ``[layer, batch, pos]`` probability of the target token, ``None`` without target.
        target: the target as given (``None`` without one); ``target_id`` its token id.
        model_id: the model that made it; ``include_final_norm``: whether the final norm was applied.
        lens: ``"logit"``, or ``"tuned"`` for readings through a :class:`~interp.lens.TunedLens`.

    Example:
        >>> import interp
        >>> from interp.lens import logit_lens
        >>> m = interp.load_model("smollm2-135m")
        >>> res = logit_lens(m, "The capital of France is", target=" Paris")
        >>> res.top_tokens(layer=-1, pos=-1)[0], int(res.target_rank[-1, 0, -1])
        (' Paris', 0)
        >>> res.plot("target_rank").layout.yaxis.type
        'log'
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"top_ids": _LBPK, "top_probs": _LBPK, "entropy": _LBP, "kl_to_final": _LBP, "next_token_ce": _LBP,
            "target_rank": _LBP, "target_prob": _LBP, "attention_mask": ("batch", "pos")}
    VIEWS = ("grid", "kl", "target_rank")

    top_ids: torch.Tensor
    top_probs: torch.Tensor
    entropy: torch.Tensor
    kl_to_final: torch.Tensor
    next_token_ce: torch.Tensor
    attention_mask: torch.Tensor
    layer_labels: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    id_to_str: Mapping[int, str] = field(default_factory=dict)
    target_rank: torch.Tensor | None = None
    target_prob: torch.Tensor | None = None
    target: str | int | None = None
    target_id: int | None = None
    model_id: str = ""
    include_final_norm: bool = True
    lens: str = "logit"

    def __post_init__(self) -> None:
        if self.top_ids.dim() != 4:
            raise BadInputError(f"top_ids must be [layer, batch, pos, k], got {tuple(self.top_ids.shape)}")
        n_layer, batch, pos, _ = self.top_ids.shape
        want = {"top_probs": tuple(self.top_ids.shape), "attention_mask": (batch, pos)}
        want |= {n: (n_layer, batch, pos) for n in ("entropy", "kl_to_final", "next_token_ce", "target_rank",
                                                   "target_prob")}
        for name, shape in want.items():
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != shape:
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {shape} ({', '.join(self.AXES[name])})")
        if (self.target_rank is None) != (self.target_prob is None):
            raise BadInputError("target_rank and target_prob come together (both or neither)")
        if len(self.layer_labels) != n_layer:
            raise BadInputError(f"{len(self.layer_labels)} layer labels for {n_layer} layers")
        if len(self.tokens) != batch:
            raise BadInputError(f"{len(self.tokens)} token lists for a batch of {batch}")
        if self.lens not in LENSES:
            raise bad_value("lens", self.lens, " or ".join(repr(x) for x in LENSES))

    def with_lens(self, lens: str) -> LogitLensResult:
        """The same readings labelled as made by another lens (``"logit"`` or ``"tuned"``)."""
        return replace(self, lens=lens)

    # -- access --------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Rows of the layer axis."""
        return int(self.top_ids.shape[0])

    def n_real(self, batch: int = 0) -> int:
        """Number of real (non-padding) tokens of sequence ``batch``."""
        self._check_batch(batch)
        return int(self.attention_mask[batch].sum())

    def read_mask(self) -> torch.Tensor:
        """``[batch, pos]``: the real tokens the lens read (all of them unless it was given ``positions=``)."""
        return self.attention_mask.bool() & ~torch.isnan(self.entropy).all(0)

    def position(self, batch: int = 0, pos: int = -1) -> int:
        """The padded index of real token ``pos`` of sequence ``batch`` (negative: from its last real token)."""
        p = resolve_positions(pos, self.n_real(batch))[0]
        if not bool(self.read_mask()[batch, p]):
            raise BadInputError(f"position {pos} of sequence {batch} was not read by the lens (it read positions "
                                f"{self.read_mask()[batch].nonzero().flatten().tolist()}); pass positions= to read it")
        return p

    def top_tokens(self, layer: int, batch: int = 0, pos: int = -1) -> list[str]:
        """The top-k token strings at one layer and position (``pos=-1``: each sequence's last real token).

        Raises:
            BadInputError: ``layer``, ``batch`` or ``pos`` out of range, or a position the lens did not read.
        """
        if not -self.n_layers <= layer < self.n_layers:
            raise bad_value("layer", layer, f"{-self.n_layers}..{self.n_layers - 1} (rows: {', '.join(self.layer_labels)})")
        p = self.position(batch, pos)
        return [self.id_to_str.get(int(i), str(int(i))) for i in self.top_ids[layer, batch, p].tolist()]

    def _check_batch(self, batch: int) -> None:
        n = len(self.tokens)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < n:
            raise bad_value("batch", batch, f"a sequence index 0..{n - 1}")

    # -- views ---------------------------------------------------------------------------------
    def _view_grid(self, batch: int = 0, color: str = "prob") -> Figure:
        """Layer x position: cell text = top token, colour = top-1 probability (or entropy), hover = top-k."""
        if color not in ("prob", "entropy"):
            raise bad_value("color", color, "'prob' or 'entropy'")
        self._check_batch(batch)
        cols = self.read_mask()[batch].nonzero().flatten().tolist()
        ids = self.top_ids[:, batch, cols].tolist()
        probs = self.top_probs[:, batch, cols].tolist()
        text = [[self.id_to_str.get(row[0], "") for row in layer] for layer in ids]
        hover = [[[(self.id_to_str.get(i, str(i)), p) for i, p in zip(ri, rp, strict=True)]
                  for ri, rp in zip(li, lp, strict=True)] for li, lp in zip(ids, probs, strict=True)]
        values = self.top_probs[:, batch, cols, 0] if color == "prob" else self.entropy[:, batch, cols]
        return heatmap(values, x_labels=[self.tokens[batch][p] for p in cols], y_labels=list(self.layer_labels),
                       title=f"{self.lens} lens ({'top-1 probability' if color == 'prob' else 'entropy'})",
                       x_title="position", y_title="layer", cell_text=text, hover=hover, signed=False,
                       colorbar_title="p(top-1)" if color == "prob" else "entropy (nats)", rows_top_down=False,
                       zmin=0.0, zmax=1.0 if color == "prob" else None)

    def _view_kl(self, batch: int | None = None) -> Figure:
        """``KL(final || layer)`` per layer: mean over the read tokens (of all sequences, or of ``batch``) and at
        the last read token of ``batch`` (default 0)."""
        b = 0 if batch is None else batch
        self._check_batch(b)
        read = self.read_mask() if batch is None else self.read_mask()[b:b + 1]
        kl = self.kl_to_final if batch is None else self.kl_to_final[:, b:b + 1]
        if not bool(self.read_mask()[b].any()):
            raise BadInputError(f"sequence {b} has no token the lens read; pass another batch= or positions=")
        last = int(self.read_mask()[b].nonzero().max())
        return layer_curves({"mean over tokens": kl[:, read].mean(-1),
                             f"last token (seq {b})": self.kl_to_final[:, b, last]},
                            x_labels=list(self.layer_labels), y_title="KL(final || layer) (nats)",
                            title=f"{self.lens} lens: distance to the final distribution")

    def _view_target_rank(self, batch: int = 0, pos: int = -1) -> Figure:
        """Rank of the target token per layer at one position (``-1``: the last real token), log scale."""
        if self.target_rank is None:
            raise BadInputError("this result has no target: pass target= to the lens")
        p = self.position(batch, pos)
        fig = layer_curves({f"rank of {self.target!r} + 1": self.target_rank[:, batch, p] + 1},
                           x_labels=list(self.layer_labels), y_title="1 + rank (1 = top token)",
                           title=f"{self.lens} lens: rank of {self.target!r} at {self.tokens[batch][p]!r}")
        fig.update_yaxes(type="log")
        return fig

    # -- tables --------------------------------------------------------------------------------
    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(self.layer_labels), "batch": list(range(len(self.tokens)))}

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, batch, pos) of the read real tokens: ``token``, the top token and its probability,
        ``entropy``, ``kl_to_final``, ``next_token_ce`` and (with a target) ``target_rank``, ``target_prob``."""
        df = labelled_frame(self.entropy, _LBP, {"layer": list(self.layer_labels)}, name="entropy")
        df.insert(3, "token", [self.tokens[b][p] for b, p in zip(df["batch"], df["pos"], strict=True)])
        df.insert(4, "top_token", [self.id_to_str.get(i) for i in self.top_ids[..., 0].flatten().tolist()])
        df.insert(5, "top_prob", self.top_probs[..., 0].flatten().tolist())
        for name in ("kl_to_final", "next_token_ce", "target_rank", "target_prob"):
            t = getattr(self, name)
            if t is not None:
                df[name] = t.flatten().tolist()
        keep = self.read_mask()[None].expand(self.entropy.shape).flatten().tolist()
        return df[keep].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """The base's labelled arrays plus ``top_tokens`` (``[layer, batch, pos, k]`` strings, ``None`` where unread)."""
        out = super().to_dict()
        strs = [[[[self.id_to_str.get(i) if i >= 0 else None for i in k] for k in p] for p in b]
                for b in self.top_ids.tolist()]
        out["arrays"]["top_tokens"] = {**labelled_array(self.top_ids, _LBPK, self.labels()), "values": strs}
        return out

    def headline(self) -> dict[str, Any]:
        read = self.read_mask()
        out: dict[str, Any] = {"lens": self.lens}
        if bool(read[0].any()):
            last = int(read[0].nonzero().max())
            out["top_token"] = self.id_to_str.get(int(self.top_ids[-1, 0, last, 0]))
            if self.target_rank is not None:
                out["target"] = self.target
                out["target_rank"] = int(self.target_rank[-1, 0, last])
        if bool(read.any()):
            out["mean_kl_first"] = float(self.kl_to_final[0][read].mean())
        return out


__all__ = ["LogitLensResult"]
