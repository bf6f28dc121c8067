"""Report section "Direct logit attribution": which components and heads write the model's prediction."""

from __future__ import annotations

from interp.lens.dla import logit_attrs
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 15


def add_section(rep: Report, ctx: ReportContext) -> None:
    """The top next token against the runner-up (or against the corrupted prompt's top token), split over
    the residual stream's writers and over every head."""
    model = ctx.model
    if not model.adapter.is_causal or model.weights.W_U is None or model.weights.ln_final_w is None:
        return
    logits = model.run(ctx.prompt).logits
    assert logits is not None
    top2 = logits[0, -1].topk(2).indices.tolist()
    answer, wrong = top2
    against = "the runner-up"
    if ctx.corrupt is not None:
        other = model.run(ctx.corrupt).logits
        assert other is not None
        w = int(other[0, -1].argmax())
        if w != answer:
            wrong, against = w, "the corrupted prompt's prediction"
    res = logit_attrs(model, ctx.prompt, answer=answer, wrong=wrong)
    sec = rep.section("Direct logit attribution",
                      f"How much each part of the model writes toward {res.metric} at the last token ({against} as "
                      "the competitor): bars right of zero push the prediction, left of zero against it.")
    sec.result(res, views=("components", "heads"))
    top = res.top_heads(5)
    sec.table(["head", "contribution"], [(str(h), f"{v:+.3f}") for h, v in top],
              caption=f"The heads that move {res.metric} most; components and constant add up to the model's "
                      f"own logit difference, {float(res.logit_diff[0]):.3f}.")
