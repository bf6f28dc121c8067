"""Models compiled from RASP programs by Tracr, whose circuits are known from the compilation.

The models themselves load by name, ``interp.load_model("tracr-reverse")`` (:mod:`interp.models.compiled`, which
also holds :func:`load_compiled`, :func:`compiled_config`, :func:`compiled_ids` and :func:`compiled_outputs`;
they are re-exported here under their old names). This module adds what circuit discovery needs: each
program's true circuit and its task. ``data/circuits/<name>/tracr.json`` holds the config, the input
vocabulary, the output space, the known circuit and Tracr's own outputs on fixture inputs
(``data/circuits/build_tracr.py`` exports them, with a venv that has ``tracr-pypi``). There is no tokenizer:
inputs are token ids (:func:`compiled_ids`), the first always BOS.

=============  ===========================================  ==========================================
name           program (tracr.compiler.lib)                 compiled
=============  ===========================================  ==========================================
reverse        ``make_reverse(tokens)``, vocab {1, 2, 3}    4 layers: length (head + MLP), two MLPs, a head
hist           ``make_hist()``, vocab {a, b, c}             1 layer: selector width (head + MLP)
sort           ``make_sort(tokens, tokens)``, {1, 2, 3, 4}  3 layers: key MLP, selector width, a head
frac_prevs     ``make_frac_prevs(tokens == "x")``           2 layers: an MLP, a numerical mean head
=============  ===========================================  ==========================================

The true circuit (:func:`compiled_truth`) follows the RASP data flow: each operation's components (the
heads and MLPs the compiler assigned to it) read their inputs' components — a head's query, key and value
from its selector's queries, keys and the aggregated values; an MLP from its arguments; the logits from the
output's components. The input embedding is ``tokens``; ``indices`` are position embeddings, identical in
every run and no node of the graph. ``which="task"`` (default) keeps the edges whose sender's value differs
between inputs of the same length — what resampling the tokens can reveal (``reverse``'s length
sub-circuit is constant there); ``which="all"`` is the whole data flow.

Example:
    >>> import interp
    >>> from interp.circuits import compiled_task, compiled_truth
    >>> m = interp.load_model("tracr-hist")
    >>> m.dims.n_layers, m.dims.n_heads
    (1, 1)
    >>> [e[:2] for e in compiled_truth(m).edge_list()]  # doctest: +NORMALIZE_WHITESPACE
    [('input', 'L0H0.q'), ('input', 'L0H0.k'), ('L0H0', 'MLP0'), ('MLP0', 'logits')]
    >>> compiled_task(m).batch
    24
"""

from __future__ import annotations

from typing import Literal

import torch

from interp.circuits.graph import build_graph
from interp.circuits.known import truth_circuit
from interp.circuits.result import Circuit
from interp.circuits.task import CircuitTask
from interp.errors import BadInputError
from interp.models import Model
from interp.models.compiled import (
    COMPILED,
    COMPILED_MODELS,
    PREFIX,
    NoNorm,
    compiled_config,
    compiled_ids,
    compiled_outputs,
    data_dir,
    load_compiled,
)
from interp.models.compiled import config_of as _config_of


def compiled_task(model: Model, *, batch: int = 24, shift: int = 1) -> CircuitTask:
    """The fixture inputs as a task: clean input ``i``, corrupted input ``i + shift`` (resampled tokens, same
    length), read at the last position. Categorical outputs: the RASP answer's output minus the corrupted
    input's answer's (``logit_diff``); numerical outputs: how far the output moved from the corrupted input's
    answer toward the clean one's (``(y - y_corrupt) * sign(y_clean - y_corrupt)``, metric ``toward_clean``).
    """
    cfg = _config_of(model)
    fx = cfg["fixture"]
    if not 1 <= batch <= len(fx) or not 1 <= shift < len(fx):
        raise BadInputError(f"batch must be in 1..{len(fx)} and shift in 1..{len(fx) - 1}")
    clean = torch.tensor([f["ids"] for f in fx[:batch]])
    corrupt = torch.tensor([fx[(i + shift) % len(fx)]["ids"] for i in range(batch)])
    out = cfg["output"]
    if out["categorical"]:
        values = out["values"]
        answer = torch.tensor([values.index(f["expected"][-1]) for f in fx[:batch]])
        wrong = torch.tensor([values.index(fx[(i + shift) % len(fx)]["expected"][-1]) for i in range(batch)])
        return CircuitTask(clean, torch.ones_like(clean), corrupt, answer, wrong, "logit_diff", "corrupted", cfg["name"])
    good = torch.tensor([float(f["expected"][-1]) for f in fx[:batch]])
    bad = torch.tensor([float(fx[(i + shift) % len(fx)]["expected"][-1]) for i in range(batch)])
    sign = torch.sign(good - bad)

    def toward_clean(last_logits: torch.Tensor) -> torch.Tensor:
        """The output's move from the corrupted input's answer toward the clean one's (``[R*batch]``)."""
        reps = last_logits.shape[0] // batch
        b, s = bad.repeat(reps).to(last_logits.device), sign.repeat(reps).to(last_logits.device)
        return (last_logits[:, 0].float() - b) * s

    return CircuitTask(clean, torch.ones_like(clean), corrupt, None, None, toward_clean, "corrupted", cfg["name"])


def compiled_truth(model: Model, *, which: Literal["task", "all"] = "task") -> Circuit:
    """The compiled model's known circuit as a :class:`~interp.circuits.Circuit` over its graph (module docs)."""
    if which not in ("task", "all"):
        from interp.errors import bad_value

        raise bad_value("which", which, "'task' or 'all'")
    cfg = _config_of(model)
    edges = cfg["circuit"]["task_edges" if which == "task" else "edges"]
    return truth_circuit(build_graph(model), [(s, r) for s, r in edges], name="truth", model=model.name)


__all__ = ["COMPILED", "COMPILED_MODELS", "PREFIX", "NoNorm", "compiled_config", "compiled_ids", "compiled_outputs", "compiled_task",
           "compiled_truth", "data_dir", "load_compiled"]
