"""Attribution graphs (Ameisen et al. 2025, circuit-tracer): which transcoder features drive the model's output.

For one prompt and per-layer :class:`~interp.features.Transcoder` s (or one
:class:`~interp.features.CrossLayerTranscoder`), the model is *linearised* around its own
forward: attention patterns and the norms' scales are frozen at their recorded values, each MLP is replaced by its
transcoder (active features' decoder rows, the skip connection) plus an **error node** per (layer, position) that
holds what the transcoder misses, so the replacement reproduces the recorded forward exactly. In that linear model
the **direct effect** of a source node on a target node is exact: ``edge = activation(source) * d target /
d activation(source)`` with every other feature's activation held fixed. Sources are active features, error nodes
and token embeddings (per position); targets are active features (their encoder pre-activation) and the top logits
at the last position (each the logit minus the mean logit, as circuit-tracer does; up to ``logit_probability`` of
the probability mass, at most ``max_logits``). A layer without a transcoder has its whole MLP output as error. With a cross-layer transcoder a feature of layer
``L`` writes to the MLP outputs of ``L`` and every later layer, so its edges reach targets through all of them.

Rows are computed by batched backward passes (``batch_size`` targets per backward) through one forward of the
linear model on ``batch_size`` copies, kept for every batch (as circuit-tracer does): target ``i`` of a batch reads
copy ``i``, and each backward stops at its targets' layers. With ``max_feature_nodes`` only the features of largest
estimated influence on the logits get rows (circuit-tracer's greedy order).

Memory: only the computed rows are held (``[rows, N]`` in ``dtype``, one per logit and per feature with a row, not
``N x N``); influence is iterated over them in blocks, pruning looks only at kept rows and kept sources, and the
result holds the kept edges as a sparse list (``edge_target``, ``edge_source``, ``edge_weight``).

Pruning is circuit-tracer's ``prune_graph`` (0.5.0; ``benchmarks/graph_circuittracer.py`` checks it): with ``A``
the adjacency (target, source) taken in absolute value and normalised so each target's row sums to 1, a node's
influence is its total weight on the logits through all paths (``w (A + A^2 + ...)``, ``w`` the logit
probabilities); nodes are kept from the most influential until ``node_threshold`` of the total influence of all
nodes is covered (tokens and logits always); the adjacency is cut to the kept nodes, re-normalised, the influence
recomputed on it, and edges scored by that matrix times their target's influence plus logit weight are kept until
``edge_threshold``; then feature and error nodes without a kept outgoing edge, and features without a kept incoming
edge, are dropped (repeatedly). With both thresholds ``1`` nothing is pruned.

Works for models whose blocks are pre-norm ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (Llama, Mistral,
Qwen, SmolLM2, GPT-2, ...), with RMSNorm or LayerNorm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.features.transcoder import Transcoder
from interp.progress import progress as progress_bar
from interp.trace.results import Result, Upgrade

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

    from interp.features.clt import CrossLayerTranscoder
    from interp.models import Model

KINDS = ("embedding", "feature", "error", "logit")


def _edges_from_dense(tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> None:
    """Schema 1 (interp 0.2 before the memory rework) held a dense ``adjacency [N, N]``; now the kept edges."""
    A = tensors.pop("adjacency")
    t, s = torch.nonzero(A, as_tuple=True)
    tensors["edge_target"], tensors["edge_source"], tensors["edge_weight"] = t, s, A[t, s].float()


@dataclass(frozen=True, repr=False)
class AttributionGraph(Result):
    """A pruned attribution graph of one prompt.

    Attributes:
        prompt: the prompt text.
        tokens: its tokens.
        kind: per node, ``embedding`` / ``feature`` / ``error`` / ``logit``.
        layer: per node (embeddings ``-1``, logits ``n_layers``).
        pos: per node, the token position.
        feature: per node, the feature index (``-1`` for other kinds; for a logit its token id).
        value: per node: a feature's activation, an error node's norm, a logit's probability, 0 for embeddings.
        edge_target, edge_source, edge_weight: the kept edges (node indices and direct effects); pruned edges and
            edges of pruned nodes are absent. :meth:`adjacency` gives them as a ``[target, source]`` matrix.
        influence: per node, its influence on the logits (before pruning).
        kept: per node, whether pruning kept it.
        hover: per node, a short text (a feature's top promoted tokens, a logit's token).
        model_id: the model.

    Views: ``graph`` (positions across, layers up; hover shows each feature's top tokens and activation, edge
    widths by weight).

    Example:
        >>> import torch
        >>> g = AttributionGraph("a b", ("a", " b"), ("embedding", "feature", "logit"), torch.tensor([-1, 0, 2]),
        ...                      torch.tensor([0, 1, 1]), torch.tensor([-1, 5, 7]), torch.tensor([0.0, 2.0, 0.9]),
        ...                      torch.tensor([1, 2]), torch.tensor([0, 1]), torch.tensor([1.0, 3.0]),
        ...                      torch.tensor([1.0, 1, 1]), torch.tensor([True, True, True]), ("a", "f5", "tok 7"))
        >>> g.to_frame()[["source", "target", "weight"]].values.tolist()
        [['emb@0 a', 'L0@1 f5', 1.0], ['L0@1 f5', 'logit tok 7', 3.0]]
        >>> g.adjacency(dense=True)[2].tolist()
        [0.0, 3.0, 0.0]
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {"edge_weight": ("edge",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("graph",)
    SCHEMA_VERSION: ClassVar[int] = 2
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {1: _edges_from_dense}

    prompt: str
    tokens: tuple[str, ...]
    kind: tuple[str, ...]
    layer: torch.Tensor
    pos: torch.Tensor
    feature: torch.Tensor
    value: torch.Tensor
    edge_target: torch.Tensor
    edge_source: torch.Tensor
    edge_weight: torch.Tensor
    influence: torch.Tensor
    kept: torch.Tensor
    hover: tuple[str, ...]
    model_id: str = ""

    def __post_init__(self) -> None:
        n = len(self.kind)
        for name in ("layer", "pos", "feature", "value", "influence", "kept"):
            if getattr(self, name).shape != (n,):
                raise BadInputError(f"{name} must have one entry per node ({n})")
        e = self.edge_weight.shape
        if self.edge_target.shape != e or self.edge_source.shape != e or len(e) != 1:
            raise BadInputError("edge_target, edge_source and edge_weight must be 1-d of one length")
        if e[0] and (int(self.edge_target.max()) >= n or int(self.edge_source.max()) >= n
                     or int(self.edge_target.min()) < 0 or int(self.edge_source.min()) < 0):
            raise BadInputError(f"edge node indices must be in 0..{n - 1}")
        bad = set(self.kind) - set(KINDS)
        if bad:
            raise BadInputError(f"unknown node kinds {sorted(bad)}; valid: {', '.join(KINDS)}")

    def adjacency(self, dense: bool = False) -> torch.Tensor:
        """The kept edges as an ``[N, N]`` ``[target, source]`` matrix: a sparse COO tensor, or dense (``N^2``
        entries: for small graphs)."""
        n = len(self.kind)
        A = torch.sparse_coo_tensor(torch.stack([self.edge_target, self.edge_source]), self.edge_weight,
                                    (n, n), check_invariants=True).coalesce()
        return A.to_dense() if dense else A

    def node_name(self, i: int) -> str:
        """A short unique name of node ``i`` (``L3@5 f120``, ``err L3@5``, ``emb@0 The``, ``logit Paris``)."""
        k, p = self.kind[i], int(self.pos[i])
        if k == "feature":
            return f"L{int(self.layer[i])}@{p} f{int(self.feature[i])}"
        if k == "error":
            return f"err L{int(self.layer[i])}@{p}"
        if k == "embedding":
            return f"emb@{p} {self.tokens[p] if p < len(self.tokens) else ''}"
        return f"logit {self.hover[i]}"

    def labels(self) -> dict[str, list[Any]]:
        return {"edge": [f"{self.node_name(int(s))} -> {self.node_name(int(t))}"
                         for t, s in zip(self.edge_target.tolist(), self.edge_source.tolist(), strict=True)]}

    def to_frame(self) -> pd.DataFrame:
        """One row per kept edge: source, target (names), weight, and both nodes' kind, layer and position."""
        import pandas as pd

        rows = []
        for ti, si, w in zip(self.edge_target.tolist(), self.edge_source.tolist(), self.edge_weight.tolist(),
                             strict=True):
            rows.append({"source": self.node_name(si), "target": self.node_name(ti), "weight": float(w),
                         "source_kind": self.kind[si], "target_kind": self.kind[ti],
                         "source_layer": int(self.layer[si]), "target_layer": int(self.layer[ti]),
                         "source_pos": int(self.pos[si]), "target_pos": int(self.pos[ti])})
        return pd.DataFrame(rows, columns=["source", "target", "weight", "source_kind", "target_kind", "source_layer",
                                           "target_layer", "source_pos", "target_pos"])

    def nodes_frame(self) -> pd.DataFrame:
        """One row per node: name, kind, layer, position, feature, value, influence, kept, hover."""
        import pandas as pd

        return pd.DataFrame({"name": [self.node_name(i) for i in range(len(self.kind))], "kind": list(self.kind),
                             "layer": self.layer.tolist(), "pos": self.pos.tolist(), "feature": self.feature.tolist(),
                             "value": self.value.tolist(), "influence": self.influence.tolist(),
                             "kept": self.kept.tolist(), "hover": list(self.hover)})

    def headline(self) -> dict[str, Any]:
        kept = self.kept
        feats = sum(1 for i, k in enumerate(self.kind) if k == "feature" and bool(kept[i]))
        return {"nodes": int(kept.sum()), "features": feats, "edges": int(self.edge_weight.numel())}

    def _view_graph(self, max_edges: int = 400) -> Figure:
        from interp.plot import placed_graph

        keep = [i for i in range(len(self.kind)) if bool(self.kept[i])]
        n_layers = int(self.layer.max()) if len(self.kind) else 0
        # nodes at (position, layer); several features at one cell are spread sideways
        cell: dict[tuple[int, int], int] = {}
        for i in keep:
            key = (int(self.pos[i]), int(self.layer[i]))
            cell[key] = cell.get(key, 0) + 1
        seen: dict[tuple[int, int], int] = {}
        where: dict[int, int] = {}
        nodes: list[tuple[float, float, str, str]] = []
        for i in keep:
            key = (int(self.pos[i]), int(self.layer[i]))
            j = seen.get(key, 0)
            seen[key] = j + 1
            m = cell[key]
            where[i] = len(nodes)
            nodes.append((key[0] + (0.0 if m == 1 else 0.7 * (j / (m - 1) - 0.5)), float(key[1]), str(self.kind[i]),
                          f"{self.node_name(i)}\nvalue {float(self.value[i]):.3g}, influence "
                          f"{float(self.influence[i]):.3g}\n{self.hover[i]}"))
        t, s, w = self.edge_target, self.edge_source, self.edge_weight
        edges = [(where[int(s[o])], where[int(t[o])], float(w[o]),
                  f"{self.node_name(int(s[o]))} → {self.node_name(int(t[o]))}: {float(w[o]):.3g}")
                 for o in w.abs().argsort(descending=True)[:max_edges].tolist()
                 if int(t[o]) in where and int(s[o]) in where]
        return placed_graph(nodes, edges,
                            group_colors={"embedding": "#7f8c8d", "feature": "#e67e22", "error": "#95a5a6",
                                          "logit": "#27ae60"},
                            x_labels=[repr(tk)[1:-1] for tk in self.tokens], x_title="position",
                            y_title="layer (emb = -1, logits = top)", y_range=(-1.5, n_layers + 0.5),
                            title=f"Attribution graph: {self.prompt[:80]}")


GRAPH_FAMILIES = ("llama", "gpt2")
"""Model families whose blocks the graph's linear model follows: pre-norm blocks (one RMSNorm or LayerNorm before
attention, one before the MLP, weights used as they are), sequential attention then MLP."""


def check_graph_family(model: Model) -> None:
    """Refuse a model whose blocks the attribution graph cannot follow (post-norms as in Gemma 2 / OLMo 2,
    ``1 + w`` norm weights as in Gemma, parallel attention and MLP as in GPT-J / Falcon / GPT-NeoX, MoE MLPs)."""
    family = model.adapter.family
    if family not in GRAPH_FAMILIES:
        raise BadInputError(f"attribution graphs follow pre-norm sequential blocks ({', '.join(GRAPH_FAMILIES)} "
                            f"families: Llama, Mistral, Qwen 2/3, SmolLM, GPT-2); {model.name!r} is {family!r}")


# -- the dictionaries the replacement uses ------------------------------------------------------------------------
class _Replacement:
    """What the linear model needs from per-layer transcoders or a cross-layer transcoder, in the model's units:
    features read the MLP input ``x_in`` of their layer and write to the MLP outputs of ``out_layers(L)``."""

    def __init__(self, transcoders: Mapping[int, Transcoder] | CrossLayerTranscoder, n_layers: int) -> None:
        from interp.features.clt import CrossLayerTranscoder

        self.clt: CrossLayerTranscoder | None = None
        self.tcs: dict[int, Transcoder] = {}
        if isinstance(transcoders, CrossLayerTranscoder):
            if not transcoders.fitted:
                raise BadInputError("the CrossLayerTranscoder is not fitted")
            if max(transcoders.layers) >= n_layers:
                raise BadInputError(f"the cross-layer transcoder reads layers {transcoders.layers}; this model has "
                                    f"{n_layers}")
            self.clt = transcoders
            self.layers = list(transcoders.layers)
        else:
            if not isinstance(transcoders, Mapping):
                raise BadInputError("transcoders must be {layer: Transcoder} or a CrossLayerTranscoder, got "
                                    f"{type(transcoders).__name__}")
            for lay, tc in transcoders.items():
                if not isinstance(tc, Transcoder) or not tc.fitted:
                    raise BadInputError(f"transcoders[{lay}] must be a fitted Transcoder, got {type(tc).__name__}")
                if isinstance(lay, bool) or not isinstance(lay, int) or not -n_layers <= lay < n_layers:
                    raise BadInputError(f"transcoder keys must be layers in 0..{n_layers - 1}, got {lay!r}")
                self.tcs[lay % n_layers] = tc
            self.layers = sorted(self.tcs)

    def has(self, L: int) -> bool:
        return L in self.layers

    def writers(self, L_out: int) -> list[int]:
        """The feature layers that write to layer ``L_out``'s MLP output."""
        if self.clt is not None:
            return [L for L in self.layers if L_out >= L] if L_out in self.layers else []
        return [L_out] if L_out in self.tcs else []

    def encode(self, L: int, x_in: torch.Tensor) -> torch.Tensor:
        if self.clt is not None:
            return self.clt.encode(x_in, layer=L)
        return self.tcs[L].encode(x_in)

    def enc_col(self, L: int, f: int, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w [d], b)`` with feature ``f``'s pre-activation ``x_in @ w + b``."""
        if self.clt is not None:
            i = self.clt.layers.index(L)
            assert self.clt.W_enc_ is not None and self.clt.b_enc_ is not None
            return (self.clt.W_enc_[i][:, f].to(dt) * float(self.clt.input_scale_[i]),
                    self.clt.b_enc_[i][f].to(dt))
        tc = self.tcs[L]  # a Transcoder never subtracts b_dec (an output-space bias) from its input
        assert tc.W_enc_ is not None and tc.b_enc_ is not None
        return tc.W_enc_[:, f].to(dt) * tc.input_scale_, tc.b_enc_[f].to(dt)

    def dec(self, L: int, L_out: int, feats: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
        """``[len(feats), d]``: what one unit of each feature of layer ``L`` adds to layer ``L_out``'s output."""
        if self.clt is not None:
            return self.clt.decoder(L, L_out)[feats].to(dt)
        tc = self.tcs[L]
        assert tc.W_dec_ is not None
        return tc.W_dec_[feats].to(dt) / tc.output_scale_

    def const(self, L_out: int, x_in: torch.Tensor) -> torch.Tensor | float:
        """The output bias plus the skip connection of layer ``L_out`` (``x_in [..., d]``)."""
        if self.clt is not None:
            return self.clt.bias_skip(x_in, layer=L_out)
        tc = self.tcs[L_out]
        out: torch.Tensor | float = 0.0
        if tc.b_dec_ is not None:
            out = tc.b_dec_.to(x_in.dtype) / tc.output_scale_
        if tc.W_skip_ is not None:
            out = out + (x_in * tc.input_scale_) @ tc.W_skip_.to(x_in.dtype) / tc.output_scale_
        return out

    def top_direction(self, L: int, f: int) -> torch.Tensor:
        """A feature's write to its own layer's output (for the hover's top tokens)."""
        return self.dec(L, L, torch.tensor([f]), torch.float32)[0]


# -- the linearised model -----------------------------------------------------------------------------------------
@dataclass
class _Frozen:
    """Everything the linear replacement model holds fixed, from the recorded forward."""

    n_layers: int
    emb: torch.Tensor  # [T, d] resid_pre.0
    s1: list[torch.Tensor]  # [T, 1] frozen norm scales
    s2: list[torch.Tensor]
    sf: torch.Tensor
    pattern: list[torch.Tensor]  # [H, T, T]
    err: list[torch.Tensor]  # [T, d]
    active: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per layer: (pos, feature, activation)
    centered: bool
    eps: float


def _norm(x: torch.Tensor, s: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, centered: bool) -> torch.Tensor:
    y = (x - x.mean(-1, keepdim=True) if centered else x) * s * w
    return y + b if b is not None else y


def _scale(x: torch.Tensor, centered: bool, eps: float) -> torch.Tensor:
    v = x.var(-1, unbiased=False, keepdim=True) if centered else x.pow(2).mean(-1, keepdim=True)
    return torch.rsqrt(v + eps)


class _Linear:
    """The replacement model's forward, run on ``n`` copies (one target each) with leaves for the sources."""

    def __init__(self, model: Model, rep: _Replacement, fz: _Frozen) -> None:
        self.w = model.weights
        self.rep, self.fz = rep, fz
        self.dtype = fz.emb.dtype
        self.dec_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.W_U_mean: torch.Tensor | None = None

    def _dec(self, L: int, L_out: int) -> torch.Tensor:
        key = (L, L_out)
        if key not in self.dec_cache:
            self.dec_cache[key] = self.rep.dec(L, L_out, self.fz.active[L][1], self.dtype)
        return self.dec_cache[key]

    def _place(self, L: int) -> torch.Tensor:
        """``[T, N_L]``: one where feature ``j`` of layer ``L`` is active at position ``t``."""
        key = (L, -1)
        if key not in self.dec_cache:
            pos_l = self.fz.active[L][0]
            self.dec_cache[key] = torch.nn.functional.one_hot(pos_l, self.fz.emb.shape[0]).T.to(self.dtype)
        return self.dec_cache[key]

    def forward(self, copies: int) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor, list[torch.Tensor],
                                           list[torch.Tensor]]:
        """One forward of the linear model on ``copies`` copies (one per target of a batch), kept for every batch's
        backward (the values are the same for every target; only the backward differs). Returns each layer's MLP
        input ``x_in [copies, T, d]`` (what feature targets read), the last position's final-normed residual
        ``[copies, d]`` (what logit targets read) and the leaves (embedding ``[copies, T, d]``, per-layer activations
        ``[copies, N_L]``, errors)."""
        w, fz, dt, rep = self.w, self.fz, self.dtype, self.rep
        c = copies
        emb = fz.emb.unsqueeze(0).expand(c, -1, -1).clone().requires_grad_(True)
        acts = [a[2].to(dt).unsqueeze(0).expand(c, -1).clone().requires_grad_(True) for a in fz.active]
        errs = [e.unsqueeze(0).expand(c, -1, -1).clone().requires_grad_(True) for e in fz.err]
        x_ins: dict[int, torch.Tensor] = {}
        resid = emb
        for L in range(fz.n_layers):
            b1 = w.ln1_b[L].to(dt) if w.ln1_b is not None else None
            h = _norm(resid, fz.s1[L], w.ln1_w[L].to(dt), b1, fz.centered)
            v = torch.einsum("ntd,hde->nhte", h, w.W_V[L].to(dt)) + w.b_V[L].to(dt)[None, :, None, :]
            z = fz.pattern[L].unsqueeze(0) @ v
            resid = resid + torch.einsum("nhte,hed->ntd", z, w.W_O[L].to(dt)) + w.b_O[L].to(dt)
            b2 = w.ln2_b[L].to(dt) if w.ln2_b is not None else None
            x_in = _norm(resid, fz.s2[L], w.ln2_w[L].to(dt), b2, fz.centered)
            if rep.has(L):
                x_ins[L] = x_in
            writers = rep.writers(L)
            if writers:
                mlp = torch.zeros_like(resid)
                for Ls in writers:
                    if len(fz.active[Ls][0]):  # [n, T, N_L] (activations placed at their positions) @ [N_L, d]
                        mlp = mlp + (acts[Ls].unsqueeze(1) * self._place(Ls)) @ self._dec(Ls, L)
                resid = resid + mlp + rep.const(L, x_in) + errs[L]
            else:
                resid = resid + errs[L]
        assert w.ln_final_w is not None
        hf = _norm(resid[:, -1], fz.sf[-1], w.ln_final_w.to(dt),
                   w.ln_final_b.to(dt) if w.ln_final_b is not None else None, fz.centered)
        return x_ins, hf, emb, acts, errs

    def targets(self, targets: list[tuple[str, int, int, int]], x_ins: dict[int, torch.Tensor], hf: torch.Tensor
                ) -> torch.Tensor:
        """``[n]``: target ``i`` (a feature's encoder pre-activation or a demeaned logit) read from copy ``i``."""
        w, dt = self.w, self.dtype
        vals = []
        for i, (kind, layer, pos, f) in enumerate(targets):
            if kind == "feature":
                wc, bc = self.rep.enc_col(layer, f, dt)
                vals.append(x_ins[layer][i, pos] @ wc + bc)
            else:
                assert w.W_U is not None
                if self.W_U_mean is None:
                    self.W_U_mean = w.W_U.to(dt).mean(1)
                vals.append(hf[i] @ (w.W_U[:, f].to(dt) - self.W_U_mean))
        return torch.stack(vals)


def _record(model: Model, ids: torch.Tensor, rep: _Replacement, dtype: torch.dtype
            ) -> tuple[_Frozen, torch.Tensor]:
    n_layers = model.dims.n_layers
    hooks = ["blocks.0.hook_resid_pre", f"blocks.{n_layers - 1}.hook_resid_post"]
    for L in range(n_layers):
        hooks += [f"blocks.{L}.hook_resid_pre", f"blocks.{L}.hook_resid_mid", f"blocks.{L}.attn.hook_pattern",
                  f"blocks.{L}.hook_mlp_out"]
    with torch.no_grad():
        res = model.run(ids, capture=sorted(set(hooks)))
    a = {k: v[0].to(dtype) for k, v in res.trace.activations.items()}
    assert res.logits is not None
    norm = model.weights.norm
    centered = norm == "layer"
    cfg = model.config
    eps = float(next((getattr(cfg, k) for k in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps")
                      if getattr(cfg, k, None) is not None), 1e-5))
    s1 = [_scale(a[f"blocks.{L}.hook_resid_pre"], centered, eps) for L in range(n_layers)]
    s2 = [_scale(a[f"blocks.{L}.hook_resid_mid"], centered, eps) for L in range(n_layers)]
    sf = _scale(a[f"blocks.{n_layers - 1}.hook_resid_post"], centered, eps)
    w = model.weights
    x_in: dict[int, torch.Tensor] = {}
    active: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for L in range(n_layers):
        if not rep.has(L):
            active.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                           torch.zeros(0, dtype=dtype)))
            continue
        b2 = w.ln2_b[L].to(dtype) if w.ln2_b is not None else None
        x_in[L] = _norm(a[f"blocks.{L}.hook_resid_mid"], s2[L], w.ln2_w[L].to(dtype), b2, centered)
        with torch.no_grad():
            z = rep.encode(L, x_in[L]).to(dtype)
        pos, feat = torch.nonzero(z > 0, as_tuple=True)
        active.append((pos, feat, z[pos, feat]))
    errs = []
    for L in range(n_layers):
        mlp_out = a[f"blocks.{L}.hook_mlp_out"]
        writers = rep.writers(L)
        if not writers:
            errs.append(mlp_out)
            continue
        with torch.no_grad():
            pred = torch.zeros_like(mlp_out) + rep.const(L, x_in[L])
            for Ls in writers:
                pos_l, feat_l, act_l = active[Ls]
                pred.index_add_(0, pos_l, act_l.unsqueeze(-1) * rep.dec(Ls, L, feat_l, dtype))
        errs.append(mlp_out - pred)
    fz = _Frozen(n_layers, a["blocks.0.hook_resid_pre"], s1, s2, sf,
                 [a[f"blocks.{L}.attn.hook_pattern"] for L in range(n_layers)], errs, active, centered, eps)
    return fz, res.logits[0, -1].to(dtype)


# -- influence and pruning on computed rows only --------------------------------------------------------------------
BLOCK = 256  # rows per block when iterating over the computed rows


def _influence(rows: torch.Tensor, row_node: torch.Tensor, n_rows: int, logit_w: torch.Tensor) -> torch.Tensor:
    """Each node's total influence on the logits, ``w (B + B^2 + ...)`` with ``B = |A|`` row-normalised, where ``A``
    has only the first ``n_rows`` rows of ``rows`` (node ``row_node[r]`` each; every other row of ``A`` is 0). Works
    in blocks of rows: no ``N x N`` matrix and no second copy of the rows."""
    N = rows.shape[1]
    inv = torch.empty(n_rows, dtype=torch.float64)
    for r in range(0, n_rows, BLOCK):
        inv[r:r + BLOCK] = 1.0 / rows[r:min(r + BLOCK, n_rows)].abs().sum(1, dtype=torch.float64).clamp_min(1e-12)
    node = row_node[:n_rows]

    def step(cur: torch.Tensor) -> torch.Tensor:
        c = cur[node] * inv
        live = torch.nonzero(c).flatten()
        nxt = torch.zeros(N, dtype=torch.float64)
        for r in range(0, len(live), BLOCK):
            sel = live[r:r + BLOCK]
            nxt += c[sel] @ rows[sel].abs().double()
        return nxt

    cur = step(logit_w)
    total = cur.clone()
    for _ in range(N):
        cur = step(cur)
        if float(cur.abs().sum()) < 1e-12:
            break
        total += cur
    return total


def _cut(scores: torch.Tensor, threshold: float) -> float:
    """circuit-tracer's ``find_threshold``: the score at which the scores sorted in descending order first reach
    ``threshold`` of their sum (keep every score ``>=`` it)."""
    s = scores.flatten().sort(descending=True).values
    cum = s.cumsum(0) / s.sum().clamp_min(1e-30)
    return float(s[min(int(torch.searchsorted(cum, torch.tensor([threshold], dtype=cum.dtype))[0]), len(s) - 1)])


def _prune(rows: torch.Tensor, row_node: torch.Tensor, n_rows: int, keep: torch.Tensor, logit_w: torch.Tensor,
           edge_threshold: float, pruned_kinds: torch.Tensor, is_feature: torch.Tensor, clean: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """circuit-tracer's edge pruning and clean-up (``prune_graph``) on the kept rows x kept columns only: the
    adjacency restricted to the kept nodes, row-normalised (``B``); the influence recomputed on it; each edge scored
    by ``B`` times its target's (recomputed) influence plus logit weight, kept from the top until ``edge_threshold``
    of the total; then, repeatedly, feature and error nodes without a kept outgoing edge and features without a kept
    incoming edge are dropped with their edges (unless ``clean`` is false: both thresholds 1, nothing pruned).
    Returns the kept nodes and the kept edges ``(target, source, weight)``."""
    keep = keep.clone()
    kr = torch.nonzero(keep[row_node[:n_rows]]).flatten()
    kc = torch.nonzero(keep).flatten()
    z = torch.zeros(0, dtype=torch.long)
    if not len(kr) or not len(kc):
        return keep, z, z.clone(), torch.zeros(0)
    N = len(keep)
    tgt_node = row_node[kr]
    sub = rows[kr[:, None], kc].double()
    B = sub.abs()
    B /= B.sum(1, keepdim=True).clamp_min(1e-10)
    col_of = torch.full((N,), -1, dtype=torch.long)
    col_of[kc] = torch.arange(len(kc))
    row_col = col_of[tgt_node]  # each kept row's node among the kept columns
    w = logit_w[kc]
    cur, infl = w.clone(), torch.zeros_like(w)
    for _ in range(len(kc) + 1):  # w (B + B^2 + ...) on the pruned graph (a DAG: the series ends)
        cur = cur[row_col] @ B
        if not bool(cur.any()):
            break
        infl += cur
    B *= (infl + w)[row_col][:, None]  # B is now the edge scores
    E = sub != 0
    if edge_threshold < 1 and float(B.sum()) > 0:
        E &= B.ge(_cut(B, edge_threshold))
    while clean:  # drop dangling nodes until nothing changes
        old = keep.clone()
        has_out = torch.zeros(N, dtype=torch.bool)
        has_out[kc[E.any(0)]] = True
        has_in = torch.zeros(N, dtype=torch.bool)
        has_in[tgt_node[E.any(1)]] = True
        keep &= ~pruned_kinds | has_out
        keep &= ~is_feature | has_in
        if torch.equal(keep, old):
            break
        E &= keep[tgt_node][:, None] & keep[kc][None, :]
    r, c = torch.nonzero(E, as_tuple=True)
    return keep, tgt_node[r], kc[c], sub[r, c].float()


def attribution_graph(model: Model, inputs: str | torch.Tensor, *,
                      transcoders: Mapping[int, Transcoder] | CrossLayerTranscoder,
                      max_logits: int = 10, logit_probability: float = 0.95, max_feature_nodes: int | None = None,
                      node_threshold: float = 0.8, edge_threshold: float = 0.98, batch_size: int = 32,
                      dtype: torch.dtype = torch.float32, progress: bool | None = None) -> AttributionGraph:
    """The attribution graph of the prompt ``inputs`` through ``transcoders`` (see the module docstring).

    Args:
        model: the model.
        inputs: one prompt: a text (or token ids ``[T]`` / ``[1, T]``).
        transcoders: layer → :class:`~interp.features.Transcoder` of that block's MLP (layers without one have
            their MLP output as error nodes), or one :class:`~interp.features.CrossLayerTranscoder`.
        max_logits, logit_probability: logit targets: the top tokens at the last position until this cumulative
            probability, at most ``max_logits``.
        max_feature_nodes: compute rows for at most this many features (by estimated influence; ``None``: all).
            Memory grows with it: the computed rows are ``[rows, N]`` in ``dtype``.
        node_threshold, edge_threshold: cumulative-influence pruning (``1.0`` keeps everything).
        batch_size: targets per backward pass (and copies in the one forward: memory grows with it).
        dtype: computation dtype of the linear model (``torch.float64`` for exact checks).
        progress: a bar over the backward batches.

    Example:
        >>> import interp, torch
        >>> from interp.features import SAEConfig, Transcoder, attribution_graph
        >>> m = interp.load_model("smollm2-135m")
        >>> tc = Transcoder(SAEConfig(d_sae=64, k=4, apply_b_dec_to_input=False), progress=False,
        ...                 hook="hf:model.layers.2.post_attention_layernorm", out_hook="mlp_out.2")
        >>> tc.W_enc_, tc.b_enc_ = torch.randn(576, 64) / 24, torch.zeros(64)
        >>> tc.W_dec_, tc.b_dec_ = torch.randn(64, 576) / 24, torch.zeros(576)
        >>> g = attribution_graph(m, "The capital of France is", transcoders={2: tc}, progress=False)
        >>> g.kind.count("logit") >= 1
        True
    """
    check_graph_family(model)
    n_layers = model.dims.n_layers
    rep = _Replacement(transcoders, n_layers)
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold),
                    ("logit_probability", logit_probability)):
        if not 0 < float(v) <= 1:
            raise BadInputError(f"{name} must be in (0, 1], got {v!r}")
    if max_feature_nodes is not None and (isinstance(max_feature_nodes, bool) or max_feature_nodes < 0):
        raise BadInputError(f"max_feature_nodes must be None or an int >= 0, got {max_feature_nodes!r}")
    if isinstance(inputs, str):
        ids, _ = model.encode(inputs)
        text = inputs
    else:
        ids = torch.as_tensor(inputs).reshape(1, -1)
        text = ""
    fz, last_logits = _record(model, ids, rep, dtype)
    T = ids.shape[1]
    probs = torch.softmax(last_logits.double(), -1)
    top_p, top_t = probs.topk(max(1, max_logits))
    n_logit = int(min(max_logits, int((top_p.cumsum(0) < logit_probability).sum()) + 1))
    top_p, top_t = top_p[:n_logit], top_t[:n_logit]
    # nodes: embeddings, features, errors, logits
    kind: list[str] = []
    layer: list[int] = []
    pos: list[int] = []
    feat: list[int] = []
    value: list[float] = []

    def add(k: str, lay: int, p: int, f: int, v: float) -> None:
        kind.append(k)
        layer.append(lay)
        pos.append(p)
        feat.append(f)
        value.append(v)

    for p in range(T):
        add("embedding", -1, p, -1, 0.0)
    feat_start: list[int] = []
    for L in range(n_layers):
        pl, fl, al = fz.active[L]
        feat_start.append(len(kind))
        for p_, f_, a_ in zip(pl.tolist(), fl.tolist(), al.tolist(), strict=True):
            add("feature", L, p_, f_, a_)
    err_start: list[int] = []
    for L in range(n_layers):
        err_start.append(len(kind))
        for p in range(T):
            add("error", L, p, -1, float(fz.err[L][p].norm()))
    logit_node = []
    for tok, pr in zip(top_t.tolist(), top_p.tolist(), strict=True):
        logit_node.append(len(kind))
        add("logit", n_layers, T - 1, tok, pr)
    N = len(kind)
    features = [i for i in range(N) if kind[i] == "feature"]
    limit = len(features) if max_feature_nodes is None else min(max_feature_nodes, len(features))
    # the computed rows: one per logit and per feature that gets a row, filled in order
    rows_mat = torch.zeros(n_logit + limit, N, dtype=dtype)
    row_node = torch.full((n_logit + limit,), -1, dtype=torch.long)
    n_rows = 0
    lin = _Linear(model, rep, fz)

    copies = max(1, min(batch_size, max(n_logit, limit)))
    shared: list[Any] = []

    def compute(targets: list[int]) -> None:
        nonlocal n_rows
        spec = [("logit" if kind[i] == "logit" else "feature", layer[i], pos[i], feat[i]) for i in targets]
        if not shared:  # one forward for all batches, as circuit-tracer; each backward stops at its targets' layers
            shared.extend(lin.forward(copies))
        x_ins, hf, emb, acts, errs = shared
        out = lin.targets(spec, x_ins, hf)
        grads = torch.autograd.grad(out.sum(), [emb, *acts, *errs], retain_graph=True, allow_unused=True)
        grads = tuple(None if g_ is None else g_[:len(targets)] for g_ in grads)
        g_emb, g_acts, g_errs = grads[0], grads[1:1 + n_layers], grads[1 + n_layers:]
        r0, r1 = n_rows, n_rows + len(targets)
        row_node[r0:r1] = torch.tensor(targets)
        blk = rows_mat[r0:r1]
        with torch.no_grad():
            if g_emb is not None:
                blk[:, :T] = (g_emb * fz.emb.unsqueeze(0)).sum(-1)
            for L in range(n_layers):
                ga, ge = g_acts[L], g_errs[L]
                n_f = len(fz.active[L][0])
                if ga is not None and n_f:
                    blk[:, feat_start[L]:feat_start[L] + n_f] = ga * fz.active[L][2].to(dtype)
                if ge is not None:
                    blk[:, err_start[L]:err_start[L] + T] = (ge * fz.err[L].unsqueeze(0)).sum(-1)
        n_rows = r1

    logit_w = torch.zeros(N, dtype=torch.float64)
    logit_w[logit_node] = top_p / top_p.sum()
    logit_batches = [logit_node[i:i + batch_size] for i in range(0, len(logit_node), batch_size)]
    bar = progress_bar(total=len(logit_batches) + -(-limit // batch_size), desc="attribution", enabled=progress,
                       unit="batch")
    try:
        for b in logit_batches:
            compute(b)
            bar.update(1)
        if max_feature_nodes is None:
            order = sorted(features, key=lambda i: (layer[i], pos[i]))
            for s in range(0, len(order), batch_size):
                compute(order[s:s + batch_size])
                bar.update(1)
        else:
            done: set[int] = set()
            while len(done) < limit:
                inf = _influence(rows_mat, row_node, n_rows, logit_w)
                cand = sorted((i for i in features if i not in done), key=lambda i: -float(inf[i]))
                pick = cand[:min(batch_size, limit - len(done))]
                compute(pick)
                done.update(pick)
                bar.update(1)
    finally:
        bar.close()
        shared.clear()  # the kept forward graph
    influence = _influence(rows_mat, row_node, n_rows, logit_w)
    # circuit-tracer's prune_graph: nodes whose influence reaches node_threshold of the total (over every node),
    # tokens and logits always; then edges, then nodes left dangling
    keep = influence >= _cut(influence, node_threshold) if node_threshold < 1 else torch.ones(N, dtype=torch.bool)
    keep[:T] = True
    keep[logit_node] = True
    is_feature = torch.tensor([k == "feature" for k in kind], dtype=torch.bool)
    pruned_kinds = torch.tensor([k in ("feature", "error") for k in kind], dtype=torch.bool)
    keep, e_t, e_s, e_w = _prune(rows_mat, row_node, n_rows, keep, logit_w, edge_threshold, pruned_kinds,
                                 is_feature, clean=node_threshold < 1 or edge_threshold < 1)
    hover = _hover(model, rep, kind, layer, feat, keep)
    tokens = tuple(model.to_str_tokens(ids)[0])
    return AttributionGraph(text, tokens, tuple(kind), torch.tensor(layer), torch.tensor(pos), torch.tensor(feat),
                            torch.tensor(value, dtype=torch.float32), e_t, e_s, e_w, influence.float(), keep,
                            tuple(hover), model.name)


def load_transcoders(path: str | None = None) -> dict[int, Transcoder]:
    """Every transcoder under ``path`` (one sub-directory each), keyed by the layer of its output hook; default: the
    ones shipped for SmolLM2-135M in ``data/features/smollm2-135m-transcoders``."""
    from pathlib import Path

    from interp.features.sae import SHIPPED_DIR
    from interp.sites import Site

    root = Path(path) if path is not None else SHIPPED_DIR / "smollm2-135m-transcoders"
    if not root.is_dir():
        raise BadInputError(f"no transcoder directory at {str(root)!r}")
    out: dict[int, Transcoder] = {}
    for d in sorted(q for q in root.iterdir() if q.is_dir()):
        tc = Transcoder.load(d)
        layer = Site.parse(tc.out_hook).layer
        if layer is None:
            raise BadInputError(f"{d}: the transcoder's out_hook {tc.out_hook!r} names no layer")
        out[layer] = tc
    if not out:
        raise BadInputError(f"no transcoders under {str(root)!r}")
    return out


def _hover(model: Model, rep: _Replacement, kind: list[str], layer: list[int], feat: list[int],
           keep: torch.Tensor) -> list[str]:
    """A feature's top promoted tokens (its decoder row through the unembedding), a logit's token. The kept
    features' rows go through the unembedding 256 at a time (one product each, not one pass over ``W_U`` per
    feature)."""
    W_U = model.weights.W_U
    out = [""] * len(kind)
    for i, k in enumerate(kind):
        if k == "logit":
            out[i] = model.to_str_tokens(torch.tensor([[feat[i]]]))[0][0]
    feats = [i for i, k in enumerate(kind) if k == "feature" and bool(keep[i])]
    if W_U is None or not feats:
        return out
    W = W_U.float()
    for s in range(0, len(feats), 256):
        chunk = feats[s:s + 256]
        D = torch.stack([rep.top_direction(layer[i], feat[i]).float() for i in chunk])
        top = (D @ W).topk(min(5, W.shape[1]), dim=-1).indices
        for i, toks in zip(chunk, model.to_str_tokens(top), strict=True):
            out[i] = "top tokens: " + ", ".join(repr(t) for t in toks)
    return out


__all__ = ["AttributionGraph", "attribution_graph", "load_transcoders"]
