"""Report section "Probing": a Python-vs-prose probe on every few layers of the model (issue 6)."""

from __future__ import annotations

from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 60


def add_section(rep: Report, ctx: ReportContext) -> None:
    """Probe ``resid_post`` at every few layers for "this token is in Python source, not English prose".

    Uses the shipped ``python_prose`` labelled set (a small slice of it, so the section stays within
    ~20 s on a CPU; fewer sequences, tokens and layers when ``ctx.fast``).
    """
    from interp.probing import LabelledSet, probe

    model = ctx.model
    if model.tokenizer is None:
        return
    n_seqs, n_tok, every = (24, 24, 6) if ctx.fast else (48, 40, 3)
    n_layers = model.dims.n_layers
    layers = sorted({*range(0, n_layers, every), n_layers - 1})
    ds = LabelledSet.load("python_prose").select(n_seqs)
    hooks = [f"resid_post.{L}" for L in layers]
    trace = model.run(list(ds.texts), capture=hooks, metadata=ds.metadata, max_tokens=n_tok, stop_early=True).trace
    res = probe(model, trace, labels="label", hooks=hooks, ks=(1, 2, 4, 8, 16), progress=False, n_threads=1)
    b = res.best_row()
    sec = rep.section("Probing", "How well a linear probe reads a property from each layer: held-out accuracy per "
                                 "layer, with a control task for how much the probe itself memorises.")
    sec.text(f"Linear probes (standardised logistic regression, class-balanced) for whether a token lies in "
             f"Python source or in English prose, on {n_seqs} sequences of the shipped python_prose set "
             f"({int(res.is_test.sum())} held-out tokens from sequences never seen in training). The control "
             "task gives every token type a random label (Hewitt & Liang 2019); selectivity = accuracy − "
             "control accuracy. k-sparse probes use the k dimensions with the largest F statistic "
             f"(Gurnee et al. 2023). Best layer {res.layer_labels[b]}: accuracy {float(res.accuracy[b]):.3f}, "
             f"selectivity {float(res.selectivity[b]):.3f}, 1-sparse {float(res.sparse_accuracy[b, 0]):.3f} "
             f"(dimension {res.top_neurons(res.hooks[b])[0]}).")
    sec.result(res, views=["layers", "k", "hist"])
    sec.table(["layer", "accuracy", "control", "selectivity", "1-sparse", "top dimensions"],
              [[lab, f"{float(res.accuracy[i]):.3f}", f"{float(res.control_accuracy[i]):.3f}",
                f"{float(res.selectivity[i]):.3f}", f"{float(res.sparse_accuracy[i, 0]):.3f}",
                ", ".join(map(str, res.top_neurons(res.hooks[i], k=4)))] for i, lab in enumerate(res.layer_labels)],
              caption="Held-out scores per layer; top dimensions in rank order.")
