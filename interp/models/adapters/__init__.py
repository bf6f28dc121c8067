"""Adapters, one file per architecture family, and the registry that finds one for a config.

Example:
    >>> from interp.models.adapters import adapter_for
    >>> adapter_for("gpt2").family
    'gpt2'
"""

from __future__ import annotations

from collections.abc import Iterable

from interp.errors import BadInputError
from interp.models.adapters import bert, gpt2, gpt_neox, llama
from interp.models.adapters.base import Adapter, Dims, Tap, WeightViews


class AdapterRegistry:
    """Maps ``config.model_type`` to an :class:`Adapter`; registering a type twice raises."""

    def __init__(self, adapters: Iterable[Adapter] = ()) -> None:
        self._by_type: dict[str, Adapter] = {}
        for a in adapters:
            self.register(a)

    def register(self, adapter: Adapter) -> None:
        for t in adapter.model_types:
            if t in self._by_type:
                raise BadInputError(
                    f"model_type {t!r} is already served by adapter {self._by_type[t].family!r}; "
                    f"cannot register {adapter.family!r} for it too"
                )
        for t in adapter.model_types:
            self._by_type[t] = adapter

    def get(self, model_type: str) -> Adapter:
        try:
            return self._by_type[model_type]
        except KeyError:
            raise BadInputError(
                f"no adapter for model_type {model_type!r}; supported: {', '.join(sorted(self._by_type))}"
            ) from None

    def model_types(self) -> list[str]:
        return sorted(self._by_type)


ADAPTERS = AdapterRegistry([llama.ADAPTER, gpt2.ADAPTER, gpt_neox.ADAPTER, bert.ADAPTER])


def adapter_for(model_type: str) -> Adapter:
    """The adapter serving a Hugging Face ``config.model_type``."""
    return ADAPTERS.get(model_type)


__all__ = ["ADAPTERS", "Adapter", "AdapterRegistry", "Dims", "Tap", "WeightViews", "adapter_for"]
