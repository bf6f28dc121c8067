"""Report section "Circuit": the strongest edges between heads, MLPs and the logits (EAP), when a corrupted
prompt is given."""

from __future__ import annotations

from interp.circuits import EdgeRunner, discover, make_task
from interp.circuits.graph import LAYOUTS
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 42


def add_section(rep: Report, ctx: ReportContext) -> None:
    """EAP over every edge for the clean prediction against the corrupted prompt's (one forward and backward
    beyond the two plain runs); the top edges drawn as a layered graph."""
    model = ctx.model
    if ctx.corrupt is None or not model.adapter.is_causal or model.adapter.family not in LAYOUTS:
        return
    clean = model.run(ctx.prompt).logits
    other = model.run(ctx.corrupt).logits
    assert clean is not None and other is not None
    answer, wrong = int(clean[0, -1].argmax()), int(other[0, -1].argmax())
    if answer == wrong:
        task = make_task(model, ctx.prompt, corrupt=ctx.corrupt, metric="kl", name="report")
        what = "the KL divergence from the clean next-token distribution (both prompts predict the same token)"
    else:
        task = make_task(model, ctx.prompt, corrupt=ctx.corrupt, answer=answer, wrong=wrong, name="report")
        what = "the clean prediction's logit minus the corrupted prediction's"
    runner = EdgeRunner(model, task)
    c = discover(model, task, method="eap", runner=runner, progress=False)
    n = 10 if ctx.fast else 25
    top = c.top(n)
    sec = rep.section("Circuit", f"Edge attribution patching (EAP) over all {c.n_units} edges of the model's graph "
                                 f"(input, each head's q/k/v inputs and output, each MLP, the logits) for {what}: the "
                                 f"estimated change when one edge takes its value from the corrupted run. The {n} "
                                 "strongest edges; width |score|, red raises the metric when patched, blue lowers it.")
    sec.result(top, views=("graph",))
    sec.table(["sender", "receiver", "EAP score"], [(s, r, f"{w:+.4f}") for s, r, w in top.edge_list()[:10]],
              caption=f"Metric: clean {c.clean_value:.3f}, every edge patched {c.corrupted_value:.3f}. "
                      "`interp circuit` scores by exact patching, EAP-IG or ACDC and adds the faithfulness curve.")
