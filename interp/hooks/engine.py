"""The hook engine: installs PyTorch hooks for exactly the requested sites, runs, and removes them.

Module-level hook points are read from forward (pre-)hooks on the submodules the adapter names.
``attn.hook_q/k/v/pattern`` live inside the attention kernel: when one is requested, the run
switches the model to interp's attention function (eager math, grouped-query heads expanded to
one per query head) for the duration of the run; otherwise the model's own kernel runs untouched,
so a run without interventions is bit-identical to the plain Hugging Face forward. Hook points an
adapter computes in a :class:`~interp.models.adapters.Kernel` (mixture-of-experts routing, the
attention of models that bypass ``transformers``' attention interface) swap that module's forward
for the adapter's for the duration of the run, in the layers asked for only.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from interp.errors import BadInputError
from interp.hooks.attention import ATTN_IMPL, register_attention
from interp.hooks.interventions import Intervention, Lambda
from interp.hooks.per_head import PER_HEAD, PerHeadPoints, projection_paths
from interp.models import Model
from interp.models.adapters import Kernel
from interp.sites import Component, Site, SiteSpec, resolve

_MISSING = object()


class _StopForwardSignal(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a hook to end a forward once every requested activation is captured."""


@dataclass
class _SitePlan:
    site: Site
    interventions: list[Intervention] = field(default_factory=list)
    capture: bool = False
    grad: bool = False


@dataclass
class RunOutput:
    """What a hooked run returns.

    Attributes:
        logits: ``[batch, pos, vocab]`` (an encoder's last hidden state), or ``None`` when the run
            stopped early after the last captured hook.
        activations: captured tensors by hook name, in the layouts of :class:`~interp.sites.Component`.
        grads: gradients of ``metric`` with respect to the requested hook points, by hook name.
    """

    logits: torch.Tensor | None
    activations: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]


class HookedRun:
    """Context manager that installs the hooks of one run and always removes them.

    Prefer :func:`run_with_hooks` or ``Model.run``; use this directly to hook a forward you
    call yourself (e.g. ``generate``).
    """

    def __init__(self, model: Model, plans: dict[Site, _SitePlan], stop_early: bool = False) -> None:
        self.model = model
        self.plans = plans
        self.activations: dict[str, torch.Tensor] = {}
        self.grad_inputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._attn_modules: list[nn.Module] = []
        self._saved_impl: Any = None
        self._impl_switched = False  # the saved implementation may itself be None, so keep a flag
        self._mid_delta: dict[int, torch.Tensor] = {}
        self._kernel_forwards: list[tuple[nn.Module, str, Any]] = []  # (module, attribute, saved instance value)
        self._restores: list[Callable[[], None]] = []  # undo functions of run plans (interp.hooks.plans)
        self._remaining = {s for s, p in plans.items() if p.capture} if stop_early else set()
        self.lengths: torch.Tensor | None = None  # [batch] real tokens per sequence of the current forward
        self._stop_early = stop_early and not any(p.grad or p.interventions for p in plans.values())
        self._per_head = PerHeadPoints(model, self._process, self._after, lambda s: self.plans[s].grad)

    # -- processing ---------------------------------------------------------------------------
    def _process(self, site: Site, t: torch.Tensor) -> torch.Tensor:
        plan = self.plans[site]
        for iv in plan.interventions:
            t = iv.apply(t, site, self.lengths)
        if plan.grad:
            if not t.requires_grad:
                t = t.detach().requires_grad_(True)
            self.grad_inputs[site.name] = t
        if plan.capture:
            self.activations[site.name] = t if plan.grad else t.detach()
        return t

    def _after(self, sites: Sequence[Site]) -> None:
        if self._stop_early:
            self._remaining.difference_update(sites)
            if not self._remaining:
                raise _StopForwardSignal

    def _apply(self, entries: list[tuple[Site, bool]], t: torch.Tensor) -> torch.Tensor:
        d_head = self.model.dims.d_head
        for site, split in entries:
            if split:
                t = self._process(site, t.unflatten(-1, (-1, d_head))).flatten(-2)
            elif site.component is Component.RESID_MID and self.model.adapter.mid_delta is not None:
                new = self._process(site, t)
                plan = self.plans[site]
                if plan.grad and new is t:
                    new = t.view_as(t)  # a distinct node, so the residual path carries its gradient
                    self.grad_inputs[site.name] = new
                    if plan.capture:
                        self.activations[site.name] = new
                if new is not t:
                    assert site.layer is not None
                    self._mid_delta[site.layer] = new - t
                t = new
            else:
                t = self._process(site, t)
        return t

    # -- installation -------------------------------------------------------------------------
    def _output_hook(self, entries: list[tuple[Site, bool]], delta_layer: int | None,
                     copy: bool = False) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            # a model's output object (the tap of post-processed logits, path "") is read at its logits
            is_model_output = isinstance(output, Mapping) and "logits" in output
            t0 = output[0] if isinstance(output, tuple) else output["logits"] if is_model_output else output
            t = self._apply(entries, t0)
            if delta_layer is not None and delta_layer in self._mid_delta:
                t = t + self._mid_delta.pop(delta_layer)
            self._after([s for s, _ in entries])
            if copy:  # the model edits this tensor in place next: keep the captured value out of its reach
                t = t.clone()
            if t is t0:
                return None
            if is_model_output:
                output["logits"] = t
                return output
            return (t, *output[1:]) if isinstance(output, tuple) else t

        return hook

    def _input_hook(self, entries: list[tuple[Site, bool]]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                t0 = args[0]
            else:  # called with keywords only: the hidden states, else the first tensor argument
                key = next((k for k in ("hidden_states", "input") if isinstance(kwargs.get(k), torch.Tensor)),
                           None) or next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
                t0 = kwargs[key]
            t = self._apply(entries, t0)
            self._after([s for s, _ in entries])
            if t is t0:
                return None
            if args:
                return (t, *args[1:]), kwargs
            return args, {**kwargs, key: t}

        return hook

    def _attn_hook(self, layer: int) -> _LayerHook:
        return _LayerHook(self, layer)

    def _lengths_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record how many real tokens each sequence of this forward has (for positions counted from the end)."""
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            self.lengths = None
            return
        width = ids.shape[1] if isinstance(ids, torch.Tensor) and ids.dim() >= 2 else mask.shape[1]
        self.lengths = mask[:, -width:].sum(-1).to("cpu", torch.long)

    def __enter__(self) -> HookedRun:
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def _install(self) -> None:
        adapter = self.model.adapter
        by_location: dict[tuple[str, str], list[tuple[Site, bool]]] = defaultdict(list)
        attn_layers: set[int] = set()
        kernel_layers: set[tuple[Kernel, int]] = set()
        copies: set[tuple[str, str]] = set()
        delta_layers: set[int] = set()
        per_head: dict[int, list[Component]] = defaultdict(list)
        self._handles.append(self.model.hf.register_forward_pre_hook(self._lengths_hook, with_kwargs=True))
        for site in self.plans:
            comp = site.component
            if comp in PER_HEAD:
                assert site.layer is not None
                per_head[site.layer].append(comp)
                continue
            if comp is Component.HF:
                assert site.module is not None
                by_location[(site.module, "out" if site.io == "output" else "in")].append((site, False))
                continue
            kernel = adapter.kernel_for(comp)
            if kernel is not None:
                assert site.layer is not None
                kernel_layers.add((kernel, site.layer))
                continue
            if comp.inside_attention:
                assert site.layer is not None
                attn_layers.add(site.layer)
                continue
            tap = adapter.taps[comp]
            by_location[(tap.module_path(site.layer), tap.io)].append((site, tap.split_heads))
            if tap.copy:
                copies.add((tap.module_path(site.layer), tap.io))
            plan = self.plans[site]
            if comp is Component.RESID_MID and adapter.mid_delta and (plan.interventions or plan.grad):
                assert site.layer is not None
                delta_layers.add(site.layer)
                by_location.setdefault((adapter.mid_delta.format(L=site.layer), "out"), [])
        stash_layers = self._install_per_head(per_head)  # before the taps: an edited result reaches attn_out
        # order entries within a location by forward order of their components
        comp_order = {c: i for i, c in enumerate(Component)}
        for (path, io), entries in by_location.items():
            entries.sort(key=lambda e: comp_order[e[0].component])
            module = self.model.module(path)
            if io == "out":
                delta_layer = next((L for L in delta_layers if adapter.mid_delta.format(L=L) == path), None)  # type: ignore[union-attr]
                h = module.register_forward_hook(self._output_hook(entries, delta_layer, (path, io) in copies))
            else:
                h = module.register_forward_pre_hook(self._input_hook(entries), with_kwargs=True)
            self._handles.append(h)
        for layer in stash_layers:  # after the taps: the norm's input as edits there left it
            assert adapter.attn_inputs is not None and adapter.attn_inputs.norm is not None
            norm = self.model.module(adapter.attn_inputs.norm.format(L=layer))
            self._handles.append(norm.register_forward_pre_hook(self._per_head.stash_hook(layer), with_kwargs=True))
        if attn_layers:
            register_attention()
            config = self.model.config
            self._saved_impl = config._attn_implementation
            self._impl_switched = True
            config._attn_implementation = ATTN_IMPL
            for layer in sorted(attn_layers):
                mod = self.model.module(adapter.attn.format(L=layer))
                mod._interp_attn_hook = self._attn_hook(layer)  # type: ignore[assignment]
                self._attn_modules.append(mod)
        for kernel, layer in sorted(kernel_layers, key=lambda kl: (kl[1], kl[0].path)):
            mod = self.model.module(kernel.module_path(layer))
            # accelerate's dispatch hooks wrap `forward` and call `_old_forward`: replace that one, keep theirs
            attr = "_old_forward" if hasattr(mod, "_hf_hook") and "_old_forward" in mod.__dict__ else "forward"
            self._kernel_forwards.append((mod, attr, mod.__dict__.get(attr, _MISSING)))
            setattr(mod, attr, functools.partial(kernel.forward, mod, self._attn_hook(layer)))
        # run plans (interp.hooks.plans) edit the module structure last, after every hook found its module
        for iv in {id(iv): iv for p in self.plans.values() for iv in p.interventions}.values():
            install = getattr(iv, "install", None)
            if callable(install):
                self._restores.append(install(self.model))

    def _install_per_head(self, per_head: dict[int, list[Component]]) -> list[int]:
        """Hooks of ``attn.hook_result`` and the q/k/v inputs (:mod:`interp.hooks.per_head`); returns the layers
        whose attention norm's input must be kept."""
        adapter = self.model.adapter
        stash: list[int] = []
        for layer, comps in sorted(per_head.items()):
            if Component.RESULT in comps:
                path = adapter.taps[Component.Z].module_path(layer)
                hook = self._per_head.result_hook(layer)
                self._handles.append(self.model.module(path).register_forward_hook(hook, with_kwargs=True))
            inputs = [c for c in comps if c is not Component.RESULT]
            if inputs:
                assert adapter.attn_inputs is not None
                for path, group in projection_paths(self.model, layer, inputs).items():
                    hook = self._per_head.input_hook(layer, group)
                    self._handles.append(self.model.module(path).register_forward_hook(hook, with_kwargs=True))
                if adapter.attn_inputs.norm is not None:
                    stash.append(layer)
        return stash

    def _remove(self) -> None:
        self._per_head.clear()
        while self._restores:
            self._restores.pop()()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for mod in self._attn_modules:
            if hasattr(mod, "_interp_attn_hook"):
                del mod._interp_attn_hook
        self._attn_modules.clear()
        for mod, attr, saved in reversed(self._kernel_forwards):
            if saved is _MISSING:
                delattr(mod, attr)
            else:
                setattr(mod, attr, saved)
        self._kernel_forwards.clear()
        if self._impl_switched:
            self.model.config._attn_implementation = self._saved_impl
            self._saved_impl = None
            self._impl_switched = False
        self._mid_delta.clear()

    def __exit__(self, *exc: Any) -> bool:
        self._remove()
        return exc[0] is _StopForwardSignal


class _LayerHook:
    """The hook of one layer's attention function or adapter kernel: ``hook(component, t)`` returns ``t`` edited
    by the run's plan for that site (``t`` itself when the run does not ask for it); ``wants`` tells a kernel
    whether to compute a costly hook point at all."""

    def __init__(self, run: HookedRun, layer: int) -> None:
        self.run = run
        self.layer = layer

    def wants(self, component: Component) -> bool:
        return Site(component, self.layer) in self.run.plans

    def __call__(self, component: Component, t: torch.Tensor) -> torch.Tensor:
        site = Site(component, self.layer)
        if site not in self.run.plans:
            return t
        t = self.run._process(site, t)
        self.run._after([site])
        return t


class _ModulePaths:
    """The model's submodule paths, listed only when an ``hf:`` site asks (``in`` is all ``resolve`` uses)."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self.model.hf.named_modules() if n)


def make_plans(
    model: Model,
    capture: SiteSpec | Sequence[SiteSpec] = (),
    interventions: Sequence[Intervention] = (),
    grads: SiteSpec | Sequence[SiteSpec] = (),
) -> dict[Site, _SitePlan]:
    """Resolve names/patterns against the model's sites and group interventions per site.

    A patch source / ablation reference that knows its model (a ``Trace``: ``check_model``) must come from
    ``model``: shapes alone do not tell, two models of one architecture make traces of identical shapes.
    """
    available = model.sites()
    modules = _ModulePaths(model)
    plans: dict[Site, _SitePlan] = {}
    for site in resolve(capture, available, modules) if capture else []:
        plans.setdefault(site, _SitePlan(site)).capture = True
    for site in resolve(grads, available, modules) if grads else []:
        plans.setdefault(site, _SitePlan(site)).grad = True
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions must be Intervention objects, got {type(iv).__name__}: {iv!r}")
        for value in vars(iv).values():
            if callable(getattr(value, "check_model", None)):
                value.check_model(model)
        sites = [s for s in resolve(iv.site, available, modules) if iv.applies_to(s)]
        if iv.heads is not None:
            flat = [s for s in sites if s.component.head_axis is None or s.component is Component.HF]
            if flat:
                raise BadInputError(f"{flat[0].name} has no head axis; heads= applies to q, k, v, z, pattern, result "
                                    "and q_input, k_input, v_input")
        if not sites:
            raise BadInputError(f"{iv!r} edits no hook point: its heads are in no layer that {iv.site!r} names")
        for site in sites:
            plans.setdefault(site, _SitePlan(site)).interventions.append(iv)
    return plans


def forward(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            **extra: Any) -> torch.Tensor:
    """The plain forward of the wrapped model: logits (decoders) or last hidden state (encoders);
    ``extra`` goes to the Hugging Face forward as is."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, **extra}
    if model.adapter.is_causal:
        kwargs["use_cache"] = False
    out = model.hf(**kwargs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def run_with_hooks(
    model: Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    capture: SiteSpec | Sequence[SiteSpec] = (),
    interventions: Sequence[Intervention] = (),
    grads: SiteSpec | Sequence[SiteSpec] = (),
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stop_early: bool = False,
) -> RunOutput:
    """One forward with captures, interventions and (optionally) gradients at hook points.

    Args:
        model: a loaded model.
        input_ids: ``[batch, pos]`` token ids; ``attention_mask`` likewise (1 = real token).
        capture: names or glob patterns of hooks to keep (``"blocks.*.hook_resid_post"``).
        interventions: edits applied in order (see :mod:`interp.hooks.interventions`).
        grads: hooks at which to return ``d metric / d activation`` (one backward pass).
        metric: ``logits -> scalar``; required with ``grads``.
        stop_early: end the forward after the last captured hook (no logits; for captures).

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> from interp.hooks import run_with_hooks
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> out = run_with_hooks(m, torch.tensor([[1, 2, 3]]), capture="blocks.*.hook_resid_post")
        >>> sorted(out.activations), tuple(out.logits.shape)
        (['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'], (1, 3, 100))
    """
    _check_ids(model, input_ids, attention_mask)
    plans = make_plans(model, capture, interventions, grads)
    if grads and metric is None:
        raise BadInputError("grads= needs metric= (a function of the logits returning a scalar)")
    hooked = HookedRun(model, plans, stop_early=stop_early)
    logits = None
    grad_out: dict[str, torch.Tensor] = {}
    with torch.set_grad_enabled(bool(grads)), hooked:
        logits = forward(model, input_ids, attention_mask)
    if grads:
        assert metric is not None and logits is not None
        with torch.enable_grad():  # also when the caller runs under torch.no_grad()
            value = metric(logits)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"metric must return a scalar torch.Tensor, got {type(value).__name__}")
        if value.numel() != 1:
            raise BadInputError(f"metric must return a scalar, got shape {tuple(value.shape)}")
        if not value.requires_grad and logits.requires_grad:
            raise BadInputError("metric's value does not depend on the logits through autograd "
                             "(did it detach, call .item() or argmax?); no gradient can be taken")
        names = list(hooked.grad_inputs)
        gs: Sequence[torch.Tensor | None]
        if value.requires_grad:
            gs = torch.autograd.grad(value, [hooked.grad_inputs[n] for n in names], allow_unused=True)
        else:  # an intervention cut every path from the hooks to the logits: the gradients are zero
            gs = (None,) * len(names)
        grad_out = {n: (torch.zeros_like(hooked.grad_inputs[n]) if g is None else g.detach()) for n, g in zip(names, gs, strict=True)}
        logits = logits.detach()
        hooked.activations = {k: v.detach() for k, v in hooked.activations.items()}
    return RunOutput(logits=logits, activations=hooked.activations, grads=grad_out)


def _check_ids(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an integer tensor [batch, pos], got {type(input_ids).__name__}"
                        + (f" of dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else ""))
    if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise BadInputError(f"input_ids must be [batch, pos] with at least one token, got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise BadInputError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    n_ctx = model.dims.n_ctx
    if n_ctx is not None and input_ids.shape[1] > n_ctx:
        raise BadInputError(f"sequence length {input_ids.shape[1]} exceeds the model's context of {n_ctx} tokens; "
                         "truncate (max_tokens=) or split the input")
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= model.dims.d_vocab:
        raise BadInputError(f"token ids must be in [0, {model.dims.d_vocab}), got range "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")


@contextmanager
def hooks(
    model: Model,
    fns: dict[str, Callable[[torch.Tensor, Site], torch.Tensor | None]] | None = None,
    interventions: Sequence[Intervention] = (),
    capture: SiteSpec | Sequence[SiteSpec] = (),
) -> Iterator[HookedRun]:
    """Context manager for ad-hoc hooks around any forward you call yourself.

    ``fns`` maps a hook name or pattern to ``fn(act, site) -> new act or None``. Hooks are removed
    on exit, also when the forward raises. Interventions apply to every forward inside the block
    (each step of ``generate``); ``run.activations`` keeps the *last* forward's value of each
    captured hook (with a KV cache, ``generate``'s later steps see one new position at a time).

    Example:
        >>> import torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> from interp.hooks import hooks
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> seen = []
        >>> with hooks(m, {"blocks.*.hook_mlp_out": lambda act, site: seen.append(site.name)}):
        ...     _ = m.hf(torch.tensor([[1, 2, 3]]))
        >>> seen
        ['blocks.0.hook_mlp_out', 'blocks.1.hook_mlp_out']
    """
    ivs = list(interventions)
    for pattern, fn in (fns or {}).items():
        ivs.append(Lambda(pattern, fn=fn))
    with HookedRun(model, make_plans(model, capture, ivs)) as run:
        yield run
