"""Data-free feature flow across layers (Laptev et al. 2025): match SAE features by cosine similarity.

Block ``L`` turns the residual stream ``r_L`` (``blocks.L.hook_resid_pre`` = ``blocks.{L-1}.hook_resid_post``)
into ``r_{L+1}`` by adding its attention output (``blocks.L.hook_attn_out``) and MLP output
(``blocks.L.hook_mlp_out``). Given SAEs at these points, a feature of ``r_{L+1}`` is compared with
every feature of its three *predecessors* (``r_L``, attention and MLP of block ``L``) by the cosine
similarity of their directions (decoder rows by default) and classified by its best match:

- ``carried``: the strongest match above ``threshold`` is in the residual stream ``r_L``;
- ``mlp`` / ``attention``: created by that sublayer (its best match is there, above ``threshold``);
- ``new``: no predecessor reaches ``threshold``.

:func:`feature_flow` follows these links across several layers from one feature, backwards (where
it comes from) or forwards (where it goes), into a :class:`~interp.features.flow_result.FlowGraph`.

Example:
    >>> import torch
    >>> from interp.features.flow import cosine_matrix
    >>> a = torch.eye(3)
    >>> cosine_matrix(a, a[[2, 0, 1]]).argmax(1).tolist()
    [1, 2, 0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from interp.errors import BadInputError
from interp.features.flow_result import FeatureClasses, FlowGraph
from interp.features.sae import SparseAutoencoder
from interp.models import Model
from interp.sites import Component, Site

Method = Literal["decoder", "encoder", "encoder_decoder"]
SOURCES = ("resid", "attn", "mlp")
CLASSES = ("carried", "attention", "mlp", "new")


@dataclass(frozen=True)
class Point:
    """Where an SAE reads, in flow terms: the residual stream after ``stage`` blocks, or a block's sublayer."""

    kind: Literal["resid", "attn", "mlp"]
    stage: int  # resid: number of blocks applied; attn/mlp: the block index

    @property
    def column(self) -> int:
        """Left-to-right position: r_0, block 0 sublayers, r_1, ..."""
        return 2 * self.stage if self.kind == "resid" else 2 * self.stage + 1


def point_of(hook: str) -> Point:
    """The flow position of a hook name (resid_pre/resid_post/attn_out/mlp_out)."""
    site = Site.parse(hook)
    c, L = site.component, site.layer
    if c is Component.RESID_PRE and L is not None:
        return Point("resid", L)
    if c is Component.RESID_POST and L is not None:
        return Point("resid", L + 1)
    if c is Component.ATTN_OUT and L is not None:
        return Point("attn", L)
    if c is Component.MLP_OUT and L is not None:
        return Point("mlp", L)
    raise BadInputError(f"feature flow reads SAEs at hook_resid_pre/hook_resid_post/hook_attn_out/hook_mlp_out, "
                     f"not {hook!r}")


def vectors(sae: SparseAutoencoder, which: Literal["decoder", "encoder"]) -> torch.Tensor:
    """``[d_sae, d_in]`` feature directions: decoder rows or encoder columns."""
    sae._fitted()
    assert sae.W_dec_ is not None and sae.W_enc_ is not None
    return sae.W_dec_ if which == "decoder" else sae.W_enc_.T


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, d]``, ``[m, d]`` → ``[n, m]`` cosine similarities."""
    a = a.float() / a.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b.float() / b.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def similarity(target: SparseAutoencoder, source: SparseAutoencoder, method: Method = "decoder") -> torch.Tensor:
    """``[target feature, source feature]`` cosine similarity of their directions.

    ``"decoder"``: decoder rows of both; ``"encoder"``: encoder columns of both;
    ``"encoder_decoder"``: the target's encoder column against the source's decoder row (what the
    target reads against what the source writes).
    """
    if method not in ("decoder", "encoder", "encoder_decoder"):
        raise BadInputError(f"method must be 'decoder', 'encoder' or 'encoder_decoder', got {method!r}")
    if target.d_in != source.d_in:
        raise BadInputError(f"SAEs read different widths: {target.d_in} ({target.hook}) vs {source.d_in} ({source.hook})")
    t = vectors(target, "encoder" if method in ("encoder", "encoder_decoder") else "decoder")
    s = vectors(source, "encoder" if method == "encoder" else "decoder")
    return cosine_matrix(t, s)


def chance_similarity(d: int, n: int) -> float:
    """About the best cosine a direction reaches with ``n`` random directions in ``d`` dimensions,
    ``sqrt(2 ln n / d)``: the floor below which a match says nothing.

    Example:
        >>> round(chance_similarity(576, 1024), 3)
        0.155
    """
    return math.sqrt(2 * math.log(max(n, 2)) / d)


def predecessors(saes: Mapping[str, SparseAutoencoder], hook: str) -> dict[str, str]:
    """``{"resid"|"attn"|"mlp": hook}`` of the SAEs one step upstream of a residual-stream ``hook``."""
    p = point_of(hook)
    if p.kind != "resid":
        return {}
    out = {}
    for h in saes:
        q = point_of(h)
        if q.stage == p.stage - 1:  # r_{L} and the sublayers of block L feed r_{L+1}
            out.setdefault(q.kind, h)
    return out


def classify_features(saes: Mapping[str, SparseAutoencoder], hook: str, threshold: float = 0.5,
                      method: Method = "decoder") -> FeatureClasses:
    """Classify every feature of the residual SAE at ``hook`` by its best predecessor (module docstring).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> def sae(rows):
        ...     s = SparseAutoencoder(SAEConfig(d_sae=rows.shape[0], k=1))
        ...     s.W_dec_, s.W_enc_ = rows, rows.T.clone()
        ...     s.b_enc_, s.b_dec_ = torch.zeros(rows.shape[0]), torch.zeros(rows.shape[1])
        ...     return s
        >>> e = torch.eye(4)
        >>> saes = {"blocks.0.hook_resid_post": sae(e[:2]), "blocks.1.hook_mlp_out": sae(e[2:3]),
        ...         "blocks.1.hook_resid_post": sae(e[[0, 2, 3]])}
        >>> classify_features(saes, "blocks.1.hook_resid_post").labels
        ('carried', 'mlp', 'new')
    """
    if hook not in saes:
        raise KeyError(f"no SAE for {hook!r}; have: {', '.join(saes)}")
    target = saes[hook]
    preds = predecessors(saes, hook)
    if not preds:
        raise BadInputError(f"no predecessor SAEs for {hook!r}: add SAEs one block upstream "
                         f"(resid, attn_out or mlp_out); have: {', '.join(saes)}")
    n = target.d_sae
    scores = torch.full((len(SOURCES), n), float("nan"))
    matches = torch.full((len(SOURCES), n), -1, dtype=torch.long)
    for i, kind in enumerate(SOURCES):
        if kind in preds:
            best = similarity(target, saes[preds[kind]], method).max(dim=1)
            scores[i], matches[i] = best.values, best.indices
    filled = scores.nan_to_num(float("-inf"))
    best_src = filled.argmax(0)
    best_val = filled.max(0).values
    names = {0: "carried", 1: "attention", 2: "mlp"}
    labels = tuple("new" if v < threshold else names[int(s)] for s, v in zip(best_src.tolist(), best_val.tolist(),
                                                                           strict=True))
    return FeatureClasses(hook=hook, scores=scores, matches=matches, labels=labels, threshold=threshold,
                          sources=tuple(preds.get(k, "") for k in SOURCES), method=method)


def _top(sim_row: torch.Tensor, threshold: float, top_n: int) -> list[tuple[int, float]]:
    vals, idx = sim_row.topk(min(top_n, sim_row.numel()))
    return [(int(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True) if v >= threshold]


def feature_flow(saes: Mapping[str, SparseAutoencoder], hook: str, feature: int, *,
                 direction: Literal["backward", "forward"] = "backward", threshold: float = 0.5, top_n: int = 2,
                 method: Method = "decoder", max_steps: int | None = None, model: Model | None = None,
                 n_top_tokens: int = 5) -> FlowGraph:
    """The multi-layer flow graph of one feature.

    Backward: from a residual feature, its matches (``>= threshold``, the best ``top_n`` of each) in
    the previous residual stream and in the attention and MLP outputs of the block between, then
    recursively from the residual matches. Forward: its matches in the next residual stream (and, for
    attention/MLP features, in the residual stream they write to), recursively. Edges always point
    downstream and carry the cosine similarity.

    Args:
        saes: SAEs by hook name (residual streams and, optionally, attn_out/mlp_out of the blocks between).
        hook: the SAE of the starting feature; ``feature`` its index.
        model: with a model, every node is labelled with the tokens its decoder direction promotes
            through the (final-norm-folded) unembedding.
        max_steps: stop after this many layers (default: as far as there are SAEs).
    """
    if hook not in saes:
        raise KeyError(f"no SAE for {hook!r}; have: {', '.join(saes)}")
    if direction not in ("backward", "forward"):
        raise BadInputError(f"direction must be 'backward' or 'forward', got {direction!r}")
    if not 0 <= int(feature) < saes[hook].d_sae:
        raise IndexError(f"feature {feature} out of range: {hook} has {saes[hook].d_sae} features")
    points = {h: point_of(h) for h in saes}
    nodes: dict[tuple[str, int], int] = {(hook, int(feature)): 0}
    edges: dict[tuple[int, int], float] = {}
    frontier = [(hook, int(feature))]
    steps = 0
    while frontier and (max_steps is None or steps < max_steps):
        steps += 1
        nxt = []
        for h, f in frontier:
            p = points[h]
            if direction == "backward":
                for kind, src in predecessors(saes, h).items():
                    sim = similarity(saes[h], saes[src], method)[f]
                    for j, v in _top(sim, threshold, top_n):
                        key = (src, j)
                        if key not in nodes:
                            nodes[key] = len(nodes)
                            if kind == "resid":
                                nxt.append(key)
                        edges[(nodes[key], nodes[(h, f)])] = v
            else:
                stage = p.stage + 1
                targets = [t for t, q in points.items() if q.kind == "resid" and q.stage == stage]
                for dst in targets[:1]:
                    sim = similarity(saes[dst], saes[h], method)[:, f]
                    for j, v in _top(sim, threshold, top_n):
                        key = (dst, j)
                        if key not in nodes:
                            nodes[key] = len(nodes)
                            nxt.append(key)
                        edges[(nodes[(h, f)], nodes[key])] = v
        frontier = nxt
    order = sorted(nodes, key=lambda k: (points[k[0]].column, k[0], nodes[k]))
    remap = {nodes[k]: i for i, k in enumerate(order)}
    tokens: tuple[tuple[str, ...], ...] = ()
    if model is not None:
        tokens = tuple(tuple(promoted_tokens(model, saes[h].direction(f), n_top_tokens)[0]) for h, f in order)
    return FlowGraph(hooks=tuple(h for h, _ in order), features=tuple(f for _, f in order),
                     columns=tuple(points[h].column for h, _ in order),
                     edges=tuple((remap[a], remap[b], v) for (a, b), v in sorted(edges.items())),
                     root=remap[0], direction=direction, threshold=threshold, method=method, top_tokens=tokens)


def promoted_tokens(model: Model, direction: torch.Tensor, k: int = 10) -> tuple[list[str], list[float]]:
    """The ``k`` tokens a residual direction promotes most through the final-norm-folded unembedding."""
    W_U, _ = model.weights.folded_unembed()
    logits = direction.to(W_U.device, W_U.dtype) @ W_U
    vals, idx = logits.topk(k)
    strs = model.tokenizer.batch_decode([[i] for i in idx.tolist()]) if model.tokenizer is not None else \
        [str(i) for i in idx.tolist()]
    return list(strs), vals.tolist()


__all__ = ["CLASSES", "Point", "chance_similarity", "classify_features", "cosine_matrix", "feature_flow", "point_of", "predecessors",
           "promoted_tokens", "similarity"]
