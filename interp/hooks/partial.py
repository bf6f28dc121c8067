"""Forwards that start at a layer from a given residual stream, and stop at the final norm.

A patch at layer ``L`` leaves layers ``0..L-1`` unchanged, so a patched run only needs layers
``L..`` fed with the cached ``hook_resid_pre`` of layer ``L``. :func:`forward_from` runs exactly that
through the model's own modules: for the duration of the call the block list is swapped for its
tail ``[L:]`` and a pre-hook replaces the tail's input with the given residual stream. Interventions
and captures work as in :func:`~interp.hooks.run_with_hooks` (hooks are installed on the full model
first, so layer indices keep their meaning). Optionally only some positions are unembedded, which
saves the ``[pos, d_model] x [d_model, vocab]`` product a metric at one position does not need.

:func:`forward_packed` goes further for runs that differ from a recorded run only from some position
on: it packs their changed positions into one sequence that attends to the recorded run's
keys/values (:func:`record_kv`) for the unchanged ones, under an explicit ``[T, K + T]`` mask.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from interp.errors import BadInputError
from interp.hooks.engine import HookedRun, RunOutput, _check_ids, _StopForwardSignal, forward, make_plans
from interp.hooks.interventions import Intervention
from interp.models import Model
from interp.sites import Component, Site


def _replace_first_input(new: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            if args[0].shape != new.shape:
                raise BadInputError(f"resid has shape {tuple(new.shape)} but the layer input is {tuple(args[0].shape)}")
            return (new, *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else "input"
        return args, {**kwargs, key: new}

    return hook


def _lm_head(model: Model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The final norm's output → logits, as the model computes them (LM head, and any final soft-cap)."""
    return lambda h: model.adapter.unembed(model.hf, h)


def _run_tail(model: Model, plans: dict[Site, Any], start_layer: int, pre_hooks: dict[int, Any],
              stop_early: bool, run_forward: Callable[[], Any]) -> tuple[torch.Tensor | None, HookedRun]:
    """Run ``run_forward`` with the block list cut to ``[start_layer:]``, ``pre_hooks`` (block index, or
    ``n_layers`` for the final norm -> forward pre-hook taking kwargs; they run before any site hook)
    and the plans' hooks installed; return the final norm's output (``None`` when it stopped early)."""
    adapter = model.adapter
    n_layers = model.dims.n_layers
    for site in plans:
        if site.layer is not None and site.layer < start_layer:
            raise BadInputError(f"{site.name} lies before start_layer={start_layer}; it would never run")
    parent_path, _, attr = adapter.layers.rpartition(".")
    parent = model.module(parent_path) if parent_path else model.hf
    layers = getattr(parent, attr)
    norm = model.module(adapter.taps[Component.LN_FINAL].module_path(None))
    normed: list[torch.Tensor] = []

    def stop(module: nn.Module, args: Any, output: Any) -> Any:
        normed.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForwardSignal

    handles = []
    with torch.no_grad(), HookedRun(model, plans) as run:
        if stop_early:  # the engine only stops early without interventions; here edits before the stop are fine
            run._remaining, run._stop_early = {s for s, p in plans.items() if p.capture}, True
        try:
            for index, pre_hook in pre_hooks.items():
                target = layers[index] if index < n_layers else norm
                handles.append(target.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True))
            handles.append(norm.register_forward_hook(stop))
            setattr(parent, attr, nn.ModuleList(list(layers)[start_layer:]))
            with contextlib.suppress(_StopForwardSignal):
                run_forward()
        finally:
            setattr(parent, attr, layers)
            for h in handles:
                h.remove()
    if stop_early and not run._remaining:
        return None, run
    if not normed:
        raise RuntimeError("the final norm never ran; is this model's adapter table right?")
    return normed[0], run


def forward_from(
    model: Model,
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
        raise BadInputError(f"forward_from needs a causal language model with a final norm; {model.name!r} "
                         f"({adapter.family}) is not one")
    if not isinstance(start_layer, int) or not 0 <= start_layer <= n_layers:
        raise BadInputError(f"start_layer must be an int in 0..{n_layers}, got {start_layer!r}")
    if resid is None and start_layer != 0:
        raise BadInputError(f"start_layer={start_layer} needs resid= (the hook_resid_pre of that layer)")
    if resid is not None and resid.shape != (*input_ids.shape, model.dims.d_model):
        raise BadInputError(f"resid must be [batch, pos, d_model] = {(*input_ids.shape, model.dims.d_model)}, "
                         f"got {tuple(resid.shape)}")
    if positions is not None and (positions.dim() != 1 or positions.shape[0] != input_ids.shape[0]):
        raise BadInputError(f"positions must be [batch] = [{input_ids.shape[0]}], got {tuple(positions.shape)}")
    plans = make_plans(model, capture, interventions)
    captured = {s for s, p in plans.items() if p.capture}
    if stop_early and not captured:
        raise BadInputError("stop_early=True needs capture=")
    pre_hooks = {} if resid is None else {start_layer: _replace_first_input(resid.to(model.device, model.dtype))}
    h, run = _run_tail(model, plans, start_layer, pre_hooks, stop_early, lambda: forward(model, input_ids, attention_mask))
    if h is None:
        return RunOutput(logits=None, activations=run.activations, grads={})
    if positions is not None:
        h = h[torch.arange(h.shape[0], device=h.device), positions.to(h.device)]
    with torch.no_grad():
        logits = _lm_head(model)(h)
    return RunOutput(logits=logits, activations=run.activations, grads={})


class PrefixKV:
    """Keys and values that attention sees ahead of a forward's own, standing in for a Hugging Face cache.

    While ``recording`` (a fresh instance), ``update`` keeps each layer's keys/values and returns them
    unchanged: one forward fills it. Then ``update`` returns ``cat(prefix, new)`` along positions and
    stores nothing, so one filled instance serves any number of forwards. Tensors are
    ``[batch, kv_heads, pos, d_head]`` as the attention modules make them.
    """

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.recording = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recording:
            self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
            return key_states, value_states
        return (torch.cat([self.keys[layer_idx], key_states], dim=2),
                torch.cat([self.values[layer_idx], value_states], dim=2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.recording else int(self.keys[min(self.keys)].shape[2])

    def packed(self) -> PrefixKV:
        """The recorded ``[n, kv_heads, pos, d_head]`` of ``n`` sequences as one sequence of ``n * pos``
        positions (sequence-major), for a packed forward (:func:`forward_packed`)."""
        out = PrefixKV()
        for store, new in ((self.keys, out.keys), (self.values, out.values)):
            for layer, t in store.items():
                new[layer] = t.transpose(0, 1).flatten(1, 2).unsqueeze(0)
        out.recording = False
        return out


def _cache_kwarg(model: Model) -> str:
    params = inspect.signature(model.hf.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def causal_mask_4d(n_query: int, n_key: int, allowed: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """An additive ``[1, 1, n_query, n_key]`` mask: 0 where ``allowed`` (``[n_query, n_key]`` bool;
    ``None``: causal), the dtype's minimum elsewhere.

    Example (two new queries after two cached keys):
        >>> import torch
        >>> (causal_mask_4d(2, 4, None, torch.float32)[0, 0] == 0).int().tolist()
        [[1, 1, 1, 0], [1, 1, 1, 1]]
    """
    if allowed is None:
        allowed = torch.ones(n_query, n_key, dtype=torch.bool).tril(n_key - n_query)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def record_kv(model: Model, input_ids: torch.Tensor, interventions: Sequence[Intervention] = ()) -> PrefixKV:
    """Every layer's attention keys/values of one plain forward over ``input_ids`` (``[n, pos]``, no
    padding), with ``interventions`` applied; :meth:`PrefixKV.packed` makes it a prefix for
    :func:`forward_packed` (whose example uses both).

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> kv = record_kv(m, torch.tensor([[1, 2, 3], [4, 5, 6]]))
        >>> tuple(kv.keys[1].shape), tuple(kv.packed().keys[1].shape)  # [batch, heads, pos, d_head]
        ((2, 4, 3, 8), (1, 4, 6, 8))
    """
    kv = PrefixKV()
    n_pos = input_ids.shape[1]
    mask = causal_mask_4d(n_pos, n_pos, None, model.dtype).to(model.device)
    pos = torch.arange(n_pos, device=model.device).expand(input_ids.shape[0], -1)
    with torch.no_grad(), HookedRun(model, make_plans(model, (), interventions)):
        forward(model, input_ids.to(model.device), mask, position_ids=pos, **{_cache_kwarg(model): kv})
    kv.recording = False
    return kv


def _grow(layer: int, first: int, counts: list[int], resid: torch.Tensor, n_keys: int) -> Any:
    """Pre-hook of block ``layer`` in a packed forward: the tokens starting here join the stream, and the
    per-token arguments (mask, positions, rotary tables; made for all ``T`` tokens) are cut to the active ones."""
    total, lo, hi = counts[-1], (counts[layer - 1] if layer > first else 0), counts[layer]

    def cut(v: Any) -> Any:
        if isinstance(v, tuple):
            return tuple(cut(x) for x in v)
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            return v
        if v.dim() == 4 and v.shape[-2:] == (total, n_keys + total):
            return v[..., :hi, :n_keys + hi]
        if v.dim() >= 2 and v.shape[1] == total:
            return v[:, :hi]
        return v[:hi] if v.dim() == 1 and v.shape[0] == total else v

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        new = resid[:, lo:hi].to(h.device, h.dtype)
        h = new if layer == first else (torch.cat([h, new], 1) if hi > lo else h)
        kwargs = {k: cut(v) for k, v in kwargs.items() if k != "hidden_states"}
        if args:
            return (h, *(cut(a) for a in args[1:])), kwargs
        return args, {**kwargs, "hidden_states": h}

    return hook


def forward_packed(model: Model, input_ids: torch.Tensor, position_ids: torch.Tensor, prefix: PrefixKV,
                   allowed: torch.Tensor, *, start_layer: int | torch.Tensor, resid: torch.Tensor,
                   interventions: Sequence[Intervention] = (), read: torch.Tensor) -> torch.Tensor:
    """Blocks from each token's start layer on, over one packed sequence of ``T`` tokens drawn from many
    partial runs.

    Each packed token keeps its own position (``position_ids``) and attends to the keys that
    ``allowed`` (``[T, K + T]`` bool) names among ``prefix``'s ``K`` recorded keys and the ``T`` packed
    ones: with the right mask, rows of different runs, each resuming at a different position from a
    shared cached prefix, share one forward and compute only what changed. Tokens may start at
    different blocks (``start_layer`` per token, non-decreasing): a token joins the stream at the
    input of its start block, so each block's weights are read once for all of them. Interventions
    see the packed tokens active at their block (``[1, T_l, ...]``; keys/values ``[1, K + T_l, ...]``).

    Args:
        model: a causal language model whose attention reads keys/values through its cache's ``update``.
        input_ids / position_ids: ``[1, T]``.
        prefix: filled :class:`PrefixKV` (see :func:`record_kv` and :meth:`PrefixKV.packed`).
        allowed: ``[T, K + T]`` which keys each packed token attends to.
        start_layer: the first block of every token (int) or of each (``[T]``, non-decreasing;
            ``n_layers``: only the final norm); ``resid`` ``[1, T, d_model]`` is each token's stream there.
        interventions: edits at hook points (a hook of block ``l`` sees the tokens that started by ``l``).
        read: ``[k]`` packed indices whose logits to return.

    Returns:
        ``[k, vocab]`` logits.

    Example (positions 2 and 3 recomputed from layer 1 over the cached keys/values of positions 0, 1):
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> from interp.hooks import run_with_hooks
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> full = run_with_hooks(m, ids, capture="blocks.1.hook_resid_pre")
        >>> kv = record_kv(m, ids).packed()
        >>> allowed = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 1]], dtype=torch.bool)
        >>> out = forward_packed(m, ids[:, 2:], torch.tensor([[2, 3]]), kv, allowed, start_layer=1,
        ...                      resid=full.activations["blocks.1.hook_resid_pre"][:, 2:], read=torch.tensor([1]))
        >>> bool(torch.allclose(out, full.logits[:, 3], atol=1e-5))
        True
    """
    n_tokens, n_layers = input_ids.shape[1], model.dims.n_layers
    n_keys = prefix.get_seq_length()
    if allowed.shape != (n_tokens, n_keys + n_tokens):
        raise BadInputError(f"allowed must be [T, K + T] = [{n_tokens}, {n_keys + n_tokens}], got {tuple(allowed.shape)}")
    starts = torch.as_tensor(start_layer).expand(n_tokens).cpu()
    if bool((starts[1:] < starts[:-1]).any()) or not 0 <= int(starts[0]) <= int(starts[-1]) <= n_layers:
        raise BadInputError(f"start_layer must be in 0..{n_layers} and non-decreasing over the packed tokens")
    first = int(starts[0])
    counts = [0] * first + [int((starts <= layer).sum()) for layer in range(first, n_layers + 1)]
    new = resid.to(model.device, model.dtype)
    pre_hooks = {layer: _grow(layer, first, counts, new, n_keys) for layer in range(first, n_layers)}
    if first == n_layers or counts[n_layers] > counts[n_layers - 1]:  # tokens that only take the final norm
        pre_hooks[n_layers] = _grow(n_layers, first, counts, new, n_keys)
    mask = causal_mask_4d(n_tokens, n_keys + n_tokens, allowed.to(model.device), model.dtype)
    plans = make_plans(model, (), interventions)
    h, _ = _run_tail(model, plans, first, pre_hooks, False, lambda: forward(
        model, input_ids.to(model.device), mask, position_ids=position_ids.to(model.device),
        **{_cache_kwarg(model): prefix}))
    assert h is not None
    with torch.no_grad():
        return _lm_head(model)(h[0, read.to(h.device)])


__all__ = ["PrefixKV", "causal_mask_4d", "forward_from", "forward_packed", "record_kv"]
