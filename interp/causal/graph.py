"""High-level causal models: variables, their parents and functions, written as plain Python.

A :class:`CausalModel` has input variables (each with the values it can take) and computed variables (a
function of their parents). Running it on an input setting gives every variable's value; an *intervention*
fixes some variables to given values; an *interchange* sets variables to the values they take on other
inputs (the sources): the counterfactual an interchange intervention on a network is checked against
(Geiger et al., "Causal Abstraction for Faithful Model Interpretation").

Example:
    >>> from interp.causal import CausalModel
    >>> cm = CausalModel(inputs={"a": range(3), "b": range(3), "c": range(3), "d": range(3)},
    ...                  functions={"WX": (("a", "b"), lambda a, b: a == b),
    ...                             "WY": (("c", "d"), lambda c, d: c == d),
    ...                             "O": (("WX", "WY"), lambda x, y: x == y)}, output="O")
    >>> base = {"a": 0, "b": 0, "c": 1, "d": 2}
    >>> cm.run(base)["O"]
    False
    >>> cm.interchange(base, {"WX": {"a": 1, "b": 2, "c": 0, "d": 0}})["O"]  # WX := False, from the source
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from interp.errors import BadInputError, unknown_name

Function = Callable[..., Any]
Sampler = Callable[[random.Random], dict[str, Any]]


class CausalModel:
    """A high-level causal model: input variables with their values, computed variables ``name: (parents,
    function)``, and the output variable.

    Args:
        inputs: ``{name: values}``: the input variables and the values each can take (any iterable of hashable
            values; sampling draws uniformly from them unless ``sampler`` is given).
        functions: ``{name: (parents, function)}``: ``function(*parent_values)`` computes the variable.
        output: the variable the network's answer encodes.
        sampler: ``sampler(rng) -> {input: value}``, for input distributions that are not uniform and
            independent (e.g. equality tasks balanced between equal and unequal pairs).
        name: a label for reports.

    Raises:
        BadInputError: a variable defined twice, a parent that is no variable, an output that is no
            variable, or variables whose parents form a cycle (the message names the cycle).
    """

    def __init__(self, inputs: Mapping[str, Iterable[Hashable]], functions: Mapping[str, tuple[Sequence[str], Function]],
                 output: str, *, sampler: Sampler | None = None, name: str = "") -> None:
        self.name = name
        self.values: dict[str, tuple[Any, ...]] = {}
        for var, vals in inputs.items():
            domain = tuple(vals)
            if not domain:
                raise BadInputError(f"input variable {var!r} has no values; give the values it can take")
            self.values[var] = domain
        self.parents: dict[str, tuple[str, ...]] = {}
        self.functions: dict[str, Function] = {}
        for var, spec in functions.items():
            if var in self.values:
                raise BadInputError(f"variable {var!r} is both an input and a computed variable")
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
                raise BadInputError(f"computed variable {var!r} must be (parents, function), got {spec!r}")
            parents = (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
            self.parents[var] = parents
            self.functions[var] = spec[1]
        known = [*self.values, *self.functions]
        for var, parents in self.parents.items():
            for p in parents:
                if p not in known:
                    raise unknown_name(f"parent of {var!r}", p, known)
        if output not in known:
            raise unknown_name("output variable", output, known)
        self.output = output
        self.order = self._topological_order()
        self.sampler = sampler

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input variables, in the order given."""
        return tuple(self.values)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable, inputs first, then the computed ones in an order that respects their parents."""
        return self.order

    def _topological_order(self) -> tuple[str, ...]:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        order: list[str] = list(self.values)
        stack: list[str] = []

        def visit(v: str) -> None:
            if v in self.values or state.get(v) == 2:
                return
            if state.get(v) == 1:
                cycle = [*stack[stack.index(v):], v]
                raise BadInputError(f"the causal model's variables form a cycle: {' -> '.join(cycle)}; a variable "
                                    "cannot depend on itself (give each one only variables computed before it)")
            state[v] = 1
            stack.append(v)
            for p in self.parents[v]:
                visit(p)
            stack.pop()
            state[v] = 2
            order.append(v)

        for var in self.functions:
            visit(var)
        return tuple(order)

    def descendants(self, var: str) -> set[str]:
        """The variables computed (directly or not) from ``var``."""
        self._check_var(var)
        out: set[str] = set()
        for v in self.order:
            if any(p == var or p in out for p in self.parents.get(v, ())):
                out.add(v)
        return out

    def _check_var(self, var: str) -> None:
        if var not in self.values and var not in self.functions:
            raise unknown_name("variable", var, self.order)

    def run(self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every variable's value on ``inputs``, with ``interventions`` (``{variable: value}``) fixed.

        Raises:
            BadInputError: a missing input, or an intervention on a variable the model lacks.
        """
        fixed = dict(interventions or {})
        for var in fixed:
            self._check_var(var)
        out: dict[str, Any] = {}
        for var in self.values:
            if var in fixed:
                out[var] = fixed[var]
            elif var in inputs:
                out[var] = inputs[var]
            else:
                raise BadInputError(f"input {var!r} is missing from {dict(inputs)!r}; the inputs are "
                                    f"{', '.join(self.values)}")
        for var in self.order[len(self.values):]:
            out[var] = fixed[var] if var in fixed else self.functions[var](*(out[p] for p in self.parents[var]))
        return out

    def interchange(self, base: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The run on ``base`` with each variable of ``sources`` set to its value on its own source input (a
        multi-source interchange when several variables are given)."""
        fixed = {var: self.run(src)[var] for var, src in sources.items()}
        return self.run(base, fixed)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """One input setting: from ``sampler`` when given, else each input uniformly from its values."""
        if self.sampler is not None:
            got = self.sampler(rng)
            missing = [v for v in self.values if v not in got]
            if missing:
                raise BadInputError(f"the sampler's input setting {got!r} lacks {', '.join(missing)}")
            return dict(got)
        return {var: rng.choice(vals) for var, vals in self.values.items()}

    def __repr__(self) -> str:
        computed = ", ".join(f"{v}({', '.join(self.parents[v])})" for v in self.order[len(self.values):])
        return f"CausalModel({self.name + ': ' if self.name else ''}inputs {', '.join(self.values)}; {computed})"


__all__ = ["CausalModel"]
