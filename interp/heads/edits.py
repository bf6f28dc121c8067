"""Weight edits of a head's OV circuit along its singular components.

Removing (``scale=0``) or scaling component ``i`` of ``W_OV = Σ s_j u_j v_jᵀ`` is the same as
projecting the head's output on ``P = I - Σ_i (1 - c_i) v_i v_iᵀ``; since ``v_i`` lies in the row
space of ``W_O``, that projection can be done before ``W_O``, on ``hook_z``, with a small
``d_head x d_head`` matrix ``M`` such that ``M W_O = W_O P``. :func:`ov_component_edit` returns it as an
:mod:`interp.hooks` intervention; :func:`edited_weights` returns edited weight views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from interp.errors import BadInputError
from interp.hooks import Lambda
from interp.models.circuits import factored_svd, ov_factors


def _scales(components: Sequence[int], scale: float | Sequence[float], d_head: int) -> tuple[list[int], torch.Tensor]:
    comps = [int(c) for c in components]
    if not comps or any(not 0 <= c < d_head for c in comps) or len(set(comps)) != len(comps):
        raise BadInputError(f"components={list(components)} must be distinct ints in 0..{d_head - 1}")
    c = torch.as_tensor(scale, dtype=torch.float64).flatten()
    if c.numel() == 1:
        c = c.expand(len(comps))
    if c.numel() != len(comps) or not torch.isfinite(c).all():
        raise BadInputError(f"scale={scale!r} must be one finite number or one per component ({len(comps)})")
    return comps, c


def ov_component_maps(weights: Any, layer: int, head: int, components: Sequence[int],
                      scale: float | Sequence[float] = 0.0, fold_norm: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [d_model, d_model], M [d_head, d_head])``: the output projection and its ``hook_z`` form.

    ``z @ M @ W_O == z @ W_O @ P`` and ``W_OV @ P`` has the chosen components' singular values
    multiplied by ``scale`` (the others unchanged).

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> P, M = ov_component_maps(m.weights, 3, 0, [0, 1])  # doctest: +SKIP
    """
    A, B = ov_factors(weights, layer, head, fold_norm=fold_norm)
    d_head = B.shape[0]
    comps, c = _scales(components, scale, d_head)
    _, _, V = factored_svd(A.double(), B.double())
    Vc = V[:, comps]  # [d_model, n]
    P = torch.eye(V.shape[0], dtype=torch.float64) - (Vc * (1 - c)) @ Vc.T
    W_O = B.double()
    # M W_O = W_O - Σ (1-c_i) (W_O v_i) v_iᵀ, with v_iᵀ = a_iᵀ W_O, a_i = pinv(W_O)ᵀ v_i
    a = torch.linalg.pinv(W_O).T @ Vc  # [d_head, n]
    M = torch.eye(d_head, dtype=torch.float64) - ((W_O @ Vc) * (1 - c)) @ a.T
    return P.to(B.dtype), M.to(B.dtype)


def ov_component_edit(model: Any, layer: int, head: int, components: Sequence[int],
                      scale: float | Sequence[float] = 0.0, *, positions: Any = None,
                      fold_norm: bool = True) -> Lambda:
    """An intervention on ``blocks.{layer}.attn.hook_z`` that removes or scales OV components of one head.

    Args:
        model: a loaded model (or anything with ``.weights``).
        layer: the head's layer; head: its index (a query head; GQA is expanded).
        components: OV singular components (0 = largest) of :func:`interp.heads.head_svd`.
        scale: factor per component (0 removes it), one number or one per component.
        positions: restrict the edit to these positions (``None``: all).
        fold_norm: which SVD the component indices refer to (as in ``head_svd``).

    Returns:
        An :class:`interp.hooks.Lambda` to pass to ``model.run(..., interventions=[...])``.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> edit = ov_component_edit(m, 5, 2, components=[0, 1])  # doctest: +SKIP
        >>> res = m.run("The capital of France is", interventions=[edit])  # doctest: +SKIP
    """
    _, M = ov_component_maps(model.weights, layer, head, components, scale, fold_norm=fold_norm)

    def fn(act: torch.Tensor, site: Any) -> torch.Tensor:
        out = act.clone()
        out[:, :, head] = act[:, :, head] @ M.to(act.dtype).to(act.device)
        return out

    return Lambda(f"blocks.{layer}.attn.hook_z", fn=fn, positions=positions, heads=[head])


def edited_weights(weights: Any, layer: int, head: int, components: Sequence[int],
                   scale: float | Sequence[float] = 0.0, fold_norm: bool = True) -> Any:
    """A copy of the weight views with ``W_O[layer, head]`` replaced by ``W_O @ P`` (see module docstring).

    The model itself is not touched; use :func:`ov_component_edit` to run the edited head.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> w2 = edited_weights(m.weights, 5, 2, [0])  # doctest: +SKIP
    """
    P, _ = ov_component_maps(weights, layer, head, components, scale, fold_norm=fold_norm)
    W_O = weights.W_O.detach().clone()
    W_O[layer, head] = W_O[layer, head] @ P
    return replace(weights, W_O=W_O)
