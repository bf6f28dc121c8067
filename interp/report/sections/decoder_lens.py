"""Report section "DecoderLens": what an encoder–decoder's decoder generates from each encoder layer.

The report's usual context holds an ``interp.Model`` (one stack); an encoder–decoder is not one, so this section
adds itself when the context carries an ``encdec`` model and ``encdec_inputs`` (and, optionally,
``encdec_references``); ``interp lens --decoder-lens`` builds it with :func:`decoder_lens_section`.
"""

from __future__ import annotations

from interp.lens import DecoderLensResult, decoder_lens
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 13


def add_section(rep: Report, ctx: ReportContext) -> None:
    """The section, when the context carries an encoder–decoder and its inputs."""
    model, inputs = ctx.encdec, ctx.encdec_inputs
    if model is None or not inputs:
        return
    decoder_lens_section(rep, decoder_lens(model, inputs, references=ctx.encdec_references,
                                           progress=False))


def decoder_lens_section(rep: Report, res: DecoderLensResult) -> None:
    """The layer x input table of generations and the per-layer accuracy curve."""
    sec = rep.section("DecoderLens", "The decoder cross-attends to each encoder layer's output (through the encoder's "
                      "final norm) instead of the last (Langedijk et al. 2023): each cell is what it then generates, "
                      "coloured by the reference's loss; the curve is the exact-match accuracy per layer.")
    sec.result(res, views=("table", "accuracy"))
    sec.table(["encoder layer", "accuracy", "mean loss"],
              [(label, f"{float(res.accuracy[k]):.2f}", f"{float(res.loss[k].nanmean()):.3f}")
               for k, label in enumerate(res.layer_labels)])
