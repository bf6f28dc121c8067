"""Report section "Features": SAE features of the prompt, where the strongest one comes from, and steering with it.

Uses the SAEs shipped for SmolLM2-135M: the 4,096-feature residual SAEs of blocks 3 and 4 trained on 1M tokens
(``data/features/smollm2-135m-4k``, built by ``make dictionaries``) when present, else the small first-wave set
(``data/features/smollm2-135m``, around block 4); for other models it says how to train SAEs instead. About 5 s
on SmolLM2 on a CPU (less with ``fast``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from interp.report.sections.context import ReportContext

if TYPE_CHECKING:
    from interp.report import Report

ORDER = 60
TARGET = "blocks.4.hook_resid_post"


def add_section(rep: Report, ctx: ReportContext) -> None:
    from interp.errors import BadInputError
    from interp.features import (
        chance_similarity,
        classify_features,
        feature_flow,
        load_saes,
        promoted_tokens,
        spliced_ce,
        steer,
    )
    from interp.hooks import FeatureEdit

    sec = rep.section("Features", "Sparse-autoencoder features of the residual stream after block 4: the most active "
                                  "ones at the last token, where they come from (each node of the flow graph a "
                                  "feature, each edge the cosine to a feature one block upstream) and what adding "
                                  "one does to the continuation.")
    from interp.features.sae import SHIPPED_DIR

    big = SHIPPED_DIR / "smollm2-135m-4k"
    try:
        saes = load_saes(big if big.is_dir() else None)
    except BadInputError:
        sec.text("No shipped SAEs found (data/features/). Train some with `interp features train`.")
        return
    sae = saes[TARGET]
    if sae.model_id != ctx.model.name or sae.d_in != ctx.model.dims.d_model or TARGET not in ctx.trace:
        sec.text(f"The shipped SAEs were trained on {sae.model_id!r}, not on {ctx.model.name!r}: train SAEs for this "
                 "model with `interp features train --store STORE --hook HOOK --out DIR` and read them with "
                 "`interp features flow --saes DIR`.")
        return
    sec.text(f"TopK sparse autoencoders ({sae.d_sae} features, k = {sae.config.k}) shipped for this model at "
             f"{', '.join(saes)} ({_provenance(big)}). Feature flow follows Laptev et al. (2025): a feature of the "
             "residual stream after block 4 is matched, by the cosine of decoder directions, with the features of "
             "the SAEs one step upstream (the residual stream before the block, and the block's attention and MLP "
             "outputs where SAEs for them ship).")
    n = int(ctx.trace.attention_mask[0].sum())
    acts = ctx.trace[TARGET][0, :n]
    with torch.no_grad():
        z = sae.encode(acts)
    loss = spliced_ce(ctx.model, ctx.trace.select(0), sae=sae, progress=False)
    last = z[-1]
    top = last.topk(5)
    rows = []
    for v, f in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        toks, _ = promoted_tokens(ctx.model, direction=sae.direction(f), k=5)
        rows.append((f, round(v, 3), ", ".join(repr(t) for t in toks)))
    sec.table(["feature", f"activation at {ctx.tokens[n - 1]!r}", "tokens its direction promotes"], rows,
              caption=f"The most active features of {TARGET} at the last token.")
    ev = 1 - float((sae.reconstruct(acts) - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum())
    sec.table(["metric", "value"], [("explained variance on the prompt", round(ev, 4)),
                                    ("L0 on the prompt", round(float((z > 0).sum(-1).float().mean()), 2)),
                                    ("next-token CE clean (nats)", round(loss.clean, 4)),
                                    ("... with the SAE spliced in", round(loss.spliced, 4)),
                                    ("... with the hook zeroed", round(loss.zero, 4))])
    sec.numbers("feature_acts_last_token", last, axes=["feature"])
    cls = classify_features(ctx.model, saes=saes, hook=TARGET, threshold=0.5)
    best = cls.scores.nan_to_num(-1.0).max(0).values
    chance = chance_similarity(sae.d_in, sae.d_sae)
    carried = float((best >= 0.5).float().mean())
    sec.text(f"Origin of the {sae.d_sae} features of {TARGET} (best predecessor cosine >= 0.5): "
             + ", ".join(f"{k} {v}" for k, v in cls.counts().items())
             + f". {carried:.0%} have a predecessor at cosine >= 0.5; the median best cosine is "
             f"{float(best.median()):.2f} against about {chance:.2f} for random directions (which essentially never "
             "reach 0.5 in this width). "
             + ("Laptev et al. find most features carried across layers by well-trained SAEs." if carried >= 0.3 else
                "These SAEs learn few features that line up across layers, so most come out 'new'; SAEs trained on "
                "more data match far more (`make dictionaries`; Laptev et al. find most features carried)."))
    sec.result(cls, views=["counts"])
    f0 = int(top.indices[0])
    graph = feature_flow(ctx.model, saes=saes, hook=TARGET, feature=f0, threshold=0.2, top_n=2)
    sec.text(f"Feature {f0} is classified {cls.classes[f0]!r}; its backward flow graph (edges: cosine >= 0.2, "
             "the best 2 per predecessor; hover a node for the tokens it promotes):")
    sec.result(graph, views=["graph"], name="flow_edges")
    scale = 4.0 * float(top.values[0]) if float(top.values[0]) > 0 else 20.0
    res = steer(ctx.model, ctx.prompt, interventions=[FeatureEdit(TARGET, sae=sae, feature=f0, add=scale)],
                max_new_tokens=6 if ctx.fast else 12)
    sec.table(["run", "greedy continuation"], [("before", res.before), (f"feature {f0} + {scale:.1f}", res.after)],
              caption=f"Steering: feature {f0} of {TARGET} added at every position during generation.")
    _attribution(sec, ctx)


def _provenance(big: Any) -> str:
    """Where the SAEs come from: the training summary of ``make dictionaries`` when the big set ships."""
    import json

    summary = big.parent / (big.name + ".json")
    if big.is_dir() and summary.is_file():
        info = json.loads(summary.read_text())["dictionaries"]
        tokens = min(int(d["tokens"]) for d in info.values())
        return f"trained on the fly on {tokens:,} tokens of a mixed prose and code corpus by data/features/build_dicts.py"
    return "trained on 48k tokens by data/features/build.py"


def _attribution(sec: Any, ctx: ReportContext) -> None:
    """The attribution graph of the prompt through the shipped transcoders (blocks 3 and 4; other MLPs are error)."""
    from interp.errors import BadInputError
    from interp.features import attribution_graph
    from interp.features.graph import load_transcoders

    try:
        tcs = load_transcoders()
    except BadInputError:
        return
    if any(tc.model_id != ctx.model.name for tc in tcs.values()):
        return
    # transcoders at two of the 30 MLPs: error nodes carry most of the influence, so prune loosely enough that
    # features remain (at the default 0.8 / 0.98 none do on the report's prompt)
    g = attribution_graph(ctx.model, ctx.prompt, transcoders=tcs, max_feature_nodes=16 if ctx.fast else 48,
                          node_threshold=0.95, edge_threshold=0.99, progress=False)
    head = g.headline()
    sec.text(f"Attribution graph of the prompt (circuit tracing with the transcoders shipped for the MLPs of blocks "
             f"{', '.join(str(k) for k in sorted(tcs))}; every other MLP is an error node): attention patterns and "
             "norm scales frozen, edges are exact direct effects in that linear replacement, pruned by influence on "
             f"the top logits (node threshold 0.95, edge threshold 0.99). {head['features']} features and "
             f"{head['edges']} edges kept.")
    sec.result(g, views=["graph"], name="attribution_graph")
