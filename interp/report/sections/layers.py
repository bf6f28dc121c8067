"""Report section "Which heads matter": Michel et al.'s head importance on the report's prompt (one forward and
one backward), and representation quality per layer when not ``fast``."""

from __future__ import annotations

from interp.layers import head_importance
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 47


def add_section(rep: Report, ctx: ReportContext) -> None:
    """Every head's importance |dL/dξ_h| for the prompt's next-token loss, and the top heads."""
    model = ctx.model
    if not model.adapter.is_causal or len(ctx.tokens) < 2:
        return
    res = head_importance(model, ctx.prompt, progress=False)
    sec = rep.section("Which heads matter",
                      "Head importance (Michel et al. 2019): how much the prompt's next-token loss would change if a "
                      "head's output were scaled, |dL/dξ_h| at ξ = 1, every head from one backward pass.")
    sec.result(res, views=("heatmap",))
    n_heads = res.importance.shape[1]
    sec.table(["head", "importance"],
              [(h, f"{float(res.importance.flatten()[int(h[1:].split('H')[0]) * n_heads + int(h.split('H')[1])]):.4g}")
               for h in res.ranking()[:5]],
              caption="The five heads whose scaling moves the loss most.")
