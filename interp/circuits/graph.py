"""A model's computational graph for circuit discovery: nodes and edges through the residual stream.

Senders (nodes that write to the residual stream) are the input embeddings ``"input"``, every attention
head ``"L{l}H{h}"`` (its output in ``d_model``: ``z[..., h, :] @ W_O[l, h]``) and every MLP ``"MLP{l}"``.
Receivers (node inputs that read from it) are every head's query, key and value input
``"L{l}H{h}.q"`` / ``".k"`` / ``".v"`` (for grouped-query models the key/value inputs are per key/value
head: ``"L{l}KV{g}.k"``), every MLP's input ``"MLP{l}"`` and the unembedding ``"logits"``. An edge joins
every sender to every receiver after it: a head of layer ``l`` reads what the input and layers ``< l``
wrote; an MLP of layer ``l`` also reads layer ``l``'s heads; the logits read everything.

A receiver's input is the residual stream at its place, so patching the edges ``u -> v`` for ``u`` in a
set ``U`` feeds ``v`` the stream ``x + sum_{u in U} (src_u - cur_u)``, where ``cur_u`` is what ``u`` wrote in
this very run and ``src_u`` what it wrote in the source run (corrupted prompts, the mean, or zero); the
receiver then applies its own norm to that (``ln1`` for q/k/v, ``ln2`` for the MLP, the final norm for
the logits). Everything downstream is recomputed: the intervention is exact, not a linearisation.

Example:
    >>> from interp.circuits import build_graph, load_toy
    >>> g = build_graph(load_toy())  # attention-only: no MLP nodes
    >>> len(g.senders), len(g.receivers), g.n_edges
    (9, 25, 81)
    >>> g.edge_names()[:2], g.receivers[-2:]
    (['input->L0H0.q', 'input->L0H1.q'], ('L1H3.v', 'logits'))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import BadInputError
from interp.models import Model

# Where each supported family keeps the pieces the graph's receivers need. The adapters' tap table names
# the MLP, its norm (the resid_mid tap) and the final norm; these are the modules it does not name.
LAYOUTS: dict[str, dict[str, str]] = {
    "llama": {"ln1": "model.layers.{L}.input_layernorm", "q": "model.layers.{L}.self_attn.q_proj",
              "k": "model.layers.{L}.self_attn.k_proj", "v": "model.layers.{L}.self_attn.v_proj"},
    # one fused projection whose output is [q | k | v] along the last axis
    "gpt2": {"ln1": "transformer.h.{L}.ln_1", "qkv": "transformer.h.{L}.attn.c_attn"},
}


@dataclass(frozen=True)
class Graph:
    """Senders, receivers and edges of a model's graph (see the module docs for the names).

    Attributes:
        senders: node names in topological order (``input``, then per layer its heads and its MLP).
        receivers: node-input names in topological order (per layer q, k, v inputs, the MLP; ``logits``).
        edges: ``[edge, 2]`` (sender index, receiver index), sorted by receiver then sender.
        sender_layer / receiver_layer: the layer of each (``-1`` for ``input``, ``n_layers`` for ``logits``).
    """

    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    edges: torch.Tensor
    sender_layer: tuple[int, ...]
    receiver_layer: tuple[int, ...]

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    def edge_names(self) -> list[str]:
        """``"L0H1->L1H2.k"`` per edge."""
        return [f"{self.senders[s]}->{self.receivers[r]}" for s, r in self.edges.tolist()]

    def adjacency(self) -> torch.Tensor:
        """``[sender, receiver]`` bool: which pairs are edges."""
        a = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        a[self.edges[:, 0], self.edges[:, 1]] = True
        return a

    def dense(self, edge_values: torch.Tensor) -> torch.Tensor:
        """Per-edge values ``[..., edge]`` scattered into ``[..., sender, receiver]`` (zeros off the graph)."""
        out = torch.zeros(*edge_values.shape[:-1], len(self.senders), len(self.receivers), dtype=edge_values.dtype,
                          device=edge_values.device)
        out[..., self.edges[:, 0], self.edges[:, 1]] = edge_values
        return out

    def index(self, name: str) -> int:
        """The index of an edge ``"u->v"``."""
        names = self.edge_names()
        if name not in names:
            from interp.errors import unknown_name

            raise unknown_name("edge", name, names)
        return names.index(name)


def owner(receiver: str) -> str:
    """The node a receiver belongs to: ``"L1H2.k"`` → ``"L1H2"``, ``"MLP3"`` → ``"MLP3"``."""
    return receiver.split(".")[0]


def has_mlps(model: Model) -> bool:
    """False for attention-only models (every MLP output weight zero, as :func:`~interp.models.toy.make_attention_only`)."""
    try:
        return bool(model.weights.W_out.abs().sum() > 0)
    except BadInputError:  # no dense MLP (mixture of experts): keep them
        return True


def build_graph(model: Model, *, mlps: bool | None = None) -> Graph:
    """The graph of ``model`` (see the module docs).

    Args:
        model: a decoder of a supported family (``llama``: Llama, Mistral, Qwen, SmolLM and interp's toy models;
            ``gpt2``: GPT-2 and the IIT-trained models of :mod:`interp.causal`). GPT-2's position embeddings are
            the same in every run and are not a node: ``input`` is the token embedding.
        mlps: include MLP nodes (default: unless every MLP output weight is zero).

    Raises:
        BadInputError: a family the graph does not support yet.
    """
    check_supported(model)
    d = model.dims
    if mlps is None:
        mlps = has_mlps(model)
    gqa = d.n_kv_heads != d.n_heads
    senders, s_layer = ["input"], [-1]
    receivers: list[str] = []
    r_layer: list[int] = []
    for L in range(d.n_layers):
        heads = [f"L{L}H{h}" for h in range(d.n_heads)]
        kv = [f"L{L}KV{g}" for g in range(d.n_kv_heads)] if gqa else heads
        for names, suffix in ((heads, "q"), (kv, "k"), (kv, "v")):
            receivers += [f"{n}.{suffix}" for n in names]
            r_layer += [L] * len(names)
        senders += heads
        s_layer += [L] * d.n_heads
        if mlps:
            receivers.append(f"MLP{L}")
            r_layer.append(L)
            senders.append(f"MLP{L}")
            s_layer.append(L)
    receivers.append("logits")
    r_layer.append(d.n_layers)
    # u -> v when u's layer is before v's, or v is an MLP and u a head of its layer, or v is the logits
    sl, rl = torch.tensor(s_layer)[:, None], torch.tensor(r_layer)[None]
    s_mlp = torch.tensor([n.startswith("MLP") for n in senders])[:, None]
    r_mlp = torch.tensor([n.startswith("MLP") for n in receivers])[None]
    ok = (sl < rl) | (r_mlp & (sl == rl) & ~s_mlp) | torch.tensor([n == "logits" for n in receivers])[None]
    edges = ok.T.nonzero()[:, [1, 0]]  # sorted by receiver, then sender
    return Graph(tuple(senders), tuple(receivers), edges.contiguous(), tuple(s_layer), tuple(r_layer))


def check_supported(model: Model) -> None:
    """Raise :class:`BadInputError` unless the graph knows the model's family."""
    fam = model.adapter.family
    if fam not in LAYOUTS:
        raise BadInputError(f"circuit discovery supports the {', '.join(sorted(LAYOUTS))} families so far, "
                            f"not {fam!r} (its per-head q/k/v inputs need the norm and projection modules named)")


__all__ = ["LAYOUTS", "Graph", "build_graph", "check_supported", "has_mlps", "owner"]
