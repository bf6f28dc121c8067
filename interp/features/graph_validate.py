"""Does an attribution graph predict interventions? Clamp features and compare with what the graph says.

For each source feature of an :class:`~interp.features.AttributionGraph`, :func:`validate_graph` changes its
activation by ``delta = scale * activation`` (``scale = -1``: switch it off) in the real model (adding ``delta`` times
its decoder to every MLP output it writes to, at its position) and measures the change of every downstream feature's
pre-activation (layer above the source, position at or after it) and of every logit node (the logit minus the mean
logit). The graph's prediction is the total effect along its edges: with ``J`` the graph's edges divided by their
source's activation (``d target / d activation``), the feature changes solve ``e = J[:, s] delta + J_FF e`` (features
respond through their encoders, their TopK masks held), and the logits take ``J[logit, s] delta + J[logit, F] e``.

The graph holds attention patterns, norm scales and the error nodes fixed; ``freeze=True`` holds patterns and norm
scales fixed in the measurement too (so on a model whose MLPs are exactly its transcoders, prediction equals
measurement up to the TopK masks); ``freeze=False`` (the default) lets them respond, as in a real clamping
experiment. A pruned graph predicts only along its kept edges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.features.graph import AttributionGraph, _record, _Replacement, check_graph_family
from interp.features.transcoder import NORM_NAMES, Transcoder
from interp.stats import pearson, spearman
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from interp.features.clt import CrossLayerTranscoder
    from interp.models import Model

INPUT_NORMS = ("input_layernorm", "ln_1", "ln1", "attention_norm")


@dataclass(frozen=True, repr=False)
class GraphValidation(Result):
    """Predicted (by the graph) and measured (by clamping in the model) changes of downstream nodes.

    Attributes:
        prompt: the prompt.
        sources: the clamped features' names (``L3@5 f120``).
        targets: the downstream nodes' names (features and logits).
        target_kind: per target, ``feature`` or ``logit``.
        predicted, measured: ``[source, target]`` changes; NaN where the target is not downstream of the source.
        scale: each source's activation changed by ``scale`` times itself.
        frozen: whether the measurement held attention patterns and norm scales fixed.
        pearson, spearman: correlations of predicted and measured over every (source, downstream target) pair.
        model_id: the model.

    Views: ``scatter`` (measured against predicted, coloured by target kind).

    Example:
        >>> import torch
        >>> v = GraphValidation("p", ("L0@1 f3",), ("L1@1 f2", "logit x"), ("feature", "logit"),
        ...                     torch.tensor([[1.0, -2.0]]), torch.tensor([[0.9, -2.1]]), -1.0, False, 1.0, 1.0)
        >>> v
        GraphValidation(predicted[source=1, target=2], measured[source=1, target=2], pearson=1, spearman=1, pairs=2)
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"predicted": ("source", "target"), "measured": ("source", "target")}
    VIEWS: ClassVar[tuple[str, ...]] = ("scatter",)

    prompt: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    target_kind: tuple[str, ...]
    predicted: torch.Tensor
    measured: torch.Tensor
    scale: float
    frozen: bool
    pearson: float
    spearman: float
    model_id: str = ""

    def __post_init__(self) -> None:
        shape = (len(self.sources), len(self.targets))
        if self.predicted.shape != shape or self.measured.shape != shape:
            raise BadInputError(f"predicted and measured must be [{shape[0]}, {shape[1]}]")
        if len(self.target_kind) != len(self.targets):
            raise BadInputError("target_kind must have one entry per target")

    def labels(self) -> dict[str, list[Any]]:
        return {"source": list(self.sources), "target": list(self.targets)}

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (predicted, measured) values of every downstream (source, target) pair, flattened."""
        ok = ~torch.isnan(self.predicted)
        return self.predicted[ok], self.measured[ok]

    def headline(self) -> dict[str, Any]:
        return {"pearson": round(self.pearson, 3), "spearman": round(self.spearman, 3),
                "pairs": int((~torch.isnan(self.predicted)).sum())}

    def _view_scatter(self) -> Figure:
        from interp.plot import scatter

        ok = ~torch.isnan(self.predicted)
        s, t = torch.nonzero(ok, as_tuple=True)
        return scatter(self.predicted[ok].tolist(), self.measured[ok].tolist(),
                       labels=[f"{self.sources[i]} → {self.targets[j]}" for i, j in zip(s.tolist(), t.tolist(),
                                                                                         strict=True)],
                       color=[self.target_kind[j] for j in t.tolist()], x_title="predicted by the graph",
                       y_title="measured (clamped)", color_title="target",
                       title=f"Clamping {len(self.sources)} features: Pearson {self.pearson:.2f}, Spearman "
                             f"{self.spearman:.2f}" + (" (attention and norms frozen)" if self.frozen else ""))


def validate_graph(model: Model, inputs: str | torch.Tensor, *, graph: AttributionGraph,
                   transcoders: Mapping[int, Transcoder] | CrossLayerTranscoder, sources: int | list[int] = 8,
                   scale: float = -1.0, freeze: bool = False, dtype: torch.dtype = torch.float32) -> GraphValidation:
    """Clamp ``sources`` (node indices of ``graph``'s kept features, or how many of the most influential) and compare
    the measured changes of downstream features and logits with the graph's prediction (see the module docstring).

    Args:
        model: the model the graph was computed on.
        inputs: the graph's prompt (text or token ids).
        graph: an :func:`~interp.features.attribution_graph` of that prompt with these transcoders.
        transcoders: the graph's per-layer transcoders or cross-layer transcoder.
        sources: feature node indices to clamp, or the number of kept features of largest influence.
        scale: each source's activation changes by ``scale`` times itself (``-1``: ablate; small values: the graph's
            first-order regime).
        freeze: hold attention patterns and norm scales at their recorded values during the measurement.
        dtype: the measurement's dtype (the model runs in its own).

    Example:
        >>> import interp, torch
        >>> from interp.features import SAEConfig, Transcoder, attribution_graph, validate_graph
        >>> m = interp.load_model("smollm2-135m")
        >>> tc = Transcoder(SAEConfig(d_sae=64, k=4, apply_b_dec_to_input=False), progress=False,
        ...                 hook="hf:model.layers.2.post_attention_layernorm", out_hook="mlp_out.2")
        >>> tc.W_enc_, tc.b_enc_ = torch.randn(576, 64) / 24, torch.zeros(64)
        >>> tc.W_dec_, tc.b_dec_ = torch.randn(64, 576) / 24, torch.zeros(576)
        >>> g = attribution_graph(m, "The capital of France is", transcoders={2: tc}, node_threshold=1.0,
        ...                       edge_threshold=1.0, progress=False)
        >>> v = validate_graph(m, "The capital of France is", graph=g, transcoders={2: tc}, sources=2)
        >>> v.measured.shape[0]
        2
    """
    n_layers = model.dims.n_layers
    check_graph_family(model)
    rep = _Replacement(transcoders, n_layers)
    if isinstance(inputs, str):
        ids, _ = model.encode(inputs)
    else:
        ids = torch.as_tensor(inputs).reshape(1, -1)
    if len(graph.tokens) != ids.shape[1]:
        raise BadInputError(f"the graph has {len(graph.tokens)} tokens; these inputs have {ids.shape[1]}")
    kind = graph.kind
    feats = [i for i in range(len(kind)) if kind[i] == "feature" and bool(graph.kept[i])]
    logits = [i for i in range(len(kind)) if kind[i] == "logit"]
    if isinstance(sources, int):
        if sources < 1:
            raise BadInputError(f"sources must be >= 1 or a list of feature nodes, got {sources!r}")
        src = sorted(feats, key=lambda i: -float(graph.influence[i]))[:sources]
    else:
        src = [int(i) for i in sources]
        bad = [i for i in src if not 0 <= i < len(kind) or kind[i] != "feature"]
        if bad:
            raise BadInputError(f"sources must be feature nodes of the graph; not: {bad}")
    if not src:
        raise BadInputError("the graph keeps no feature to clamp")
    layer, pos, feature, value = graph.layer, graph.pos, graph.feature, graph.value.double()
    # the graph's Jacobian among kept features and onto logits: edges / source activation
    A = graph.adjacency().coalesce()
    t_idx, s_idx = A.indices()
    w = A.values().double()
    fset = sorted(set(feats) | set(src))
    col = {n: j for j, n in enumerate(fset)}
    J_ff = torch.zeros(len(fset), len(fset), dtype=torch.float64)
    lrow = {n: j for j, n in enumerate(logits)}
    J_lf = torch.zeros(len(logits), len(fset), dtype=torch.float64)
    for t, s, v in zip(t_idx.tolist(), s_idx.tolist(), w.tolist(), strict=True):
        if s in col:
            d = v / float(value[s]) if float(value[s]) != 0 else 0.0
            if t in col:
                J_ff[col[t], col[s]] = d
            elif t in lrow:
                J_lf[lrow[t], col[s]] = d
    inv = torch.linalg.inv(torch.eye(len(fset), dtype=torch.float64) - J_ff)
    targets = [n for n in fset] + logits
    predicted = torch.full((len(src), len(targets)), float("nan"), dtype=torch.float64)
    fz, _ = _record(model, ids, rep, dtype)
    clean_f, clean_l = _measure(model, ids, rep, fz, [], fset, layer, pos, feature, logits, graph, freeze, dtype)
    measured = torch.full_like(predicted, float("nan"))
    for a, s in enumerate(src):
        delta = scale * float(value[s])
        e = inv[:, col[s]] * delta  # includes the source itself (its own change delta)
        pl = J_lf @ e
        got_f, got_l = _measure(model, ids, rep, fz, [(int(layer[s]), int(pos[s]), int(feature[s]), delta)], fset,
                                layer, pos, feature, logits, graph, freeze, dtype)
        for j, n in enumerate(fset):
            if int(layer[n]) > int(layer[s]) and int(pos[n]) >= int(pos[s]):
                predicted[a, j] = e[j]
                measured[a, j] = got_f[j] - clean_f[j]
        for j in range(len(logits)):
            predicted[a, len(fset) + j] = pl[j]
            measured[a, len(fset) + j] = got_l[j] - clean_l[j]
    ok = ~torch.isnan(predicted)
    x, y = predicted[ok], measured[ok]
    return GraphValidation(graph.prompt, tuple(graph.node_name(i) for i in src),
                           tuple(graph.node_name(i) for i in targets),
                           tuple("feature" if kind[i] == "feature" else "logit" for i in targets),
                           predicted.float(), measured.float(), float(scale), bool(freeze), pearson(x, y),
                           spearman(x, y), model.name)


def _measure(model: Model, ids: torch.Tensor, rep: _Replacement, fz: Any, clamps: list[tuple[int, int, int, float]],
             fset: list[int], layer: torch.Tensor, pos: torch.Tensor, feature: torch.Tensor, logits: list[int],
             graph: AttributionGraph, freeze: bool, dtype: torch.dtype) -> tuple[list[float], list[float]]:
    """One forward with the clamps added to the MLP outputs: the pre-activations of features ``fset`` and the
    demeaned logits of ``logits``."""
    from interp.models.adapters.base import Component

    n_layers = model.dims.n_layers
    adapter = model.adapter
    seen: dict[int, torch.Tensor] = {}
    handles = []
    base = adapter.layers

    def norm_hook(s: torch.Tensor) -> Any:
        def fn(mod: torch.nn.Module, inp: Any, out: torch.Tensor) -> torch.Tensor:
            x = inp[0]
            y = (x - x.mean(-1, keepdim=True)) if fz.centered else x
            y = y * s.to(x.dtype) * mod.weight
            b = getattr(mod, "bias", None)
            return y + b if b is not None else y
        return fn

    try:
        if freeze:
            final = model.module(adapter.taps[Component.LN_FINAL].path)
            handles.append(final.register_forward_hook(norm_hook(fz.sf)))
            for L in range(n_layers):
                blk = model.module(f"{base}.{L}")
                n1 = next((getattr(blk, n) for n in INPUT_NORMS if hasattr(blk, n)), None)
                n2 = next((getattr(blk, n) for n in NORM_NAMES if hasattr(blk, n)), None)
                if n1 is None or n2 is None:
                    raise BadInputError(f"freeze=True: no pre-attention / pre-MLP norm found in {base}.{L}")
                handles.append(n1.register_forward_hook(norm_hook(fz.s1[L])))
                handles.append(n2.register_forward_hook(norm_hook(fz.s2[L])))
        for L in range(n_layers):
            adds = []
            for Ls, p, f, delta in clamps:
                if Ls in rep.writers(L):
                    adds.append((p, delta * rep.dec(Ls, L, torch.tensor([f]), torch.float64)[0]))
            if not rep.has(L) and not adds:
                continue

            def mlp_hook(mod: torch.nn.Module, inp: Any, out: torch.Tensor, L: int = L, adds: list[Any] = adds
                         ) -> torch.Tensor:
                seen[L] = inp[0][0].detach().to(dtype)
                if not adds:
                    return out
                out = out.clone()
                for p, vec in adds:
                    out[0, p] += vec.to(out.dtype)
                return out

            mlp_path = adapter.taps[Component.MLP_OUT].path.format(L=L)
            handles.append(model.module(mlp_path).register_forward_hook(mlp_hook))
        def pin(P: torch.Tensor) -> Callable[[torch.Tensor, Any], torch.Tensor | None]:
            return lambda a, site: P.unsqueeze(0).to(a.dtype)

        pins = {f"blocks.{L}.attn.hook_pattern": pin(fz.pattern[L]) for L in range(n_layers)} if freeze else {}
        with torch.no_grad(), model.hooks(pins):
            out = model.hf(input_ids=ids).logits[0, -1].to(torch.float64)
    finally:
        for h in handles:
            h.remove()
    got_f = []
    for n in fset:
        L, p, f = int(layer[n]), int(pos[n]), int(feature[n])
        wc, bc = rep.enc_col(L, f, dtype)
        got_f.append(float(seen[L][p] @ wc + bc))
    got_l = [float(out[int(graph.feature[i])] - out.mean()) for i in logits]
    return got_f, got_l


__all__ = ["GraphValidation", "validate_graph"]
