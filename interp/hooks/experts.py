"""Interventions on mixture-of-experts hook points (``router_logits``, ``router_weights``, ``expert_out``).

Example:
    >>> import interp, torch
    >>> from transformers import MixtralConfig, MixtralForCausalLM
    >>> from interp.hooks import AblateExperts
    >>> m = interp.from_hf(MixtralForCausalLM(MixtralConfig(hidden_size=32, intermediate_size=48,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
    ...     num_experts_per_tok=2, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)))
    >>> out = m.run(torch.tensor([[1, 5, 9]]), capture="router_weights.0",
    ...             interventions=[AblateExperts("router_logits.0", experts=[0, 1])])
    >>> (out.trace["blocks.0.mlp.hook_router_weights"][..., :2] == 0).all().item()  # never chosen
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.errors import BadInputError
from interp.hooks.interventions import Intervention, _component_of
from interp.sites import Site
from interp.sites.positions import index_list


@dataclass(frozen=True)
class AblateExperts(Intervention):
    """Take experts out of a mixture-of-experts layer, at the selected positions.

    What "out" means follows the hook point:

    - ``router_logits``: the experts' logits become the dtype's minimum, so the router never chooses them and
      picks the next best instead (the top-k is recomputed; re-routing);
    - ``router_weights`` or ``expert_out``: their contributions are dropped; the other chosen experts keep
      their weights (the layer's output loses those experts' terms).

    Args:
        site: one or several hook points with an ``expert`` axis (``"expert_out.3"``, ``"router_logits"``).
        experts: expert indices (ints, a list or a slice).
        positions: as every intervention (each sequence's real tokens; negative from its end).
    """

    experts: int | Sequence[int] | slice = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        comp = _component_of(self.site)  # type: ignore[arg-type]
        if comp is not None and "expert" not in comp.axes:
            raise BadInputError(f"AblateExperts edits hook points with an expert axis (router_logits, router_weights, "
                                f"expert_out); {self.site} has none (axes {', '.join(comp.axes)})")
        experts = self.experts if isinstance(self.experts, slice) else tuple(index_list(self.experts, "experts"))
        if not isinstance(experts, slice) and not experts:
            raise BadInputError("experts= needs at least one expert index, got none")
        object.__setattr__(self, "experts", experts)

    def edit(self, act: torch.Tensor, site: Site) -> torch.Tensor:
        axis = site.component.axes.index("expert")
        n = act.shape[axis]
        chosen = torch.zeros(n, dtype=torch.bool)
        if isinstance(self.experts, slice):
            chosen[self.experts] = True
        else:
            bad = [e for e in self.experts if not -n <= e < n]  # type: ignore[union-attr]
            if bad:
                raise BadInputError(f"expert {bad[0]} is out of range for {site.name}, which has {n} experts "
                                    f"(valid: 0..{n - 1})")
            chosen[list(self.experts)] = True  # type: ignore[arg-type]
        view = [1] * act.dim()
        view[axis] = n
        fill = torch.finfo(act.dtype).min if site.component.short == "router_logits" else 0.0
        return act.masked_fill(chosen.to(act.device).view(view), fill)


__all__ = ["AblateExperts"]
