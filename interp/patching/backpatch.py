"""Back-patching (Biran et al. 2024, "Hopping Too Late"): put a later layer's hidden state back into an
earlier layer, at the same position, and measure the change.

The hidden state leaving block ``src`` (``hook_resid_post``) at ``position`` replaces the one leaving
block ``dst < src``; blocks ``dst+1..`` recompute. If the answer is resolved too late for the later
layers to use it, back-patching the resolved state into an earlier layer lets them, and the metric
rises. All ``src`` of one ``dst`` share a stacked forward that starts at ``dst + 1``.

Example:
    >>> import interp
    >>> from interp.patching import back_patching
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> res = back_patching(m, "The capital of the country where the Eiffel Tower is located is",
    ...                     answer=" Paris", metric="prob")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.errors import BadInputError
from interp.hooks.partial import forward_from
from interp.patching.batched import DEFAULT_BUDGET, bytes_per_sequence
from interp.patching.result import PatchingResult
from interp.patching.setup import Answer, prepare


def back_patching(
    model: Any,
    prompt: str | list[str] | torch.Tensor,
    *,
    answer: Answer | None = None,
    wrong: Answer | None = None,
    metric: str | Callable[[torch.Tensor], torch.Tensor] = "prob",
    position: int = -1,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool = True,
) -> PatchingResult:
    """Metric after back-patching ``resid_post[src]`` into ``resid_post[dst]`` for every ``dst < src``.

    Args:
        model: a causal language model.
        prompt: the prompt(s) (one run; no corruption).
        answer / wrong / metric: as in :func:`~interp.patching.prepare` (default: the answer's probability).
        position: the position whose hidden state is moved (default the last token).
        memory_budget / progress: as for :func:`~interp.patching.activation_patching`.

    Returns:
        :class:`~interp.patching.PatchingResult` with axes ``(src_layer, dst_layer)``, NaN where
        ``dst >= src``; ``clean_value`` is the unpatched metric.
    """
    s = prepare(model, prompt, prompt, answer=answer, wrong=wrong, metric=metric)
    n_layers, n_pos = model.dims.n_layers, s.n_pos
    if not -n_pos <= position < n_pos:
        raise BadInputError(f"position {position} out of range for {n_pos} tokens")
    pos = position % n_pos
    streams = [s.stream("clean", L) for L in range(n_layers + 1)]  # streams[L + 1] = resid_post[L]
    out = torch.full((n_layers, n_layers), float("nan"))
    chunk = max(1, memory_budget // (s.n * bytes_per_sequence(model, n_pos, s.metric.full_logits)))
    for dst in tqdm(range(n_layers - 1), desc="back-patching", disable=not progress, leave=False):
        srcs = list(range(dst + 1, n_layers))
        for c0 in range(0, len(srcs), chunk):
            part = srcs[c0:c0 + chunk]
            r = len(part)
            resid = streams[dst + 1].unsqueeze(0).repeat(r, 1, 1, 1)
            for i, src in enumerate(part):
                resid[i, :, pos] = streams[src + 1][:, pos]
            positions = None if s.metric.full_logits else s.answer_pos.repeat(r)
            res = forward_from(model, s.input_ids.repeat(r, 1), s.attention_mask.repeat(r, 1), start_layer=dst + 1,
                               resid=resid.flatten(0, 1), positions=positions)
            assert res.logits is not None
            out[part, dst] = s.metric(res.logits.view(r, s.n, *res.logits.shape[1:])).cpu()
    return PatchingResult(
        values=out, axes=("src_layer", "dst_layer"),
        coords={"src_layer": tuple(range(n_layers)), "dst_layer": tuple(range(n_layers))}, tokens=tuple(s.tokens),
        component="resid_post", method="backpatch", direction="backward", metric=s.metric.name,
        clean_value=s.clean_value, corrupted_value=float("nan"), meta={"position": pos},
    )


__all__ = ["back_patching"]
