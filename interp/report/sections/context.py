"""What every report section receives: the model, the prompts and the clean run's trace.

Example:
    >>> import interp
    >>> from interp.report.sections.context import ReportContext
    >>> m = interp.load_model("smollm2-135m")
    >>> tr = m.run("The capital of France is", capture=["resid_post", "pattern"]).trace
    >>> ctx = ReportContext(model=m, prompt="The capital of France is", corrupt=None, trace=tr,
    ...                     tokens=list(tr.tokens[0]), fast=True)
    >>> ctx.trace.stack("pattern").shape  # [layer, batch, head, q_pos, k_pos]
    torch.Size([30, 1, 9, 5, 5])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interp.models import Model
from interp.trace import Trace


@dataclass(frozen=True)
class ReportContext:
    """Inputs shared by the report's sections.

    Attributes:
        model: the loaded model.
        prompt: the clean prompt (``--prompt``).
        corrupt: the corrupted prompt (``--corrupt``; same token count), or None.
        trace: the clean run, with ``resid_post`` and ``pattern`` of every layer ([batch=1, ...]): read them with
            ``trace.stack("resid_post")`` or ``trace.get("pattern", layer=3)``.
        tokens: the clean prompt's token strings.
        fast: leave out the slow parts (used by tests); sections stay present with smaller settings.
        skip_layers: include the skip-layer loss (several forwards per layer).
        language_prompts: a latent-language prompt set (a task name of :func:`interp.lens.load_language_prompts`:
            ``"translation"``, ``"repetition"``, ``"cloze"``, ``"all"``, or a list of
            :class:`~interp.lens.LanguageItem`); ``None``: no latent-language section.
        encdec / encdec_inputs / encdec_references: an :class:`~interp.models.EncoderDecoder`, source texts and
            their expected outputs for the DecoderLens section; ``None``: no such section.
    """

    model: Model
    prompt: str
    corrupt: str | None
    trace: Trace
    tokens: list[str]
    fast: bool = False
    skip_layers: bool = True
    language_prompts: str | Sequence[Any] | None = None
    encdec: Any = None
    encdec_inputs: Sequence[str] | None = None
    encdec_references: Sequence[str] | None = None


__all__ = ["ReportContext"]
