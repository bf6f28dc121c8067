"""What every report section receives: the model, the prompts and the clean run's trace."""

from __future__ import annotations

from dataclasses import dataclass

from interp.models import Model
from interp.trace import Trace


@dataclass(frozen=True)
class ReportContext:
    """Inputs shared by the report's sections.

    Attributes:
        model: the loaded model.
        prompt: the clean prompt.
        corrupt: the corrupted prompt (same token count), or None.
        trace: the clean run, with ``blocks.*.hook_resid_post`` and ``blocks.*.attn.hook_pattern``
            ([batch=1, ...]).
        tokens: the clean prompt's token strings.
        fast: leave out the slow parts (used by tests); sections stay present with smaller settings.
        skip_layers: include the skip-layer loss (several forwards per layer).
    """

    model: Model
    prompt: str
    corrupt: str | None
    trace: Trace
    tokens: list[str]
    fast: bool = False
    skip_layers: bool = True


__all__ = ["ReportContext"]
