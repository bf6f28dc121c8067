"""Report section "Induction heads": head scores on repeated random tokens, the top heads' patterns, the
previous-token heads feeding them (K-composition), OV copying, logit attribution and an ablation.

About 5-10 s on SmolLM2 on a CPU (4 sequences of 2 x 32 tokens; 2 x 16 with ``fast``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interp.report.sections.context import ReportContext

ORDER = 70


def induction_section(sec: Any, model: Any, *, n_seq: int = 4, half: int = 32, induction_threshold: float = 0.4,
                      prev_token_threshold: float = 0.4, duplicate_threshold: float = 0.4,
                      ablate: Sequence[tuple[int, int]] | None = None, method: str = "zero", top_k: int = 4,
                      seed: int = 0) -> dict[str, Any]:
    """Fill a report section; returns the JSON summary (scores, roles, ablation). Used by ``interp induction``."""
    from interp.induction import ablate_heads, classify_heads, induction_scores, repeated_tokens

    n_ctx = model.dims.n_ctx
    if n_ctx is not None:
        half = min(half, (n_ctx - 1) // 2)
    tokens = repeated_tokens(model, n_seq=n_seq, half=half, seed=seed)
    s = induction_scores(model, tokens, attribution=True, copying=True, top_k=top_k)
    roles = classify_heads(model, s, induction_threshold=induction_threshold,
                           prev_token_threshold=prev_token_threshold, duplicate_threshold=duplicate_threshold)
    sec.text(f"{n_seq} sequences of {'BOS + ' if s.offset else ''}{half} random tokens repeated twice. Induction score: "
             "attention from a token of the second repeat to the token after its first occurrence (Olsson et al. "
             f"2022). Loss on the first repeat {s.loss_first:.2f} nats, on the second {s.loss_second:.2f} "
             f"(in-context-learning score {s.icl_score:+.2f}).")
    rows = []
    for (lh, v) in roles.induction_heads[:8]:
        feeders = roles.feeders.get(lh, ())[:3]
        rows.append((f"L{lh[0]}H{lh[1]}", round(v, 3), round(float(s.prev_token[lh]), 3),
                     round(float(s.logit_attribution[lh]), 3) if s.logit_attribution is not None else "",
                     round(float(s.copying[lh]), 3) if s.copying is not None else "",
                     ", ".join(f"L{f[0]}H{f[1]} ({c:.2f})" for f, c in feeders)))
    if rows:
        sec.table(["head", "induction", "prev token", "logit attr.", "OV copying", "fed by (K-composition)"], rows,
                  caption=f"Heads with induction score >= {induction_threshold}; feeders are previous-token heads "
                          f"(score >= {prev_token_threshold}) of earlier layers, by K-composition score.")
    else:
        sec.text(f"No head reaches an induction score of {induction_threshold}; the best is "
                 f"L{s.top()[0][0][0]}H{s.top()[0][0][1]} ({s.top()[0][1]:.3f}).")
    sec.text("Previous-token heads: " + (", ".join(f"L{h[0]}H{h[1]} ({v:.2f})" for h, v in roles.prev_token_heads[:8])
                                         or "none above threshold") + ".")
    sec.figure(s.plot("induction")).figure(s.plot("prev_token")).figure(s.plot("pattern", 0)).figure(s.plot("loss"))
    heads = list(ablate) if ablate else [h for h, _ in s.top("induction", top_k)]
    pool = [h for h, v in s.top("induction", s.induction.numel()) if v < 0.5 * induction_threshold]
    r = ablate_heads(model, heads, tokens, method=method, control_pool=pool)  # type: ignore[arg-type]
    sec.text(f"{method.capitalize()}-ablating {', '.join(f'L{a}H{b}' for a, b in heads)}: repeat loss "
             f"{r.repeat_loss_clean:.2f} -> {r.repeat_loss_ablated:.2f} nats"
             + (f" (control, {len(r.control_heads)} random non-induction heads: {r.repeat_loss_control:.2f})"
                if r.repeat_loss_control is not None else "") + ".")
    sec.figure(r.plot())
    for name in s.available():
        sec.numbers(name, s.metric(name), axes=["layer", "head"])  # type: ignore[arg-type]
    sec.numbers("loss_per_position", s.loss, axes=["pos"])
    return {"scores": s.to_dict(), "roles": roles.to_dict(), "ablation": r.to_dict()}


def add_section(rep: Any, ctx: ReportContext) -> None:
    sec = rep.section("Induction heads", 'Which heads copy what followed an earlier occurrence of the current token: scores near 1 mark induction heads, ablating them shows what they are worth.')
    if not ctx.model.adapter.is_causal:
        sec.text(f"{ctx.model.name} is an encoder: induction heads are a property of causal language models.")
        return
    induction_section(sec, ctx.model, n_seq=2 if ctx.fast else 4, half=16 if ctx.fast else 32)
