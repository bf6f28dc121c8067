"""Layer metrics: how much each block (or sublayer) changes the residual stream, and what skipping it costs.

- :func:`angular_distances`: the angular distance ``arccos(cos(x_l, x_{l+n})) / pi`` between the residual
  stream before block ``l`` and before block ``l + n``, for every ``l`` and ``n`` ("The Unreasonable
  Ineffectiveness of the Deeper Layers", Gromov et al. 2024): the ``l`` minimising it for a given ``n``
  is the block of ``n`` layers one could drop.
- :func:`sublayer_similarity`: cosine similarity between each attention / MLP sublayer's input and output
  residual ("What Matters in Transformers? Not All Attention is Needed", He et al. 2024).
- :func:`skip_layer_loss`: the next-token cross-entropy when a block, an attention or an MLP sublayer is
  skipped (its output zero-ablated), minus the unedited model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.hooks import Ablate, run_with_hooks
from interp.lens.layer_metrics_result import AngularDistanceResult, SkipLossResult, SublayerSimilarityResult
from interp.models import Inputs, Model
from interp.sites import Component
from interp.trace.trace import Trace

SKIPPABLE = {"block": (Component.ATTN_OUT, Component.MLP_OUT), "attn": (Component.ATTN_OUT,),
             "mlp": (Component.MLP_OUT,)}


def angular_distances(model: Model, trace_or_text: Trace | Inputs) -> AngularDistanceResult:
    """Angular distance between the residual stream before block ``l`` and before block ``l + n``.

    State ``l`` is ``blocks.l.hook_resid_pre`` for ``l = 0`` (the embeddings) and
    ``blocks.{l-1}.hook_resid_post`` after that, so there are ``n_layers + 1`` states and state
    ``n_layers`` is the last block's output (before the final norm). The distance
    ``arccos(cos(x_l, x_{l+n})) / pi`` lies in ``[0, 1]``; it is averaged over the real tokens and,
    separately, over each sequence's last real token (the paper's choice).

    Args:
        model: the model (that made the trace).
        trace_or_text: a :class:`~interp.trace.Trace` holding ``blocks.0.hook_resid_pre`` and every
            ``blocks.*.hook_resid_post``, or inputs for :meth:`Model.run` (text, texts, ids or
            ``(ids, mask)``), run here.

    Returns:
        :class:`AngularDistanceResult` with ``[start, n]`` matrices (``NaN`` where ``start + n > n_layers``).

    Raises:
        KeyError: if the trace lacks the residual hooks. ModelMismatchError: if another model made it.

    Example:
        >>> import interp
        >>> from interp.lens import angular_distances
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = angular_distances(m, "The capital of France is")  # doctest: +SKIP
        >>> res.best_block(8)  # blocks 2..9 change the last token's stream least  # doctest: +SKIP
        2
        >>> res.plot().write_html("angular.html")  # doctest: +SKIP
    """
    n_layers = model.dims.n_layers
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{L}.hook_resid_post" for L in range(n_layers)]
    trace = _trace(model, trace_or_text, names)
    x = torch.stack([trace[n] for n in names]).double()  # [state, batch, pos, d_model]
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    mask = trace.attention_mask.bool()
    last = _last_real(mask)
    n_states = n_layers + 1
    mean = torch.full((n_states, n_states), float("nan"), dtype=torch.float64)
    at_last = mean.clone()
    rows = torch.arange(mask.shape[0])
    for n in range(n_states):
        cos = (unit[:n_states - n] * unit[n:]).sum(-1).clamp(-1.0, 1.0)  # [start, batch, pos]
        dist = torch.arccos(cos) / torch.pi
        if n == 0:
            dist = torch.zeros_like(dist)  # exactly, not rounding noise of arccos(1 - eps)
        mean[:n_states - n, n] = dist[:, mask].mean(-1)
        at_last[:n_states - n, n] = dist[:, rows, last].mean(-1)
    return AngularDistanceResult(distance_last=at_last.float(), distance_mean=mean.float(),
                                 n_tokens=int(mask.sum()), tokens=trace.tokens, model_id=model.name)


def sublayer_similarity(model: Model, trace_or_text: Trace | Inputs) -> SublayerSimilarityResult:
    """Cosine similarity between each sublayer's input and output residual, mean over real tokens.

    Attention of layer ``L``: ``cos(resid_pre, resid_mid)``; MLP: ``cos(resid_mid, resid_post)``.
    A similarity near 1 means the sublayer hardly turns the residual stream (a candidate to drop).

    Args:
        model: the model (that made the trace); it must have a ``hook_resid_mid`` (sequential blocks).
        trace_or_text: a :class:`~interp.trace.Trace` holding ``blocks.*.hook_resid_pre``,
            ``blocks.*.hook_resid_mid`` and ``blocks.*.hook_resid_post``, or inputs run here.

    Returns:
        :class:`SublayerSimilarityResult` with ``[layer]`` curves ``attn`` and ``mlp``.

    Raises:
        ValueError: for models whose attention and MLP both read ``resid_pre`` (GPT-NeoX / Pythia with
            the parallel residual): there is no residual between the two sublayers.
        KeyError: if the trace lacks the residual hooks. ModelMismatchError: if another model made it.

    Example:
        >>> import interp
        >>> from interp.lens import sublayer_similarity
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> sublayer_similarity(m, "The capital of France is").plot().write_html("sublayers.html")  # doctest: +SKIP
    """
    if Component.RESID_MID not in model.adapter.components(model.config):
        raise BadInputError(f"model {model.name!r} ({model.adapter.family}) has no hook_resid_mid: its attention and "
                         "MLP both read resid_pre (parallel residual), so sublayer input/output similarity is "
                         "not defined; use angular_distances (whole blocks) instead")
    n_layers = model.dims.n_layers
    comps = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
    trace = _trace(model, trace_or_text, [f"blocks.{L}.{c}" for L in range(n_layers) for c in comps])
    mask = trace.attention_mask.bool()

    def cos(a: str, b: str) -> torch.Tensor:  # [layer] mean over real tokens
        xa = torch.stack([trace[f"blocks.{L}.{a}"] for L in range(n_layers)]).double()
        xb = torch.stack([trace[f"blocks.{L}.{b}"] for L in range(n_layers)]).double()
        return torch.nn.functional.cosine_similarity(xa, xb, dim=-1)[:, mask].mean(-1).float()

    return SublayerSimilarityResult(attn=cos("hook_resid_pre", "hook_resid_mid"),
                                    mlp=cos("hook_resid_mid", "hook_resid_post"),
                                    n_tokens=int(mask.sum()), tokens=trace.tokens, model_id=model.name)


def skip_layer_loss(model: Model, texts: Inputs, components: Sequence[str] = ("block", "attn", "mlp"),
                    progress: bool = True) -> SkipLossResult:
    """Next-token cross-entropy with each block / attention / MLP sublayer skipped, against the baseline.

    Skipping a sublayer zero-ablates its output (``blocks.L.hook_attn_out`` or ``blocks.L.hook_mlp_out``)
    so the residual stream passes it unchanged; skipping a block zero-ablates both. One forward per
    component and layer (plus the baseline).

    Args:
        model: a causal language model.
        texts: inputs for :meth:`Model.run` (text, texts, ids or ``(ids, mask)``).
        components: any of ``"block"``, ``"attn"``, ``"mlp"`` (rows in this order).
        progress: show a tqdm bar over the forwards.

    Returns:
        :class:`SkipLossResult`: ``loss [component, layer]`` (nats, mean over real next-token
        predictions) and ``baseline_loss``; ``.delta`` is their difference.

    Raises:
        ValueError: on an unknown component, a model without LM head, or inputs without two real tokens.

    Example:
        >>> import interp
        >>> from interp.lens import skip_layer_loss
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = skip_layer_loss(m, ["The capital of France is Paris."], components=["attn"])  # doctest: +SKIP
        >>> res.delta.shape  # doctest: +SKIP
        torch.Size([1, 30])
    """
    comps = [components] if isinstance(components, str) else list(components)
    bad = [c for c in comps if c not in SKIPPABLE]
    if bad or not comps:
        raise BadInputError(f"components must be among {', '.join(SKIPPABLE)} (got {comps!r})")
    if not model.adapter.is_causal or model.weights.W_U is None:
        raise BadInputError(f"model {model.name!r} is not a causal language model: no next-token loss to compare")
    ids, mask = model.encode(texts)
    target = mask[:, 1:].bool() & mask[:, :-1].bool()
    if not target.any():
        raise BadInputError("skip_layer_loss needs at least one sequence of two or more real tokens")

    def loss(interventions: list[Ablate]) -> float:
        with torch.no_grad():
            logits = run_with_hooks(model, ids, mask, interventions=interventions).logits
        assert logits is not None
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        return float(ce[target].mean())

    n_layers = model.dims.n_layers
    baseline = loss([])
    out = torch.empty(len(comps), n_layers)
    bar = tqdm(total=len(comps) * n_layers, desc="skip-layer loss", unit="forward", disable=not progress)
    for i, comp in enumerate(comps):
        for L in range(n_layers):
            out[i, L] = loss([Ablate(f"blocks.{L}.{c.value}", method="zero") for c in SKIPPABLE[comp]])
            bar.update()
    bar.close()
    return SkipLossResult(loss=out, baseline_loss=baseline, components=tuple(comps),
                          n_tokens=int(target.sum()), model_id=model.name)


def _trace(model: Model, trace_or_text: Trace | Inputs, names: list[str]) -> Trace:
    if isinstance(trace_or_text, Trace):
        trace_or_text.check_model(model)
        missing = [n for n in names if n not in trace_or_text]
        if missing:
            wanted = sorted({"blocks.*." + n.split(".", 2)[2] for n in names})
            raise KeyError(f"this trace lacks {len(missing)} residual activations (e.g. {missing[0]!r}): "
                           f"capture {wanted} (e.g. model.run(text, capture={wanted!r}))")
        return trace_or_text
    return model.run(trace_or_text, capture=names).trace


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """``[batch]`` index of each sequence's last real token (left or right padding)."""
    pos = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask, pos, -1).amax(1).clamp_min(0)
