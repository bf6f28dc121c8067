"""The tools' report sections, one module each, found at run time.

A section module defines ``ORDER`` (its place after the built-in sections of
:func:`interp.report.build_report`; lower first) and ``add_section(rep, ctx)``, which appends one or
more sections to ``rep`` from a :class:`~interp.report.sections.context.ReportContext`. Each section
opens with ``rep.section(title, intro)`` (one sentence: what it shows and how to read it) and adds a
tool's results with ``sec.result(res, views=[...])``. A module may skip itself (return without adding
anything) when the model or the inputs do not suit its tool, e.g. patching without a corrupted prompt;
it says why in the report when that is useful.

Example:
    >>> from interp.report.sections import section_names
    >>> {"lens", "heads"} <= set(section_names())
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from types import ModuleType

from interp.errors import unknown_name


def section_names() -> list[str]:
    """The names of the section modules (``"lens"``, ``"heads"``...), in no particular order."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "context"]


def section_modules(names: Sequence[str] | None = None) -> list[ModuleType]:
    """The section modules of this package (all, or those ``names``), in ``ORDER``.

    Raises:
        UnknownNameError: a name that is not a section module.
    """
    known = section_names()
    for name in names or ():
        if name not in known:
            raise unknown_name("report section", name, sorted(known))
    wanted = known if names is None else [n for n in known if n in set(names)]
    mods = [importlib.import_module(f"{__name__}.{n}") for n in wanted]
    return sorted((m for m in mods if hasattr(m, "add_section")), key=lambda m: (m.ORDER, m.__name__))


__all__ = ["section_modules", "section_names"]
