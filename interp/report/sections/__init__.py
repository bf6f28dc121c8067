"""The tools' report sections, one module each, found at run time.

A section module defines ``ORDER`` (its place after the built-in sections of
:func:`interp.report.build_report`; lower first) and ``add_section(rep, ctx)``, which appends one or
more sections to ``rep`` from a :class:`~interp.report.sections.context.ReportContext`. A module may
skip itself (return without adding anything) when the model or the inputs do not suit its tool, e.g.
patching without a corrupted prompt; it says why in the report when that is useful.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def section_modules() -> list[ModuleType]:
    """The section modules of this package, in ``ORDER``."""
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_") and m.name != "context"]
    return sorted((m for m in mods if hasattr(m, "add_section")), key=lambda m: (m.ORDER, m.__name__))


__all__ = ["section_modules"]
