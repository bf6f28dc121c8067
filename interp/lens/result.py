"""``LogitLensResult``: what the logit lens reads at every layer and position, with its plots and storage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError
from interp.plot import heatmap, layer_curves
from interp.trace.results import labelled_frame, nan_to_none, read_result, write_result

TENSORS = ("top_ids", "top_probs", "entropy", "kl_to_final", "next_token_ce", "target_rank", "target_prob",
           "attention_mask")
AXES = {"top_ids": ["layer", "batch", "pos", "k"], "top_probs": ["layer", "batch", "pos", "k"],
        "entropy": ["layer", "batch", "pos"], "kl_to_final": ["layer", "batch", "pos"],
        "next_token_ce": ["layer", "batch", "pos"], "target_rank": ["layer", "batch", "pos"],
        "target_prob": ["layer", "batch", "pos"], "attention_mask": ["batch", "pos"]}


@dataclass(frozen=True)
class LogitLensResult:
    """The logit lens of a batch: each layer's residual stream decoded as if it were the last.

    Floats are ``NaN`` and ids/ranks ``-1`` at padding positions (and ``next_token_ce`` at each
    sequence's last real token, which has no next token). Probabilities and entropies are in nats.

    Attributes:
        top_ids: ``[layer, batch, pos, k]`` the ``k`` most likely token ids.
        top_probs: ``[layer, batch, pos, k]`` their probabilities.
        entropy: ``[layer, batch, pos]`` entropy of the decoded distribution.
        kl_to_final: ``[layer, batch, pos]`` ``KL(final || layer)`` to the model's output distribution.
        next_token_ce: ``[layer, batch, pos]`` cross-entropy to the actual next token.
        target_rank: ``[layer, batch, pos]`` rank of the target token (0 = top), ``None`` without target.
        target_prob: ``[layer, batch, pos]`` probability of the target token, ``None`` without target.
        attention_mask: ``[batch, pos]``, 1 at real tokens.
        layer_labels: one label per row of the layer axis (``"3"``, or ``"3 resid_mid"`` with several components).
        tokens: the input token strings per sequence.
        id_to_str: the string of every token id that appears in ``top_ids`` (and the target).
        target: the target as given (``None`` without one); ``target_id`` its token id.
        model_id: the model that made it; ``include_final_norm``: whether the final norm was applied.
        lens: ``"logit"``, or ``"tuned"`` for readings through a :class:`~interp.lens.TunedLens`.

    Example:
        >>> import interp
        >>> from interp.lens import logit_lens
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = logit_lens(m, "The capital of France is", target=" Paris")  # doctest: +SKIP
        >>> res.top_tokens(layer=-1, pos=-1)[0], int(res.target_rank[-1, 0, -1])  # doctest: +SKIP
        (' Paris', 0)
    """

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
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {shape} ({', '.join(AXES[name])})")
        if (self.target_rank is None) != (self.target_prob is None):
            raise BadInputError("target_rank and target_prob come together (both or neither)")
        if len(self.layer_labels) != n_layer:
            raise BadInputError(f"{len(self.layer_labels)} layer labels for {n_layer} layers")
        if len(self.tokens) != batch:
            raise BadInputError(f"{len(self.tokens)} token lists for a batch of {batch}")

    def with_lens(self, lens: str) -> LogitLensResult:
        """The same readings labelled as made by another lens (``"logit"`` or ``"tuned"``)."""
        return replace(self, lens=lens)

    # -- access --------------------------------------------------------------------------------
    def n_real(self, batch: int = 0) -> int:
        """Number of real (non-padding) tokens of sequence ``batch``."""
        return int(self.attention_mask[batch].sum())

    def top_tokens(self, layer: int, batch: int = 0, pos: int = -1) -> list[str]:
        """The top-k token strings at one layer and position (``pos=-1``: the last real token)."""
        p = self.n_real(batch) - 1 if pos == -1 else pos
        return [self.id_to_str.get(int(i), str(int(i))) for i in self.top_ids[layer, batch, p].tolist()]

    # -- plots ---------------------------------------------------------------------------------
    def plot(self, batch: int = 0, color: str = "prob") -> Any:
        """The lens grid: layer x position, cell text = top token, colour = top-1 probability or entropy,
        hover = the top-k tokens with their probabilities."""
        if color not in ("prob", "entropy"):
            raise BadInputError(f"color must be 'prob' or 'entropy', got {color!r}")
        n = self.n_real(batch)
        ids = self.top_ids[:, batch, :n].tolist()
        probs = self.top_probs[:, batch, :n].tolist()
        text = [[self.id_to_str.get(row[0], "") for row in layer] for layer in ids]
        hover = [[[(self.id_to_str.get(i, str(i)), p) for i, p in zip(ri, rp, strict=True)]
                  for ri, rp in zip(li, lp, strict=True)] for li, lp in zip(ids, probs, strict=True)]
        values = self.top_probs[:, batch, :n, 0] if color == "prob" else self.entropy[:, batch, :n]
        return heatmap(values, x_labels=list(self.tokens[batch][:n]), y_labels=list(self.layer_labels),
                       title=f"{self.lens} lens ({'top-1 probability' if color == 'prob' else 'entropy'})",
                       x_title="position", y_title="layer", cell_text=text, hover=hover, signed=False,
                       colorbar_title="p(top-1)" if color == "prob" else "entropy (nats)", rows_top_down=False,
                       zmin=0.0, zmax=1.0 if color == "prob" else None)

    def plot_kl(self, batch: int | None = None) -> Any:
        """``KL(final || layer)`` over layers: mean over real tokens, and at the last real token."""
        kl = self.kl_to_final if batch is None else self.kl_to_final[:, batch:batch + 1]
        mask = self.attention_mask if batch is None else self.attention_mask[batch:batch + 1]
        b = 0 if batch is None else batch
        return layer_curves({"mean over tokens": kl[:, mask.bool()].mean(-1),
                             f"last token (seq {b})": self.kl_to_final[:, b, self.n_real(b) - 1]},
                            x_labels=list(self.layer_labels), y_title="KL(final || layer) (nats)",
                            title=f"{self.lens} lens: distance to the final distribution")

    def plot_target_rank(self, batch: int = 0, pos: int = -1) -> Any:
        """Rank of the target token over layers at one position (``-1``: the last real token), log scale."""
        if self.target_rank is None:
            raise BadInputError("this result has no target: pass target= to logit_lens")
        p = self.n_real(batch) - 1 if pos == -1 else pos
        fig = layer_curves({f"rank of {self.target!r} + 1": self.target_rank[:, batch, p] + 1},
                           x_labels=list(self.layer_labels), y_title="1 + rank (1 = top token)",
                           title=f"{self.lens} lens: rank of {self.target!r} at {self.tokens[batch][p]!r}")
        fig.update_yaxes(type="log")
        return fig

    # -- export --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every tensor as ``{"axes", "labels", "values"}`` (NaN → ``None``), plus the top tokens as strings."""
        labels = {"layer": list(self.layer_labels), "batch": list(range(len(self.tokens)))}
        out: dict[str, Any] = {}
        for name in TENSORS:
            t = getattr(self, name)
            if t is not None:
                vals = t.tolist()
                out[name] = {"axes": AXES[name], "labels": labels, "values": nan_to_none(vals)}
        out["top_tokens"] = {"axes": AXES["top_ids"], "labels": labels,
                             "values": [[[[self.id_to_str.get(i) if i >= 0 else None for i in k] for k in p] for p in b]
                                        for b in self.top_ids.tolist()]}
        out["tokens"] = [list(t) for t in self.tokens]
        return out

    def to_frame(self) -> Any:
        """A ``pandas.DataFrame`` with one row per (layer, batch, pos) of real tokens: the top token and its
        probability, entropy, KL to the final output, next-token cross-entropy and the target's rank/probability."""
        axes, labels = ["layer", "batch", "pos"], {"layer": list(self.layer_labels)}
        df = labelled_frame(self.entropy, axes, labels, name="entropy")
        df["top_token"] = [self.id_to_str.get(i) for i in self.top_ids[..., 0].flatten().tolist()]
        df["top_prob"] = self.top_probs[..., 0].flatten().tolist()
        for name in ("kl_to_final", "next_token_ce", "target_rank", "target_prob"):
            t = getattr(self, name)
            if t is not None:
                df[name] = t.flatten().tolist()
        real = self.attention_mask.bool()[None].expand(self.entropy.shape).flatten().tolist()
        return df[real].reset_index(drop=True)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path/result.safetensors`` (tensors) and ``path/result.json`` (labels, tokens, metadata)."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TENSORS}
        meta["id_to_str"] = {str(k): v for k, v in self.id_to_str.items()}
        return write_result(path, "LogitLensResult", {n: getattr(self, n) for n in TENSORS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LogitLensResult:
        """Read a result written by :meth:`save`."""
        tensors, meta = read_result(path, "LogitLensResult")
        meta["id_to_str"] = {int(k): v for k, v in meta["id_to_str"].items()}
        meta["layer_labels"] = tuple(meta["layer_labels"])
        meta["tokens"] = tuple(tuple(t) for t in meta["tokens"])
        return cls(**meta, **{n: tensors.get(n) for n in TENSORS})  # type: ignore[arg-type]

    def __repr__(self) -> str:
        L, B, P, K = self.top_ids.shape
        return (f"LogitLensResult({L} layers x {B} seqs x {P} tokens, top-{K}, model={self.model_id!r}, "
                f"target={self.target!r})")
