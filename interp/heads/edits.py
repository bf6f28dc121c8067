"""Edits of a head's OV circuit along its singular components.

Removing (``scale=0``) or scaling component ``i`` of ``W_OV = Σ s_j u_j v_jᵀ`` is the same as
projecting the head's output on ``P = I - Σ_i (1 - c_i) v_i v_iᵀ``; since ``v_i`` lies in the row
space of ``W_O``, that projection can be done before ``W_O``, on ``z``, with a small
``d_head x d_head`` matrix ``M`` such that ``M W_O = W_O P``. :func:`ov_component_edit` returns it as an
:class:`interp.hooks.Transform` intervention; :func:`edited_weights` returns edited weight views.

Example:
    >>> import interp
    >>> from interp.heads import ov_component_edit
    >>> m = interp.load_model("smollm2-135m")
    >>> edit = ov_component_edit(m, head="L5H2", components=[0, 1])
    >>> edit.site.name, edit.matrix.shape
    ('blocks.5.attn.hook_z', torch.Size([64, 64]))
    >>> out = m.run("The capital of France is", interventions=[edit])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from interp.errors import bad_value
from interp.heads._common import one_head, weights_of
from interp.hooks import Transform
from interp.models import Model
from interp.models.adapters import WeightViews
from interp.models.circuits import factored_svd, ov_factors
from interp.sites import HeadSpec, Positions


def _scales(components: Sequence[int], scale: float | Sequence[float], d_head: int) -> tuple[list[int], torch.Tensor]:
    try:
        comps = [int(c) for c in components]
    except (TypeError, ValueError):
        comps = []
    if not comps or any(not 0 <= c < d_head for c in comps) or len(set(comps)) != len(comps):
        raise bad_value("components", components, f"distinct ints in 0..{d_head - 1} (singular components, "
                                                  "0 = largest)")
    try:
        c = torch.as_tensor(scale, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        c = torch.tensor([float("nan")])
    if c.numel() == 1:
        c = c.expand(len(comps))
    if c.numel() != len(comps) or not torch.isfinite(c).all():
        raise bad_value("scale", scale, f"one finite number or one per component ({len(comps)})")
    return comps, c


def ov_component_maps(model: Model | WeightViews, *, head: HeadSpec, components: Sequence[int],
                      scale: float | Sequence[float] = 0.0, fold_norm: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [d_model, d_model], M [d_head, d_head])``: the output projection and its ``z`` form.

    ``z @ M @ W_O == z @ W_O @ P`` and ``W_OV @ P`` has the chosen components' singular values
    multiplied by ``scale`` (the others unchanged).

    Args:
        model: a loaded model, or weight views (e.g. from :func:`edited_weights`, to chain edits).
        head: the head (``"L5H2"``, ``(5, 2)``); a query head (grouped-query attention is expanded).
        components: OV singular components (0 = largest) of :func:`interp.heads.head_svd`.
        scale: factor per component (0 removes it), one number or one per component.
        fold_norm: which SVD the component indices refer to (as in ``head_svd``).

    Example:
        >>> import interp, torch
        >>> m = interp.load_model("smollm2-135m")
        >>> P, M = ov_component_maps(m, head="L3H0", components=[0, 1])
        >>> W_O = m.weights.W_O[3, 0]
        >>> P.shape, M.shape, torch.allclose(M @ W_O, W_O @ P, atol=1e-5)
        (torch.Size([576, 576]), torch.Size([64, 64]), True)
    """
    w = weights_of(model)
    h = one_head(head, w)
    A, B = ov_factors(w, h.layer, h.head, fold_norm=fold_norm)
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


def ov_component_edit(model: Model, *, head: HeadSpec, components: Sequence[int],
                      scale: float | Sequence[float] = 0.0, positions: Positions = None,
                      fold_norm: bool = True) -> Transform:
    """An intervention that removes or scales OV components of one head: a :class:`~interp.hooks.Transform`
    of that head's ``z`` by the ``d_head x d_head`` matrix ``M`` of :func:`ov_component_maps`.

    Args:
        model: a loaded model (``interp.load_model``).
        head: the head (``"L5H2"``, ``(5, 2)``); a query head (grouped-query attention is expanded).
        components: OV singular components (0 = largest) of :func:`interp.heads.head_svd`.
        scale: factor per component (0 removes it), one number or one per component.
        positions: restrict the edit to these positions of each sequence's real tokens (``-1``: each
            sequence's last token; ``None``: all).
        fold_norm: which SVD the component indices refer to (as in ``head_svd``).

    Returns:
        A ``Transform`` on ``blocks.{layer}.attn.hook_z`` for that head, to pass to
        ``model.run(..., interventions=[...])`` (or any tool that takes ``interventions=``).

    Raises:
        BadInputError: a bad head, component, scale or position.

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> edit = ov_component_edit(m, head="L5H2", components=[0, 1], scale=0.5, positions=-1)
        >>> edit.heads, edit.positions
        ((HeadRef(5, 2),), -1)
    """
    h = one_head(head, model.weights)
    _, M = ov_component_maps(model, head=h, components=components, scale=scale, fold_norm=fold_norm)
    return Transform(f"z.{h.layer}", matrix=M, heads=[h], positions=positions)


def edited_weights(model: Model | WeightViews, *, head: HeadSpec, components: Sequence[int],
                   scale: float | Sequence[float] = 0.0, fold_norm: bool = True) -> WeightViews:
    """A copy of the weight views with the head's ``W_O`` replaced by ``W_O @ P`` (see the module docstring).

    The model itself is not touched; use :func:`ov_component_edit` to run the edited head. Pass the
    result back in as ``model`` to chain edits of several heads.

    Example:
        >>> import interp, torch
        >>> m = interp.load_model("smollm2-135m")
        >>> w2 = edited_weights(m, head="L5H2", components=[0])
        >>> bool(torch.equal(w2.W_O[5, 1], m.weights.W_O[5, 1])), bool(torch.equal(w2.W_O[5, 2], m.weights.W_O[5, 2]))
        (True, False)
    """
    w = weights_of(model)
    h = one_head(head, w)
    P, _ = ov_component_maps(w, head=h, components=components, scale=scale, fold_norm=fold_norm)
    W_O = w.W_O.detach().clone()
    W_O[h.layer, h.head] = W_O[h.layer, h.head] @ P
    return replace(w, W_O=W_O)


__all__ = ["edited_weights", "ov_component_edit", "ov_component_maps"]
