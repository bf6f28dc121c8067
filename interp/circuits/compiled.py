"""Models compiled from RASP programs by Tracr, whose circuits are known from the compilation.

``data/circuits/<name>/`` holds what ``data/circuits/build_tracr.py`` exported (run with a venv that has
``tracr-pypi``; JAX is no dependency of interp): the weights as a GPT-2 state dict (``model.safetensors``) and
``tracr.json`` (the config, the input vocabulary, the output space, the known circuit and Tracr's own outputs
on fixture inputs). :func:`load_compiled` builds a ``transformers`` GPT-2 from them with its layer norms
replaced by the identity (Tracr has none), bidirectional attention (Tracr compiles non-causal models), ReLU
MLPs and no attention scale (Tracr's ``1/sqrt(key_size)`` is folded into the query weights), and wraps it as
an :class:`~interp.models.Model`; every interp tool runs on it. There is no tokenizer: inputs are token ids
(:func:`compiled_ids`), the first always BOS.

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
    >>> from interp.circuits import compiled_task, compiled_truth, load_compiled
    >>> m = load_compiled("hist")
    >>> m.dims.n_layers, m.dims.n_heads
    (1, 1)
    >>> [e[:2] for e in compiled_truth(m).edge_list()]  # doctest: +NORMALIZE_WHITESPACE
    [('input', 'L0H0.q'), ('input', 'L0H0.k'), ('L0H0', 'MLP0'), ('MLP0', 'logits')]
    >>> compiled_task(m).batch
    24
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from interp.circuits.graph import build_graph
from interp.circuits.known import truth_circuit
from interp.circuits.result import Circuit
from interp.circuits.task import CircuitTask
from interp.errors import BadInputError, unknown_name
from interp.models import Model

COMPILED = ("reverse", "hist", "sort", "frac_prevs")
PREFIX = "tracr-"


def data_dir() -> Path:
    """``data/circuits`` (the exported Tracr models)."""
    return Path(__file__).resolve().parents[2] / "data" / "circuits"


@cache
def compiled_config(name: str) -> dict[str, Any]:
    """The ``tracr.json`` of a compiled model (``"reverse"`` or ``"tracr-reverse"``).

    Example:
        >>> compiled_config("sort")["max_seq_len"], sorted(compiled_config("sort")["vocab"])[:3]
        (5, ['1', '2', '3'])
    """
    name = name.removeprefix(PREFIX)
    if name not in COMPILED:
        raise unknown_name("compiled model", name, COMPILED)
    path = data_dir() / name / "tracr.json"
    if not path.is_file():
        raise BadInputError(f"{path} is missing: run `.venv-tracr/bin/python data/circuits/build_tracr.py {name}`")
    out: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return out


class NoNorm(nn.Module):
    """The identity, where GPT-2 has a layer norm (weight ones and bias zeros, so weight views read them)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(d), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def load_compiled(name: str) -> Model:
    """A Tracr-compiled model (:data:`COMPILED`) as an interp :class:`~interp.models.Model` (module docs).

    Raises:
        UnknownNameError: not one of :data:`COMPILED`.
    """
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.registry import from_hf

    cfg = compiled_config(name)
    g = cfg["gpt2"]
    config = GPT2Config(**g, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, bos_token_id=cfg["vocab"][cfg["bos"]],
                        eos_token_id=None, pad_token_id=cfg["vocab"][cfg["pad"]])
    config._attn_implementation = "eager"  # no fused kernel that could assume a causal mask
    hf = GPT2LMHeadModel(config)
    d = int(g["n_embd"])
    for block in hf.transformer.h:
        block.ln_1, block.ln_2 = NoNorm(d), NoNorm(d)  # type: ignore[assignment]
        block.attn.is_causal = False  # type: ignore[union-attr]
    hf.transformer.ln_f = NoNorm(d)  # type: ignore[assignment]
    state = load_file(str(data_dir() / cfg["name"] / "model.safetensors"))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".ln_" not in k]
    if missing or unexpected:
        raise BadInputError(f"compiled model {cfg['name']!r}: missing {missing}, unexpected {unexpected}")
    hf.eval()
    return from_hf(hf, name=PREFIX + cfg["name"])


def _config_of(model: Model) -> dict[str, Any]:
    if not model.name.startswith(PREFIX):
        raise BadInputError(f"{model.name!r} is not a compiled model (load one with load_compiled)")
    return compiled_config(model.name)


def compiled_ids(model: Model, inputs: list[list[Any]]) -> torch.Tensor:
    """Token ids ``[batch, 1 + pos]`` of input sequences (values of the program's vocabulary), BOS first.

    Example:
        >>> compiled_ids(load_compiled("sort"), [[3, 1, 2]])  # BOS, then the values' ids
        tensor([[4, 2, 0, 1]])
    """
    cfg = _config_of(model)
    vocab = cfg["vocab"]
    rows = []
    for seq in inputs:
        if len(seq) != len(inputs[0]):
            raise BadInputError("every sequence must have the same length")
        missing = [x for x in seq if str(x) not in vocab]
        if missing:
            raise BadInputError(f"{missing} not in the vocabulary {cfg['vocab_values']}")
        rows.append([vocab[cfg["bos"]], *(vocab[str(x)] for x in seq)])
    return torch.tensor(rows, dtype=torch.long)


def compiled_outputs(model: Model, inputs: Any) -> torch.Tensor:
    """The model's outputs ``[batch, pos, n_out]`` on token ids: the unembedded residual (before Tracr's argmax).

    Example (sorting 3 1 2: after BOS the output classes rise):
        >>> m = load_compiled("sort")
        >>> compiled_outputs(m, compiled_ids(m, [[3, 1, 2]])).argmax(-1)[0, 1:].tolist()
        [0, 1, 2]
    """
    cfg = _config_of(model)
    ids = inputs if isinstance(inputs, torch.Tensor) else compiled_ids(model, inputs)
    with torch.no_grad():
        logits = model.hf(input_ids=ids.to(model.device)).logits
    return logits[..., :cfg["output"]["n_out"]].float().cpu()


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


__all__ = ["COMPILED", "NoNorm", "compiled_config", "compiled_ids", "compiled_outputs", "compiled_task",
           "compiled_truth", "data_dir", "load_compiled"]
