"""Report section "Patching": where the clean/corrupted difference lives (only with a corrupted prompt)."""

from __future__ import annotations

from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 40


def add_section(rep: Report, ctx: ReportContext) -> None:
    """Exact resid_pre patching (denoising) on every few layers x every position, and attribution
    patching of every head's output (AtP with its correlation to the exact cells).

    The metric is the logit difference between the clean and the corrupted run's top next tokens
    (KL to the clean run when both predict the same token). Costs ~10-20 s on SmolLM2 on a CPU.
    """
    import torch

    from interp.errors import BadInputError
    from interp.patching import activation_patching, attribution_patching, prepare

    if ctx.corrupt is None:
        return
    model = ctx.model
    sec = rep.section("Patching", "Where the difference between the clean and the corrupted prompt lives: each cell "
                                  "is the metric after patching one activation from the clean run into the "
                                  "corrupted one (normalised: 1 = fully restored, 0 = no change).")
    try:
        s0 = prepare(model, ctx.prompt, corrupt=ctx.corrupt, metric="kl")
    except BadInputError as e:  # e.g. different token counts
        sec.text(f"Patching skipped: {e}")
        return
    assert s0.clean_logits is not None and s0.corrupt_logits is not None
    a, w = int(s0.clean_logits[0].argmax()), int(s0.corrupt_logits[0].argmax())
    s = s0 if a == w else prepare(model, ctx.prompt, corrupt=ctx.corrupt, answer=a, wrong=w)
    what = ("KL(clean || patched) at the last token" if a == w else
            f"logit difference {model.to_str_tokens(torch.tensor([a]))[0][0]!r} − "
            f"{model.to_str_tokens(torch.tensor([w]))[0][0]!r} at the last token")
    n_layers = model.dims.n_layers
    every = 10 if ctx.fast else 4
    layers = sorted({*range(0, n_layers, every), n_layers - 1})
    exact = activation_patching(model, s, component="resid_pre", layers=layers, progress=False)
    atp = attribution_patching(model, s, component="resid_pre", layers=layers, exact=exact, progress=False)
    heads = attribution_patching(model, s, component="z", progress=False)
    sec.text(f"Activation patching (Zhang & Nanda 2023) of the clean prompt into the corrupted one (denoising); "
             f"metric: {what}; clean {s.clean_value:.3f}, corrupted {s.corrupted_value:.3f}. Exact patching of "
             f"resid_pre on {len(layers)} layers x {s.n_pos} positions (runs stacked in the batch, each "
             f"starting at its layer); attribution patching (one backward) for every layer and head. Pearson r "
             f"between attribution and exact patching on the same cells: {atp.correlation():.3f}.")
    sec.result(exact, name="patching_resid_pre_exact", title="exact patching of resid_pre (normalised: 1 = clean)")
    sec.result(atp, name="patching_resid_pre_atp", title="attribution patching of resid_pre (AtP estimate)")
    sec.result(heads, name="patching_heads_atp", title="attribution patching of each head's output (z, all positions)")
    top = heads.top(8)
    sec.table(["head", "estimated metric"], [[heads.cell_label(c), f"{v:.3f}"] for c, v in top],
              caption="Heads whose output moves the metric most (attribution estimate).")
