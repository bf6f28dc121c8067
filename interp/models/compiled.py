"""Models compiled from RASP programs by Tracr, loaded by name: ``load_model("tracr-reverse")``.

``data/circuits/<name>/`` holds what ``data/circuits/build_tracr.py`` exported (run with a venv that has
``tracr-pypi``; JAX is no dependency of interp): the weights as a GPT-2 state dict (``model.safetensors``) and
``tracr.json`` (the config, the input vocabulary, the output space, the known circuit and Tracr's own outputs
on fixture inputs). :func:`load_compiled` builds a ``transformers`` GPT-2 from them with its layer norms
replaced by the identity (Tracr has none), bidirectional attention (Tracr compiles non-causal models), ReLU
MLPs and no attention scale (Tracr's ``1/sqrt(key_size)`` is folded into the query weights), and wraps it as
an :class:`~interp.models.Model`; every interp tool runs on it. There is no tokenizer: inputs are token ids
(:func:`compiled_ids`), the first always BOS.

=================  ===========================================  ==========================================
name               program (tracr.compiler.lib)                 compiled
=================  ===========================================  ==========================================
tracr-reverse      ``make_reverse(tokens)``, vocab {1, 2, 3}    4 layers: length (head + MLP), two MLPs, a head
tracr-hist         ``make_hist()``, vocab {a, b, c}             1 layer: selector width (head + MLP)
tracr-sort         ``make_sort(tokens, tokens)``, {1, 2, 3, 4}  3 layers: key MLP, selector width, a head
tracr-frac_prevs   ``make_frac_prevs(tokens == "x")``           2 layers: an MLP, a numerical mean head
=================  ===========================================  ==========================================

Their true circuits, tasks and benchmark live in :mod:`interp.circuits` (``compiled_truth``, ``compiled_task``);
this module only loads them, so that ``interp.load_model`` (and every CLI command) knows the names.

Example:
    >>> import interp
    >>> m = interp.load_model("tracr-sort")
    >>> m.name, m.dims.n_layers
    ('tracr-sort', 3)
    >>> compiled_outputs(m, compiled_ids(m, [[3, 1, 2]])).argmax(-1)[0, 1:].tolist()  # sorted: classes rise
    [0, 1, 2]
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.errors import BadInputError, unknown_name
from interp.models.model import Model

COMPILED = ("reverse", "hist", "sort", "frac_prevs")
"""The compiled programs (``load_model`` names: ``tracr-`` + each)."""
PREFIX = "tracr-"
COMPILED_MODELS = tuple(PREFIX + n for n in COMPILED)
"""``("tracr-reverse", "tracr-hist", "tracr-sort", "tracr-frac_prevs")``: the names ``load_model`` knows."""


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
    """The identity, where GPT-2 has a layer norm (weight ones and bias zeros, so weight views read them).

    Example:
        >>> x = torch.randn(2, 3)
        >>> torch.equal(NoNorm(3)(x), x)
        True
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(d), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def load_compiled(name: str) -> Model:
    """A Tracr-compiled model (``"reverse"`` or ``"tracr-reverse"``, :data:`COMPILED`) as an interp
    :class:`~interp.models.Model` named ``tracr-<name>`` (module docs); ``load_model("tracr-<name>")`` calls it.

    Raises:
        UnknownNameError: not one of :data:`COMPILED`.

    Example:
        >>> load_compiled("hist").dims.n_layers
        1
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


def config_of(model: Model) -> dict[str, Any]:
    """The ``tracr.json`` of a loaded compiled model; a clear error for any other model."""
    if not model.name.startswith(PREFIX):
        raise BadInputError(f"{model.name!r} is not a compiled model (load one with load_model('tracr-reverse'), "
                            f"names: {', '.join(COMPILED_MODELS)})")
    return compiled_config(model.name)


def compiled_ids(model: Model, inputs: list[list[Any]]) -> torch.Tensor:
    """Token ids ``[batch, 1 + pos]`` of input sequences (values of the program's vocabulary), BOS first.

    Example:
        >>> compiled_ids(load_compiled("sort"), [[3, 1, 2]])  # BOS, then the values' ids
        tensor([[4, 2, 0, 1]])
    """
    cfg = config_of(model)
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
    cfg = config_of(model)
    ids = inputs if isinstance(inputs, torch.Tensor) else compiled_ids(model, inputs)
    with torch.no_grad():
        logits = model.hf(input_ids=ids.to(model.device)).logits
    return logits[..., :cfg["output"]["n_out"]].float().cpu()


__all__ = ["COMPILED", "COMPILED_MODELS", "PREFIX", "NoNorm", "compiled_config", "compiled_ids", "compiled_outputs",
           "config_of", "data_dir", "load_compiled"]
