"""Adapters, one file per architecture family, and the registry that finds one for a config.

=============  ==================================================  ==========================================
family         ``config.model_type``                               file
=============  ==================================================  ==========================================
llama          llama, mistral, qwen2, qwen3, smollm3               :mod:`~interp.models.adapters.llama`
gemma          gemma                                               :mod:`~interp.models.adapters.gemma`
gemma2         gemma2, gemma3_text                                 :mod:`~interp.models.adapters.gemma2`
olmo2          olmo2                                               :mod:`~interp.models.adapters.olmo2`
phi3           phi3                                                :mod:`~interp.models.adapters.phi3`
gpt2           gpt2                                                :mod:`~interp.models.adapters.gpt2`
gpt_neox       gpt_neox (Pythia)                                   :mod:`~interp.models.adapters.gpt_neox`
gptj           gptj                                                :mod:`~interp.models.adapters.gptj`
falcon         falcon                                              :mod:`~interp.models.adapters.falcon`
mixtral ...    mixtral, olmoe, qwen2_moe, qwen3_moe                :mod:`~interp.models.adapters.moe`
bert           bert (encoder)                                      :mod:`~interp.models.adapters.bert`
=============  ==================================================  ==========================================

docs/models.md lists each family's status and test, and says how to add an adapter.

Example:
    >>> from interp.models.adapters import adapter_for
    >>> adapter_for("gpt2").family
    'gpt2'
    >>> adapter_for("gemma3_text").family
    'gemma2'
"""

from __future__ import annotations

from collections.abc import Iterable

from interp.errors import BadInputError, UnknownNameError
from interp.models.adapters import bert, falcon, gemma, gemma2, gpt2, gpt_neox, gptj, llama, moe, olmo2, phi3
from interp.models.adapters.base import (
    Adapter,
    AttnInputs,
    Dims,
    Kernel,
    KernelHook,
    NotApplicable,
    Tap,
    WeightViews,
    not_applicable,
    softcap,
)

HOW_TO_ADD = "docs/models.md (section 'Adding an adapter')"


class UnsupportedModelError(UnknownNameError):
    """A ``config.model_type`` no adapter serves; the message names the supported ones and how to add one."""


class AdapterRegistry:
    """Maps ``config.model_type`` to an :class:`Adapter`; registering a type twice raises."""

    def __init__(self, adapters: Iterable[Adapter] = ()) -> None:
        self._by_type: dict[str, Adapter] = {}
        for a in adapters:
            self.register(a)

    def register(self, adapter: Adapter) -> None:
        """Serve ``adapter.model_types`` with ``adapter`` (your own family: see docs/models.md).

        Example:
            >>> from dataclasses import replace
            >>> reg = AdapterRegistry([gpt2.ADAPTER])
            >>> reg.register(replace(gpt2.ADAPTER, family="my_gpt2", model_types=("my_gpt2",)))
            >>> reg.get("my_gpt2").family
            'my_gpt2'
        """
        for t in adapter.model_types:
            if t in self._by_type:
                raise BadInputError(
                    f"model_type {t!r} is already served by adapter {self._by_type[t].family!r}; "
                    f"cannot register {adapter.family!r} for it too"
                )
        for t in adapter.model_types:
            self._by_type[t] = adapter

    def get(self, model_type: str) -> Adapter:
        """The adapter for ``model_type``.

        Raises:
            UnsupportedModelError: no adapter serves it; the message names the supported types and the guide.

        Example:
            >>> ADAPTERS.get("opt")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            interp.models.adapters.UnsupportedModelError: no adapter for model_type 'opt'; supported: bert, falcon, ...
        """
        try:
            return self._by_type[model_type]
        except KeyError:
            raise UnsupportedModelError(
                f"no adapter for model_type {model_type!r}; supported: {', '.join(sorted(self._by_type))}. "
                f"To add one (a table of ~40 lines from hook points to the model's modules, plus its tests), "
                f"see {HOW_TO_ADD}; register it with interp.models.adapters.ADAPTERS.register(adapter)."
            ) from None

    def model_types(self) -> list[str]:
        """Every ``config.model_type`` served, sorted.

        Example:
            >>> "mixtral" in ADAPTERS.model_types()
            True
        """
        return sorted(self._by_type)

    def families(self) -> list[Adapter]:
        """Every registered adapter once, in registration order.

        Example:
            >>> [a.family for a in ADAPTERS.families()][:3]
            ['llama', 'gemma', 'gemma2']
        """
        seen: dict[str, Adapter] = {}
        for a in self._by_type.values():
            seen.setdefault(a.family, a)
        return list(seen.values())


ADAPTERS = AdapterRegistry([llama.ADAPTER, gemma.ADAPTER, gemma2.ADAPTER, olmo2.ADAPTER, phi3.ADAPTER,
                            gpt2.ADAPTER, gpt_neox.ADAPTER, gptj.ADAPTER, falcon.ADAPTER, *moe.ADAPTERS,
                            bert.ADAPTER])


def adapter_for(model_type: str) -> Adapter:
    """The adapter serving a Hugging Face ``config.model_type`` (:meth:`AdapterRegistry.get` of :data:`ADAPTERS`).

    Example:
        >>> adapter_for("qwen3_moe").family
        'qwen3_moe'
    """
    return ADAPTERS.get(model_type)


__all__ = ["ADAPTERS", "Adapter", "AdapterRegistry", "AttnInputs", "Dims", "Kernel", "KernelHook", "NotApplicable", "Tap",
           "UnsupportedModelError", "WeightViews", "adapter_for", "not_applicable", "softcap"]
