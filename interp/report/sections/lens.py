"""Report sections "Logit lens", "Tuned lens" and "Layer metrics" (decoder models with an unembedding)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.lens import (
    LensComparison,
    angular_distances,
    find_tuned_lens,
    logit_lens,
    skip_layer_loss,
    sublayer_similarity,
)
from interp.models import Model
from interp.plot import layer_curves
from interp.report.document import Report
from interp.report.sections.context import ReportContext
from interp.trace import Trace

ORDER = 10


def add_section(rep: Report, ctx: ReportContext) -> None:
    """The logit lens, the tuned lens (when one is saved for the model) and the layer metrics."""
    model = ctx.model
    if not model.adapter.is_causal or model.weights.W_U is None:
        return
    _lens_section(rep, model, ctx.trace, ctx.tokens)
    _layer_metrics_section(rep, model, ctx.prompt, ctx.skip_layers)


def _lens_section(rep: Report, model: Model, trace: Trace, tokens: Sequence[str]) -> None:
    res = logit_lens(model, trace, top_k=5)
    sec = rep.section("Logit lens", "Each layer's residual stream read as a next-token prediction: cells show the top token, colour its probability; hover for the top 5.")
    sec.text("Each layer's residual stream decoded through the final norm and the unembedding (logit lens). "
             "Cells show the top token, colour its probability; hover for the top 5. KL(final || layer) "
             "measures how far each layer's reading is from the model's output.")
    sec.figure(res.plot(batch=0, color="prob"))
    sec.figure(res.plot_kl(batch=0))
    labels = {"layer": list(res.layer_labels), "pos": list(tokens)}
    n = res.n_real(0)
    sec.numbers("logit_lens_top1_prob", res.top_probs[:, 0, :n, 0], axes=["layer", "pos"], labels=labels)
    sec.numbers("logit_lens_top1_token", [[res.id_to_str[i] for i in row] for row in res.top_ids[:, 0, :n, 0].tolist()],
                axes=["layer", "pos"], labels=labels)
    sec.numbers("logit_lens_entropy", res.entropy[:, 0, :n], axes=["layer", "pos"], labels=labels)
    sec.numbers("logit_lens_kl_to_final", res.kl_to_final[:, 0, :n], axes=["layer", "pos"], labels=labels)
    lens = find_tuned_lens(model)
    sec = rep.section("Tuned lens", 'The same readings through a tuned lens (one learned affine map per layer), which tracks the output earlier than the logit lens.')
    if lens is None:
        sec.text(f"No tuned lens is saved for {model.name!r} (fingerprint {model.fingerprint}); train one with "
                 "interp.lens.TunedLens(...).fit(model, store) and save it under $INTERP_HOME/lenses/<model name>.")
        return
    top = res.top_ids[-1, 0, n - 1, 0].item()  # the model's own next-token prediction is the tracked target
    tuned = lens.apply(model, trace, target=top, top_k=5)
    res_t = logit_lens(model, trace, target=top, top_k=1)
    cmp = LensComparison.from_results(res_t, tuned)
    sec.text(f"The same residual streams read through a tuned lens (Belrose et al. 2023): one affine translator per "
             f"layer, trained on {lens.n_tokens_init_ + lens.n_tokens_} token rows of English text to minimise the "
             "KL to the output. Its readings converge to the output earlier and more smoothly than the logit lens.")
    sec.figure(tuned.plot(batch=0, color="prob"))
    sec.figure(cmp.plot())
    ranks = {f"{kind} lens": r.target_rank[:, 0, n - 1].float() + 1 for kind, r in (("logit", res_t), ("tuned", tuned))}
    sec.figure(layer_curves(ranks, y_title="1 + rank (1 = top token)",
                            title=f"rank of the prediction {res.id_to_str[top]!r} at the last token, per layer"))
    sec.numbers("kl_per_layer_logit_vs_tuned", torch.stack([cmp.kl_logit, cmp.kl_tuned]), axes=["lens", "layer"],
                labels={"lens": ["logit", "tuned"], "layer": list(range(cmp.n_layers))})
    sec.numbers("tuned_lens_top1_token", [[tuned.id_to_str[i] for i in row] for row in tuned.top_ids[:, 0, :n, 0].tolist()],
                axes=["layer", "pos"], labels=labels)


def _layer_metrics_section(rep: Report, model: Model, prompt: str, skip_layers: bool) -> None:
    sec = rep.section("Layer metrics", 'How much each layer changes the residual stream: small angular distances and high similarities mark layers one could drop.')
    ang = angular_distances(model, prompt)
    sec.text("Angular distance arccos(cos(x_L, x_L+n))/π between the residual stream entering layer L and "
             "entering layer L+n, at the last token (Gromov et al. 2024). A small distance for a block of n "
             "layers marks layers one could drop with little change to the stream.")
    sec.figure(ang.plot("last"))
    ns = [n for n in (1, 2, 4, 8) if n <= ang.n_layers]
    sec.table(["n (layers dropped)", "best start layer L", "distance"],
              [(n, ang.best_block(n), f"{float(ang.distance_last[ang.best_block(n), n]):.3f}") for n in ns])
    r = list(range(ang.n_layers + 1))
    sec.numbers("angular_distance_last_token", ang.distance_last, axes=["layer", "n"], labels={"layer": r, "n": r})
    try:
        sub = sublayer_similarity(model, prompt)
    except ValueError as e:  # parallel attention + MLP: no residual between them
        sec.text(f"No sublayer similarity: {e}.")
    else:
        sec.text("Cosine similarity between each sublayer's input and output residual (mean over tokens): near 1, "
                 "the sublayer barely turns the stream (\"What Matters in Transformers?\", He et al. 2024).")
        sec.figure(sub.plot())
        sec.numbers("sublayer_similarity", torch.stack([sub.attn, sub.mlp]), axes=["sublayer", "layer"],
                    labels={"sublayer": ["attn", "mlp"], "layer": list(range(sub.n_layers))})
    if skip_layers and model.adapter.is_causal and len(ang.tokens[0]) > 1:  # a loss needs a next token
        skip = skip_layer_loss(model, prompt, progress=False)
        sec.text(f"Next-token cross-entropy on the prompt when one block, attention or MLP is skipped (its output "
                 f"zeroed), minus the unedited model's ({skip.baseline_loss:.3f} nats).")
        sec.figure(skip.plot())
        sec.numbers("skip_layer_delta_loss", skip.delta, axes=["component", "layer"],
                    labels={"component": list(skip.components), "layer": list(range(skip.loss.shape[1]))})
