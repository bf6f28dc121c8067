"""Layer metrics: how much each block (or sublayer) changes the residual stream, and what skipping it costs.

- :func:`angular_distances`: the angular distance ``arccos(cos(x_l, x_{l+n})) / pi`` between the residual
  stream before block ``l`` and before block ``l + n``, for every ``l`` and ``n`` ("The Unreasonable
  Ineffectiveness of the Deeper Layers", Gromov et al. 2024): the ``l`` minimising it for a given ``n``
  is the block of ``n`` layers one could drop.
- :func:`sublayer_similarity`: cosine similarity between each attention / MLP sublayer's input and output
  residual ("What Matters in Transformers? Not All Attention is Needed", He et al. 2024).
- :func:`skip_layer_loss`: the next-token cross-entropy when a sublayer (``attn_out``, ``mlp_out``) or a whole
  block (``attn_out+mlp_out``) is skipped, its output zero-ablated, minus the unedited model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import Ablate, run_with_hooks
from interp.lens.layer_metrics_result import AngularDistanceResult, SkipLossResult, SublayerSimilarityResult
from interp.models import Inputs, Model
from interp.progress import progress as progress_bar
from interp.sites import Component, Site, position_mask
from interp.trace.inputs import ensure_trace
from interp.trace.store import TraceStore
from interp.trace.trace import Trace

SKIPPABLE = (Component.ATTN_OUT, Component.MLP_OUT)
BLOCK = "attn_out+mlp_out"
"""How :func:`skip_layer_loss` names a whole block: both sublayer outputs skipped together."""
DEFAULT_SKIPS = (BLOCK, "attn_out", "mlp_out")


def angular_distances(model: Model, inputs: Inputs) -> AngularDistanceResult:
    """Angular distance between the residual stream before block ``l`` and before block ``l + n``.

    State ``l`` is ``resid_pre.0`` for ``l = 0`` (the embeddings) and ``resid_post.{l-1}`` after that, so there
    are ``n_layers + 1`` states and state ``n_layers`` is the last block's output (before the final norm). The
    distance ``arccos(cos(x_l, x_{l+n})) / pi`` lies in ``[0, 1]``; it is averaged over the real tokens and,
    separately, over each sequence's last real token (the paper's choice).

    Args:
        model: the model.
        inputs: a text, texts, token ids (or ``(ids, mask)``), or a Trace / TraceStore of this model (read as
            is when it holds ``resid_pre.0`` and every ``resid_post``, else run on its tokens).

    Returns:
        :class:`AngularDistanceResult` with ``[layer, n]`` matrices (``NaN`` where ``layer + n > n_layers``).

    Raises:
        ModelMismatchError: a trace or store made by another model.

    Example:
        >>> import interp
        >>> from interp.lens import angular_distances
        >>> m = interp.load_model("smollm2-135m")
        >>> res = angular_distances(m, "The capital of France is")
        >>> res.best_block(8)  # blocks 2..9 change the last token's stream least
        2
        >>> res.plot("best_block").data[0].name
        'min over start layers'
    """
    n_layers = model.dims.n_layers
    names = [Site(Component.RESID_PRE, 0).name] + [Site(Component.RESID_POST, L).name for L in range(n_layers)]
    trace = ensure_trace(model, inputs, names)
    x = torch.stack([trace[n].cpu() for n in names]).double()  # [state, batch, pos, d_model]
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    mask = trace.attention_mask.bool().cpu()
    last = position_mask(-1, trace.lengths, mask.shape[1])  # each sequence's last real token
    n_states = n_layers + 1
    mean = torch.full((n_states, n_states), float("nan"), dtype=torch.float64)
    at_last = mean.clone()
    for n in range(n_states):
        cos = (unit[:n_states - n] * unit[n:]).sum(-1).clamp(-1.0, 1.0)  # [start, batch, pos]
        dist = torch.arccos(cos) / torch.pi
        if n == 0:
            dist = torch.zeros_like(dist)  # exactly, not rounding noise of arccos(1 - eps)
        mean[:n_states - n, n] = dist[:, mask].mean(-1)
        at_last[:n_states - n, n] = dist[:, last].mean(-1)
    return AngularDistanceResult(distance_last=at_last.float(), distance_mean=mean.float(),
                                 n_tokens=int(mask.sum()), tokens=trace.tokens, model_id=model.name)


def sublayer_similarity(model: Model, inputs: Inputs) -> SublayerSimilarityResult:
    """Cosine similarity between each sublayer's input and output residual, mean over real tokens.

    Attention of layer ``L``: ``cos(resid_pre, resid_mid)``; MLP: ``cos(resid_mid, resid_post)``.
    A similarity near 1 means the sublayer hardly turns the residual stream (a candidate to drop).

    Args:
        model: the model; it must have a ``resid_mid`` (sequential blocks).
        inputs: a text, texts, token ids, or a Trace / TraceStore of this model (read as is when it holds
            ``resid_pre``, ``resid_mid`` and ``resid_post`` of every layer, else run on its tokens).

    Returns:
        :class:`SublayerSimilarityResult` with ``[layer]`` curves ``attn`` and ``mlp``.

    Raises:
        BadInputError: for models whose attention and MLP both read ``resid_pre`` (GPT-NeoX / Pythia with
            the parallel residual): there is no residual between the two sublayers.
        ModelMismatchError: a trace or store made by another model.

    Example:
        >>> import interp
        >>> from interp.lens import sublayer_similarity
        >>> m = interp.load_model("smollm2-135m")
        >>> res = sublayer_similarity(m, "The capital of France is")
        >>> res.attn.shape, bool((res.mlp <= 1).all())
        (torch.Size([30]), True)
    """
    if Component.RESID_MID not in model.adapter.components(model.config):
        raise BadInputError(f"model {model.name!r} ({model.adapter.family}) has no resid_mid: its attention and "
                            "MLP both read resid_pre (parallel residual), so sublayer input/output similarity is "
                            "not defined; use angular_distances (whole blocks) instead")
    n_layers = model.dims.n_layers
    comps = (Component.RESID_PRE, Component.RESID_MID, Component.RESID_POST)
    trace = ensure_trace(model, inputs, [c.short for c in comps])
    mask = trace.attention_mask.bool().cpu()

    def cos(a: Component, b: Component) -> torch.Tensor:  # [layer] mean over real tokens
        xa = torch.stack([trace[Site(a, L).name].cpu() for L in range(n_layers)]).double()
        xb = torch.stack([trace[Site(b, L).name].cpu() for L in range(n_layers)]).double()
        return torch.nn.functional.cosine_similarity(xa, xb, dim=-1)[:, mask].mean(-1).float()

    return SublayerSimilarityResult(attn=cos(Component.RESID_PRE, Component.RESID_MID),
                                    mlp=cos(Component.RESID_MID, Component.RESID_POST),
                                    n_tokens=int(mask.sum()), tokens=trace.tokens, model_id=model.name)


def skip_layer_loss(model: Model, inputs: Inputs, *, components: str | Sequence[str] = DEFAULT_SKIPS,
                    layers: int | Sequence[int] | None = None, progress: bool | None = None) -> SkipLossResult:
    """Next-token cross-entropy with each sublayer or block skipped, against the unedited model.

    Skipping a sublayer zero-ablates its output (``attn_out.L`` or ``mlp_out.L``, an :class:`~interp.hooks.Ablate`)
    so the residual stream passes it unchanged. A whole block is written ``"attn_out+mlp_out"``: both outputs
    are ablated together, so the block hands its input on unchanged (any ``+``-joined group is skipped
    together). One forward per component and layer (plus the baseline).

    Args:
        model: a causal language model.
        inputs: a text, texts, token ids (or ``(ids, mask)``), or a Trace / TraceStore (its tokens).
        components: rows of the result, each ``"attn_out"``, ``"mlp_out"`` or ``"attn_out+mlp_out"`` (the
            default is all three, the block first).
        layers: the layers to skip, one at a time (ints, negative from the end; ``None``: every layer).
        progress: show a progress bar over the forwards (``None``: follow :func:`interp.quiet`).

    Returns:
        :class:`SkipLossResult`: ``loss [component, layer]`` (nats, mean over real next-token predictions)
        and ``baseline_loss``; ``.delta`` is their difference.

    Raises:
        BadInputError: a component that cannot be skipped, a layer out of range, a model without LM head, or
            inputs without a sequence of two real tokens.
        UnknownHookError: an unknown component name (close matches listed).

    Example:
        >>> import interp
        >>> from interp.lens import skip_layer_loss
        >>> m = interp.load_model("smollm2-135m")
        >>> res = skip_layer_loss(m, "The capital of France is Paris.", components=["attn_out+mlp_out"],
        ...                       layers=[0, -1], progress=False)
        >>> res.delta.shape, res.labels()["layer"]
        (torch.Size([1, 2]), [0, 29])
        >>> bool(res.delta[0, 0] > res.delta[0, 1])  # skipping the first block costs more than the last
        True
    """
    groups = parse_skips(components)
    n_layers = model.dims.n_layers
    chosen = _layers(layers, n_layers)
    if not model.adapter.is_causal or model.weights.W_U is None:
        raise BadInputError(f"model {model.name!r} is not a causal language model: no next-token loss to compare")
    if isinstance(inputs, (Trace, TraceStore)):
        inputs.check_model(model)
    ids, mask = model.encode(inputs)
    target = mask[:, 1:].bool() & mask[:, :-1].bool()
    if not target.any():
        raise BadInputError("skip_layer_loss needs at least one sequence of two or more real tokens")

    def loss(interventions: list[Ablate]) -> float:
        with torch.no_grad():
            logits = run_with_hooks(model, ids, mask, interventions=interventions).logits
        if logits is None:
            raise RuntimeError("the hooked run returned no logits")
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        return float(ce[target].mean())

    baseline = loss([])
    out = torch.empty(len(groups), len(chosen))
    with progress_bar(total=len(groups) * len(chosen), enabled=progress, desc="skip-layer loss", unit="forward") as bar:
        for i, group in enumerate(groups):
            for j, L in enumerate(chosen):
                out[i, j] = loss([Ablate(Site(c, L).name, method="zero") for c in group])
                bar.update()
    return SkipLossResult(loss=out, baseline_loss=baseline, components=tuple("+".join(c.short for c in g) for g in groups),
                          n_tokens=int(target.sum()), model_id=model.name,
                          layers=() if chosen == list(range(n_layers)) else tuple(chosen))


def parse_skips(components: str | Sequence[str]) -> list[tuple[Component, ...]]:
    """``"attn_out"``, ``"mlp_out"``, ``"attn_out+mlp_out"`` (or a list of them) → groups of components skipped
    together, each in forward order, without repeats.

    Example:
        >>> from interp.lens.layer_metrics import parse_skips
        >>> [[c.short for c in g] for g in parse_skips(["mlp_out+attn_out", "mlp_out"])]
        [['attn_out', 'mlp_out'], ['mlp_out']]
    """
    items = [components] if isinstance(components, str) else list(components)
    if not items:
        raise bad_value("components", components, f"at least one of {', '.join(DEFAULT_SKIPS)}")
    groups: list[tuple[Component, ...]] = []
    for item in items:
        if not isinstance(item, str):
            raise bad_value("component", item, f"a string: {', '.join(DEFAULT_SKIPS)}")
        parts = {Component.parse(p.strip()) for p in item.split("+")}
        bad = [c.short for c in parts if c not in SKIPPABLE]
        if bad:
            raise bad_value("component to skip", bad[0] if len(parts) > 1 else item,
                            f"{', '.join(c.short for c in SKIPPABLE)} or a whole block, {BLOCK} (skipping zero-ablates "
                            "the output so the residual stream passes unchanged)")
        group = tuple(c for c in SKIPPABLE if c in parts)
        if group not in groups:
            groups.append(group)
    return groups


def _layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    items = [layers] if isinstance(layers, int) else list(layers)
    out: list[int] = []
    for L in items:
        if isinstance(L, bool) or not isinstance(L, int) or not -n_layers <= L < n_layers:
            raise bad_value("layer", L, f"{-n_layers}..{n_layers - 1} (negative counts from the end)")
        if L % n_layers not in out:
            out.append(L % n_layers)
    if not out:
        raise bad_value("layers", layers, f"at least one layer in {-n_layers}..{n_layers - 1}")
    return out


__all__ = ["BLOCK", "angular_distances", "parse_skips", "skip_layer_loss", "sublayer_similarity"]
