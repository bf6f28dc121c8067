"""Report section "Heads": K-composition between all heads against a random baseline, the strongest
pair's communication channel (checked on the prompt), and the OV circuits' effective ranks.

About 10-15 s on SmolLM2 on this CPU (the all-pairs composition dominates); ``fast`` shrinks the
baseline sample and leaves out the vocabulary tables.
"""

from __future__ import annotations

from typing import Literal

from interp.heads import channel, channel_activity, composition, head_svd
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 45


def add_section(rep: Report, ctx: ReportContext) -> None:
    """Add the "Heads" section (nothing for a one-layer model: no pair of heads can compose)."""
    model = ctx.model
    if model.dims.n_layers < 2:
        return
    sec = rep.section("Heads", "What attention heads read and write, from their weights alone: the pairs of heads "
                               "whose K-composition stands out from a random baseline (edge width = score), the "
                               "strongest pair's channel checked on the prompt, and each head's OV effective rank.")
    comp = composition(model, kinds="k", baseline_samples=20 if ctx.fast else 200)
    pairs = comp.top_pairs("k", 8)
    sec.text("K-composition (Elhage et al. 2021): how much of a later head's key reading happens in the subspace "
             "an earlier head's OV circuit writes to, ‖W_OV·W_KQ‖/(‖W_OV‖‖W_QK‖), with the attention norm weight "
             f"folded in. Random baseline (same singular values, random subspaces): {comp.baseline_mean[0]:.4f} ± "
             f"{comp.baseline_std[0]:.4f}.")
    sec.table(["sender", "receiver", "score", "z vs random"],
              [[str(a), str(b), f"{s:.4f}", f"{z:.1f}"] for a, b, s, z in pairs],
              caption="The strongest K-composition pairs.")
    sec.result(comp, views=["graph"], kind="k", n_edges=20)
    sender, receiver, _, _ = pairs[0]
    ch = channel(model, sender=sender, receiver=receiver, kind="k")
    comps = ch.components(3)
    text = (f"Channel {sender} → {receiver} (Merullo et al. 2024): the receiver's keys read mostly the sender's OV "
            f"components {comps}.")
    act = None
    if model.adapter.is_causal:  # the check on the prompt compares with uniform attention over the causal prefix
        act = channel_activity(model, ctx.trace, sender=sender, receiver=receiver, kind="k", components=comps)
        text += (" On the prompt, the sender's output along them is "
                 + ", ".join(f"{float(r):.2f}x" for r in act.ratio)
                 + " as large at the positions the receiver attends to as under uniform attention.")
    sec.text(text)
    sec.result(ch)
    if act is not None:
        sec.result(act)
    circuit: Literal["ov", "qk"] = "ov" if model.weights.W_U is not None else "qk"  # OV is read through W_U
    svd = head_svd(model, circuit=circuit, top_components=0 if ctx.fast else 1, n_tokens=8, progress=False)
    sec.result(svd, views=["rank"])
    if not ctx.fast:
        sec.figure(svd.plot("tokens", head=sender))
