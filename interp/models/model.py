"""``Model``: the one model class. A Hugging Face model, its tokenizer and the adapter that maps it to hook points.

``run`` and ``hooks`` hand over to :mod:`interp.hooks` (and ``run`` builds a :class:`~interp.trace.Trace`);
they import those packages when called, so that ``models`` stays below them in the import order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from interp.errors import BadInputError
from interp.models.adapters import Adapter, Dims, WeightViews
from interp.sites import Component, Site, SiteSpec, all_sites

if TYPE_CHECKING:
    from interp.hooks import HookedRun, Intervention
    from interp.trace import RunResult, Trace, TraceStore

Inputs = Union[str, Sequence[str], torch.Tensor, "tuple[torch.Tensor, torch.Tensor]", "Trace", "TraceStore"]
"""What every tool takes as ``inputs``: a text, a list of texts, token ids ``[batch, pos]`` (or ``(ids, mask)``),
a :class:`~interp.trace.Trace` or a :class:`~interp.trace.TraceStore`."""


@dataclass(eq=False, repr=False)
class Model:
    """A Hugging Face model with the adapter that maps it to interp's hook points.

    Load one with :func:`interp.load_model` (a known name, a hub id or a local directory) or wrap a model
    you already have with :func:`interp.from_hf`.

    Attributes:
        hf: the underlying ``transformers`` model (kept in eval mode).
        tokenizer: its tokenizer (right padding; a pad token is set to EOS where missing), or ``None``.
        adapter: the architecture table (see :mod:`interp.models.adapters`).
        name: the id it was loaded by (``"smollm2-135m"``, a hub id or a local path).
        source: where its weights came from, for manifests and ``interp models``.
        dims: layer/head/width sizes.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> m.dims.n_layers, m.dims.n_heads, m.dims.n_kv_heads
        (30, 9, 3)
        >>> res = m.run("The capital of France is", capture="resid_post")
        >>> res.trace.stack("resid_post").shape
        torch.Size([30, 1, 5, 576])
    """

    hf: nn.Module
    tokenizer: Any
    adapter: Adapter
    name: str
    source: str = ""
    dims: Dims = field(init=False)

    def __post_init__(self) -> None:
        self.hf.eval()
        self.dims = self.adapter.dims(self.hf.config)
        if self.tokenizer is not None:
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
                self.tokenizer.pad_token = self.tokenizer.eos_token

    # -- what it is -----------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device the input embedding runs on (its execution device when accelerate
        offloads it under a ``device_map``), else the first parameter's."""
        get = getattr(self.hf, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        if emb is not None:
            dev = getattr(getattr(emb, "_hf_hook", None), "execution_device", None)
            if dev is not None:
                return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
            weight = getattr(emb, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
                return weight.device
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @cached_property
    def weights(self) -> WeightViews:
        """Per-head weight views (W_E, W_U, W_Q/K/V/O, W_in/W_out, norms); see :class:`WeightViews`."""
        return self.adapter.weights(self.hf, self.dims)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the architecture and the weights (a strided sample of every tensor)."""
        h = hashlib.sha256(self.config.model_type.encode())
        for pname, p in sorted(self.hf.state_dict().items()):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].to("cpu", torch.float32).contiguous()
            h.update(f"{pname}:{tuple(p.shape)}".encode())
            h.update(sample.numpy().tobytes())
        return h.hexdigest()[:16]

    def sites(self) -> list[Site]:
        """Every named hook point this model offers, in forward order."""
        return all_sites(self.dims.n_layers, self.adapter.components(self.config))

    def hook_names(self) -> list[str]:
        """Names of every named hook point, e.g. ``blocks.0.hook_resid_pre`` (``hf:`` paths come on top)."""
        return [s.name for s in self.sites()]

    def module(self, path: str) -> nn.Module:
        """The submodule at a dotted path (``model.layers.3.mlp``)."""
        try:
            return self.hf.get_submodule(path)
        except AttributeError:
            raise BadInputError(f"the model has no submodule {path!r}; list them with "
                                "[n for n, _ in model.hf.named_modules()]") from None

    def apply_final_norm(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Run the model's own final norm module (RMSNorm or LayerNorm, with its eps) on ``[..., d_model]``.

        The input is moved to the model's device and dtype; the output stays there. With ``grad`` the
        call is recorded by autograd (for training things that read through the norm, like the tuned lens).

        Example:
            >>> import interp, torch
            >>> m = interp.load_model("smollm2-135m")
            >>> m.apply_final_norm(torch.randn(2, 576)).shape
            torch.Size([2, 576])
        """
        tap = self.adapter.taps.get(Component.LN_FINAL)
        if tap is None:
            raise BadInputError(f"model {self.name!r} ({self.adapter.family}) has no final norm")
        with torch.set_grad_enabled(grad):
            return self.module(tap.module_path(None))(x.to(self.device, self.dtype))

    def final_norm_scale(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., 1]``: the final norm's divisor at each row of ``x [..., d_model]`` (the residual stream it
        normalises): ``sqrt(mean(x²) + eps)`` for RMSNorm, ``sqrt(var(x) + eps)`` for LayerNorm.

        With the scale frozen, the final norm is linear in its input, which is what direct logit
        attribution splits over the residual stream's components (TransformerLens' ``apply_ln_to_stack``).

        Example:
            >>> import interp, torch
            >>> m = interp.load_model("smollm2-135m")
            >>> x = torch.randn(3, 576)
            >>> w = m.weights.ln_final_w
            >>> torch.allclose(x / m.final_norm_scale(x) * w, m.apply_final_norm(x), atol=1e-5)
            True
        """
        tap = self.adapter.taps.get(Component.LN_FINAL)
        if tap is None:
            raise BadInputError(f"model {self.name!r} ({self.adapter.family}) has no final norm")
        mod = self.module(tap.module_path(None))
        eps = float(getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-5)))
        xf = x.double()
        if self.weights.norm == "layer":
            xf = xf - xf.mean(-1, keepdim=True)
        return (xf.pow(2).mean(-1, keepdim=True) + eps).sqrt().to(x.dtype)

    # -- text -----------------------------------------------------------------------------------
    def tokenize(
        self, texts: str | Sequence[str], max_tokens: int | None = None, prepend_bos: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize with right padding. Returns ``(input_ids, attention_mask)``, both ``[batch, pos]``.

        Raises:
            BadInputError: an empty list, a blank string, or a model without a tokenizer.
        """
        if self.tokenizer is None:
            raise BadInputError(f"model {self.name!r} has no tokenizer; pass token ids instead of text")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise BadInputError("no input: got an empty list of texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"input {i} is a {type(t).__name__}, not a str: {t!r}")
            if not t.strip():
                raise BadInputError(f"input {i} is {'an empty' if not t else 'a blank'} string ({t!r}); "
                                    "every sequence needs at least one non-space character")
        if prepend_bos and self.tokenizer.bos_token:
            texts = [self.tokenizer.bos_token + t for t in texts]
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=max_tokens is not None, max_length=max_tokens
        )
        return enc["input_ids"], enc["attention_mask"]

    def encode(self, inputs: Inputs, max_tokens: int | None = None, prepend_bos: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Any ``inputs`` → ``(input_ids, attention_mask)`` ``[batch, pos]`` on the model's device.

        Example:
            >>> import interp
            >>> m = interp.load_model("smollm2-135m")
            >>> ids, mask = m.encode(["Hello", "Hello world"])
            >>> mask.tolist()
            [[1, 0], [1, 1]]
        """
        if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, torch.Tensor) for x in inputs):
            ids, mask = inputs
        elif isinstance(inputs, torch.Tensor):
            if inputs.dim() not in (1, 2):
                raise BadInputError(f"token ids must be [pos] or [batch, pos], got shape {tuple(inputs.shape)}")
            ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
            mask = torch.ones_like(ids)
        elif hasattr(inputs, "input_ids") and hasattr(inputs, "attention_mask"):  # a Trace
            ids, mask = inputs.input_ids, inputs.attention_mask  # type: ignore[union-attr]
        elif hasattr(inputs, "tokens") and callable(getattr(inputs, "tokens", None)):  # a TraceStore
            ids, mask = inputs.tokens()  # type: ignore[union-attr]
        elif isinstance(inputs, str) or (isinstance(inputs, Sequence) and not isinstance(inputs, torch.Tensor)):
            ids, mask = self.tokenize(inputs, max_tokens=max_tokens, prepend_bos=prepend_bos)  # type: ignore[arg-type]
        else:
            raise TypeError(f"inputs must be a str, a list of str, token ids [batch, pos], (ids, mask), a Trace "
                            f"or a TraceStore; got {type(inputs).__name__}")
        return ids.to(self.device), mask.to(self.device)  # type: ignore[union-attr]

    def to_str_tokens(self, input_ids: torch.Tensor) -> list[list[str]]:
        """Token strings per sequence (padding included), e.g. ``[['The', ' capital', ...]]``."""
        ids = input_ids.tolist() if input_ids.dim() == 2 else [input_ids.tolist()]
        if self.tokenizer is None:
            return [[str(i) for i in row] for row in ids]
        unique = sorted({i for row in ids for i in row})
        text = dict(zip(unique, self.tokenizer.batch_decode([[i] for i in unique]), strict=True))
        return [[text[i] for i in row] for row in ids]

    # -- running --------------------------------------------------------------------------------
    def run(
        self,
        inputs: Inputs,
        capture: SiteSpec | Sequence[SiteSpec] = (),
        interventions: Sequence[Intervention] = (),
        *,
        grads: SiteSpec | Sequence[SiteSpec] = (),
        metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_tokens: int | None = None,
        prepend_bos: bool = False,
        stop_early: bool = False,
        metadata: Sequence[dict[str, Any]] = (),
    ) -> RunResult:
        """Run the model once, capturing and editing activations.

        Args:
            inputs: a text, a list of texts, token ids ``[batch, pos]``, ``(ids, mask)``, a Trace or a TraceStore
                (its token ids: every sequence in one batch).
            capture: hook points to keep, in any spelling of :mod:`interp.sites` (``"resid_post"``,
                ``"blocks.*.hook_z"``, ``"z.3"``, ``"hf:model.layers.3.mlp.act_fn"``).
            interventions: :mod:`interp.hooks` interventions, applied in order.
            grads: hook points at which to take ``d metric / d activation`` (one backward).
            metric: ``logits -> scalar`` for ``grads``.
            max_tokens: truncate texts to this many tokens.
            prepend_bos: put the BOS token first (SmolLM2's tokenizer adds none by default).
            stop_early: end the forward after the last captured hook (``logits`` is then ``None``).
            metadata: one dict per sequence, stored in the trace (default: ``{"text": ...}`` for texts,
                a trace's own metadata for a trace).

        Returns:
            :class:`~interp.trace.RunResult` with ``logits`` and ``trace``.

        Example:
            >>> import interp
            >>> from interp.hooks import Ablate
            >>> m = interp.load_model("smollm2-135m")
            >>> res = m.run("The capital of France is", capture="resid_post.-1",
            ...             interventions=[Ablate("z.5", heads=[0, 1])])
            >>> res.trace["blocks.29.hook_resid_post"].shape
            torch.Size([1, 5, 576])
        """
        from interp.trace.run import run_model

        return run_model(self, inputs, capture, interventions, grads=grads, metric=metric, max_tokens=max_tokens,
                         prepend_bos=prepend_bos, stop_early=stop_early, metadata=metadata)

    @contextmanager
    def hooks(self, fns: dict[str, Callable[[torch.Tensor, Site], torch.Tensor | None]] | None = None,
              interventions: Sequence[Intervention] = (), capture: SiteSpec | Sequence[SiteSpec] = ()
              ) -> Iterator[HookedRun]:
        """Hooks around forwards you call yourself (``model.hf.generate`` too); see :func:`interp.hooks.hooks`.

        Example:
            >>> import interp
            >>> from interp.hooks import Scale
            >>> m = interp.load_model("smollm2-135m")
            >>> ids, mask = m.encode("Once upon a time")
            >>> with m.hooks(interventions=[Scale("mlp_out.3", 0.5)], capture="resid_post.3") as run:
            ...     _ = m.hf(input_ids=ids, attention_mask=mask)
            >>> run.activations["blocks.3.hook_resid_post"].shape
            torch.Size([1, 4, 576])
        """
        from interp.hooks.engine import hooks

        with hooks(self, fns, interventions, capture) as run:
            yield run

    def __repr__(self) -> str:
        d = self.dims
        return (f"Model({self.name!r}, {self.adapter.family}, layers={d.n_layers}, heads={d.n_heads}/"
                f"{d.n_kv_heads}kv, d_model={d.d_model}, d_mlp={d.d_mlp}, vocab={d.d_vocab})")


__all__ = ["Inputs", "Model"]
