"""Reports: self-contained HTML pages (+ JSON of their numbers) composed from the tools' figures and results.

:class:`Report` is the document (sections opened by an intro sentence; text, tables, figures, results);
:func:`build_report` is the main job (``interp report``): the built-in sections plus one section per tool
(:mod:`interp.report.sections`).

Example:
    >>> from interp.report import Report
    >>> rep = Report("My findings")
    >>> sec = rep.section("Notes", "What I found, in one sentence.")
    >>> rep.to_dict()
    {'title': 'My findings', 'command': '', 'sections': {}}
"""

from interp.report.document import Report, Section
from interp.report.model_report import build_report

__all__ = ["Report", "Section", "build_report"]
