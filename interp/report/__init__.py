"""Reports: self-contained HTML (+ JSON) composed from the tools' figures."""

from interp.report.document import Report, Section
from interp.report.model_report import build_report

__all__ = ["Report", "Section", "build_report"]
