"""Move activations between interp and its peers: TransformerLens caches and nnsight saves.

- :func:`from_transformer_lens`: a TransformerLens ``ActivationCache`` (or a plain dict of its
  tensors) → :class:`~interp.trace.Trace`, renaming hooks and expanding grouped-query heads.
- :func:`to_transformer_lens`: a :class:`~interp.trace.Trace` → ``ActivationCache``, so that
  TransformerLens helpers (``accumulated_resid``, ``decompose_resid``...) run on interp captures.
- :func:`from_nnsight`: tensors saved in an nnsight trace, keyed by Hugging Face module path plus
  ``.output`` / ``.input`` → :class:`~interp.trace.Trace`, through the model adapter's taps.

Conventions that differ: interp's ``attn.hook_q/k`` are post-rotary and ``attn.hook_k/v`` have
one head per query head; TransformerLens' ``hook_q/k`` are pre-rotary (``hook_rot_q/k`` are
post-rotary) and its ``hook_k/v`` have ``n_key_value_heads`` heads. TransformerBridge's
``ln_final.hook_out`` is interp's ``ln_final.hook_normalized`` (the bridge's ``hook_normalized``
is taken before the norm's weight).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from interp.errors import BadInputError
from interp.models import Model
from interp.sites import Component, Site, UnknownHookError
from interp.trace.trace import Manifest, Trace, command_line, dtype_name

C = Component
# TransformerLens name (after ``blocks.{L}.`` for per-layer ones) -> interp component.
# For each: the classic HookedTransformer name (a TransformerBridge alias), then the bridge's module name.
_TL_LAYER: dict[str, Component] = {
    "hook_resid_pre": C.RESID_PRE, "hook_in": C.RESID_PRE,
    "hook_attn_out": C.ATTN_OUT, "attn.hook_out": C.ATTN_OUT,
    "hook_resid_mid": C.RESID_MID, "ln2.hook_in": C.RESID_MID,
    "hook_mlp_out": C.MLP_OUT, "mlp.hook_out": C.MLP_OUT,
    "hook_resid_post": C.RESID_POST, "hook_out": C.RESID_POST,
    "attn.hook_rot_q": C.Q, "attn.hook_rot_k": C.K,
    "attn.hook_v": C.V, "attn.v.hook_out": C.V,
    "attn.hook_pattern": C.PATTERN,
    "attn.hook_z": C.Z, "attn.o.hook_in": C.Z,
    "mlp.hook_pre": C.MLP_PRE,
    "mlp.hook_post": C.MLP_POST, "mlp.out.hook_in": C.MLP_POST,
    # with use_attn_result / use_split_qkv_input (the bridge also names them under attn.)
    "attn.hook_result": C.RESULT, "hook_q_input": C.Q_INPUT, "attn.hook_q_input": C.Q_INPUT,
    "hook_k_input": C.K_INPUT, "attn.hook_k_input": C.K_INPUT, "hook_v_input": C.V_INPUT, "attn.hook_v_input": C.V_INPUT,
}
_TL_UNROTATED: dict[str, Component] = {  # interp's q/k only where the model has no rotary embedding
    "attn.hook_q": C.Q, "attn.q.hook_out": C.Q, "attn.hook_k": C.K, "attn.k.hook_out": C.K,
}
_TL_GLOBAL: dict[str, Component] = {
    "hook_embed": C.EMBED, "embed.hook_out": C.EMBED, "ln_final.hook_out": C.LN_FINAL,
    "hook_unembed": C.LOGITS, "unembed.hook_out": C.LOGITS, "logits": C.LOGITS,
}
_TL_TOKENS = "embed.hook_in"  # TransformerBridge caches the token ids here
_LAYER_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _tl_site(name: str, rotary: bool | None) -> Site | None:
    if name in _TL_GLOBAL:
        return Site(_TL_GLOBAL[name])
    m = _LAYER_NAME.match(name)
    if not m:
        return None
    layer, suffix = int(m.group(1)), m.group(2)
    comp = _TL_LAYER.get(suffix) or (_TL_UNROTATED.get(suffix) if rotary is False else None)
    return Site(comp, layer) if comp is not None else None


def _expand_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[batch, pos, n_kv, d_head]`` -> ``[batch, pos, n_heads, d_head]`` (repeat_interleave)."""
    if n_heads % t.shape[2]:
        raise BadInputError(f"cannot expand {t.shape[2]} key/value heads to {n_heads} query heads")
    return t.repeat_interleave(n_heads // t.shape[2], dim=2)


def from_transformer_lens(
    cache: Mapping[str, torch.Tensor] | Any,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    model: Model | None = None,
    tokens: Sequence[Sequence[str]] | None = None,
) -> Trace:
    """Convert a TransformerLens ``ActivationCache`` (or a dict of its tensors) to a :class:`Trace`.

    Args:
        cache: from ``TransformerBridge.run_with_cache`` / ``HookedTransformer.run_with_cache``,
            or a plain ``{name: tensor}`` dict with TransformerLens names and a batch axis.
        input_ids: ``[batch, pos]`` token ids; defaults to the bridge's ``embed.hook_in`` if cached.
        attention_mask: ``[batch, pos]``; defaults to all ones.
        model: the interp model of the same weights: the manifest then names it (id and
            fingerprint) and its dimensions and tokenizer are used.
        tokens: token strings per sequence; by default decoded with the model's tokenizer.

    Returns:
        A trace whose activations use interp names and layouts. TransformerLens hooks with no
        interp equivalent (``ln1.hook_scale``, ``hook_attn_scores``, pre-rotary ``hook_q``...) are
        skipped and listed in a warning.

    Example:
        >>> import torch
        >>> from interp.trace.interop import from_transformer_lens
        >>> tl = {"embed.hook_in": torch.tensor([[5, 6, 7]]), "blocks.0.hook_out": torch.zeros(1, 3, 8)}
        >>> tr = from_transformer_lens(tl)
        >>> tr.names, tr.manifest.model_id
        (['blocks.0.hook_resid_post'], 'transformer-lens')
    """
    tensors: Mapping[str, torch.Tensor] = getattr(cache, "cache_dict", cache)
    tl_cfg = getattr(getattr(cache, "model", None), "cfg", None)
    unbatch = not getattr(cache, "has_batch_dim", True)
    if input_ids is None:
        input_ids = tensors.get(_TL_TOKENS)
        if input_ids is None:
            raise BadInputError("pass input_ids=: the cache holds no token ids (TransformerBridge's embed.hook_in)")
    input_ids = (input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids).cpu()
    rotary = _is_rotary(tensors, tl_cfg, model)
    n_heads = model.dims.n_heads if model is not None else getattr(tl_cfg, "n_heads", None)
    acts: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for name, t in tensors.items():
        if name == _TL_TOKENS:
            continue
        site = _tl_site(name, rotary)
        if site is None or not isinstance(t, torch.Tensor):
            skipped.append(name)
            continue
        if site.name in acts:  # an alias of a name already taken
            continue
        t = t.detach().unsqueeze(0) if unbatch else t.detach()
        if site.component in (C.K, C.V):
            heads = n_heads or _heads_seen(tensors, site.layer)
            if heads is None:
                skipped.append(name)
                continue
            t = _expand_heads(t, heads)
        acts[site.name] = t
    if skipped:  # listed once per layer pattern: blocks.*.ln1.hook_scale
        why = "" if rotary is not None else " (pass model= to tell whether attn.hook_q/k are pre-rotary)"
        grouped = sorted({_LAYER_NAME.sub(r"blocks.*.\2", n) for n in skipped})
        warnings.warn(f"from_transformer_lens skipped {len(skipped)} hooks with no interp equivalent{why}: "
                      f"{', '.join(grouped)}", stacklevel=2)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.cpu()
    return _make_trace(acts, input_ids, mask, model, tokens, getattr(getattr(cache, "model", None), "tokenizer", None))


def _is_rotary(tensors: Mapping[str, Any], tl_cfg: Any, model: Model | None) -> bool | None:
    """Whether the model rotates q/k (TransformerLens' hook_q/k are then pre-rotary); None if unknown."""
    if tl_cfg is not None and hasattr(tl_cfg, "positional_embedding_type"):
        return tl_cfg.positional_embedding_type == "rotary"
    if any("hook_rot_" in n or "rotary_emb." in n or n.endswith("attn.hook_cos") for n in tensors):
        return True
    if model is not None:
        return any(k.startswith(("rope", "rotary")) for k in model.config.to_dict())
    return None


def _heads_seen(tensors: Mapping[str, torch.Tensor], layer: int | None) -> int | None:
    """Number of query heads from a sibling hook of the same layer, if cached."""
    for suffix, axis in (("attn.hook_pattern", 1), ("attn.hook_z", 2), ("attn.hook_rot_q", 2)):
        t = tensors.get(f"blocks.{layer}.{suffix}")
        if t is not None:
            return int(t.shape[axis])
    return None


def _make_trace(acts: dict[str, torch.Tensor], input_ids: torch.Tensor, mask: torch.Tensor,
                model: Model | None, tokens: Sequence[Sequence[str]] | None, tokenizer: Any) -> Trace:
    if model is not None:
        order = {s.name: i for i, s in enumerate(model.sites())}
        acts = dict(sorted(acts.items(), key=lambda kv: order.get(kv[0], len(order))))
    if tokens is None:
        tokenizer = model.tokenizer if model is not None else tokenizer
        tokens = [[tokenizer.decode([i]) if tokenizer is not None else str(i) for i in row]
                  for row in input_ids.tolist()]
    dtype = next(iter(acts.values())).dtype if acts else torch.float32
    hooks = {k: list(v.shape) for k, v in acts.items()}
    if model is not None:
        manifest = Manifest.for_model(model, dtype, hooks)
    else:
        manifest = Manifest(model_id="transformer-lens", model_fingerprint="", dtype=dtype_name(dtype),
                            hooks=hooks, command=command_line())
    return Trace(input_ids=input_ids, attention_mask=mask, tokens=tuple(tuple(r) for r in tokens),
                 activations=acts, manifest=manifest)


_TO_TL: dict[Component, str] = {
    C.EMBED: "hook_embed", C.RESID_PRE: "hook_resid_pre", C.ATTN_OUT: "hook_attn_out",
    C.RESID_MID: "hook_resid_mid", C.MLP_OUT: "hook_mlp_out", C.RESID_POST: "hook_resid_post",
    C.Q: "attn.hook_q", C.K: "attn.hook_k", C.V: "attn.hook_v", C.PATTERN: "attn.hook_pattern",
    C.Z: "attn.hook_z", C.MLP_PRE: "mlp.hook_pre", C.MLP_POST: "mlp.hook_post",
    C.RESULT: "attn.hook_result", C.Q_INPUT: "hook_q_input", C.K_INPUT: "hook_k_input", C.V_INPUT: "hook_v_input",
    C.LN_FINAL: "ln_final.hook_out", C.LOGITS: "hook_unembed",
}


def to_transformer_lens(trace: Trace, tl_model: Any) -> Any:
    """Convert a :class:`Trace` to a TransformerLens ``ActivationCache`` for ``tl_model``.

    Key/value heads are folded back to ``n_key_value_heads``; q/k of rotary models become
    ``attn.hook_rot_q/k``. Derived entries make more TransformerLens helpers work: the norm scales
    ``blocks.{L}.ln1/ln2.hook_scale`` and ``ln_final.hook_scale`` (from the residual stream they
    normalize) and, for learned positions, ``hook_pos_embed = resid_pre[0] - hook_embed``.

    Args:
        trace: captured by interp from the same weights as ``tl_model``.
        tl_model: a ``TransformerBridge`` (or ``HookedTransformer``); its ``cfg`` gives the layout.

    Returns:
        ``transformer_lens.ActivationCache`` with a batch axis.

    Example:
        >>> cache = to_transformer_lens(trace, bridge)  # doctest: +SKIP
        >>> cache.accumulated_resid(layer=-1, incl_mid=True).shape  # doctest: +SKIP
        torch.Size([61, 2, 7, 576])
    """
    from transformer_lens import ActivationCache

    cfg = tl_model.cfg
    rotary = getattr(cfg, "positional_embedding_type", None) == "rotary"
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    out: dict[str, torch.Tensor] = {}
    for name, t in trace.activations.items():
        site = Site.parse(name)
        if site.layer is not None and site.layer >= cfg.n_layers:
            raise BadInputError(f"trace hook {name!r} is beyond the {cfg.n_layers} layers of the TransformerLens model")
        tl_name = _TO_TL.get(site.component)
        if tl_name is None:  # a hook point TransformerLens has no name for (hf: modules, post-norms, routers)
            continue
        if site.component in (C.K, C.V) and t.shape[2] != n_kv:
            folded = t[:, :, :: t.shape[2] // n_kv]
            if not torch.equal(_expand_heads(folded, t.shape[2]), t):
                warnings.warn(f"{name}: query heads sharing a key/value head differ; keeping the first of each group",
                              stacklevel=2)
            t = folded
        if rotary and site.component in (C.Q, C.K):
            tl_name = tl_name.replace("hook_", "hook_rot_")
        out[tl_name if site.layer is None else f"blocks.{site.layer}.{tl_name}"] = t
    if getattr(cfg, "positional_embedding_type", None) == "standard" and {"hook_embed", "blocks.0.hook_resid_pre"} <= set(out):
        out["hook_pos_embed"] = out["blocks.0.hook_resid_pre"] - out["hook_embed"]
    out.update(_norm_scales(out, cfg))
    return ActivationCache(out, tl_model, has_batch_dim=True)


def _norm_scales(acts: Mapping[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    """The ``hook_scale`` of each pre-norm, recomputed from the residual stream it normalizes."""
    kind = getattr(cfg, "normalization_type", None)
    if kind not in ("LN", "LNPre", "RMS", "RMSPre"):
        return {}
    n = cfg.n_layers
    parallel = getattr(cfg, "parallel_attn_mlp", False)
    sources = {"ln_final.hook_scale": (f"blocks.{n - 1}.hook_resid_post", not getattr(cfg, "final_rms", False))}
    for L in range(n):
        sources[f"blocks.{L}.ln1.hook_scale"] = (f"blocks.{L}.hook_resid_pre", True)
        sources[f"blocks.{L}.ln2.hook_scale"] = (f"blocks.{L}.hook_resid_{'pre' if parallel else 'mid'}", True)
    out = {}
    for key, (src, may_center) in ((k, v) for k, v in sources.items() if v[0] in acts):
        x = acts[src] - acts[src].mean(-1, keepdim=True) if kind in ("LN", "LNPre") and may_center else acts[src]
        out[key] = (x.pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt()
    return out


def _nnsight_keys(model: Model) -> dict[str, tuple[Site, bool]]:
    """``"model.layers.3.output"`` -> (site, split_heads) for every module-level hook of the model."""
    keys = {}
    for site in model.sites():
        tap = model.adapter.taps.get(site.component)
        if tap is not None:
            keys[f"{tap.module_path(site.layer)}.{'output' if tap.io == 'out' else 'input'}"] = (site, tap.split_heads)
    return keys


def from_nnsight(
    saved: Mapping[str, Any],
    model: Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> Trace:
    """Convert tensors saved in an nnsight trace to a :class:`Trace`.

    Args:
        saved: ``{key: value}`` where a key is a Hugging Face module path plus ``.output`` or
            ``.input`` (``"model.layers.3.output"``, ``"model.layers.3.self_attn.o_proj.input"``),
            or already an interp hook name. A module that a named hook point taps becomes that hook
            (``blocks.3.hook_resid_post``); any other module becomes an ``hf:`` site
            (``"model.layers.3.mlp.act_fn.output"`` -> ``hf:model.layers.3.mlp.act_fn``). A tuple value
            (an attention module's output) is read at its first element, as interp's hooks do.
        model: the interp model wrapping the same weights; its adapter maps paths to hooks.
        input_ids: ``[batch, pos]`` token ids of the traced run; ``attention_mask`` likewise.

    Returns:
        A trace with interp names and layouts (``attn.hook_z`` split into heads).

    Raises:
        UnknownHookError: naming every key that maps to no interp hook, with close matches.

    Example:
        >>> import torch, interp
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.trace.interop import from_nnsight
        >>> m = interp.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> hidden = m.hf(ids, output_hidden_states=True).hidden_states  # stands in for nnsight's saves
        >>> tr = from_nnsight({"transformer.h.0.output": hidden[1], "transformer.h.0.input": hidden[0],
        ...                    "transformer.h.1.ln_2.output": torch.zeros(1, 3, 32)}, m, ids)
        >>> tr.names
        ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'hf:transformer.h.1.ln_2']
    """
    keys = _nnsight_keys(model)
    valid = {s.name for s in model.sites()}
    modules = {n for n, _ in model.hf.named_modules() if n}
    acts: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for key, value in saved.items():
        t = value[0] if isinstance(value, (tuple, list)) else value
        path, _, io = key.rpartition(".")
        if key in keys:
            site, split = keys[key]
            if split:
                t = t.unflatten(-1, (-1, model.dims.d_head))
        elif key in valid or (key.startswith("hf:") and key.split(":")[1] in modules):
            site = Site.parse(key)
        elif io in ("output", "input") and path in modules:  # a module no named hook point taps: an hf: site
            site = Site(C.HF, module=path, io=io)  # type: ignore[arg-type]
        else:
            bad.append(key)
            continue
        if site.name in acts:
            raise BadInputError(f"two saved entries map to {site.name!r}; keep one")
        acts[site.name] = t.detach()
    if bad:
        known = list(keys) + sorted(valid)
        hints = [f"{k!r} (close: {', '.join(difflib.get_close_matches(k, known, n=3, cutoff=0.6)) or 'none'})" for k in bad]
        raise UnknownHookError(f"from_nnsight cannot map {len(bad)} saved key(s) to interp hooks: {'; '.join(hints)}. "
                               f"Keys are module paths plus .output/.input, e.g. {', '.join(list(keys)[:3])}, "
                               "or interp hook names.")
    input_ids = input_ids.cpu()
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.cpu()
    return _make_trace(acts, input_ids, mask, model, None, None)
