"""A loaded model: the Hugging Face module, its tokenizer, its adapter and a uniform view of it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from interp.models.adapters import Adapter, Dims, WeightViews
from interp.sites import Component, Site, all_sites


@dataclass(eq=False)
class LoadedModel:
    """A Hugging Face model with the adapter that maps it to interp's hook points.

    Attributes:
        hf: the underlying ``transformers`` model (kept in eval mode).
        tokenizer: its tokenizer (right padding; a pad token is set to EOS where missing), or ``None``.
        adapter: the architecture table (see :mod:`interp.models.adapters`).
        name: the id it was loaded by (``"smollm2-135m"``, a hub id or a local path).
        source: where its weights came from, for manifests and ``interp models``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> m.dims.n_layers, m.dims.n_heads, m.dims.n_kv_heads  # doctest: +SKIP
        (30, 9, 3)
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

    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def device(self) -> torch.device:
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

    def apply_final_norm(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Run the model's own final norm module (RMSNorm or LayerNorm, with its eps) on ``[..., d_model]``.

        The input is moved to the model's device and dtype; the output stays there. With ``grad`` the
        call is recorded by autograd (for training things that read through the norm, like the tuned lens).

        Example:
            >>> import interp
            >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
            >>> m.apply_final_norm(torch.randn(2, 576)).shape  # doctest: +SKIP
            torch.Size([2, 576])
        """
        tap = self.adapter.taps.get(Component.LN_FINAL)
        if tap is None:
            raise ValueError(f"model {self.name!r} ({self.adapter.family}) has no final norm")
        with torch.set_grad_enabled(grad):
            return self.module(tap.module_path(None))(x.to(self.device, self.dtype))

    def sites(self) -> list[Site]:
        """Every hook point this model offers, in forward order."""
        return all_sites(self.dims.n_layers, self.adapter.components(self.config))

    def hook_names(self) -> list[str]:
        """Names of every hook point, e.g. ``blocks.0.hook_resid_pre``."""
        return [s.name for s in self.sites()]

    def module(self, path: str) -> nn.Module:
        """The submodule at a dotted path (``model.layers.3.mlp``)."""
        return self.hf.get_submodule(path)

    def tokenize(
        self, texts: str | Sequence[str], max_tokens: int | None = None, prepend_bos: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize with right padding. Returns ``(input_ids, attention_mask)``, both ``[batch, pos]``.

        Raises:
            ValueError: on an empty list, an empty string, or a non-string item.
        """
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer; pass token ids instead of text")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("no input: got an empty list of texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"input {i} is a {type(t).__name__}, not a str: {t!r}")
            if not t:
                raise ValueError(f"input {i} is an empty string; every sequence needs at least one token")
        if prepend_bos and self.tokenizer.bos_token:
            texts = [self.tokenizer.bos_token + t for t in texts]
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=max_tokens is not None, max_length=max_tokens
        )
        return enc["input_ids"], enc["attention_mask"]

    def to_str_tokens(self, input_ids: torch.Tensor) -> list[list[str]]:
        """Token strings per sequence (padding included), e.g. ``[['The', ' capital', ...]]``."""
        ids = input_ids.tolist() if input_ids.dim() == 2 else [input_ids.tolist()]
        if self.tokenizer is None:
            return [[str(i) for i in row] for row in ids]
        unique = sorted({i for row in ids for i in row})
        text = dict(zip(unique, self.tokenizer.batch_decode([[i] for i in unique]), strict=True))
        return [[text[i] for i in row] for row in ids]
