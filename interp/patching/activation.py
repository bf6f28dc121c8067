"""Activation patching sweeps (Zhang & Nanda 2023): every layer x position (x head) of one component.

Example:
    >>> import interp
    >>> from interp.patching import activation_patching, prepare
    >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
    >>> s = prepare(m, "When Mary and John went to the store, John gave a drink to",
    ...             "When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")  # doctest: +SKIP
    >>> res = activation_patching(s, "resid_pre")  # doctest: +SKIP
    >>> res.values.shape  # doctest: +SKIP
    torch.Size([30, 15])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from interp.errors import BadInputError
from interp.patching.batched import DEFAULT_BUDGET, Cell, Edit, run_cells
from interp.patching.result import PatchingResult
from interp.patching.setup import PatchingSetup, prepare
from interp.sites import Component, Site

STREAM = {"resid_pre": Component.RESID_PRE, "resid_mid": Component.RESID_MID, "resid_post": Component.RESID_POST,
          "attn_out": Component.ATTN_OUT, "mlp_out": Component.MLP_OUT}
HEADS = {"z": Component.Z, "q": Component.Q, "k": Component.K, "v": Component.V, "pattern": Component.PATTERN}
COMPONENTS = (*STREAM, *HEADS)
Direction = Literal["denoising", "noising"]


def runs_for(direction: str, setup: PatchingSetup) -> tuple[str, str]:
    """``(target, source)``: denoising patches clean values into the corrupted run, noising the reverse."""
    if direction == "denoising":
        if setup.ablation is not None:
            raise BadInputError(f"{setup.corruption} ablation has no corrupted run to denoise; use direction='noising'")
        return "corrupted", "clean"
    if direction == "noising":
        return "clean", "corrupted"
    raise BadInputError(f"direction must be 'denoising' (clean values into the corrupted run) or 'noising' "
                     f"(corrupted values into the clean run), got {direction!r}")


def _check_list(xs: Sequence[int] | None, n: int, what: str) -> list[int]:
    if xs is None:
        return list(range(n))
    out = [int(x) for x in xs]
    bad = [x for x in out if not 0 <= x < n]
    if bad or not out:
        raise BadInputError(f"{what} {bad or out} out of range; valid: 0..{n - 1}")
    return out


def sweep_cells(component: str, n_layers: int, layers: list[int], positions: list[int], heads: list[int],
                per_position: bool, window: int) -> tuple[list[Cell], tuple[str, ...], tuple[int, ...]]:
    """The patched runs of a sweep, its result axes and shape."""
    cells: list[Cell] = []
    if component in STREAM:
        comp = STREAM[component]
        for L in layers:
            lo, hi = max(0, L - window // 2), min(n_layers, L + (window + 1) // 2)
            for p in positions:
                if comp is Component.RESID_PRE and window == 1:
                    cells.append((L, (Edit(None, p),)))
                elif comp is Component.RESID_POST and window == 1:
                    cells.append((L + 1, (Edit(None, p),)))
                else:
                    cells.append((lo, tuple(Edit(Site(comp, layer), p) for layer in range(lo, hi))))
        return cells, ("layer", "pos"), (len(layers), len(positions))
    comp = HEADS[component]
    for L in layers:
        for h in heads:
            for p in positions if per_position else [None]:
                cells.append((L, (Edit(Site(comp, L), p, h),)))
    if per_position:
        return cells, ("layer", "head", "pos"), (len(layers), len(heads), len(positions))
    return cells, ("layer", "head"), (len(layers), len(heads))


def activation_patching(
    setup: PatchingSetup | Any,
    component: str = "resid_pre",
    *,
    direction: Direction = "denoising",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    per_position: bool = False,
    window: int = 1,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool = True,
    **prepare_kwargs: Any,
) -> PatchingResult:
    """Patch one component at every layer x position (x head) and measure the metric.

    Args:
        setup: a :class:`~interp.patching.PatchingSetup` from :func:`~interp.patching.prepare`, or a model
            (then ``clean=``, ``corrupted=``, ``answer=``... are passed to ``prepare``).
        component: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out`` (per layer x
            position), or per head ``z``, ``q``, ``k``, ``v`` (all positions, or each with
            ``per_position``) and ``pattern`` (the head's whole pattern, or one query row).
            Per-head q/k/v are per *query* head, also under grouped-query attention.
        direction: ``"denoising"`` (clean values into the corrupted run) or ``"noising"`` (corrupted
            values into the clean run).
        layers / positions / heads: subsets to sweep (default all).
        per_position: for head components, one cell per (head, position).
        window: for ``attn_out``/``mlp_out``/``resid_mid``, patch this many consecutive layers centred on
            each layer (causal tracing uses 10).
        memory_budget: bytes of activations per stacked forward.
        progress: show a progress bar.

    Returns:
        A :class:`~interp.patching.PatchingResult` of raw metric values with axes ``(layer, pos)``,
        ``(layer, head)`` or ``(layer, head, pos)``; ``.normalized`` gives
        ``(patched - corrupted) / (clean - corrupted)``.
    """
    if not isinstance(setup, PatchingSetup):
        setup = prepare(setup, **prepare_kwargs)
    elif prepare_kwargs:
        raise TypeError(f"unexpected arguments {sorted(prepare_kwargs)} (they belong to prepare())")
    if component not in COMPONENTS:
        raise BadInputError(f"unknown component {component!r}; use one of {', '.join(COMPONENTS)}")
    if not isinstance(window, int) or window < 1:
        raise BadInputError(f"window must be an int >= 1, got {window!r}")
    if window > 1 and component not in ("attn_out", "mlp_out", "resid_mid"):
        raise BadInputError(f"window= applies to attn_out, mlp_out and resid_mid, not {component!r}")
    target, source = runs_for(direction, setup)
    d = setup.model.dims
    Ls = _check_list(layers, d.n_layers, "layers")
    Ps = _check_list(positions, setup.n_pos, "positions")
    Hs = _check_list(heads, d.n_heads, "heads")
    if heads is not None and component in STREAM:
        raise BadInputError(f"heads= applies to z, q, k, v and pattern, not {component!r}")
    cells, axes, shape = sweep_cells(component, d.n_layers, Ls, Ps, Hs, per_position, window)
    vals = run_cells(setup, cells, target, source, memory_budget=memory_budget, progress=progress,
                     desc=f"patching {component}")
    coords = {"layer": Ls, "head": Hs, "pos": Ps}
    return PatchingResult(
        values=vals.view(shape), axes=axes, coords={a: tuple(coords[a]) for a in axes}, tokens=tuple(setup.tokens),
        component=component, method="exact", direction=direction, metric=setup.metric.name,
        clean_value=setup.clean_value, corrupted_value=setup.corrupted_value,
        meta={"window": window, "corruption": setup.corruption, "n_seqs": setup.n},
    )


__all__ = ["COMPONENTS", "activation_patching", "runs_for", "sweep_cells"]
