"""Report section "Causal abstraction": where the model carries the indirect object's position in an
IOI-style task, by interchange interventions on the residual stream (issue 21)."""

from __future__ import annotations

from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 50


def add_section(rep: Report, ctx: ReportContext) -> None:
    """IIA of ``io_position`` (which of the two names is the indirect object) with ``resid_post`` taken from a
    source prompt, per layer at the last positions.

    Skipped for models whose tokenizer does not spell the task's names as one token each. ``ctx.fast`` uses
    12 pairs, 4 layers and the last position; otherwise 24 pairs, every 5th layer and the last
    two positions (one forward of 24 sources and one of 24 x 14 stacked bases).
    """
    from interp.causal import iia_sweep, ioi
    from interp.causal.task import answer_ids
    from interp.errors import BadInputError

    model = ctx.model
    if model.tokenizer is None or not model.adapter.is_causal:
        return
    task = ioi()
    names = [" " + str(n) for n in task.causal_model.values["A"]]
    try:
        ids = answer_ids(model.dims.d_vocab, model.tokenizer, names).tolist()
        ok = len(set(ids)) == len(names) and getattr(model.tokenizer, "unk_token_id", None) not in ids
    except BadInputError:
        ok = False
    if not ok:
        sec = rep.section("Causal abstraction", "Interchange interventions for an IOI-style task; skipped here.")
        sec.text(f"Skipped: {model.name}'s tokenizer does not spell the task's names as one token each.")
        return
    n_layers = model.dims.n_layers
    if ctx.fast:
        n, layers, positions = 12, sorted({0, n_layers // 3, 2 * n_layers // 3, n_layers - 1}), [-1]
    else:
        n, layers, positions = 24, sorted({*range(0, n_layers, 5), n_layers - 1}), [-2, -1]
    data = task.sample(n, variables=["io_position"], seed=0)
    table = iia_sweep(model, data, component="resid_post", layers=layers, positions=positions, batch_size=n,
                      progress=False)
    i, j, _ = table.best()
    sec = rep.section("Causal abstraction",
                      "Interchange intervention accuracy (IIA) of the indirect object's position: 1 means the residual "
                      "stream there carries which name is the indirect object; the null-intervention level means it "
                      "does not.")
    sec.text(f"High-level model: io_position (is the first or the second name the indirect object?) decides the "
             f"answer; interchanging it from a source prompt whose subject is the other name should make the model "
             f"answer with the base's other name. {n} base/source pairs over {len(task.causal_model.values['template'])}"
             f" templates, half of them changing the answer (a null intervention scores {1 - table.changed:.2f}); the "
             f"model answers {table.base_accuracy:.0%} of the bases correctly. Best IIA {float(table.iia[i, j, 0]):.2f}"
             f" at resid_post.{table.layers[i]}, position {table.position_labels[j]} (Geiger et al., causal "
             "abstraction; interp.causal).")
    sec.result(table, views=["heatmap", "layers"])
