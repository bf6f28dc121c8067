"""``interp induction``: score every head on repeated random tokens, classify induction / previous-token /
duplicate heads, find their K-composition feeders and ablate the top induction heads."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args

ORDER = 70


def _heads(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (item.split(".") for item in text.split(",") if item)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"heads must look like '1.0,1.3' (layer.head), got {text!r}") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "induction", help="induction heads: scores, roles, K-composition feeders, ablation",
                    description="Score every head on repeated random tokens (induction, previous-token, duplicate), "
                                "classify them with thresholds, rank the previous-token heads feeding each induction "
                                "head by K-composition, and ablate the top induction heads. With --train-toy, train "
                                "the attention-only toy model instead.",
                    example="interp induction --model toy-induction --ablate 1.2,1.3 --html induction.html")
    model_arg(p)
    p.add_argument("--n-seq", type=int, default=16, help="sequences (default: %(default)s)")
    p.add_argument("--half", type=int, default=64, help="random tokens per repeat (default: %(default)s; capped "
                                                         "by the model's context)")
    p.add_argument("--induction-threshold", type=float, default=0.4)
    p.add_argument("--prev-token-threshold", type=float, default=0.4)
    p.add_argument("--duplicate-threshold", type=float, default=0.4)
    p.add_argument("--ablate", type=_heads, help="heads to ablate, e.g. '5.1,7.3' (default: the top --top-k)")
    p.add_argument("--method", choices=["zero", "mean"], default="zero", help="ablation (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=4, help="top induction heads to ablate and plot (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-toy", metavar="DIR", help="train the toy model into DIR (a few minutes) and exit")
    p.add_argument("--steps", type=int, default=2000, help="training steps with --train-toy (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.train_toy:
        from interp.models.toy import ToyConfig, train_toy

        run_ = train_toy(ToyConfig(steps=args.steps, seed=args.seed, stop_after_phase_change=False))
        run_.save(args.train_toy)
        print(f"phase change at step {run_.phase_change_step}; {run_.seconds:.0f} s; saved to {args.train_toy}")
        return 0
    import interp
    from interp.report import Report
    from interp.report.sections.induction import induction_section
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)
    rep = Report(f"interp induction — {model.name}", command=command_line(),
                 subtitle=f"{args.n_seq} x 2 x {args.half} repeated random tokens")
    summary = induction_section(rep.section("Induction heads", 'Which heads copy what followed an earlier occurrence of the current token (scores near 1 mark induction heads).'), model, n_seq=args.n_seq, half=args.half,
                                induction_threshold=args.induction_threshold,
                                prev_token_threshold=args.prev_token_threshold,
                                duplicate_threshold=args.duplicate_threshold, ablate=args.ablate, method=args.method,
                                top_k=args.top_k, seed=args.seed)
    sc, roles, ab = summary["scores"], summary["roles"], summary["ablation"]
    print(f"induction heads of {model.name}: loss first repeat {sc['loss_first']:.3f}, second {sc['loss_second']:.3f}")
    print(f"{'head':>7} {'induction':>9} {'fed by (K-composition)'}")
    for row in roles["induction_heads"][:10]:
        fed = ", ".join(f"L{f['layer']}H{f['head']} {f['k_composition']:.2f}" for f in row["fed_by"][:3])
        print(f"  L{row['layer']}H{row['head']:<2} {row['score']:9.3f}  {fed}")
    print("previous-token heads: " + ", ".join(f"L{r['layer']}H{r['head']} {r['score']:.2f}"
                                               for r in roles["prev_token_heads"][:10]))
    print("duplicate-token heads: " + ", ".join(f"L{r['layer']}H{r['head']} {r['score']:.2f}"
                                                for r in roles["duplicate_heads"][:10]))
    ctrl = ab["repeat_loss_control"]
    print(f"{ab['method']}-ablating {', '.join(f'L{a}H{b}' for a, b in ab['heads'])}: repeat loss "
          f"{ab['repeat_loss_clean']:.3f} -> {ab['repeat_loss_ablated']:.3f}"
          + (f" (control {ctrl:.3f})" if ctrl is not None else ""))
    emit(args, rep)
    return 0
