"""Forwards that start at a layer from a given residual stream, and stop at the final norm.

A patch at layer ``L`` leaves layers ``0..L-1`` unchanged, so a patched run only needs layers
``L..`` fed with the cached ``hook_resid_pre`` of layer ``L``. :func:`forward_from` runs exactly that
through the model's own modules: for the duration of the call the block list is swapped for its
tail ``[L:]`` and a pre-hook replaces the tail's input with the given residual stream. Interventions
and captures work as in :func:`~interp.hooks.run_with_hooks` (hooks are installed on the full model
first, so layer indices keep their meaning). Optionally only some positions are unembedded, which
saves the ``[pos, d_model] x [d_model, vocab]`` product a metric at one position does not need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from interp.hooks.engine import HookedRun, RunOutput, _check_ids, _StopForwardSignal, forward, make_plans
from interp.hooks.interventions import Intervention
from interp.models import LoadedModel
from interp.sites import Component, Site


def _replace_first_input(new: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            if args[0].shape != new.shape:
                raise ValueError(f"resid has shape {tuple(new.shape)} but the layer input is {tuple(args[0].shape)}")
            return (new, *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else "input"
        return args, {**kwargs, key: new}

    return hook


def forward_from(
    model: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
    interventions: Sequence[Intervention] = (),
    capture: str | Site | Sequence[str | Site] = (),
    positions: torch.Tensor | None = None,
    stop_early: bool = False,
) -> RunOutput:
    """Run layers ``start_layer..`` from ``resid`` (the ``hook_resid_pre`` of ``start_layer``).

    Args:
        model: a causal language model.
        input_ids: ``[batch, pos]`` (they set the positions and the attention mask; their embeddings
            are computed and discarded when ``resid`` is given).
        attention_mask: ``[batch, pos]`` or ``None``.
        start_layer: first block to run, ``0..n_layers`` (``n_layers`` runs only the final norm and
            the unembedding).
        resid: ``[batch, pos, d_model]`` residual stream entering ``start_layer``; ``None`` keeps
            the model's own (then ``start_layer`` must be 0).
        interventions: edits at hook points of layers ``>= start_layer``.
        capture: hook points of layers ``>= start_layer`` to keep (no gradients here).
        positions: ``[batch]`` position whose logits to return per sequence (``logits`` is then
            ``[batch, vocab]``); ``None`` returns ``[batch, pos, vocab]``.
        stop_early: end the forward once every captured hook is read (``logits`` is then ``None``).

    Returns:
        :class:`~interp.hooks.RunOutput` with the logits and the captured activations.

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> from interp.hooks import run_with_hooks
        >>> from interp.hooks.partial import forward_from
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100)))
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> full = run_with_hooks(m, ids, capture="blocks.2.hook_resid_pre")
        >>> part = forward_from(m, ids, start_layer=2, resid=full.activations["blocks.2.hook_resid_pre"])
        >>> bool(torch.allclose(part.logits, full.logits, atol=1e-5))
        True
    """
    _check_ids(model, input_ids, attention_mask)
    adapter = model.adapter
    n_layers = model.dims.n_layers
    if not adapter.is_causal or Component.LOGITS not in adapter.taps or Component.LN_FINAL not in adapter.taps:
        raise ValueError(f"forward_from needs a causal language model with a final norm; {model.name!r} "
                         f"({adapter.family}) is not one")
    if not isinstance(start_layer, int) or not 0 <= start_layer <= n_layers:
        raise ValueError(f"start_layer must be an int in 0..{n_layers}, got {start_layer!r}")
    if resid is None and start_layer != 0:
        raise ValueError(f"start_layer={start_layer} needs resid= (the hook_resid_pre of that layer)")
    if resid is not None and resid.shape != (*input_ids.shape, model.dims.d_model):
        raise ValueError(f"resid must be [batch, pos, d_model] = {(*input_ids.shape, model.dims.d_model)}, "
                         f"got {tuple(resid.shape)}")
    if positions is not None and (positions.dim() != 1 or positions.shape[0] != input_ids.shape[0]):
        raise ValueError(f"positions must be [batch] = [{input_ids.shape[0]}], got {tuple(positions.shape)}")
    plans = make_plans(model, capture, interventions)
    for site in plans:
        if site.layer is not None and site.layer < start_layer:
            raise ValueError(f"{site.name} lies before start_layer={start_layer}; it would never run")
    parent_path, _, attr = adapter.layers.rpartition(".")
    parent = model.module(parent_path) if parent_path else model.hf
    layers = getattr(parent, attr)
    norm = model.module(adapter.taps[Component.LN_FINAL].module_path(None))
    lm_head = model.module(adapter.taps[Component.LOGITS].module_path(None))
    normed: list[torch.Tensor] = []

    def stop(module: nn.Module, args: Any, output: Any) -> Any:
        normed.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForwardSignal

    handles = []
    captured = {s for s, p in plans.items() if p.capture}
    if stop_early and not captured:
        raise ValueError("stop_early=True needs capture=")
    with torch.no_grad(), HookedRun(model, plans) as run:
        if stop_early:  # the engine only stops early without interventions; here edits before the stop are fine
            run._remaining, run._stop_early = set(captured), True
        try:
            if resid is not None:
                target = layers[start_layer] if start_layer < n_layers else norm
                new = resid.to(model.device, model.dtype)
                handles.append(target.register_forward_pre_hook(_replace_first_input(new), with_kwargs=True,
                                                                prepend=True))
            handles.append(norm.register_forward_hook(stop))
            setattr(parent, attr, nn.ModuleList(list(layers)[start_layer:]))
            with contextlib.suppress(_StopForwardSignal):
                forward(model, input_ids, attention_mask)
        finally:
            setattr(parent, attr, layers)
            for h in handles:
                h.remove()
        if stop_early and not run._remaining:
            return RunOutput(logits=None, activations=run.activations, grads={})
        if not normed:
            raise RuntimeError("the final norm never ran; is this model's adapter table right?")
        h = normed[0]
        if positions is not None:
            h = h[torch.arange(h.shape[0], device=h.device), positions.to(h.device)]
        logits = lm_head(h)
    return RunOutput(logits=logits, activations=run.activations, grads={})


__all__ = ["forward_from"]
