"""Report section "Attention decomposition": the report's prompt's attention scores split over singular
components of each head's QK matrix (Franco & Crovella 2024), and the head → head communication graph.

Only the last layer's heads are decomposed and the graph is built for the heads of the last third of the layers
(at the prompt's last token), to stay at a few seconds on SmolLM2.
"""

from __future__ import annotations

from interp.heads import attention_decomposition, communication_graph
from interp.report.document import Report
from interp.report.sections.context import ReportContext
from interp.sites import HeadRef

ORDER = 46


def add_section(rep: Report, ctx: ReportContext) -> None:
    """Add the section (nothing for encoders and one-layer models)."""
    model = ctx.model
    L, H = model.dims.n_layers, model.dims.n_heads
    if L < 2 or not model.adapter.is_causal:
        return
    sec = rep.section("Attention decomposition",
                      "Each attention score of a head is a sum of terms, one per singular component of its "
                      "bias-augmented QK matrix (rotary models: the query is first rotated into the key's frame); a few "
                      "components carry most of it. Projecting every earlier writer onto those components gives "
                      "a communication graph: which heads feed a head's queries (q) or keys (k).")
    last = [HeadRef(L - 1, h) for h in range(H)]
    dec = attention_decomposition(model, ctx.prompt, heads=last, progress=False)
    sp = dec.sparsity(0.1)
    sec.text(f"Layer {L - 1}: on pairs with attention ≥ 0.1, {float(sp.mean()):.1f} components (of "
             f"{model.dims.d_head}) reach {dec.share:.0%} of the score on average; the terms sum back to the "
             f"model's scores within {dec.max_error:.1e}.")
    sec.result(dec, views=["pair", "sparsity"])
    first = max(1, L - max(1, L // 3))
    recv = [HeadRef(la, h) for la in range(first, L) for h in range(H)]
    g = communication_graph(model, ctx.prompt, receivers=recv, progress=False)
    sec.result(g, views=["graph"], n_edges=20)
    sec.table(["sender", "receiver", "side", "weight"],
              [[s, r, side, f"{w:+.3f}"] for s, r, side, w in g.top_edges(8)],
              caption="The strongest head → head edges at the last token (score units).")
