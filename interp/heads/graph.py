"""``communication_graph``: which earlier heads, MLPs and the embeddings write the sparse QK components a head reads.

Franco & Crovella (2024). For a receiving head at a (dest ``i``, src ``j``) pair with sparse set ``K``
(:mod:`interp.heads.decompose`), the sparse part of its score is ``Σ_{k∈K} S_k (x̃_i·u_k)(x̃_j·v_k)``. The residual
stream is a sum of writers (the embeddings, every earlier head's output, each layer's attention output bias, every
earlier MLP) and ``x̃`` is linear in it once the norm's scale is frozen, so each writer ``c`` gets

- a **query-side** edge ``Σ_{k∈K} S_k (ĉ_i·u_k)(x̃_j·v_k)`` (what it wrote at the destination), and
- a **key-side** edge ``Σ_{k∈K} S_k (x̃_i·u_k)(ĉ_j·v_k)`` (what it wrote at the source),

with ``ĉ = P c / σ``. The bias coordinate of ``x̃`` is one more node, ``"bias"``; on each side the edges of all
nodes sum to the sparse part of the score exactly. Averaged over a prompt set they form the communication graph.

:func:`subspace_removal` validates edges as the paper does: remove from the sender's output (at the position it
feeds) its projection on the receiver's sparse read subspace and measure the receiver's score; compare with
removing random subspaces of the same dimension.

Example:
    >>> import interp
    >>> from interp.heads import communication_graph, subspace_removal
    >>> toy = interp.load_model("toy-induction")
    >>> g = communication_graph(toy, torch.tensor([[1, 5, 9, 3, 1, 5]]), receivers="L1H3")
    >>> g.top_edges(1)[0][1]
    'L1H3'
    >>> v = subspace_removal(toy, torch.tensor([[1, 5, 9, 3, 1, 5]]), graph=g, n_edges=1, n_random=4)
    >>> v.sparse_drop.shape
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.heads import _qk
from interp.heads._common import fit_width, heads_of
from interp.hooks import Add
from interp.models import Model
from interp.models.circuits import attention_scaling
from interp.models.model import Inputs
from interp.plot import heatmap, layered_graph, scatter
from interp.progress import progress as progress_bar
from interp.sites import HeadRef, HeadSpec, Positions, resolve_positions
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result, labelled_frame

if TYPE_CHECKING:
    import pandas as pd
    from plotly.graph_objects import Figure

SIDES = ("q", "k")


def sender_nodes(n_layers: int, n_heads: int) -> list[str]:
    """Every writer in order: ``embed``, then per layer its heads ``L{l}H{h}``, ``attn_bias.{l}``, ``mlp.{l}``; ``bias``."""
    out = ["embed"]
    for la in range(n_layers):
        out += [f"L{la}H{h}" for h in range(n_heads)] + [f"attn_bias.{la}", f"mlp.{la}"]
    return [*out, "bias"]


def _writers(model: Model, trace: Any, layer: int, seq: int) -> tuple[torch.Tensor, list[int]]:
    """``[node, n, d]`` the writers of the stream before ``layer`` (float64) and their indices in :func:`sender_nodes`."""
    w = model.weights
    H = int(w.W_Q.shape[1])
    parts = [trace[_qk.name("resid_pre.0")][seq].double().cpu()]
    index = [0]
    for la in range(layer):
        z = trace[_qk.name(f"z.{la}")][seq].double().cpu()  # [n, H, r]
        heads = torch.einsum("nhr,hrd->hnd", z, w.W_O[la].double().cpu())
        attn = trace[_qk.name(f"attn_out.{la}")][seq].double().cpu()
        parts += [heads, (attn - heads.sum(0))[None], trace[_qk.name(f"mlp_out.{la}")][seq].double().cpu()[None]]
        base = 1 + la * (H + 2)
        index += list(range(base, base + H + 2))
    return torch.cat([p if p.dim() == 3 else p[None] for p in parts]), index


@dataclass(frozen=True, repr=False)
class CommunicationGraph(Result):
    """Edges from every writer of the residual stream to receiving heads, through their sparse QK components.

    Views: ``"graph"`` (default; the ``n_edges`` strongest mean edges as a layered graph, ``side=None``: both),
    ``"heatmap"`` (receiver x sender, one side).

    Attributes:
        edges: ``[prompt, side, receiver, sender]`` per-prompt edge weights in score units (side ``q``: the
            sender's write at the destination; ``k``: at the source); 0 for senders not before the receiver.
        pairs: ``[prompt, receiver, 2]`` the (dest, src) pair used per prompt and receiver.
        n_sparse: ``[prompt, receiver]`` the size of the sparse set there.
        scores: ``[prompt, receiver]`` the receiver's score there.
        receivers: the receiving heads ``"L5H1"``.
        senders: the sender nodes (:func:`sender_nodes`).
        share: the share of the score the sparse sets reach.
        model_id: the model.
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        "edges": ("prompt", "side", "receiver", "sender"), "pairs": ("prompt", "receiver", "end"),
        "n_sparse": ("prompt", "receiver"), "scores": ("prompt", "receiver")}
    VIEWS: ClassVar[tuple[str, ...]] = ("graph", "heatmap")

    edges: torch.Tensor
    pairs: torch.Tensor
    n_sparse: torch.Tensor
    scores: torch.Tensor
    receivers: tuple[str, ...]
    senders: tuple[str, ...]
    share: float = 0.9
    model_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "receivers", tuple(self.receivers))
        object.__setattr__(self, "senders", tuple(self.senders))
        if self.edges.dim() != 4 or self.edges.shape[1:] != (2, len(self.receivers), len(self.senders)):
            raise BadInputError(f"edges must be [prompt, side=2, receiver={len(self.receivers)}, "
                                f"sender={len(self.senders)}]; got {tuple(self.edges.shape)}")

    def mean(self) -> torch.Tensor:
        """``[side, receiver, sender]``: edges averaged over prompts."""
        return self.edges.mean(0)

    def top_edges(self, n: int = 10, side: str | None = None,
                  senders: str = "heads") -> list[tuple[str, str, str, float]]:
        """The ``n`` strongest mean edges ``(sender, receiver, side, weight)`` by |weight|.

        ``senders="heads"`` lists head senders only (the paper's head → head graph); ``"all"`` every node.
        """
        if senders not in ("heads", "all"):
            raise bad_value("senders", senders, "'heads' or 'all'")
        m = self.mean().clone()
        if side is not None:
            if side not in SIDES:
                raise bad_value("side", side, "'q' or 'k'")
            m[1 - SIDES.index(side)] = 0
        if senders == "heads":
            keep = torch.tensor([s.startswith("L") for s in self.senders])
            m = m * keep
        flat = m.abs().flatten()
        out = []
        for j in flat.topk(min(n, int((flat > 0).sum()))).indices.tolist():
            s, r, c = (int(v) for v in torch.unravel_index(torch.tensor(j), m.shape))
            out.append((self.senders[c], self.receivers[r], SIDES[s], float(m[s, r, c])))
        return out

    def labels(self) -> dict[str, list[Any]]:
        return {"side": list(SIDES), "receiver": list(self.receivers), "sender": list(self.senders)}

    def headline(self) -> dict[str, Any]:
        top = self.top_edges(1)
        out: dict[str, Any] = {"prompts": int(self.edges.shape[0])}
        if top:
            s, r, side, wgt = top[0]
            out["top_edge"] = f"{s}→{r} ({side}) {wgt:.3g}"
        return out

    def to_frame(self) -> pd.DataFrame:
        df = labelled_frame(self.edges, ["prompt", "side", "receiver", "sender"], self.labels(), name="weight")
        return df[df["weight"] != 0].reset_index(drop=True)

    def _view_graph(self, n_edges: int = 20, side: str | None = None, senders: str = "heads") -> Figure:
        edges = self.top_edges(n_edges, side, senders)

        def layer_of(node: str) -> int:
            if node.startswith("L"):
                return int(node[1:].split("H")[0])
            if node == "embed":
                return -1
            return int(node.split(".")[1]) if "." in node else -1

        nodes: dict[int, list[str]] = {}
        for s, r, _, _ in edges:
            for x in (s, r):
                nodes.setdefault(layer_of(x), [])
                if x not in nodes[layer_of(x)]:
                    nodes[layer_of(x)].append(x)
        cols = sorted(nodes)
        pos = {x: (ci, nodes[la].index(x)) for ci, la in enumerate(cols) for x in nodes[la]}
        es = [(pos[s], pos[r], wgt, f"{side}-side") for s, r, side, wgt in edges]
        fig = layered_graph([nodes[la] for la in cols], es, layer_names=["emb" if la < 0 else f"L{la}" for la in cols],
                            weight_title="score units",
                            title=f"Communication graph: top {len(es)} edges through sparse QK components")
        fig.update_layout(width=None, autosize=True, margin={"l": 24, "r": 24, "t": 56, "b": 40})
        return fig

    def _view_heatmap(self, side: str = "q") -> Figure:
        if side not in SIDES:
            raise bad_value("side", side, "'q' or 'k'")
        m = self.mean()[SIDES.index(side)]
        return fit_width(heatmap(m, x_labels=list(self.senders), y_labels=list(self.receivers), x_title="sender",
                                 y_title="receiver", signed=True, colorbar_title="score units",
                                 title=f"Mean {side}-side edges"))


def communication_graph(model: Model, inputs: Inputs, *, receivers: HeadSpec | Iterable[HeadSpec] | None = None,
                        positions: Positions = -1, share: float = 0.9, skip_first: bool = True,
                        max_tokens: int | None = None, progress: bool | None = None) -> CommunicationGraph:
    """The communication graph of ``receivers`` over a prompt set, through their sparse QK components.

    Per prompt and receiver the pair is (dest = ``positions``, src = its most-attended source; with
    ``skip_first`` the first token — often an attention sink — is passed over when the destination is later).
    Several destinations per prompt are averaged.

    Args:
        model: a loaded model.
        inputs: prompts (texts, ids, a Trace or a TraceStore).
        receivers: receiving heads (``None``: every head of layer 1 and later).
        positions: destination positions per prompt (``-1``: the last real token).
        share: the share of the score the sparse set reaches.
        skip_first: skip position 0 as a source (unless it is the destination).
        max_tokens: truncate texts.
        progress: a progress bar over prompts.

    Example:
        >>> import interp
        >>> from interp.heads import communication_graph
        >>> toy = interp.load_model("toy-induction")
        >>> g = communication_graph(toy, torch.tensor([[1, 5, 9, 3, 1, 5]]), receivers="L1H3")
        >>> g.edges.shape  # prompt, side, receiver, sender
        torch.Size([1, 2, 1, 14])
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise bad_value("share", share, "a number in (0, 1]")
    w = model.weights
    L, H = int(w.W_Q.shape[0]), int(w.W_Q.shape[1])
    recv = heads_of(receivers, w) if receivers is not None else [HeadRef(la, h) for la in range(1, L) for h in range(H)]
    if not recv:
        raise BadInputError(f"{model.name} has one layer: no head has upstream heads")
    layers = sorted({h.layer for h in recv})
    trace = ensure_trace(model, inputs, _qk.hooks_for(layers, upstream=True), max_tokens=max_tokens)
    lengths = trace.attention_mask.sum(-1).tolist()
    B, n = trace.attention_mask.shape
    rot = _qk.rotations(model, n)
    nodes = sender_nodes(L, H)
    edges = torch.zeros(B, 2, len(recv), len(nodes), dtype=torch.float64)
    pairs = torch.zeros(B, len(recv), 2, dtype=torch.int64)
    nsp = torch.zeros(B, len(recv), dtype=torch.int64)
    scs = torch.zeros(B, len(recv), dtype=torch.float64)
    with torch.no_grad():
        states = {la: _qk.layer_qk(model, trace, la, [h.head for h in recv if h.layer == la], rot) for la in layers}
        for b in progress_bar(range(B), desc="graph", unit="prompt", enabled=progress):
            dests = resolve_positions(positions, int(lengths[b]), "position", sequence=b)
            writers = {la: _writers(model, trace, la, b) for la in layers}
            for ri, head in enumerate(recv):
                st = states[head.layer]
                hi = st.heads.index(head.head)
                pat = trace[_qk.name(f"pattern.{head.layer}")][b, head.head].double().cpu()
                vecs, index = writers[head.layer]
                normed = (vecs - vecs.mean(-1, keepdim=True) if st.centre else vecs) / st.sigma[b]  # [node, n, d]
                for i in dests:
                    row = pat[i, :i + 1].clone()
                    if skip_first and i > 0:
                        row[0] = -1.0
                    j = int(row.argmax())
                    e_q, e_k, ns, s = pair_edges(st, b, hi, i, j, normed, share)
                    edges[b, 0, ri, index] += e_q[:-1] / len(dests)
                    edges[b, 1, ri, index] += e_k[:-1] / len(dests)
                    edges[b, 0, ri, -1] += float(e_q[-1]) / len(dests)
                    edges[b, 1, ri, -1] += float(e_k[-1]) / len(dests)
                    pairs[b, ri] = torch.tensor([i, j])
                    nsp[b, ri] = ns
                    scs[b, ri] = s
    return CommunicationGraph(edges=edges.float(), pairs=pairs, n_sparse=nsp, scores=scs.float(),
                              receivers=tuple(str(h) for h in recv), senders=tuple(nodes), share=float(share),
                              model_id=model.name)


def sparse_set(st: _qk.LayerQK, b: int, hi: int, i: int, j: int, share: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """At one pair: ``(K, S_K, U_K [r, |K|], V_K [r, |K|], terms, score)`` with U/V in the Qa/Qb coordinates."""
    o = st.offset(i - j)
    Uc, S, Vc = st.Uc[hi, o], st.S[hi, o], st.Vc[hi, o]
    pa = st.a[b, hi, i] @ Uc
    pb = st.b[b, hi, j] @ Vc
    terms = S * pa * pb
    score = float(terms.sum())
    sgn = 1.0 if score >= 0 else -1.0
    order = (terms * sgn).argsort(descending=True)
    csum = (terms * sgn)[order].cumsum(0)
    ns = int((csum < share * abs(score) - 1e-9 * (1 + abs(score))).sum()) + 1
    K = order[:min(ns, len(order))]
    return K, S[K], Uc[:, K], Vc[:, K], terms, score


def pair_edges(st: _qk.LayerQK, b: int, hi: int, i: int, j: int, normed: torch.Tensor, share: float
               ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Query- and key-side edges ``[node + 1]`` (the last is the bias coordinate) of every writer at one pair."""
    K, SK, UK, VK, _, score = sparse_set(st, b, hi, i, j, share)
    pa = st.a[b, hi, i] @ UK  # [|K|]
    pb = st.b[b, hi, j] @ VK
    d = normed.shape[-1]
    wq = UK @ (SK * pb)  # [r]: the query-side reading vector in Qa coordinates
    wk = VK @ (SK * pa)
    Qa, Qb = st.Qa[hi], st.Qb[hi]  # [d+1, r]
    e_q = torch.cat([normed[:, i] @ (Qa[:d] @ wq), (Qa[d] @ wq)[None]])
    e_k = torch.cat([normed[:, j] @ (Qb[:d] @ wk), (Qb[d] @ wk)[None]])
    return e_q, e_k, len(K), score


@dataclass(frozen=True, repr=False)
class SubspaceValidation(Result):
    """Removing the receiver's sparse read subspace from a sender's output, against random subspaces.

    Views: ``"drops"`` (default): the score drop of each edge's sparse removal against the random removals.

    Attributes:
        sparse_drop: ``[edge]`` score drop (original − edited, sign-aligned with the edge) when the sparse
            subspace is removed from the sender's output at the position it feeds (mean over prompts).
        random_drop: ``[edge, draw]`` the same for random subspaces of the same dimension.
        attention_drop: ``[edge]`` drop in the receiver's attention weight at the pair (sparse removal).
        random_attention_drop: ``[edge, draw]``.
        edges: per edge ``"L0H2→L1H3 (k)"``.
        weights: ``[edge]`` the edge weights from the graph.
        model_id: the model.
    """

    AXES: ClassVar[dict[str, tuple[str, ...]]] = {
        "sparse_drop": ("edge",), "random_drop": ("edge", "draw"), "attention_drop": ("edge",),
        "random_attention_drop": ("edge", "draw"), "weights": ("edge",)}
    VIEWS: ClassVar[tuple[str, ...]] = ("drops",)

    sparse_drop: torch.Tensor
    random_drop: torch.Tensor
    attention_drop: torch.Tensor
    random_attention_drop: torch.Tensor
    weights: torch.Tensor
    edges: tuple[str, ...]
    model_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(self.edges))

    def p_values(self) -> torch.Tensor:
        """``[edge]``: share of random removals whose drop is at least the sparse removal's (add-one)."""
        ge = (self.random_drop >= self.sparse_drop[:, None]).sum(1)
        return (ge + 1) / (self.random_drop.shape[1] + 1)

    def labels(self) -> dict[str, list[Any]]:
        return {"edge": list(self.edges)}

    def headline(self) -> dict[str, Any]:
        if not len(self.edges):
            return {}
        return {"edges": len(self.edges), "mean_sparse_drop": round(float(self.sparse_drop.mean()), 4),
                "mean_random_drop": round(float(self.random_drop.mean()), 4)}

    def _view_drops(self) -> Figure:
        x = list(range(len(self.edges)))
        xs = [float(i) for i in x for _ in range(self.random_drop.shape[1])]
        ys = self.random_drop.flatten().tolist()
        fig = scatter(xs + [float(i) for i in x], ys + self.sparse_drop.tolist(),
                      color=["random"] * len(ys) + ["sparse subspace"] * len(x), x_title="edge",
                      y_title="score drop", title="Removing the sparse subspace vs random subspaces of the same size")
        fig.update_xaxes(tickvals=x, ticktext=list(self.edges))
        return fig


def subspace_removal(model: Model, inputs: Inputs, *, graph: CommunicationGraph, n_edges: int = 5,
                     n_random: int = 20, seed: int = 0, max_tokens: int | None = None) -> SubspaceValidation:
    """Validate the strongest head → head edges of ``graph`` by removing subspaces from the sender's output.

    For edge (sender, receiver, side) and each prompt: the receiver's sparse components at that prompt's pair
    read the residual stream along ``P u_k`` (query side, at the destination) or ``P v_k`` (key side, at the
    source); the sender's output at that position loses its projection on their span (an :class:`~interp.hooks.Add`
    on ``attn_out`` of the sender's layer), and the receiver's score at the pair is measured again. The control
    removes ``n_random`` random subspaces of the same dimension. One batched forward per (edge, prompt).

    Example:
        >>> import interp
        >>> from interp.heads import communication_graph, subspace_removal
        >>> toy = interp.load_model("toy-induction")
        >>> ids = torch.tensor([[1, 5, 9, 3, 1, 5]])
        >>> v = subspace_removal(toy, ids, graph=communication_graph(toy, ids, receivers="L1H3"), n_edges=1, n_random=3)
        >>> v.random_drop.shape
        torch.Size([1, 3])
    """
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise bad_value("n_random", n_random, "an int >= 1")
    top = graph.top_edges(n_edges, senders="heads")
    if not top:
        raise BadInputError("the graph has no head → head edge to validate")
    recv_layers = sorted({HeadRef.parse(r).layer for _, r, _, _ in top})
    trace = ensure_trace(model, inputs, _qk.hooks_for(recv_layers, upstream=True), max_tokens=max_tokens)
    if trace.n_seqs != graph.edges.shape[0]:
        raise BadInputError(f"inputs hold {trace.n_seqs} prompts but the graph was built on {graph.edges.shape[0]}")
    n = trace.attention_mask.shape[1]
    rot = _qk.rotations(model, n)
    g = torch.Generator().manual_seed(seed)
    w = model.weights
    d = int(w.W_Q.shape[2])
    out_s, out_r, out_a, out_ar, labels, wts = [], [], [], [], [], []
    with torch.no_grad():
        for snd, rcv, side, wgt in top:
            sref, rref = HeadRef.parse(snd), HeadRef.parse(rcv)
            st = _qk.layer_qk(model, trace, rref.layer, [rref.head], rot)
            ri = graph.receivers.index(rcv)
            sd, rd, ad, ard = [], [], [], []
            for b in range(trace.n_seqs):
                i, j = (int(v) for v in graph.pairs[b, ri])
                K, _, UK, VK, _, score0 = _sparse_for(st, b, i, j, graph.share)
                basis = (st.Qa[0][:d] @ UK) if side == "q" else (st.Qb[0][:d] @ VK)  # [d, |K|]
                if st.centre:
                    basis = basis - basis.mean(0, keepdim=True)
                p = i if side == "q" else j
                z = trace[_qk.name(f"z.{sref.layer}")][b, p, sref.head].double().cpu()
                c = z @ w.W_O[sref.layer, sref.head].double().cpu()  # the sender's output at p
                subspaces = [basis] + [torch.randn(d, basis.shape[1], generator=g, dtype=torch.float64)
                                       for _ in range(n_random)]
                deltas = torch.zeros(len(subspaces), n, d, dtype=torch.float64)
                for s_i, sub in enumerate(subspaces):
                    q, _ = torch.linalg.qr(sub)
                    deltas[s_i, p] = -(c @ q) @ q.T
                ids = trace.input_ids[b:b + 1].expand(len(subspaces), -1)
                mask = trace.attention_mask[b:b + 1].expand(len(subspaces), -1)
                edit = Add(f"attn_out.{sref.layer}", vector=deltas.to(model.dtype))
                res = model.run((ids, mask), capture=[f"q.{rref.layer}", f"k.{rref.layer}", f"pattern.{rref.layer}"],
                                interventions=[edit], stop_early=True).trace
                q_ = res[_qk.name(f"q.{rref.layer}")][:, i, rref.head].double().cpu()
                k_ = res[_qk.name(f"k.{rref.layer}")][:, j, rref.head].double().cpu()
                new = attention_scaling(model, rref.layer) * (q_ * k_).sum(-1)
                att0 = float(trace[_qk.name(f"pattern.{rref.layer}")][b, rref.head, i, j])
                att = res[_qk.name(f"pattern.{rref.layer}")][:, rref.head, i, j].double().cpu()
                sign = 1.0 if wgt >= 0 else -1.0
                drop = (st.scores[b, 0, i, j] - new) * sign
                sd.append(drop[0])
                rd.append(drop[1:])
                ad.append(att0 - att[0])
                ard.append(att0 - att[1:])
                del K, score0
            out_s.append(torch.stack(sd).mean())
            out_r.append(torch.stack(rd).mean(0))
            out_a.append(torch.stack(ad).mean())
            out_ar.append(torch.stack(ard).mean(0))
            labels.append(f"{snd}→{rcv} ({side})")
            wts.append(wgt)
    return SubspaceValidation(sparse_drop=torch.stack(out_s).float(), random_drop=torch.stack(out_r).float(),
                              attention_drop=torch.stack(out_a).float(),
                              random_attention_drop=torch.stack(out_ar).float(), weights=torch.tensor(wts),
                              edges=tuple(labels), model_id=model.name)


def _sparse_for(st: _qk.LayerQK, b: int, i: int, j: int, share: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    return sparse_set(st, b, 0, i, j, share)


__all__ = ["CommunicationGraph", "SubspaceValidation", "communication_graph", "sender_nodes", "subspace_removal"]
