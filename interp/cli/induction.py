"""``interp induction``: score every head on repeated random tokens (or ``--prompt`` texts), classify induction /
previous-token / duplicate heads, find their K-composition feeders and ablate the top induction heads (or
``--heads``); with ``--train-toy DIR``, train the attention-only toy model instead."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, heads_arg, model_arg, output_args, positions_arg

ORDER = 70
INTRO = ("Which heads copy what followed an earlier occurrence of the current token: scores near 1 mark induction "
         "heads, and ablating them shows what they are worth.")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "induction", help="induction heads: scores, roles, K-composition feeders, ablation",
                    description="Score every head on repeated random tokens (or on --prompt texts): induction, "
                                "previous-token and duplicate-token scores; classify them with thresholds, rank the "
                                "previous-token heads feeding each induction head by K-composition, and ablate the "
                                "top induction heads (or --heads). With --train-toy, train the attention-only toy "
                                "model instead.",
                    example="interp induction --model toy-induction --heads L1H2,L1H3 --html induction.html")
    model_arg(p)
    p.add_argument("--prompt", action="append", help="a text to score on instead of repeated random tokens "
                                                     "(repeatable; needs a model with a tokenizer)")
    p.add_argument("--n-seq", type=int, help="sequences of repeated random tokens (default: 16)")
    p.add_argument("--half", type=int, help="random tokens per repeat (default: 64, capped by the model's context)")
    p.add_argument("--induction-threshold", type=float, default=0.4)
    p.add_argument("--prev-token-threshold", type=float, default=0.4)
    p.add_argument("--duplicate-threshold", type=float, default=0.4)
    heads_arg(p, help="heads to ablate, e.g. L1H2,L1H3 (default: the top --top-k induction heads)")
    positions_arg(p, help="ablate only at these positions of each sequence: -1 (each one's last token), 0,3,-1 "
                          "or a slice like 2:5 (default: every position)")
    p.add_argument("--method", choices=["zero", "mean"], default="zero", help="ablation (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=4, help="top induction heads to ablate and plot (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random tokens and the control heads")
    p.add_argument("--train-toy", metavar="DIR", help="train the toy model into DIR (a few minutes) and exit")
    p.add_argument("--steps", type=int, default=2000, help="training steps with --train-toy (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def _train(args: argparse.Namespace) -> int:
    from interp.models.toy import ToyConfig, train_toy

    run_ = train_toy(ToyConfig(steps=args.steps, seed=args.seed, stop_after_phase_change=False))
    run_.save(args.train_toy)
    print(f"phase change at step {run_.phase_change_step}; {run_.seconds:.0f} s; saved to {args.train_toy}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.train_toy:
        return _train(args)
    import interp
    from interp.errors import BadInputError
    from interp.report import Report
    from interp.report.sections.induction import induction_section
    from interp.trace.trace import command_line

    if args.prompt and (args.n_seq is not None or args.half is not None):
        raise BadInputError("bad --n-seq/--half with --prompt: they shape the repeated random tokens; valid: "
                            "leave them out, or leave out --prompt")
    model = interp.load_model(args.model)
    n_seq = 16 if args.n_seq is None else args.n_seq
    half = 64 if args.half is None else args.half
    subtitle = (f"{len(args.prompt)} prompt(s)" if args.prompt else f"{n_seq} x 2 x {half} repeated random tokens")
    rep = Report(f"interp induction — {model.name}", command=command_line(), subtitle=subtitle)
    scores, roles, ab = induction_section(
        rep.section("Induction heads", INTRO), model, args.prompt, n_seq=n_seq, half=half,
        induction_threshold=args.induction_threshold, prev_token_threshold=args.prev_token_threshold,
        duplicate_threshold=args.duplicate_threshold, heads=args.heads, positions=args.positions,
        method=args.method, top_k=args.top_k, seed=args.seed)
    print(f"induction heads of {model.name}: loss first repeat {scores.loss_first:.3f}, "
          f"second {scores.loss_second:.3f}")
    print(f"{'head':>7} {'induction':>9}  fed by (K-composition)")
    for head, score in roles.induction_heads[:10]:
        fed = ", ".join(f"{f} {c:.2f}" for f, c in roles.feeders.get(head, ())[:3])
        print(f"{head!s:>7} {score:9.3f}  {fed}")
    print("previous-token heads: " + (", ".join(f"{h} {s:.2f}" for h, s in roles.prev_token_heads[:10]) or "none"))
    print("duplicate-token heads: " + (", ".join(f"{h} {s:.2f}" for h, s in roles.duplicate_heads[:10]) or "none"))
    ctrl = ab.repeat_loss_control
    where = f" at positions {ab.positions}" if ab.positions is not None else ""
    print(f"{ab.method}-ablating {', '.join(str(h) for h in ab.heads)}{where}: repeat loss "
          f"{ab.repeat_loss_clean:.3f} -> {ab.repeat_loss_ablated:.3f}"
          + (f" (control {ctrl:.3f})" if ctrl is not None else ""))
    emit(args, rep)
    return 0
