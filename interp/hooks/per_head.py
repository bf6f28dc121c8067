"""Per-head hook points that no module's input or output carries: each head's output in ``d_model`` and each
head's q / k / v input.

- ``blocks.L.attn.hook_result`` ``[batch, pos, head, d_model]``: ``z[..., h, :] @ W_O[L, h]``, computed from the
  output projection's input (``hook_z``). Their sum over heads plus ``b_O`` is the projection's output
  (``hook_attn_out``, or ``hook_attn_raw`` before a post-attention norm). An edit replaces the projection's
  output by ``sum_h result[..., h, :] + b_O``.
- ``blocks.L.hook_q_input`` ``[batch, pos, head, d_model]`` and ``hook_k_input`` / ``hook_v_input``
  ``[batch, pos, kv_head, d_model]``: the stream each head's query / key / value reads, before the attention's
  norm, one copy per head (per key/value head under grouped-query attention), as TransformerLens'
  ``use_split_qkv_input``. An edit of a head's input recomputes that head's slice of the projection output as
  ``norm(edited) @ W + b``; the heads whose input is unchanged keep the model's own values.

Both are computed only in runs that ask for them (hooks installed on the adapter's modules for the layers
asked for), so they cost nothing otherwise; a run that only reads them returns the model's own logits bit
for bit. The adapter names the modules (:class:`~interp.models.adapters.AttnInputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from interp.models import Model
from interp.sites import Component, Site

PER_HEAD = frozenset({Component.RESULT, Component.Q_INPUT, Component.K_INPUT, Component.V_INPUT})
"""The components this module computes."""

_INPUTS = (Component.Q_INPUT, Component.K_INPUT, Component.V_INPUT)

Process = Callable[[Site, torch.Tensor], torch.Tensor]


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args:
        return args[0]
    key = next((k for k in ("hidden_states", "input") if isinstance(kwargs.get(k), torch.Tensor)), None)
    if key is None:
        key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return kwargs[key]


def _replace_first(output: Any, t: torch.Tensor) -> Any:
    return (t, *output[1:]) if isinstance(output, tuple) else t


class PerHeadPoints:
    """Installs the hooks of the per-head points one run asks for.

    Args:
        model: the model.
        process: ``process(site, t)`` applies the run's plan for ``site`` (interventions, capture, gradient) and
            returns the value to use (``t`` itself when nothing edits it).
        after: called with the sites just processed (the run's early stop).
        wants_grad: whether the run takes a gradient at a site (then every head is recomputed from the leaf).
    """

    def __init__(self, model: Model, process: Process, after: Callable[[Sequence[Site]], None],
                 wants_grad: Callable[[Site], bool]) -> None:
        self.model = model
        self.process = process
        self.after = after
        self.wants_grad = wants_grad
        self._stash: dict[int, torch.Tensor] = {}

    # -- attn.hook_result ---------------------------------------------------------------------------
    def result_hook(self, layer: int) -> Callable[..., Any]:
        site = Site(Component.RESULT, layer)
        d = self.model.dims

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            z = _first_tensor(args, kwargs)
            w = self.model.weights
            W_O = w.W_O[layer].to(z.device, z.dtype)
            result = torch.einsum("bphe,hed->bphd", z.unflatten(-1, (d.n_heads, d.d_head)), W_O)
            new = self.process(site, result)
            self.after([site])
            if new is result and not self.wants_grad(site):  # a gradient leaf must be on the path to the logits
                return None
            return _replace_first(output, new.sum(-2) + w.b_O[layer].to(new.device, new.dtype))

        return hook

    # -- hook_q_input / hook_k_input / hook_v_input ----------------------------------------------------
    def clear(self) -> None:
        """Drop the kept streams (at the end of a run)."""
        self._stash.clear()

    def stash_hook(self, layer: int) -> Callable[..., None]:
        """A pre-hook on the attention's norm keeping its input (the stream the heads read)."""

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._stash[layer] = _first_tensor(args, kwargs)

        return hook

    def input_hook(self, layer: int, components: Sequence[Component]) -> Callable[..., Any]:
        """A forward hook on one projection module that computes ``components`` (in q, k, v order)."""
        spec = self.model.adapter.attn_inputs
        assert spec is not None
        norm = self.model.module(spec.norm.format(L=layer)) if spec.norm is not None else None
        d = self.model.dims
        comps = [c for c in _INPUTS if c in components]

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            x = self._stash[layer] if norm is not None else _first_tensor(args, kwargs)
            out0 = output[0] if isinstance(output, tuple) else output
            edited: torch.Tensor | None = None
            for comp in comps:
                site = Site(comp, layer)
                n = d.n_heads if comp is Component.Q_INPUT else d.n_kv_heads
                per_head = x.unsqueeze(-2).expand(*x.shape[:-1], n, x.shape[-1]).contiguous()
                new = self.process(site, per_head)
                self.after([site])
                if new is per_head and not self.wants_grad(site):
                    continue
                if self.wants_grad(site):
                    heads = torch.arange(n, device=new.device)
                else:
                    heads = (new != per_head).flatten(0, -3).any(0).any(-1).nonzero().flatten()
                    if heads.numel() == 0:
                        continue
                y = self._project(layer, comp, norm, new.index_select(-2, heads), heads)
                if edited is None:
                    edited = out0.clone()
                self._write(edited, comp, heads, y.to(edited.dtype))
            return None if edited is None else _replace_first(output, edited)

        return hook

    def _project(self, layer: int, comp: Component, norm: nn.Module | None, x: torch.Tensor,
                 heads: torch.Tensor) -> torch.Tensor:
        """``norm(x) @ W + b`` for the chosen heads: ``[..., len(heads), d_head]``."""
        w, n_rep = self.model.weights, self.model.dims.n_rep
        if comp is Component.Q_INPUT:
            W, b = w.W_Q[layer], w.b_Q[layer]
        else:  # the weight views repeat key/value heads per query head: one per key/value head
            W, b = (w.W_K[layer], w.b_K[layer]) if comp is Component.K_INPUT else (w.W_V[layer], w.b_V[layer])
            W, b = W[::n_rep], b[::n_rep]
        W = W.to(x.device, x.dtype).index_select(0, heads)
        b = b.to(x.device, x.dtype).index_select(0, heads)
        xn = norm.forward(x) if norm is not None else x  # forward: not the hooks on the norm (the stash)
        return torch.einsum("...hd,hde->...he", xn.to(W.dtype), W) + b

    def _write(self, out: torch.Tensor, comp: Component, heads: torch.Tensor, y: torch.Tensor) -> None:
        """Put ``y [..., len(heads), d_head]`` into the projection output ``out`` at those heads (in place)."""
        spec = self.model.adapter.attn_inputs
        assert spec is not None
        d = self.model.dims
        idx = _INPUTS.index(comp)
        if spec.fused and spec.layout == "per_head":
            view = out.unflatten(-1, (d.n_heads, 3, d.d_head))
            view[..., heads, idx, :] = y
            return
        start = 0
        if spec.fused:
            start = (0, d.n_heads * d.d_head, (d.n_heads + d.n_kv_heads) * d.d_head)[idx]
        n = d.n_heads if comp is Component.Q_INPUT else d.n_kv_heads
        view = out[..., start:start + n * d.d_head].unflatten(-1, (n, d.d_head))
        view[..., heads, :] = y


def projection_paths(model: Model, layer: int, components: Sequence[Component]) -> dict[str, list[Component]]:
    """The projection module (path) that each requested input component's hook goes on, grouped by module.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> import interp
        >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10)))
        >>> projection_paths(m, 0, [Component.Q_INPUT, Component.V_INPUT])
        {'transformer.h.0.attn.c_attn': [<Component.Q_INPUT: 'hook_q_input'>, <Component.V_INPUT: 'hook_v_input'>]}
    """
    spec = model.adapter.attn_inputs
    assert spec is not None
    paths = dict(zip(_INPUTS, (spec.q, spec.k, spec.v), strict=True))
    out: dict[str, list[Component]] = {}
    for comp in _INPUTS:
        if comp in components:
            out.setdefault(paths[comp].format(L=layer), []).append(comp)
    return out


__all__ = ["PER_HEAD", "PerHeadPoints", "projection_paths"]
