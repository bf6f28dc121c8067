"""Models whose circuits are known, their tasks and their true circuits.

The shipped toy induction model (``interp.load_model("toy-induction")``, 2 attention-only layers of 4
heads): on ``BOS, A, A[:k]`` it predicts ``A[k]``. Its circuit, by construction of the task, is
K-composition: a layer-0 previous-token head copies each token into the next position (``input -> prev.v``;
its pattern reads the tokens too: ``input -> prev.q/k``),
a layer-1 induction head finds the position after the earlier occurrence through its key
(``prev -> ind.k``), copies the token there (``input -> ind.v``) and writes it to the logits
(``ind -> logits``). The corrupted prompts replace the first ``A`` by other random tokens, so the last
position's own token (the induction head's query) is the same in both runs and the query edge carries no
difference. The heads are read off the attention patterns (:func:`induction_heads`).

Example:
    >>> from interp.circuits import induction_task, load_toy, toy_truth
    >>> m = load_toy()
    >>> truth = toy_truth(m)
    >>> int(truth.selected.sum()), sorted({r for _, r, _ in truth.edge_list()})[:3]
    (22, ['L0H2.k', 'L0H2.q', 'L0H2.v'])
"""

from __future__ import annotations

import torch

from interp.circuits.graph import Graph, build_graph
from interp.circuits.result import Circuit
from interp.circuits.task import CircuitTask
from interp.errors import BadInputError
from interp.models import Model

BOS = 0


def load_toy() -> Model:
    """The shipped toy induction model (``interp.load_model("toy-induction")``)."""
    from interp.models.registry import load_model

    return load_model("toy-induction")


def induction_task(model: Model, *, batch: int = 16, half: int = 12, query: int = 6, seed: int = 0) -> CircuitTask:
    """Clean ``BOS, A, A[:query]`` → ``A[query]``; corrupted ``BOS, A', A[:query]`` (``A'`` other random tokens).

    Metric: the answer's logit minus the mean logit (``logit_diff`` against nothing is the raw logit, which a
    shared bias would dominate; here the answer is contrasted with the first prompt's ``A'[query]``).
    """
    if not 0 < query < half:
        raise BadInputError(f"query must be in (0, {half}), got {query}")
    gen = torch.Generator().manual_seed(seed)
    vocab = model.dims.d_vocab
    a = torch.randint(1, vocab, (batch, half), generator=gen)
    a2 = (a + torch.randint(1, vocab - 1, (batch, half), generator=gen) - 1) % (vocab - 1) + 1  # differs everywhere
    bos = torch.full((batch, 1), BOS)
    clean = torch.cat([bos, a, a[:, :query]], 1)
    corrupt = torch.cat([bos, a2, a[:, :query]], 1)
    return CircuitTask(clean, torch.ones_like(clean), corrupt, a[:, query].clone(), a2[:, query].clone(),
                       "logit_diff", "corrupted", "induction")


IOI_PAIRS = (
    ("When Mary and John went to the store, John gave a drink to", "When Mary and John went to the store, Mary gave a drink to",
     " Mary", " John"),
    ("When John and Mary went to the store, Mary gave a drink to", "When John and Mary went to the store, John gave a drink to",
     " John", " Mary"),
    ("When Mary and John went to the park, John gave a ball to", "When Mary and John went to the park, Mary gave a ball to",
     " Mary", " John"),
    ("When John and Mary went to the park, Mary gave a ball to", "When John and Mary went to the park, John gave a ball to",
     " John", " Mary"),
)
"""Indirect-object prompts with their corrupted twins (the subject's second mention swapped), answer and wrong name."""


def ioi_task(model: Model, *, n: int = 2) -> CircuitTask:
    """The first ``n`` (1-4) of :data:`IOI_PAIRS` as a task (metric: answer minus wrong logit)."""
    from interp.circuits.task import make_task

    if not 1 <= n <= len(IOI_PAIRS):
        raise BadInputError(f"n must be in 1..{len(IOI_PAIRS)}, got {n}")
    pairs = IOI_PAIRS[:n]
    return make_task(model, [p[0] for p in pairs], corrupt=[p[1] for p in pairs], answer=[p[2] for p in pairs],
                     wrong=[p[3] for p in pairs], name="ioi")


TASKS = ("induction", "ioi")


def named_task(model: Model, *, name: str) -> CircuitTask:
    """A shipped task by name: ``"induction"`` (:func:`induction_task`, for the toy model) or ``"ioi"`` (:func:`ioi_task`)."""
    if name == "induction":
        return induction_task(model)
    if name == "ioi":
        return ioi_task(model)
    from interp.errors import unknown_name

    raise unknown_name("task", name, TASKS)


def _pattern_scores(model: Model, half: int = 12, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(1, model.dims.d_vocab, (batch, half), generator=gen)
    ids = torch.cat([torch.full((batch, 1), BOS), a, a], 1)
    res = model.run(ids, capture="pattern")
    n = model.dims.n_layers
    prev = torch.zeros(n, model.dims.n_heads)
    ind = torch.zeros(n, model.dims.n_heads)
    q = torch.arange(half + 1, 2 * half + 1)
    for L in range(n):
        p = res.trace[f"blocks.{L}.attn.hook_pattern"]  # [b, head, q, k]
        prev[L] = p[:, :, q, q - 1].mean((0, 2))
        ind[L] = p[:, :, q, q - half + 1].mean((0, 2))
    return prev, ind


def induction_heads(model: Model, *, threshold: float = 0.3) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(previous-token heads, induction heads)`` as ``(layer, head)``: heads whose mean attention on a
    repeated random sequence goes to the previous token / to the token after the earlier occurrence."""
    prev, ind = _pattern_scores(model)
    p = [(int(L), int(h)) for L, h in (prev > threshold).nonzero().tolist()]
    i = [(int(L), int(h)) for L, h in (ind > threshold).nonzero().tolist()]
    return p, i


def truth_circuit(graph: Graph, edges: list[tuple[str, str]], *, name: str = "truth", model: str = "") -> Circuit:
    """A :class:`Circuit` selecting ``edges`` (``(sender, receiver)`` names) of ``graph``."""
    names = {n: i for i, n in enumerate(graph.edge_names())}
    sel = torch.zeros(graph.n_edges, dtype=torch.bool)
    for s, r in edges:
        key = f"{s}->{r}"
        if key not in names:
            raise BadInputError(f"{key} is not an edge of this graph")
        sel[names[key]] = True
    return Circuit.from_graph(graph, sel.float(), sel, method=name, model=model)


def toy_truth(model: Model) -> Circuit:
    """The toy induction model's true circuit (module docs)."""
    prev, ind = induction_heads(model)
    prev = [p for p in prev if p[0] == 0]
    ind = [i for i in ind if i[0] == 1]
    if not prev or not ind:
        raise BadInputError("no previous-token head in layer 0 or no induction head in layer 1: not the toy model?")
    edges = []
    for L, h in prev:
        edges += [("input", f"L{L}H{h}.{x}") for x in "qkv"]
    for L, h in ind:
        for pl, ph in prev:
            edges.append((f"L{pl}H{ph}", f"L{L}H{h}.k"))
        edges += [("input", f"L{L}H{h}.v"), (f"L{L}H{h}", "logits")]
    return truth_circuit(build_graph(model), edges, model=model.name)


__all__ = ["IOI_PAIRS", "TASKS", "induction_heads", "induction_task", "ioi_task", "load_toy", "named_task", "toy_truth",
           "truth_circuit"]
