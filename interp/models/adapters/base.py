"""What an architecture adapter is: a small table from hook points to Hugging Face modules.

An adapter knows, for one model family, which submodule's input or output each hook point reads,
how to read the model's dimensions from its config, and how to view its weights per head.
Hook points that no submodule's input or output carries (the q/k/v of an attention module that does
not use ``transformers``' attention interface, a mixture-of-experts router's choice, each expert's
output) come from a :class:`Kernel`: a forward the adapter supplies for one module, which calls a hook
at those points and which replaces the module's own forward only while a run asks for them.
Nothing outside ``interp.models`` knows Hugging Face module names. docs/models.md says how to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol

import torch
from torch import nn

from interp.errors import BadInputError
from interp.sites import Component

HFModule = Any
"""A Hugging Face module reached through its attributes (``model.model.layers[3].mlp``). Typed ``Any``: PyTorch
types ``nn.Module.__getattr__`` as ``Tensor | Module``, which says nothing about a model's own structure."""


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
    n_experts: int | None = None
    n_experts_per_tok: int | None = None

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise BadInputError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def size(self, axis: str) -> int:
        """The length of a named activation axis (the names of :attr:`interp.sites.Component.axes` after
        ``batch, pos``): ``d_model``, ``d_mlp``, ``vocab``, ``head``, ``kv_head``, ``d_head``, ``expert``.

        Example:
            >>> Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=64, d_head=16, d_mlp=128, d_vocab=256,
            ...      n_experts=8).size("expert")
            8
        """
        sizes = {"d_model": self.d_model, "d_mlp": self.d_mlp, "vocab": self.d_vocab, "head": self.n_heads,
                 "kv_head": self.n_kv_heads, "d_head": self.d_head, "expert": self.n_experts}
        if axis not in sizes:
            raise BadInputError(f"no axis {axis!r} has a fixed length; valid: {', '.join(sizes)}")
        size = sizes[axis]
        if size is None:
            raise BadInputError(f"this model has no {axis!r} axis (it is not a mixture of experts)")
        return size


@dataclass(frozen=True)
class Tap:
    """Where a hook point is read: a submodule (path with ``{L}`` for the layer) and which tensor.

    ``io="out"`` reads the module's output (the first element when it returns a tuple; its ``logits``
    when it returns a model output: ``path=""`` is the whole model, for logits post-processed after the
    LM head as Gemma 2 soft-caps them); ``io="in"`` reads its first input. ``split_heads`` views the last
    axis as ``[head, d_head]``. ``copy``: the model edits this output in place after the hook (Falcon's
    parallel block adds the attention output into the MLP output), so the model is handed a copy and a
    capture keeps the value the hook saw.
    """

    path: str
    io: Literal["in", "out"]
    split_heads: bool = False
    copy: bool = False

    def module_path(self, layer: int | None) -> str:
        return self.path.format(L=layer) if layer is not None else self.path


class KernelHook(Protocol):
    """What a :class:`Kernel`'s forward calls at its hook points (the hook engine makes one per layer)."""

    def __call__(self, component: Component, t: torch.Tensor) -> torch.Tensor:
        """The activation at ``component`` of this layer, edited by the run's interventions (or ``t`` itself)."""
        ...

    def wants(self, component: Component) -> bool:
        """Whether the run reads or edits ``component`` at this layer (skip costly work when it does not)."""
        ...


@dataclass(frozen=True)
class Kernel:
    """Hook points computed inside one module by a forward the adapter supplies.

    While a run asks for one of ``components`` at layer ``L``, the module at ``path`` (``{L}`` for the
    layer) runs ``forward(module, hook, *args, **kwargs)`` in place of its own forward; ``forward``
    computes what the module computes and passes each of its hook points through ``hook(component, t)``.
    Runs that ask for none of them never touch the module. When ``hook`` edits nothing, the result must
    be the module's own, bit for bit where the module's arithmetic allows (the tests check it).
    """

    path: str
    components: frozenset[Component]
    forward: Callable[..., Any]

    def module_path(self, layer: int) -> str:
        return self.path.format(L=layer)


@dataclass(frozen=True)
class AttnInputs:
    """Where the per-head attention inputs (``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``) are read and edited.

    ``norm`` is the module (path with ``{L}``) in front of the attention whose input is the stream the heads
    read, ``None`` where the projections read the stream directly (post-norm blocks: OLMo 2, BERT). ``q``, ``k``,
    ``v`` are the projection modules; one path for all three is a fused projection whose output packs
    ``[q | k | v]`` along its last axis (``layout="concat"``: query heads, then key/value heads; GPT-2, Phi-3) or
    ``[head, (q, k, v), d_head]`` (``layout="per_head"``: GPT-NeoX). An edit of one head's input recomputes that
    head's slice of the projection output as ``norm(edited) @ W + b`` (the weight views); the other heads keep the
    model's own values.

    Example:
        >>> fused = "transformer.h.{L}.attn.c_attn"
        >>> AttnInputs("transformer.h.{L}.ln_1", fused, fused, fused).fused
        True
    """

    norm: str | None
    q: str
    k: str
    v: str
    layout: Literal["concat", "per_head"] = "concat"

    @property
    def fused(self) -> bool:
        return self.q == self.k == self.v


class NotApplicable:
    """Stands in for a weight view an architecture does not have; any use raises :class:`BadInputError`.

    A mixture-of-experts MLP has no single ``W_in [d_model, d_mlp]``: a tool that reads it (composition
    scores through the MLP, neuron views) fails with a message naming the model's family and why.

    Example:
        >>> import torch
        >>> w = NotApplicable("W_in", "mixtral's MLP is a mixture of 4 experts; see W_in_experts")
        >>> w[0]
        Traceback (most recent call last):
        ...
        interp.errors.BadInputError: W_in does not apply to this model: mixtral's MLP is a mixture of 4 experts; see W_in_experts
        >>> torch.einsum("ld,l->d", w, torch.ones(2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interp.errors.BadInputError: W_in does not apply to this model: ...
    """

    def __init__(self, name: str, reason: str) -> None:
        self._name = name
        self._reason = reason

    def error(self) -> BadInputError:
        return BadInputError(f"{self._name} does not apply to this model: {self._reason}")

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self.error()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_name", "_reason"):
            raise AttributeError(name)
        raise self.error()

    __getitem__ = __iter__ = __len__ = __matmul__ = __rmatmul__ = __mul__ = __rmul__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __truediv__ = __neg__ = __float__ = __array__ = _fail

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for x in [*args, *(kwargs or {}).values()]:
            items = x if isinstance(x, (list, tuple)) else [x]
            for item in items:
                if isinstance(item, NotApplicable):
                    raise item.error()
        return NotImplemented

    def __repr__(self) -> str:
        return f"NotApplicable({self._name!r}: {self._reason})"


def not_applicable(name: str, reason: str) -> torch.Tensor:
    """A :class:`NotApplicable` typed as the tensor it stands in for (for :class:`WeightViews` fields).

    Example:
        >>> w = not_applicable("W_out", "this MLP is a mixture of experts")
        >>> isinstance(w, NotApplicable)
        True
    """
    return NotApplicable(name, reason)  # type: ignore[return-value]


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

    Norm weights are the effective scale (Gemma's ``(1 + w)`` RMSNorm gives ``1 + w``); a block without a
    norm in front of its attention or MLP (OLMo 2 normalises the sublayer outputs instead) has ones there.
    ``W_E`` is what ``hook_embed`` reads per token (Gemma's embedding scale ``sqrt(d_model)`` included);
    ``W_U`` is the LM head. ``logit_softcap``: logits are ``c * tanh(x / c)`` of ``x @ W_U`` (Gemma 2).

    Mixture-of-experts models: ``W_router [layer, d_model, expert]``, ``W_gate_experts`` and
    ``W_in_experts [layer, expert, d_model, d_mlp]``, ``W_out_experts [layer, expert, d_mlp, d_model]``;
    ``W_in``/``W_gate``/``W_out`` are :class:`NotApplicable` (using them raises, naming why).
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
    logit_softcap: float | None = None
    W_router: torch.Tensor | None = None
    W_gate_experts: torch.Tensor | None = None
    W_in_experts: torch.Tensor | None = None
    W_out_experts: torch.Tensor | None = None

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


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(x / cap)`` (Gemma 2's logit soft-capping), in the order of operations Hugging Face uses;
    ``x`` itself when ``cap`` is ``None``.

    Example:
        >>> import torch
        >>> softcap(torch.tensor([0.0, 100.0]), 30.0)
        tensor([ 0.0000, 29.9237])
    """
    if cap is None:
        return x
    return torch.tanh(x / cap) * cap


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
        kernels: hook points read inside a module by an adapter-supplied forward (:class:`Kernel`);
            a kernel's components take precedence over the attention-interface switch for q/k/v/pattern.
        lm_head: path of the LM head module (its output before any post-processing).
        final_softcap: reads a config and returns the final-logit soft-cap (Gemma 2), or ``None``.
        attn_inputs: where the per-head q/k/v inputs are read (:class:`AttnInputs`); ``None``: the model offers
            no ``q_input`` / ``k_input`` / ``v_input``. ``attn.hook_result`` exists wherever ``hook_z`` is the input
            of the output projection (a ``split_heads`` tap).
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
    kernels: tuple[Kernel, ...] = ()
    lm_head: str = "lm_head"
    final_softcap: Callable[[Any], float | None] = field(default=lambda config: None)
    attn_inputs: AttnInputs | None = None

    def components(self, config: Any) -> list[Component]:
        """The components this model offers, in forward order."""
        have = set(self.taps) | {Component.Q, Component.K, Component.V, Component.PATTERN}
        z = self.taps.get(Component.Z)
        if z is not None and z.split_heads and z.io == "in":
            have.add(Component.RESULT)
        if self.attn_inputs is not None:
            have |= {Component.Q_INPUT, Component.K_INPUT, Component.V_INPUT}
        for k in self.kernels:
            have |= k.components
        have -= self.unavailable(config)
        return [c for c in Component if c in have]

    def kernel_for(self, component: Component) -> Kernel | None:
        """The kernel that computes ``component``, or ``None`` (a tap, or interp's attention function).

        Example:
            >>> from interp.models.adapters import adapter_for
            >>> adapter_for("falcon").kernel_for(Component.PATTERN).path, adapter_for("llama").kernel_for(Component.Q)
            ('transformer.h.{L}.self_attention', None)
        """
        return next((k for k in self.kernels if component in k.components), None)

    def unembed(self, hf: HFModule, h: torch.Tensor) -> torch.Tensor:
        """Logits from the final norm's output ``h [..., d_model]``: the LM head, then any soft-cap.

        This is what the model's forward does after its final norm; code that unembeds by itself
        (partial forwards) should call it rather than the LM head module, or Gemma 2's logits are wrong.

        Example:
            >>> import torch
            >>> from transformers import Gemma2Config, Gemma2ForCausalLM
            >>> from interp.models.adapters import adapter_for
            >>> hf = Gemma2ForCausalLM(Gemma2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            ...     num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=64,
            ...     final_logit_softcapping=5.0))
            >>> with torch.no_grad():
            ...     logits = adapter_for("gemma2").unembed(hf, 100 * torch.randn(3, 32))
            >>> float(logits.abs().max()) <= 5.0
            True
        """
        return softcap(hf.get_submodule(self.lm_head)(h), self.final_softcap(hf.config))


def attention_views(attns: list[HFModule], d: Dims, q: str = "q_proj", k: str = "k_proj", v: str = "v_proj",
                    o: str = "o_proj") -> dict[str, Any]:
    """``W_Q/W_K/W_V/W_O`` and ``b_Q/b_K/b_V/b_O`` of attention modules with separate ``nn.Linear`` projections
    (grouped-query key/value heads expanded to one per query head; zeros for missing biases).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        ...     num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
        >>> d = decoder_dims(hf.config)
        >>> v = attention_views([b.self_attn for b in hf.model.layers], d)
        >>> v["W_K"].shape, v["b_O"].shape  # [layer, head, d_model, d_head], [layer, d_model]
        (torch.Size([2, 4, 32, 8]), torch.Size([2, 32]))
    """
    out: dict[str, list[torch.Tensor]] = {n: [] for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")}
    for a in attns:
        lq, lk, lv, lo = (getattr(a, n) for n in (q, k, v, o))
        out["W_Q"].append(split_heads_in(lq.weight.detach(), d.n_heads))
        out["W_K"].append(expand_kv(split_heads_in(lk.weight.detach(), d.n_kv_heads), d.n_rep))
        out["W_V"].append(expand_kv(split_heads_in(lv.weight.detach(), d.n_kv_heads), d.n_rep))
        out["W_O"].append(lo.weight.detach().T.reshape(d.n_heads, d.d_head, d.d_model))
        out["b_Q"].append(zeros_if_none(lq.bias, d.n_heads * d.d_head, like=lq.weight).reshape(d.n_heads, d.d_head))
        for lin, name in ((lk, "b_K"), (lv, "b_V")):
            b = zeros_if_none(lin.bias, d.n_kv_heads * d.d_head, like=lin.weight).reshape(d.n_kv_heads, d.d_head)
            out[name].append(expand_kv(b, d.n_rep))
        out["b_O"].append(zeros_if_none(lo.bias, d.d_model, like=lo.weight))
    return {n: torch.stack(ts) for n, ts in out.items()}


def gated_mlp_views(mlps: list[HFModule], d: Dims) -> dict[str, Any]:
    """``W_gate/W_in/W_out`` and ``b_in/b_out`` of gated MLPs with ``gate_proj``/``up_proj``/``down_proj``.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        ...     num_attention_heads=4, vocab_size=64))
        >>> v = gated_mlp_views([b.mlp for b in hf.model.layers], decoder_dims(hf.config))
        >>> v["W_in"].shape, v["W_out"].shape
        (torch.Size([2, 32, 48]), torch.Size([2, 48, 32]))
    """
    return {
        "W_gate": torch.stack([m.gate_proj.weight.detach().T for m in mlps]),
        "W_in": torch.stack([m.up_proj.weight.detach().T for m in mlps]),
        "W_out": torch.stack([m.down_proj.weight.detach().T for m in mlps]),
        "b_in": torch.stack([zeros_if_none(m.up_proj.bias, d.d_mlp, like=m.up_proj.weight) for m in mlps]),
        "b_out": torch.stack([zeros_if_none(m.down_proj.bias, d.d_model, like=m.down_proj.weight) for m in mlps]),
    }


def llama_layout_taps(changes: Mapping[Component, Tap | None] | None = None) -> dict[Component, Tap]:
    """The tap table of a Llama-layout decoder (``model.embed_tokens``, ``model.layers.{L}`` with ``self_attn``,
    ``post_attention_layernorm``, a gated ``mlp``, ``model.norm``, ``lm_head``); ``changes`` replaces entries
    (a ``Tap``) or removes them (``None``) for a family that differs.

    Example:
        >>> taps = llama_layout_taps({Component.MLP_PRE: Tap("model.layers.{L}.mlp.act", "in"), Component.LOGITS: None})
        >>> taps[Component.MLP_PRE].path, Component.LOGITS in taps, taps[Component.RESID_POST].path
        ('model.layers.{L}.mlp.act', False, 'model.layers.{L}')
    """
    taps = {
        Component.EMBED: Tap("model.embed_tokens", "out"),
        Component.RESID_PRE: Tap("model.layers.{L}", "in"),
        Component.ATTN_OUT: Tap("model.layers.{L}.self_attn", "out"),
        Component.RESID_MID: Tap("model.layers.{L}.post_attention_layernorm", "in"),
        Component.MLP_OUT: Tap("model.layers.{L}.mlp", "out"),
        Component.RESID_POST: Tap("model.layers.{L}", "out"),
        Component.Z: Tap("model.layers.{L}.self_attn.o_proj", "in", split_heads=True),
        Component.MLP_PRE: Tap("model.layers.{L}.mlp.gate_proj", "out"),
        Component.MLP_POST: Tap("model.layers.{L}.mlp.down_proj", "in"),
        Component.LN_FINAL: Tap("model.norm", "out"),
        Component.LOGITS: Tap("lm_head", "out"),
    }
    for c, tap in (changes or {}).items():
        if tap is None:
            taps.pop(c, None)
        else:
            taps[c] = tap
    return taps


def llama_attn_inputs(norm: str | None = "model.layers.{L}.input_layernorm") -> AttnInputs:
    """The per-head attention inputs of a Llama-layout decoder: ``norm`` in front of ``self_attn.q_proj`` /
    ``k_proj`` / ``v_proj`` (``norm=None`` where the projections read the stream directly: OLMo 2).

    Example:
        >>> llama_attn_inputs().k
        'model.layers.{L}.self_attn.k_proj'
    """
    return AttnInputs(norm, "model.layers.{L}.self_attn.q_proj", "model.layers.{L}.self_attn.k_proj",
                      "model.layers.{L}.self_attn.v_proj")


def decoder_dims(c: Any, d_mlp: int | None = None, **extra: Any) -> Dims:
    """:class:`Dims` from a Llama-style config (``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, ``head_dim``, ``intermediate_size``...); ``extra`` sets the other fields.

    Example:
        >>> from transformers import Gemma2Config
        >>> d = decoder_dims(Gemma2Config(hidden_size=2304, num_attention_heads=8, num_key_value_heads=4,
        ...                               head_dim=256, num_hidden_layers=26, intermediate_size=9216))
        >>> d.d_head, d.n_rep  # the head width is the config's, not d_model / n_heads
        (256, 2)
    """
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Dims(
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=d_head,
        d_mlp=d_mlp if d_mlp is not None else c.intermediate_size,
        d_vocab=c.vocab_size,
        n_ctx=getattr(c, "max_position_embeddings", None),
        **extra,
    )


def ones_like_norm(d: Dims, like: torch.Tensor) -> torch.Tensor:
    """``[layer, d_model]`` ones: the norm weight of a block that has no norm in that place.

    Example:
        >>> d = Dims(n_layers=2, n_heads=4, n_kv_heads=4, d_model=8, d_head=2, d_mlp=16, d_vocab=10)
        >>> ones_like_norm(d, torch.zeros(1, dtype=torch.bfloat16)).shape
        torch.Size([2, 8])
    """
    return torch.ones(d.n_layers, d.d_model, dtype=like.dtype, device=like.device)


@contextmanager
def materialized(module: nn.Module) -> Iterator[None]:
    """Make ``module``'s own parameters readable for the duration of the block.

    A kernel that reads parameters directly (a fused experts tensor, expert by expert) rather than by calling
    the module needs this under ``accelerate``'s offloading (``device_map`` with ``"cpu"``/``"disk"`` entries),
    where parameters live on the ``meta`` device except while the module's hook has loaded them: the module's
    ``_hf_hook`` is asked to load them (``pre_forward``) and to release them after (``post_forward``).
    Without such a hook this does nothing.

    Example:
        >>> lin = nn.Linear(2, 3)
        >>> with materialized(lin):
        ...     lin.weight.shape
        torch.Size([3, 2])
    """
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield
        return
    hook.pre_forward(module)
    try:
        yield
    finally:
        hook.post_forward(module, None)
