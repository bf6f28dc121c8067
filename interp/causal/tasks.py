"""The shipped tasks: hierarchical equality (Geiger et al.), a toy IOI task for the IIT-trained models, an
IOI-style name task and a small-addition task for SmolLM2.

- :func:`hierarchical_equality`: four symbols ``a b c d``; ``WX = (a == b)``, ``WY = (c == d)``, the answer
  ``O = (WX == WY)`` (token ids; for toy models).
- :func:`toy_ioi`: three names ``n1 n2 n3`` where ``n3`` repeats one of the first two; ``S`` is which one (the
  subject's slot), ``IO`` the other name, the answer (token ids; for toy models).
- :func:`ioi`: "When Mary and John went to the store, John gave a drink to" → `` Mary``; variables
  ``io_position`` (which of the two names is the indirect object) and ``io_name`` (SmolLM2-135M answers
  all of its prompts correctly: accuracy 1.0 on 64 prompts).
- :func:`addition`: two-shot "1 + 2 = 3\\n4 + 3 = 7\\n{a} + {b} = " → the digit of ``a + b`` (operands 0..4);
  variables ``a``, ``b``, ``sum``. SmolLM2-135M answers 24 of its 25 prompts (0.96; 0.78 of all 55 one-digit
  sums); comparing numbers ("Which number is larger, 3 or 7?") 0.61, "a plus b is" 0.64, bare "a + b = " 0.07
  (measured; docs/causal.md).

Example:
    >>> from interp.causal import hierarchical_equality
    >>> task = hierarchical_equality(n_symbols=4)
    >>> task.causal_model.run({"a": 1, "b": 1, "c": 2, "d": 3})["O"], task.prompt({"a": 1, "b": 1, "c": 2, "d": 3})
    (False, (1, 1, 2, 3, 6))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from interp.causal.graph import CausalModel
from interp.causal.task import CausalTask
from interp.errors import BadInputError, unknown_name

NAMES = ("Mary", "John", "Tom", "James", "Anna", "Sarah", "David", "Michael", "Emma", "Lisa", "Paul", "Kate",
         "Mark", "Alice", "Peter", "Jack", "Laura", "Susan", "Robert", "Bob")
"""Names that are one token each (with their leading space) for SmolLM2's tokenizer."""
IOI_TEMPLATES = (
    "When {A} and {B} went to the store, {S} gave a drink to",
    "After {A} and {B} went to the park, {S} handed a book to",
    "Then, {A} and {B} had a long argument. Afterwards {S} said to",
    "While {A} and {B} were working at the office, {S} gave a letter to",
)


def hierarchical_equality(n_symbols: int = 10) -> CausalTask:
    """Hierarchical equality on token ids: prompt ``(a, b, c, d, =)`` (symbols ``0..n_symbols-1``, ``=`` is
    ``n_symbols + 2``), answer ``True`` (id ``n_symbols + 1``) when ``(a == b) == (c == d)``, else ``False`` (id
    ``n_symbols``). Inputs are drawn so that ``WX`` and ``WY`` are each true half of the time. A model needs a
    vocabulary of ``n_symbols + 3``.

    Example:
        >>> task = hierarchical_equality()
        >>> x = {"a": 1, "b": 1, "c": 2, "d": 3}
        >>> task.prompt(x), task.causal_model.run(x)["O"]  # (1 = 1) = (2 = 3) is False
        ((1, 1, 2, 3, 12), False)
    """
    if n_symbols < 2:
        raise BadInputError(f"bad n_symbols {n_symbols!r}; valid: an int >= 2")
    symbols = range(n_symbols)

    def pair(rng: random.Random, equal: bool) -> tuple[int, int]:
        a = rng.randrange(n_symbols)
        if equal:
            return a, a
        b = rng.randrange(n_symbols - 1)
        return a, b + (b >= a)

    def sampler(rng: random.Random) -> dict[str, Any]:
        a, b = pair(rng, rng.random() < 0.5)
        c, d = pair(rng, rng.random() < 0.5)
        return {"a": a, "b": b, "c": c, "d": d}

    cm = CausalModel(inputs={"a": symbols, "b": symbols, "c": symbols, "d": symbols},
                     functions={"WX": (("a", "b"), lambda a, b: a == b), "WY": (("c", "d"), lambda c, d: c == d),
                                "O": (("WX", "WY"), lambda x, y: x == y)},
                     output="O", sampler=sampler, name="hierarchical equality")
    return CausalTask(name="hierarchical_equality", causal_model=cm,
                      prompt=lambda x: (x["a"], x["b"], x["c"], x["d"], n_symbols + 2),
                      answer=lambda o: n_symbols + int(bool(o)), candidates=(n_symbols, n_symbols + 1),
                      positions={"a": 0, "b": 1, "c": 2, "d": 3, "=": 4},
                      description="four symbols a b c d; the answer is whether (a = b) equals (c = d)")


def toy_ioi(n_names: int = 12) -> CausalTask:
    """A toy IOI task on token ids: prompt ``(n1, n2, n3)`` with ``n3`` repeating ``n1`` (``S = 0``) or ``n2``
    (``S = 1``); the answer is the other name, ``IO`` (ids ``0..n_names-1``).

    Example:
        >>> task = toy_ioi()
        >>> x = {"n1": 3, "n2": 5, "dup": 0}
        >>> task.prompt(x), task.causal_model.run(x)["O"]
        ((3, 5, 3), 5)
    """
    if n_names < 3:
        raise BadInputError(f"bad n_names {n_names!r}; valid: an int >= 3")
    names = range(n_names)

    def sampler(rng: random.Random) -> dict[str, Any]:
        n1, n2 = rng.sample(names, 2)
        return {"n1": n1, "n2": n2, "dup": rng.randrange(2)}

    cm = CausalModel(inputs={"n1": names, "n2": names, "dup": (0, 1)},
                     functions={"S": (("dup",), lambda d: d),
                                "IO": (("n1", "n2", "S"), lambda n1, n2, s: n2 if s == 0 else n1),
                                "O": (("IO",), lambda io: io)},
                     output="O", sampler=sampler, name="toy IOI")
    return CausalTask(name="toy_ioi", causal_model=cm,
                      prompt=lambda x: (x["n1"], x["n2"], x["n1"] if x["dup"] == 0 else x["n2"]),
                      answer=lambda o: int(o), candidates=tuple(names), positions={"n1": 0, "n2": 1, "s2": 2},
                      description="three names n1 n2 n3, n3 repeating one of the first two; the answer is the other")


def ioi(templates: Sequence[str] | None = None, names: Sequence[str] = NAMES) -> CausalTask:
    """An IOI-style name task for language models: ``"When {A} and {B} went to the store, {S} gave a drink to"``
    → the indirect object's name (with its leading space).

    Variables: ``io_position`` (``0``: the first name is the indirect object, ``1``: the second) and
    ``io_name``; the answer is ``io_name``. Interchanging ``io_position`` from a source answers with the base's
    name at the source's slot; interchanging ``io_name`` answers with the source's name. Prompts of different
    templates differ in length: align at positions counted from the end (``-1``: the last token).

    Example:
        >>> task = ioi()
        >>> x = {"template": 0, "A": "Mary", "B": "John", "s_first": False}
        >>> task.prompt(x), task.answer(task.causal_model.run(x)["O"])
        ('When Mary and John went to the store, John gave a drink to', ' Mary')
        >>> task.sample(4, variables="io_name", seed=0).changed  # half the interchanges change the answer
        0.5
    """
    temps = tuple(templates or IOI_TEMPLATES)
    if not temps or any("{A}" not in t or "{B}" not in t or "{S}" not in t for t in temps):
        raise BadInputError("IOI templates must each contain {A}, {B} and {S}")
    if len(set(names)) < 2:
        raise BadInputError("the IOI task needs at least two distinct names")

    def sampler(rng: random.Random) -> dict[str, Any]:
        a, b = rng.sample(list(names), 2)
        return {"template": rng.randrange(len(temps)), "A": a, "B": b, "s_first": rng.random() < 0.5}

    cm = CausalModel(inputs={"template": range(len(temps)), "A": names, "B": names, "s_first": (False, True)},
                     functions={"io_position": (("s_first",), lambda s: 1 if s else 0),
                                "io_name": (("A", "B", "io_position"), lambda a, b, p: b if p == 1 else a),
                                "O": (("io_name",), lambda n: n)},
                     output="O", sampler=sampler, name="IOI")

    def prompt(x: dict[str, Any]) -> str:
        s = x["A"] if x["s_first"] else x["B"]
        return temps[x["template"]].format(A=x["A"], B=x["B"], S=s)

    return CausalTask(name="ioi", causal_model=cm, prompt=prompt, answer=lambda n: " " + str(n),
                      positions={"end": -1},
                      description="two names, one repeated as the subject; the answer is the other name")


def addition(max_operand: int = 4, shots: str = "1 + 2 = 3\n4 + 3 = 7\n") -> CausalTask:
    """Small addition for language models: ``shots + "{a} + {b} = "`` → the digit of ``a + b``, operands
    ``0..max_operand`` (at most 4, so that every interchange's sum is one digit, one token). Variables ``a``,
    ``b`` (the operands) and ``sum``.

    Example:
        >>> task = addition()
        >>> task.prompt({"a": 2, "b": 3}).splitlines()[-1], task.answer(task.causal_model.run({"a": 2, "b": 3})["O"])
        ('2 + 3 = ', '5')
    """
    if not 1 <= max_operand <= 4:
        raise BadInputError(f"bad max_operand {max_operand!r}; valid: 1..4 (every sum, also after an interchange, "
                            "must be one digit)")
    ops = range(max_operand + 1)
    cm = CausalModel(inputs={"a": ops, "b": ops},
                     functions={"sum": (("a", "b"), lambda a, b: a + b), "O": (("sum",), lambda s: s)},
                     output="O", name="addition")
    return CausalTask(name="addition", causal_model=cm, prompt=lambda x: f"{shots}{x['a']} + {x['b']} = ",
                      answer=lambda s: str(s), candidates=tuple(str(i) for i in range(10)),
                      positions={"a": -6, "b": -3, "end": -1},
                      description="two-shot addition of one-digit numbers")


TASKS: dict[str, Callable[..., CausalTask]] = {
    "hierarchical_equality": hierarchical_equality, "toy_ioi": toy_ioi, "ioi": ioi, "addition": addition,
}
"""Every shipped task by name."""


def get_task(name: str, **kwargs: Any) -> CausalTask:
    """A shipped task by name (``"ioi"``, ``"addition"``, ``"hierarchical_equality"``, ``"toy_ioi"``).

    Example:
        >>> get_task("addition").prompt({"a": 2, "b": 3})
        '1 + 2 = 3\\n4 + 3 = 7\\n2 + 3 = '
    """
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return TASKS[name](**kwargs)


__all__ = ["IOI_TEMPLATES", "NAMES", "TASKS", "addition", "get_task", "hierarchical_equality", "ioi", "toy_ioi"]
