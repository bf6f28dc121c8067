"""Tasks: a high-level causal model tied to a network's prompts and answers, and the base/source pairs sampled
from it with the counterfactual answer each interchange should give.

A :class:`CausalTask` turns an input setting of its :class:`~interp.causal.CausalModel` into a prompt (a text
for a language model, or token ids for a toy model) and an output value into an answer token. Its
:meth:`~CausalTask.sample` draws :class:`InterchangeData`: base prompts, one source prompt per interchanged
variable and example, the base answers and the counterfactual answers (what the high-level model outputs when
the variables take their values on the sources).

Example:
    >>> from interp.causal import hierarchical_equality
    >>> task = hierarchical_equality(n_symbols=6)
    >>> data = task.sample(8, variables=["WX"], seed=0)
    >>> len(data), data.variables, len(data.sources["WX"])
    (8, ('WX',), 8)
    >>> data.changed  # the share of pairs whose interchange changes the answer
    0.5
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from interp.causal.graph import CausalModel
from interp.errors import BadInputError, unknown_name

Prompt = str | tuple[int, ...]
"""A prompt: a text (language models) or token ids (toy models without a tokenizer)."""
Answer = str | int
"""An answer token: its text (one token of the model's tokenizer, e.g. ``" Mary"``) or its id."""


@dataclass(frozen=True)
class InterchangeData:
    """Base/source pairs for interchange interventions, with the answers the high-level model gives.

    Attributes:
        task: the task's name.
        variables: the variables interchanged (several: a multi-source interchange, one source each).
        base_inputs: ``[n]`` high-level input settings of the bases.
        source_inputs: ``{variable: [n] settings}`` of the sources.
        base: ``[n]`` base prompts; ``sources``: ``{variable: [n] prompts}``.
        labels: ``[n]`` the base answers; ``counterfactuals``: ``[n]`` the answers after the interchange.
        candidates: the answer tokens the network's prediction is read among (``None``: the whole vocabulary).
    """

    task: str
    variables: tuple[str, ...]
    base_inputs: tuple[dict[str, Any], ...]
    source_inputs: dict[str, tuple[dict[str, Any], ...]]
    base: tuple[Prompt, ...]
    sources: dict[str, tuple[Prompt, ...]]
    labels: tuple[Answer, ...]
    counterfactuals: tuple[Answer, ...]
    candidates: tuple[Answer, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.base)
        if n == 0:
            raise BadInputError("interchange data needs at least one base/source pair")
        for name, seq in (("base_inputs", self.base_inputs), ("labels", self.labels),
                          ("counterfactuals", self.counterfactuals)):
            if len(seq) != n:
                raise BadInputError(f"{name} has {len(seq)} entries but there are {n} bases")
        for var in self.variables:
            if var not in self.sources or len(self.sources[var]) != n:
                raise BadInputError(f"variable {var!r} needs one source prompt per base ({n})")

    def __len__(self) -> int:
        return len(self.base)

    @property
    def changed(self) -> float:
        """The share of pairs whose counterfactual answer differs from the base answer (a null intervention's
        IIA is ``1 - changed``)."""
        return sum(a != b for a, b in zip(self.labels, self.counterfactuals, strict=True)) / len(self)

    def subset(self, index: Sequence[int] | slice) -> InterchangeData:
        """The pairs at ``index`` (a list of ints or a slice)."""
        idx = list(range(len(self)))[index] if isinstance(index, slice) else [int(i) for i in index]
        if not idx:
            raise BadInputError("the subset selects no pairs")

        def pick(seq: Sequence[Any]) -> tuple[Any, ...]:
            return tuple(seq[i] for i in idx)

        return replace(self, base_inputs=pick(self.base_inputs), base=pick(self.base), labels=pick(self.labels),
                       counterfactuals=pick(self.counterfactuals),
                       source_inputs={v: pick(s) for v, s in self.source_inputs.items()},
                       sources={v: pick(s) for v, s in self.sources.items()})

    def split(self, test: float = 0.2, seed: int = 0) -> tuple[InterchangeData, InterchangeData]:
        """``(train, test)``: a seeded random split with a ``test`` share of the pairs in the second part."""
        if not 0 < test < 1:
            raise BadInputError(f"bad test share {test!r}; valid: a number between 0 and 1")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_test = max(1, min(len(self) - 1, round(test * len(self))))
        return self.subset(sorted(order[n_test:])), self.subset(sorted(order[:n_test]))


@dataclass(frozen=True)
class CausalTask:
    """A causal model tied to a network: how an input setting becomes a prompt and an output an answer token.

    Attributes:
        name: a short name (``"hierarchical_equality"``).
        causal_model: the high-level model.
        prompt: ``prompt(inputs) -> str | token ids``.
        answer: ``answer(output value) -> str | int``: the answer token (one token of the tokenizer, or an id).
        candidates: the answer tokens a prediction is read among (``None``: the whole vocabulary).
        positions: named token positions of the prompts (``{"last": -1}``), for alignments and reports.
        description: one sentence for reports.
    """

    name: str
    causal_model: CausalModel
    prompt: Callable[[dict[str, Any]], Prompt | Sequence[int]]
    answer: Callable[[Any], Answer]
    candidates: tuple[Answer, ...] | None = None
    positions: Mapping[str, int] = field(default_factory=dict)
    description: str = ""

    def _prompt(self, inputs: Mapping[str, Any]) -> Prompt:
        p = self.prompt(dict(inputs))
        return p if isinstance(p, str) else tuple(int(t) for t in p)

    def sample(self, n: int, *, variables: str | Sequence[str] = (), seed: int = 0, changed: float | None = 0.5,
               max_tries: int = 200) -> InterchangeData:
        """``n`` base/source pairs for interchanging ``variables`` (none: the bases alone, for task accuracy).

        Args:
            n: pairs to draw.
            variables: the variables to interchange, each from its own source (a multi-source interchange).
            seed: seeds the draw.
            changed: the share of pairs whose interchange changes the answer (``None``: as they fall). Half
                by default, so that an intervention that does nothing scores 0.5.
            max_tries: draws per pair before giving up on the ``changed`` share.

        Raises:
            BadInputError: a variable the causal model lacks, or one whose interchange (almost) never changes
                the answer when ``changed`` asks for it.
        """
        cm = self.causal_model
        vars_ = (variables,) if isinstance(variables, str) else tuple(variables)
        for v in vars_:
            if v not in cm.variables:
                raise unknown_name("variable", v, cm.variables)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadInputError(f"bad n {n!r}; valid: an int >= 1")
        if changed is not None and not 0 <= changed <= 1:
            raise BadInputError(f"bad changed share {changed!r}; valid: a number in [0, 1] or None")
        rng = random.Random(seed)
        want_changed = n if changed is None else round(changed * n)
        want_same = n - want_changed
        rows: list[tuple[dict[str, Any], dict[str, dict[str, Any]], Any, Any]] = []
        n_changed = n_same = 0
        tries = 0
        while len(rows) < n:
            tries += 1
            if tries > max_tries * n:
                raise BadInputError(
                    f"could not draw {want_changed} pairs whose interchange of {', '.join(vars_)} changes the "
                    f"answer (and {want_same} that do not) in {max_tries * n} draws; pass changed=None")
            base = cm.sample(rng)
            srcs = {v: cm.sample(rng) for v in vars_}
            out = cm.run(base)[cm.output]
            cf = cm.interchange(base, srcs)[cm.output] if vars_ else out
            is_changed = cf != out
            if changed is not None and vars_:
                if is_changed and n_changed >= want_changed:
                    continue
                if not is_changed and n_same >= want_same:
                    continue
            n_changed += is_changed
            n_same += not is_changed
            rows.append((base, srcs, out, cf))
        rng.shuffle(rows)
        return InterchangeData(
            task=self.name, variables=vars_, base_inputs=tuple(r[0] for r in rows),
            source_inputs={v: tuple(r[1][v] for r in rows) for v in vars_},
            base=tuple(self._prompt(r[0]) for r in rows),
            sources={v: tuple(self._prompt(r[1][v]) for r in rows) for v in vars_},
            labels=tuple(self.answer(r[2]) for r in rows), counterfactuals=tuple(self.answer(r[3]) for r in rows),
            candidates=self.candidates, meta={"seed": seed})


def answer_ids(model_vocab: int, tokenizer: Any, answers: Sequence[Answer], what: str = "answer") -> torch.Tensor:
    """``[n]`` token ids of answers given as ids or as texts of exactly one token.

    Raises:
        BadInputError: an id outside the vocabulary, or a text that is not exactly one token.
    """
    cache: dict[Answer, int] = {}
    out = []
    for a in answers:
        if a not in cache:
            if isinstance(a, bool) or not isinstance(a, (int, str)):
                raise BadInputError(f"bad {what} {a!r}; valid: a token id or a text of one token")
            if isinstance(a, int):
                if not 0 <= a < model_vocab:
                    raise BadInputError(f"{what} token id {a} is outside the vocabulary (valid: 0..{model_vocab - 1})")
                cache[a] = a
            else:
                if tokenizer is None:
                    raise BadInputError(f"{what} {a!r} is a text but the model has no tokenizer; give token ids")
                ids = tokenizer.encode(a, add_special_tokens=False)
                if len(ids) != 1:
                    raise BadInputError(f"{what} {a!r} is {len(ids)} tokens for this tokenizer; an answer must be "
                                        "exactly one token (e.g. ' Mary' with its leading space)")
                cache[a] = int(ids[0])
        out.append(cache[a])
    return torch.tensor(out, dtype=torch.long)


__all__ = ["Answer", "CausalTask", "InterchangeData", "Prompt", "answer_ids"]
