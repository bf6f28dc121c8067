"""Report sections "Logit lens", "Tuned lens" and "Layer metrics" (decoder models with an unembedding).

Example:
    >>> import interp
    >>> from interp.report import Report
    >>> from interp.report.sections import lens
    >>> from interp.report.sections.context import ReportContext
    >>> m = interp.load_model("smollm2-135m")
    >>> tr = m.run("The capital of France is", capture=["resid_post", "pattern"]).trace
    >>> rep = Report("lens")
    >>> lens.add_section(rep, ReportContext(model=m, prompt="The capital of France is", corrupt=None, trace=tr,
    ...                                     tokens=list(tr.tokens[0]), fast=True))
    >>> [s.title for s in rep.sections], sorted(rep.sections[0].data)
    (['Logit lens', 'Tuned lens', 'Layer metrics'], ['LogitLensResult'])
"""

from __future__ import annotations

from interp.errors import BadInputError
from interp.lens import (
    BLOCK,
    LensComparison,
    angular_distances,
    find_tuned_lens,
    logit_lens,
    skip_layer_loss,
    sublayer_similarity,
)
from interp.models import Model
from interp.report.document import Report
from interp.report.sections.context import ReportContext
from interp.trace import Trace

ORDER = 10


def add_section(rep: Report, ctx: ReportContext) -> None:
    """The logit lens, the tuned lens (when one is saved for the model) and the layer metrics."""
    model = ctx.model
    if not model.adapter.is_causal or model.weights.W_U is None:
        return
    _lens_sections(rep, model, ctx.trace)
    _layer_metrics_section(rep, model, ctx.trace, skip_layers=ctx.skip_layers, fast=ctx.fast)


def _lens_sections(rep: Report, model: Model, trace: Trace) -> None:
    # the model's own prediction at the last token (the last layer's reading is the output): the tracked target
    last = logit_lens(model, trace, hooks="resid_post.-1", positions=-1, top_k=1)
    top = int(last.top_ids[0, 0, last.position(0, -1), 0])
    res = logit_lens(model, trace, target=top, top_k=5)
    token = res.id_to_str.get(top, str(top))
    sec = rep.section("Logit lens", "Each layer's residual stream decoded through the final norm and the "
                      "unembedding as if it were the last layer: cells show the top token coloured by its probability "
                      f"(hover for the top 5), the curves how far each reading is from the output (KL, nats) and "
                      f"where the model's prediction {token!r} ranks.")
    sec.result(res, views=("grid", "kl", "target_rank"), batch=0)
    lens = find_tuned_lens(model)
    sec = rep.section("Tuned lens", "The same residual streams read through a tuned lens (Belrose et al. 2023: one "
                      "learned affine map per layer), whose readings reach the output earlier and more smoothly than "
                      "the logit lens': compare the grids, the KL per layer and the prediction's rank.")
    if lens is None:
        sec.text(f"No tuned lens is saved for {model.name!r} (fingerprint {model.fingerprint}); train one with "
                 "interp.lens.TunedLens(...).fit(model, inputs) and save it under $INTERP_HOME/lenses/<model name>.")
        return
    tuned = lens.apply(model, trace, target=top, top_k=5)
    sec.text(f"The lens was trained on {lens.n_tokens_init_ + lens.n_tokens_} token rows of English text to "
             "minimise the KL to the output.")
    sec.result(tuned, views=("grid", "target_rank"), name="tuned LogitLensResult", batch=0)
    sec.result(LensComparison.from_results(res, tuned), views=("kl",))


def _layer_metrics_section(rep: Report, model: Model, trace: Trace, *, skip_layers: bool, fast: bool) -> None:
    sec = rep.section("Layer metrics", "How much each layer changes the residual stream: small angular distances, "
                      "similarities near 1 and small loss increases when skipped mark layers one could drop.")
    ang = angular_distances(model, trace)
    sec.text("Angular distance arccos(cos(x_L, x_L+n))/π between the residual stream entering layer L and "
             "entering layer L+n, at the last token (Gromov et al. 2024).")
    sec.result(ang, views=("heatmap", "best_block"))
    ns = [n for n in (1, 2, 4, 8) if n <= ang.n_layers]
    sec.table(["n (layers dropped)", "best start layer L", "distance"],
              [(n, ang.best_block(n), f"{float(ang.distance_last[ang.best_block(n), n]):.3f}") for n in ns])
    try:
        sub = sublayer_similarity(model, trace)
    except BadInputError as e:  # parallel attention + MLP: no residual between them
        sec.text(f"No sublayer similarity: {e}.")
    else:
        sec.text("Cosine similarity between each sublayer's input and output residual (mean over tokens): near 1, "
                 "the sublayer barely turns the stream (\"What Matters in Transformers?\", He et al. 2024).")
        sec.result(sub)
    if skip_layers and int(trace.lengths[0]) > 1:  # a loss needs a next token
        skip = skip_layer_loss(model, trace, components=(BLOCK,) if fast else (BLOCK, "attn_out", "mlp_out"),
                               progress=False)
        sec.text(f"Next-token cross-entropy on the prompt when one block ({BLOCK}), attention or MLP is skipped (its "
                 f"output zeroed), minus the unedited model's ({skip.baseline_loss:.3f} nats).")
        sec.result(skip)
