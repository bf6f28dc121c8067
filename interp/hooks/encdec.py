"""Hooked runs of encoder–decoder models: the same sites, interventions and captures on both stacks.

An :class:`~interp.models.encdec.EncoderDecoder` names its hook points in the one vocabulary with a stack prefix
(``encoder.resid_post.3``, ``decoder.cross_pattern.1``; :mod:`interp.sites`). This module installs PyTorch hooks for
exactly the requested sites, applies :mod:`interp.hooks` interventions in order (positions counted over each
sequence's real tokens of *its own* stack: the source for encoder sites and cross-attention keys/values, the target
for the other decoder sites), and removes them:

- block inputs/outputs and sublayer outputs (``resid_pre``, ``resid_post``, ``attn_out``, ``cross_attn_out``,
  ``mlp_out``), each stack's output (``ln_final``) and ``logits`` from forward (pre-)hooks on the modules the
  family's table names;
- ``q k v pattern z`` (self-attention of either stack) and ``cross_q cross_k cross_v cross_pattern cross_z`` from
  :func:`encdec_attention`, an eager attention kernel registered with ``transformers`` under the name
  ``"interp_encdec"`` and switched on (in every config the model's modules hold) only for runs that ask for one of
  them; it repeats the families' eager kernel op for op (T5's relative position bias included), so a run that
  only captures gives the eager logits bit for bit. Runs without these sites use the model's own kernel untouched.

Example:
    >>> import torch
    >>> from transformers import T5Config, T5ForConditionalGeneration
    >>> from interp.models.encdec import EncoderDecoder
    >>> from interp.hooks import Ablate
    >>> ed = EncoderDecoder(T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24,
    ...     num_layers=2, num_heads=4, decoder_start_token_id=0)))
    >>> res = ed.run(torch.tensor([[5, 6, 7]]), torch.tensor([[0, 9]]), capture=["decoder.cross_pattern.1"],
    ...              interventions=[Ablate("encoder.z.0", heads=[1])])
    >>> res.decoder["decoder.cross_pattern.1"].shape  # [batch, head, q_pos (target), k_pos (source)]
    torch.Size([1, 4, 2, 3])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from interp.errors import BadInputError
from interp.hooks.engine import _SitePlan, make_plans
from interp.hooks.interventions import Intervention
from interp.sites import Component, Site, SiteSpec

if TYPE_CHECKING:
    from interp.models import Model
    from interp.models.encdec import EncoderDecoder

ENCDEC_ATTN_IMPL = "interp_encdec"

_KERNEL = {  # (component, cross?) of the sites computed inside the attention kernel
    Component.Q: False, Component.K: False, Component.V: False, Component.PATTERN: False, Component.Z: False,
    Component.CROSS_Q: True, Component.CROSS_K: True, Component.CROSS_V: True, Component.CROSS_PATTERN: True,
    Component.CROSS_Z: True,
}
_SELF_TO_CROSS = {Component.Q: Component.CROSS_Q, Component.K: Component.CROSS_K, Component.V: Component.CROSS_V,
                  Component.PATTERN: Component.CROSS_PATTERN, Component.Z: Component.CROSS_Z}


def encdec_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     position_bias: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager attention of T5 / BART / Marian (``[batch, head, pos, d_head]`` in) with hook points for q, k, v
    (``[batch, pos, head, d_head]``), the pattern ``[batch, head, q_pos, k_pos]`` and z (before the output
    projection). Registered with ``transformers`` as ``"interp_encdec"``.

    Example:
        >>> q = k = v = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(0))
        >>> out, pattern = encdec_attention(nn.Module(), q, k, v, None, scaling=0.5)
        >>> out.shape, bool(torch.allclose(pattern.sum(-1), torch.ones(1, 2, 3)))
        (torch.Size([1, 3, 2, 4]), True)
    """
    hook: Callable[[Component, torch.Tensor], torch.Tensor] | None = getattr(module, "_interp_encdec_hook", None)
    if hook is not None:
        query = hook(Component.Q, query.transpose(1, 2)).transpose(1, 2)
        key = hook(Component.K, key.transpose(1, 2)).transpose(1, 2)
        value = hook(Component.V, value.transpose(1, 2)).transpose(1, 2)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    if hook is not None:
        weights = hook(Component.PATTERN, weights)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    if hook is not None:
        out = hook(Component.Z, out)
    return out, weights


def register_encdec_attention() -> None:
    """Make ``"interp_encdec"`` a valid ``config._attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if ENCDEC_ATTN_IMPL not in AttentionInterface._global_mapping:
        AttentionInterface.register(ENCDEC_ATTN_IMPL, encdec_attention)
    if ENCDEC_ATTN_IMPL not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(ENCDEC_ATTN_IMPL, eager_mask)


def encdec_plans(ed: EncoderDecoder, capture: SiteSpec | Sequence[SiteSpec] = (),
                 interventions: Sequence[Intervention] = ()) -> dict[Site, _SitePlan]:
    """Resolve names against the encoder–decoder's sites and group the interventions per site (as
    :func:`interp.hooks.make_plans` does for one-stack models, whose rules it applies)."""
    for iv in interventions:
        if callable(getattr(iv, "install", None)):
            raise BadInputError(f"{type(iv).__name__} edits a one-stack model's block list; it does not apply to "
                                "an encoder-decoder")
    return make_plans(cast("Model", ed), capture, interventions)


class EncDecHookedRun:
    """Context manager installing one run's hooks on an encoder–decoder; always removes them.

    Args:
        ed: the model.
        plans: from :func:`encdec_plans`.
        src_lengths / tgt_lengths: ``[batch]`` real tokens per source / target sequence (for positions counted
            from the end), or ``None`` (every row counts as real tokens).
    """

    def __init__(self, ed: EncoderDecoder, plans: dict[Site, _SitePlan], src_lengths: torch.Tensor | None = None,
                 tgt_lengths: torch.Tensor | None = None) -> None:
        self.ed = ed
        self.plans = plans
        self.src_lengths = src_lengths
        self.tgt_lengths = tgt_lengths
        self.activations: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._attn_modules: list[nn.Module] = []
        self._configs: list[tuple[Any, Any]] = []

    def _lengths(self, site: Site) -> torch.Tensor | None:
        if self.ed.stack_of(site) == "encoder" or site.component.over_source:
            return self.src_lengths
        return self.tgt_lengths

    def process(self, site: Site, t: torch.Tensor) -> torch.Tensor:
        plan = self.plans[site]
        for iv in plan.interventions:
            t = iv.apply(t, site, self._lengths(site))
        if plan.capture:
            self.activations[site.name] = t.detach()
        return t

    def _output_hook(self, sites: list[Site]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            is_mapping = isinstance(output, Mapping)
            key = "logits" if is_mapping and "logits" in output else "last_hidden_state" if is_mapping else None
            t0 = output[key] if key else output[0] if isinstance(output, tuple) else output
            t = t0
            for site in sites:
                t = self.process(site, t)
            if t is t0:
                return None
            if key:
                output[key] = t
                return output
            return (t, *output[1:]) if isinstance(output, tuple) else t

        return hook

    def _input_hook(self, sites: list[Site]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            t0 = args[0] if args else kwargs["hidden_states"]
            t = t0
            for site in sites:
                t = self.process(site, t)
            if t is t0:
                return None
            return ((t, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": t})

        return hook

    def __enter__(self) -> EncDecHookedRun:
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def _install(self) -> None:
        ed = self.ed
        by_location: dict[tuple[str, str], list[Site]] = defaultdict(list)
        attn: dict[tuple[str, int, bool], None] = {}
        for site in self.plans:
            comp, stack, layer = site.component, site.stack, site.layer
            if comp is Component.HF:
                assert site.module is not None
                by_location[(site.module, "out" if site.io == "output" else "in")].append(site)
            elif comp is Component.LOGITS:
                by_location[("", "out")].append(site)
            elif stack is None:
                raise BadInputError(f"{site.name}: an encoder-decoder's hook points start with encoder. or decoder.")
            elif comp is Component.LN_FINAL:
                by_location[(ed.table.stacks[stack], "out")].append(site)
            elif comp in _KERNEL:
                assert layer is not None
                attn[(stack, layer, _KERNEL[comp])] = None
            elif comp is Component.RESID_PRE:
                assert layer is not None
                by_location[(ed.block_path(stack, layer), "in")].append(site)
            elif comp is Component.RESID_POST:
                assert layer is not None
                by_location[(ed.block_path(stack, layer), "out")].append(site)
            else:
                assert layer is not None
                by_location[(ed.sublayer_path(stack, comp.short, layer), "out")].append(site)
        for (path, io), sites in by_location.items():
            module = ed.hf.get_submodule(path) if path else ed.hf
            if io == "out":
                self._handles.append(module.register_forward_hook(self._output_hook(sites)))
            else:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(sites), with_kwargs=True))
        if attn:
            register_encdec_attention()
            for m in ed.hf.modules():  # each stack holds its own copy of the config: switch every one
                cfg = getattr(m, "config", None)
                if cfg is not None and hasattr(cfg, "_attn_implementation") and all(c is not cfg for c, _ in self._configs):
                    self._configs.append((cfg, cfg._attn_implementation))
                    cfg._attn_implementation = ENCDEC_ATTN_IMPL
            for stack, layer, cross in attn:
                mod = ed.hf.get_submodule(ed.sublayer_path(stack, "cross_attn_out" if cross else "attn_out", layer))
                mod._interp_encdec_hook = _AttnHook(self, stack, layer, cross)  # type: ignore[assignment]
                self._attn_modules.append(mod)

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for mod in self._attn_modules:
            if hasattr(mod, "_interp_encdec_hook"):
                del mod._interp_encdec_hook
        self._attn_modules.clear()
        for cfg, impl in reversed(self._configs):
            cfg._attn_implementation = impl
        self._configs.clear()

    def __exit__(self, *exc: Any) -> None:
        self._remove()


class _AttnHook:
    """The kernel hook of one attention module: ``hook(component, t)`` → ``t`` edited by the run's plan."""

    def __init__(self, run: EncDecHookedRun, stack: str, layer: int, cross: bool) -> None:
        self.run, self.stack, self.layer, self.cross = run, stack, layer, cross

    def __call__(self, component: Component, t: torch.Tensor) -> torch.Tensor:
        comp = _SELF_TO_CROSS[component] if self.cross else component
        site = Site(comp, self.layer, stack=self.stack)
        return self.run.process(site, t) if site in self.run.plans else t


@contextmanager
def encdec_hooks(ed: EncoderDecoder, capture: SiteSpec | Sequence[SiteSpec] = (),
                 interventions: Sequence[Intervention] = (), src_lengths: torch.Tensor | None = None,
                 tgt_lengths: torch.Tensor | None = None) -> Iterator[EncDecHookedRun]:
    """Hooks around forwards you call yourself (``ed.hf.generate`` too); ``run.activations`` keeps the last
    forward's value of each captured hook."""
    with EncDecHookedRun(ed, encdec_plans(ed, capture, interventions), src_lengths, tgt_lengths) as run:
        yield run


__all__ = ["ENCDEC_ATTN_IMPL", "EncDecHookedRun", "encdec_attention", "encdec_hooks", "encdec_plans",
           "register_encdec_attention"]
