"""What an architecture adapter is: a small table from hook points to Hugging Face modules.

An adapter knows, for one model family, which submodule's input or output each hook point reads,
how to read the model's dimensions from its config, and how to view its weights per head.
Nothing outside ``interp.models`` knows Hugging Face module names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from interp.errors import BadInputError
from interp.sites import Component


@dataclass(frozen=True)
class Dims:
    """The shape of a model, uniform across families.

    Example:
        >>> Dims(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, d_mlp=128, d_vocab=256).n_rep
        2
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int | None = None

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise BadInputError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class Tap:
    """Where a hook point is read: a submodule (path with ``{L}`` for the layer) and which tensor.

    ``io="out"`` reads the module's output (the first element when it returns a tuple);
    ``io="in"`` reads its first input. ``split_heads`` views the last axis as ``[head, d_head]``.
    """

    path: str
    io: Literal["in", "out"]
    split_heads: bool = False

    def module_path(self, layer: int | None) -> str:
        return self.path.format(L=layer) if layer is not None else self.path


@dataclass(frozen=True)
class WeightViews:
    """Weights of one model, viewed per head, in the ``x @ W`` convention of TransformerLens.

    Shapes: ``W_E [vocab, d_model]``, ``W_U [d_model, vocab]`` (``None`` for encoders without an LM
    head), ``W_Q/W_K/W_V [layer, head, d_model, d_head]`` (grouped-query heads expanded to one per
    query head), ``W_O [layer, head, d_head, d_model]``, biases ``b_Q/b_K/b_V [layer, head, d_head]``,
    ``b_O [layer, d_model]``, ``W_in [layer, d_model, d_mlp]`` (the up projection),
    ``W_gate`` (gated MLPs only), ``W_out [layer, d_mlp, d_model]``, MLP biases ``b_in [layer, d_mlp]``
    and ``b_out [layer, d_model]`` (zeros where the model has none), norm weights and biases
    ``ln1_w/ln2_w [layer, d_model]``, ``ln_final_w [d_model]``, ``b_U [vocab]``.
    """

    W_E: torch.Tensor
    W_U: torch.Tensor | None
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    b_Q: torch.Tensor
    b_K: torch.Tensor
    b_V: torch.Tensor
    b_O: torch.Tensor
    W_in: torch.Tensor
    W_out: torch.Tensor
    ln1_w: torch.Tensor
    ln2_w: torch.Tensor
    ln_final_w: torch.Tensor | None
    norm: Literal["rms", "layer"]
    W_gate: torch.Tensor | None = None
    b_U: torch.Tensor | None = None
    ln1_b: torch.Tensor | None = None
    ln2_b: torch.Tensor | None = None
    ln_final_b: torch.Tensor | None = None
    W_pos: torch.Tensor | None = None
    b_in: torch.Tensor | None = None
    b_out: torch.Tensor | None = None

    @property
    def W_OV(self) -> torch.Tensor:
        """Per-head OV circuit ``W_V @ W_O``: ``[layer, head, d_model, d_model]``."""
        return self.W_V @ self.W_O

    @property
    def W_QK(self) -> torch.Tensor:
        """Per-head QK circuit ``W_Q @ W_K^T``: ``[layer, head, d_model, d_model]``."""
        return self.W_Q @ self.W_K.transpose(-1, -2)

    def folded_unembed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold the final norm's scale (and bias) into the unembedding.

        Returns ``(W_U', b_U')`` so that ``normalize(x) @ W_U' + b_U'`` equals the model's logits,
        where ``normalize`` is the final norm without its affine part (RMS scaling, or centring and
        scaling for LayerNorm).

        Example:
            >>> import interp
            >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
            >>> W_U, b_U = m.weights.folded_unembed()  # doctest: +SKIP
        """
        if self.W_U is None:
            raise BadInputError("this model has no unembedding (it is an encoder without an LM head)")
        if self.ln_final_w is None:
            raise BadInputError("this model has no final norm to fold")
        W_U = self.ln_final_w[:, None] * self.W_U
        b_U = (torch.zeros(self.W_U.shape[1], dtype=self.W_U.dtype, device=self.W_U.device) if self.b_U is None
               else self.b_U.clone())
        if self.ln_final_b is not None:
            b_U = b_U + self.ln_final_b @ self.W_U
        return W_U, b_U


def split_heads_in(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``nn.Linear`` weight ``[n_heads*d_head, d_model]`` → ``[n_heads, d_model, d_head]``."""
    out_features, d_model = weight.shape
    return weight.reshape(n_heads, out_features // n_heads, d_model).transpose(1, 2)


def expand_kv(w: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat key/value heads (axis 0) so that there is one per query head."""
    return w.repeat_interleave(n_rep, dim=0) if n_rep > 1 else w


def zeros_if_none(bias: torch.Tensor | None, *shape: int, like: torch.Tensor) -> torch.Tensor:
    return bias.detach() if bias is not None else torch.zeros(*shape, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class Adapter:
    """One architecture family's table.

    Attributes:
        family: short name (``llama``, ``gpt2``, ``gpt_neox``, ``bert``).
        model_types: the Hugging Face ``config.model_type`` values it serves.
        layers: dotted path of the ``nn.ModuleList`` of blocks.
        attn: path template of each block's attention module (the one calling the attention kernel).
        taps: where each module-level hook point is read.
        mid_delta: for pre-norm blocks, the module (path template) whose output absorbs an edit of
            ``hook_resid_mid``, so that the edit reaches both the MLP input and the residual stream.
            ``None`` where ``hook_resid_mid`` is itself a module output (post-norm blocks).
        dims: reads :class:`Dims` from a config.
        weights: builds :class:`WeightViews` from a model and its dims.
        is_causal: decoder (causal) or encoder.
        unavailable: reads a config and names the components this particular model lacks
            (e.g. ``hook_resid_mid`` under GPT-NeoX's parallel residual).
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    attn: str
    taps: Mapping[Component, Tap]
    dims: Callable[[Any], Dims]
    weights: Callable[[nn.Module, Dims], WeightViews]
    mid_delta: str | None = None
    is_causal: bool = True
    unavailable: Callable[[Any], frozenset[Component]] = field(default=lambda config: frozenset())

    def components(self, config: Any) -> list[Component]:
        """The components this model offers, in forward order."""
        have = set(self.taps) | {Component.Q, Component.K, Component.V, Component.PATTERN}
        have -= self.unavailable(config)
        return [c for c in Component if c in have]
