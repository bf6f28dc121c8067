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
from typing import Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.features.flow_result import CLASSES, SOURCE_NAMES, FeatureClasses, FlowGraph
from interp.features.points import HookKey, Point, key_by_hook, pick, point_of
from interp.features.sae import SparseAutoencoder
from interp.models import Model
from interp.sites import SiteSpec

Method = Literal["decoder", "encoder", "encoder_decoder"]
SOURCES = SOURCE_NAMES


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


def similarity(target: SparseAutoencoder, source: SparseAutoencoder, *, method: Method = "decoder") -> torch.Tensor:
    """``[target feature, source feature]`` cosine similarity of two SAEs' feature directions.

    ``"decoder"``: decoder rows of both; ``"encoder"``: encoder columns of both;
    ``"encoder_decoder"``: the target's encoder column against the source's decoder row (what the
    target reads against what the source writes).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, batch_size=64, n_tokens=128), progress=False)
        >>> sae = sae.fit(torch.randn(256, 4))
        >>> bool(torch.allclose(similarity(sae, sae).diagonal(), torch.ones(8)))
        True
    """
    if method not in ("decoder", "encoder", "encoder_decoder"):
        raise bad_value("method", method, "'decoder', 'encoder' or 'encoder_decoder'")
    if target.d_in != source.d_in:
        raise BadInputError(f"SAEs read different widths: {target.d_in} ({target.hook}) vs {source.d_in} "
                            f"({source.hook})")
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
    """``{"resid"|"attn"|"mlp": hook}`` of the SAEs one step upstream of a residual-stream ``hook`` (SAEs keyed
    by full hook names)."""
    p = point_of(hook)
    if p.kind != "resid":
        return {}
    out: dict[str, str] = {}
    for h in saes:
        q = point_of(h)
        if q.stage == p.stage - 1:  # r_{L} and the sublayers of block L feed r_{L+1}
            out.setdefault(q.kind, h)
    return out


def _prepare(model: Model | None, saes: Mapping[HookKey, SparseAutoencoder]) -> dict[str, SparseAutoencoder]:
    """SAEs keyed by full hook names, each at a flow point, of one width (the model's, when given)."""
    keyed = key_by_hook(saes, model)
    for h, sae in keyed.items():
        point_of(h)
        if model is not None and sae.d_in != model.dims.d_model:
            raise BadInputError(f"the SAE for {h} reads d_in={sae.d_in}, but {model.name!r} has d_model="
                                f"{model.dims.d_model}: it was trained on another model")
    return keyed


def classify_features(model: Model | None, *, saes: Mapping[HookKey, SparseAutoencoder], hook: SiteSpec,
                      threshold: float = 0.5, method: Method = "decoder") -> FeatureClasses:
    """Classify every feature of the residual SAE at ``hook`` by its best predecessor (module docstring).

    Weight-only: reads the SAEs' directions.

    Args:
        model: the model the SAEs read (checks their width and places negative layers such as
            ``resid_post.-1``); ``None`` to compare the SAEs alone.
        saes: SAEs by hook, in any :mod:`interp.sites` spelling: the residual SAE at ``hook`` and, one block
            upstream, the residual stream before it and the block's ``attn_out`` / ``mlp_out``.
        hook: the residual-stream SAE whose features are classified.
        threshold: the cosine a link needs (below it, a feature is ``new``).
        method: which directions to compare (see :func:`similarity`).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> def sae(rows):
        ...     s = SparseAutoencoder(SAEConfig(d_sae=rows.shape[0], k=1))
        ...     s.W_dec_, s.W_enc_ = rows, rows.T.clone()
        ...     s.b_enc_, s.b_dec_ = torch.zeros(rows.shape[0]), torch.zeros(rows.shape[1])
        ...     return s
        >>> e = torch.eye(4)
        >>> saes = {"resid_post.0": sae(e[:2]), "mlp_out.1": sae(e[2:3]), "resid_post.1": sae(e[[0, 2, 3]])}
        >>> classify_features(None, saes=saes, hook="resid_post.1").classes
        ('carried', 'mlp', 'new')
    """
    keyed = _prepare(model, saes)
    name, target = pick(keyed, hook, model)
    _check_threshold(threshold)
    preds = predecessors(keyed, name)
    if not preds:
        raise BadInputError(f"no predecessor SAEs for {name}: add SAEs one block upstream "
                            f"(resid, attn_out or mlp_out); have: {', '.join(keyed)}")
    n = target.d_sae
    scores = torch.full((len(SOURCES), n), float("nan"))
    matches = torch.full((len(SOURCES), n), -1, dtype=torch.long)
    for i, kind in enumerate(SOURCES):
        if kind in preds:
            best = similarity(target, keyed[preds[kind]], method=method).max(dim=1)
            scores[i], matches[i] = best.values, best.indices
    filled = scores.nan_to_num(float("-inf"))
    best_src = filled.argmax(0)
    best_val = filled.max(0).values
    names = {0: "carried", 1: "attention", 2: "mlp"}
    classes = tuple("new" if v < threshold else names[int(s)] for s, v in zip(best_src.tolist(), best_val.tolist(),
                                                                            strict=True))
    return FeatureClasses(hook=name, scores=scores, matches=matches, classes=classes, threshold=float(threshold),
                          sources=tuple(preds.get(k, "") for k in SOURCES), method=method)


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
        raise bad_value("threshold", threshold, "a cosine similarity in [-1, 1]")


def _top(sim_row: torch.Tensor, threshold: float, top_n: int) -> list[tuple[int, float]]:
    vals, idx = sim_row.topk(min(top_n, sim_row.numel()))
    return [(int(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True) if v >= threshold]


def feature_flow(model: Model | None, *, saes: Mapping[HookKey, SparseAutoencoder], hook: SiteSpec, feature: int,
                 direction: Literal["backward", "forward"] = "backward", threshold: float = 0.5, top_n: int = 2,
                 method: Method = "decoder", max_steps: int | None = None, n_top_tokens: int = 5) -> FlowGraph:
    """The multi-layer flow graph of one feature (weight-only: reads the SAEs' directions).

    Backward: from a residual feature, its matches (``>= threshold``, the best ``top_n`` of each) in
    the previous residual stream and in the attention and MLP outputs of the block between, then
    recursively from the residual matches. Forward: its matches in the next residual stream (and, for
    attention/MLP features, in the residual stream they write to), recursively. Edges always point
    downstream and carry the cosine similarity.

    Args:
        model: the model the SAEs read: every node is labelled with the ``n_top_tokens`` tokens its decoder
            direction promotes through the (final-norm-folded) unembedding; ``None``: no tokens.
        saes: SAEs by hook, any :mod:`interp.sites` spelling (residual streams and, optionally, ``attn_out`` /
            ``mlp_out`` of the blocks between).
        hook: the SAE of the starting feature; ``feature`` its index.
        direction: ``"backward"`` (where it comes from) or ``"forward"`` (where it goes).
        threshold: the cosine an edge needs; ``top_n``: edges kept per predecessor SAE and node.
        method: which directions to compare (see :func:`similarity`).
        max_steps: stop after this many layers (default: as far as there are SAEs).

    Example:
        >>> import torch
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> def sae(rows):
        ...     s = SparseAutoencoder(SAEConfig(d_sae=rows.shape[0], k=1))
        ...     s.W_dec_, s.W_enc_ = rows, rows.T.clone()
        ...     s.b_enc_, s.b_dec_ = torch.zeros(rows.shape[0]), torch.zeros(rows.shape[1])
        ...     return s
        >>> e = torch.eye(4)
        >>> saes = {"resid_post.0": sae(e[:2]), "mlp_out.1": sae(e[2:3]), "resid_post.1": sae(e[[0, 2, 3]])}
        >>> g = feature_flow(None, saes=saes, hook="resid_post.1", feature=0)
        >>> g, g.has_edge(("blocks.0.hook_resid_post", 0), ("blocks.1.hook_resid_post", 0))
        (FlowGraph(backward from r2 #0: 2 nodes, 1 edges), True)
    """
    keyed = _prepare(model, saes)
    name, root_sae = pick(keyed, hook, model)
    if direction not in ("backward", "forward"):
        raise bad_value("direction", direction, "'backward' or 'forward'")
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < root_sae.d_sae:
        raise bad_value("feature", feature, f"an int in 0..{root_sae.d_sae - 1} ({name} has {root_sae.d_sae} features)")
    _check_threshold(threshold)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise bad_value("top_n", top_n, "an int >= 1")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0):
        raise bad_value("max_steps", max_steps, "an int >= 0 or None")
    points: dict[str, Point] = {h: point_of(h) for h in keyed}
    nodes: dict[tuple[str, int], int] = {(name, feature): 0}
    edges: dict[tuple[int, int], float] = {}
    frontier = [(name, feature)]
    steps = 0
    while frontier and (max_steps is None or steps < max_steps):
        steps += 1
        nxt = []
        for h, f in frontier:
            p = points[h]
            if direction == "backward":
                for kind, src in predecessors(keyed, h).items():
                    sim = similarity(keyed[h], keyed[src], method=method)[f]
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
                    sim = similarity(keyed[dst], keyed[h], method=method)[:, f]
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
    if model is not None and n_top_tokens > 0:
        tokens = tuple(tuple(promoted_tokens(model, direction=keyed[h].direction(f), k=n_top_tokens)[0])
                       for h, f in order)
    return FlowGraph(hooks=tuple(h for h, _ in order), features=tuple(f for _, f in order),
                     columns=tuple(points[h].column for h, _ in order),
                     edges=tuple((remap[a], remap[b], v) for (a, b), v in sorted(edges.items())),
                     root=remap[0], direction=direction, threshold=float(threshold), method=method, top_tokens=tokens)


def promoted_tokens(model: Model, *, direction: torch.Tensor, k: int = 10) -> tuple[list[str], list[float]]:
    """The ``k`` tokens a residual direction promotes most through the final-norm-folded unembedding, and
    their logits per unit of the direction.

    Example:
        >>> import interp
        >>> from interp.features import load_saes
        >>> m = interp.load_model("smollm2-135m")
        >>> toks, logits = promoted_tokens(m, direction=load_saes()["blocks.4.hook_resid_post"].direction(12), k=3)
        >>> len(toks), all(isinstance(t, str) for t in toks), logits == sorted(logits, reverse=True)
        (3, True, True)
    """
    if direction.dim() != 1 or direction.shape[0] != model.dims.d_model:
        raise BadInputError(f"direction must be [d_model={model.dims.d_model}], got {tuple(direction.shape)}")
    W_U, _ = model.weights.folded_unembed()
    logits = direction.to(W_U.device, W_U.dtype) @ W_U
    vals, idx = logits.topk(min(int(k), logits.shape[0]))
    strs = model.tokenizer.batch_decode([[i] for i in idx.tolist()]) if model.tokenizer is not None else \
        [str(i) for i in idx.tolist()]
    return list(strs), vals.tolist()


__all__ = ["CLASSES", "Point", "chance_similarity", "classify_features", "cosine_matrix",
           "feature_flow", "point_of", "predecessors", "promoted_tokens", "similarity"]
