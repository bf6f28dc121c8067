"""``interp patch``: activation patching sweep (or attribution patching) of a clean/corrupted prompt pair."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args

ORDER = 30


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "patch", help="activation / attribution patching of a clean vs corrupted prompt",
                    description="Patch activations of one run into the other at every layer x position (x head) "
                                "and print where the metric moves most.",
                    example="interp patch --clean 'When Mary and John went to the store, John gave a drink to' "
                            "--corrupted 'When Mary and John went to the store, Mary gave a drink to' "
                            "--answer ' Mary' --wrong ' John' --html patch.html")
    model_arg(p)
    p.add_argument("--clean", required=True, help="the clean prompt")
    p.add_argument("--corrupted", required=True, help="the corrupted prompt (same token count)")
    p.add_argument("--answer", required=True, help="the correct next token (one token, e.g. ' Mary')")
    p.add_argument("--wrong", help="the competing token (needed by logit_diff)")
    p.add_argument("--metric", default="logit_diff", choices=["logit_diff", "prob", "logprob", "kl"],
                   help="(default: %(default)s)")
    p.add_argument("--component", default="resid_pre",
                   choices=["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern"],
                   help="what to patch (default: %(default)s)")
    p.add_argument("--direction", default="denoising", choices=["denoising", "noising"], help="(default: %(default)s)")
    p.add_argument("--method", default="exact", choices=["exact", "attribution", "atp*"],
                   help="exact patching, attribution patching, or AtP* (q/k softmax fix; default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="cells printed (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.patching import activation_patching, attribution_patching, prepare
    from interp.report import Report
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)
    s = prepare(model, args.clean, args.corrupted, answer=args.answer, wrong=args.wrong, metric=args.metric)
    if args.method == "exact":
        res = activation_patching(s, args.component, direction=args.direction, progress=not args.quiet)
    else:
        res = attribution_patching(s, args.component, direction=args.direction, qk_fix=args.method == "atp*",
                                   progress=not args.quiet)
    print(f"{args.method} patching of {args.component} ({args.direction}) on {model.name}: {res.metric} "
          f"clean {res.clean_value:.4f}, corrupted {res.corrupted_value:.4f}")
    norm = res.normalized if res.can_normalize else None
    for cell, v in res.top(args.top):
        where = "  ".join(f"{k} {res.tokens[i]!r}@{i}" if k == "pos" else f"{k} {i}" for k, i in cell.items())
        flat = tuple(res.coords[a].index(cell[a]) for a in res.axes)
        extra = f"  normalised {float(norm[flat]):+.3f}" if norm is not None else ""
        print(f"  {where:<40} {res.metric} {v:+.4f}{extra}")
    rep = Report(f"interp patch — {model.name}", command=command_line(),
                 subtitle=f"clean {args.clean!r} vs corrupted {args.corrupted!r}")
    sec = rep.section("Patching", 'The metric after each patch: 1 means the clean behaviour is restored, 0 that nothing changed.')
    sec.figure(res.plot())
    sec.numbers("values", res.values, axes=list(res.axes),
                labels={a: (res.labels(a) if a == "pos" else list(res.coords[a])) for a in res.axes})
    emit(args, rep)
    return 0
