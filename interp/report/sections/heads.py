"""Report section "Heads": K-composition between all heads against a random baseline, the strongest
pair's communication channel (checked on the prompt), and the OV circuits' effective ranks.

About 10-15 s on SmolLM2 on this CPU (the all-pairs composition dominates); ``fast`` shrinks the
baseline sample and leaves out the vocabulary tables.
"""

from __future__ import annotations

from interp.report.sections.context import ReportContext

ORDER = 45


def add_section(rep: object, ctx: ReportContext) -> None:
    from interp.heads import channel, channel_activity, composition, head_svd

    model = ctx.model
    sec = rep.section("Heads", 'What each attention head reads and writes, from its weights alone: singular vectors of its OV and QK circuits and how heads compose.')  # type: ignore[attr-defined]
    comp = composition(model, kinds=("k",), baseline_samples=20 if ctx.fast else 200)
    pairs = comp.top_pairs("k", 8)
    sec.text("K-composition (Elhage et al. 2021): how much of a later head's key reading happens in the subspace "
             "an earlier head's OV circuit writes to, ‖W_OV·W_KQ‖/(‖W_OV‖‖W_QK‖), with the attention norm weight "
             f"folded in. Random baseline (same singular values, random subspaces): {comp.baseline_mean[0]:.4f} ± "
             f"{comp.baseline_std[0]:.4f}.")
    sec.table(["sender", "receiver", "score", "z vs random"],
              [[f"L{a[0]}H{a[1]}", f"L{b[0]}H{b[1]}", f"{s:.4f}", f"{z:.1f}"] for a, b, s, z in pairs],
              caption="The strongest K-composition pairs.")
    sec.figure(comp.plot("k", style="graph", n_edges=20))
    if not pairs:
        return
    (sender, receiver, _, _) = pairs[0]
    ch = channel(model, sender, receiver, "k")
    comps = ch.components(3)
    act = channel_activity(model, ctx.prompt, sender, receiver, comps, "k")
    sa, sr = f"L{sender[0]}H{sender[1]}", f"L{receiver[0]}H{receiver[1]}"
    sec.text(f"Channel {sa} → {sr} (Merullo et al. 2024): the receiver's keys read mostly the sender's OV components "
             f"{comps}. On the prompt, the sender's output along them is "
             + ", ".join(f"{float(r):.2f}x" for r in act.ratio)
             + " as large at the positions the receiver attends to as under uniform attention.")
    sec.figure(ch.plot())
    svd = head_svd(model, "ov", top_components=0 if ctx.fast else 1, n_tokens=8, progress=False)
    sec.figure(svd.plot("rank"))
    if not ctx.fast:
        sec.figure(svd.plot("tokens", sender[0], sender[1]))
    sec.numbers("k_composition_top", [[a[0], a[1], b[0], b[1], s] for a, b, s, _ in pairs],
                axes=["pair", "field"], labels={"field": ["layer_a", "head_a", "layer_b", "head_b", "score"]})
    sec.numbers("ov_effective_rank", svd.eff_rank, axes=["layer", "head"])
