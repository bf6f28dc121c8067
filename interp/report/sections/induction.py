"""Report section "Induction heads": head scores on repeated random tokens, the top heads' patterns, the
previous-token heads feeding them (K-composition), OV copying, logit attribution and an ablation.

About 5-10 s on SmolLM2 on a CPU (4 sequences of 2 x 32 tokens; 2 x 16 with ``fast``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from interp.induction import AblationResult, HeadRoles, InductionScores
from interp.models import Inputs, Model
from interp.report.document import Report, Section
from interp.report.sections.context import ReportContext
from interp.sites import HeadSpec, Positions

ORDER = 70
TITLE = "Induction heads"
INTRO = ("Which heads copy what followed an earlier occurrence of the current token: scores near 1 mark induction "
         "heads, and ablating them shows what they are worth.")


def induction_section(sec: Section, model: Model, inputs: Inputs | None = None, *, n_seq: int = 4, half: int = 32,
                      induction_threshold: float = 0.4, prev_token_threshold: float = 0.4,
                      duplicate_threshold: float = 0.4, heads: HeadSpec | Sequence[HeadSpec] | None = None,
                      positions: Positions = None, method: Literal["zero", "mean"] = "zero", top_k: int = 4,
                      seed: int = 0) -> tuple[InductionScores, HeadRoles, AblationResult]:
    """Fill a report section with the scores, the roles and an ablation (used by ``interp induction``).

    Args:
        sec: the section.
        model: the model.
        inputs: what to score on (default: ``n_seq`` sequences of BOS? + ``half`` random tokens, repeated;
            ``half`` is capped by the model's context).
        induction_threshold, prev_token_threshold, duplicate_threshold: for :func:`classify_heads`.
        heads: heads to ablate (default: the ``top_k`` induction heads); positions: where to ablate them.
        method: ``"zero"`` or ``"mean"`` ablation.
        top_k: top induction heads to ablate by default (and whose patterns are kept).
        seed: seeds the random tokens and the control heads.

    Returns:
        ``(scores, roles, ablation)``; their ``to_dict()`` go into the section's JSON under their class names.
    """
    from interp.induction import ablate_heads, classify_heads, induction_scores, repeated_tokens

    random = inputs is None
    if inputs is None:
        n_ctx = model.dims.n_ctx
        if n_ctx is not None:
            half = min(half, (n_ctx - 1) // 2)
        inputs = repeated_tokens(model, n_seq=n_seq, half=half, seed=seed)
    s = induction_scores(model, inputs, attribution=True, copying=True, top_k=top_k)
    roles = classify_heads(model, scores=s, induction_threshold=induction_threshold,
                           prev_token_threshold=prev_token_threshold, duplicate_threshold=duplicate_threshold)
    what = (f"{s.n_seq} sequences of {'BOS + ' if s.offset else ''}{s.half} random tokens repeated twice" if random
            else f"{s.n_seq} sequences (the repeats are their first and second halves)")
    sec.text(f"{what}. Induction score: attention from a token of the second repeat to the token after its first "
             "occurrence (Olsson et al. 2022). Loss on the first repeat "
             f"{s.loss_first:.2f} nats, on the second {s.loss_second:.2f} (in-context-learning score {s.icl_score:+.2f}).")
    rows = []
    for h, v in roles.induction_heads[:8]:
        feeders = roles.feeders.get(h, ())[:3]
        rows.append((str(h), round(v, 3), round(float(s.prev_token[h.layer, h.head]), 3),
                     round(float(s.logit_attribution[h.layer, h.head]), 3) if s.logit_attribution is not None else "",
                     round(float(s.copying[h.layer, h.head]), 3) if s.copying is not None else "",
                     ", ".join(f"{f} ({c:.2f})" for f, c in feeders)))
    if rows:
        sec.table(["head", "induction", "prev token", "logit attr.", "OV copying", "fed by (K-composition)"], rows,
                  caption=f"Heads with induction score >= {induction_threshold}; feeders are previous-token heads "
                          f"(score >= {prev_token_threshold}) of earlier layers, by K-composition score.")
    else:
        best, score = s.top("induction", 1)[0]
        sec.text(f"No head reaches an induction score of {induction_threshold}; the best is {best} ({score:.3f}).")
    sec.text("Previous-token heads: " + (", ".join(f"{h} ({v:.2f})" for h, v in roles.prev_token_heads[:8])
                                         or "none above threshold") + ".")
    sec.result(s, views=["induction", "prev_token", "pattern", "loss"])
    sec.result(roles, views=["feeders"] if roles.feeders else [])
    chosen = heads if heads is not None else [h for h, _ in s.top("induction", top_k)]
    pool = [h for h, v in s.top("induction", s.induction.numel()) if v < 0.5 * induction_threshold]
    r = ablate_heads(model, inputs, heads=chosen, method=method, positions=positions, control_pool=pool, seed=seed)
    where = f" at positions {r.positions}" if r.positions is not None else ""
    sec.text(f"{method.capitalize()}-ablating {', '.join(str(h) for h in r.heads)}{where}: repeat loss "
             f"{r.repeat_loss_clean:.2f} -> {r.repeat_loss_ablated:.2f} nats"
             + (f" (control, {len(r.control_heads)} random non-induction heads: {r.repeat_loss_control:.2f})"
                if r.repeat_loss_control is not None else "") + ".")
    sec.result(r, views=["loss"])
    return s, roles, r


def add_section(rep: Report, ctx: ReportContext) -> None:
    sec = rep.section(TITLE, INTRO)
    if not ctx.model.adapter.is_causal:
        sec.text(f"{ctx.model.name} is an encoder: induction heads are a property of causal language models.")
        return
    induction_section(sec, ctx.model, n_seq=2 if ctx.fast else 4, half=16 if ctx.fast else 32)
