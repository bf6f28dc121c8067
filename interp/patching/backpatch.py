"""Back-patching (Biran et al. 2024, "Hopping Too Late"): put a later layer's hidden state back into an
earlier layer, at the same position, and measure the change.

The hidden state leaving block ``src`` (``resid_post``) at the selected positions (default each prompt's
last token) replaces the one leaving block ``dst < src``; blocks ``dst+1..`` recompute. If the answer is resolved too late for the later
layers to use it, back-patching the resolved state into an earlier layer lets them, and the metric
rises. All ``src`` of one ``dst`` share a stacked forward that starts at ``dst + 1``.

Example:
    >>> import interp
    >>> from interp.patching import back_patching
    >>> m = interp.load_model("smollm2-135m")
    >>> res = back_patching(m, "The capital of the country where the Eiffel Tower is located is",
    ...                     answer=" Paris", layers=range(10, 30, 4), progress=False)
    >>> res.axes, res.values.shape
    (('src_layer', 'dst_layer'), torch.Size([5, 5]))
"""

from __future__ import annotations

import torch

from interp.hooks.partial import forward_from
from interp.models import Inputs, Model
from interp.patching.activation import Layers, resolve_layers
from interp.patching.batched import DEFAULT_BUDGET, bytes_per_sequence
from interp.patching.result import PatchingResult
from interp.patching.setup import Answer, MetricSpec, PatchingSetup, setup_for
from interp.progress import progress as progress_bar
from interp.sites import Positions, position_mask


def back_patching(
    model: Model,
    inputs: Inputs | PatchingSetup,
    *,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: MetricSpec | None = None,
    layers: Layers = None,
    positions: Positions = -1,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> PatchingResult:
    """Metric after back-patching ``resid_post[src]`` into ``resid_post[dst]`` for every ``dst < src``.

    Args:
        model: a causal language model.
        inputs: the prompt(s) (one run; no corruption), or a :class:`~interp.patching.PatchingSetup` (its
            clean run; then leave ``answer``, ``wrong`` and ``metric`` out).
        answer / wrong / metric: as in :func:`~interp.patching.prepare` (default metric: the answer's
            probability, ``"prob"``).
        layers: the layers to move states between (negative from the end; default all).
        positions: the positions whose hidden states are moved, together (default ``-1``: each prompt's last
            real token; any selection of :mod:`interp.sites`).
        memory_budget / progress: as for :func:`~interp.patching.activation_patching`.

    Returns:
        :class:`~interp.patching.PatchingResult` with axes ``(src_layer, dst_layer)``, NaN where
        ``dst >= src``; ``clean_value`` is the unpatched metric.

    Raises:
        BadInputError: a layer or position outside the model or a prompt.
    Example (layer 20's output moved back to layer 10 keeps the answer's probability; layer 29's loses it):
        >>> import interp
        >>> from interp.patching import back_patching
        >>> m = interp.load_model("smollm2-135m")
        >>> res = back_patching(m, "The capital of France is", answer=" Paris", layers=[10, 20, 29], progress=False)
        >>> round(res.clean_value, 2), res.values.isnan().sum().item()  # NaN where dst >= src
        (0.77, 6)
        >>> [round(float(v), 3) for v in res.values[1:, 0]]  # src 20 and 29 into dst 10
        [0.769, 0.001]
    """
    if not isinstance(inputs, PatchingSetup) and metric is None:
        metric = "prob"
    s = setup_for(model, inputs, answer=answer, wrong=wrong, metric=metric)
    n_layers, n_pos = s.model.dims.n_layers, s.n_pos
    Ls = resolve_layers(layers, n_layers)
    where = position_mask(positions, s.lengths, n_pos).to(s.input_ids.device)  # [n, pos]
    streams = {L: s.stream("clean", L + 1) for L in Ls}  # resid_post[L]
    out = torch.full((len(Ls), len(Ls)), float("nan"))
    chunk = max(1, memory_budget // (s.n * bytes_per_sequence(s.model, n_pos, s.metric.full_logits)))
    for j, dst in enumerate(progress_bar(Ls, desc="back-patching", enabled=progress, leave=False)):
        srcs = [(i, src) for i, src in enumerate(Ls) if src > dst]
        for c0 in range(0, len(srcs), chunk):
            part = srcs[c0:c0 + chunk]
            r = len(part)
            resid = streams[dst].unsqueeze(0).repeat(r, 1, 1, 1)
            for k, (_, src) in enumerate(part):
                resid[k][where] = streams[src][where]
            rows = None if s.metric.full_logits else s.answer_pos.repeat(r)
            res = forward_from(s.model, s.input_ids.repeat(r, 1), s.attention_mask.repeat(r, 1), start_layer=dst + 1,
                               resid=resid.flatten(0, 1), positions=rows)
            assert res.logits is not None
            out[[i for i, _ in part], j] = s.metric(res.logits.view(r, s.n, *res.logits.shape[1:])).cpu()
    shown = positions if isinstance(positions, (int, type(None))) else (
        str(positions) if isinstance(positions, slice) else list(positions))
    return PatchingResult(
        values=out, axes=("src_layer", "dst_layer"), coords={"src_layer": tuple(Ls), "dst_layer": tuple(Ls)},
        tokens=tuple(s.tokens), component="resid_post", method="backpatch", direction="backward",
        metric=s.metric.name, clean_value=s.clean_value, corrupted_value=float("nan"), meta={"positions": shown},
    )


__all__ = ["back_patching"]
