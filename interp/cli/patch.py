"""``interp patch``: activation patching sweep (or attribution patching) of a clean/corrupted prompt pair."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, heads_arg, model_arg, output_args, positions_arg, positive_int

ORDER = 30
COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")


def layers_type(text: str) -> list[int] | slice:
    """``--layers 0,5,-1`` (negative from the end) or a slice ``0:30:3`` → a layer selection.

    Example:
        >>> layers_type("0,5,-1"), layers_type("::3")
        ([0, 5, -1], slice(None, None, 3))
    """
    t = text.strip()
    try:
        if ":" in t:
            parts = t.split(":")
            if len(parts) > 3:
                raise ValueError
            return slice(*(int(p) if p.strip() else None for p in parts))
        items = [int(p) for p in t.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad layers {text!r}; write 0,5,-1 or a slice like 0:30:3") from None
    if not items:
        raise argparse.ArgumentTypeError(f"no layers in {text!r}; write 0,5,-1 or a slice like 0:30:3")
    return items


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "patch", help="activation / attribution patching of a clean vs corrupted prompt",
                    description="Patch activations of one run into the other at every layer x position (x head) "
                                "and print where the metric moves most.",
                    example="interp patch --prompt 'When Mary and John went to the store, John gave a drink to' "
                            "--corrupt 'When Mary and John went to the store, Mary gave a drink to' "
                            "--answer ' Mary' --wrong ' John' --component z --heads L23H3,L21H4 --html patch.html")
    model_arg(p)
    p.add_argument("--prompt", required=True, help="the clean prompt")
    p.add_argument("--corrupt", required=True, help="the corrupted prompt (same token count)")
    p.add_argument("--answer", required=True, help="the correct next token (one token, e.g. ' Mary')")
    p.add_argument("--wrong", help="the competing token (needed by logit_diff)")
    p.add_argument("--metric", default="logit_diff", choices=["logit_diff", "prob", "logprob", "kl"],
                   help="(default: %(default)s)")
    p.add_argument("--component", default="resid_pre", choices=COMPONENTS, help="what to patch (default: %(default)s)")
    p.add_argument("--layers", type=layers_type, metavar="LAYERS",
                   help="layers to sweep: 0,5,-1 (negative from the end) or 0:30:3 (default: all)")
    positions_arg(p)
    heads_arg(p, help="heads to sweep (z, q, k, v, pattern), e.g. L5H1,L6H9 (default: every head)")
    p.add_argument("--per-position", action="store_true", help="head components: one cell per (head, position)")
    p.add_argument("--direction", default="denoising", choices=["denoising", "noising"], help="(default: %(default)s)")
    p.add_argument("--method", default="exact", choices=["exact", "attribution", "atp*"],
                   help="exact patching, attribution patching, or AtP* (q/k softmax fix; default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=10, help="cells printed (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.patching import activation_patching, attribution_patching, prepare
    from interp.report import Report
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)
    setup = prepare(model, args.prompt, corrupt=args.corrupt, answer=args.answer, wrong=args.wrong, metric=args.metric)
    sweep = {"component": args.component, "layers": args.layers, "positions": args.positions, "heads": args.heads,
             "per_position": args.per_position, "direction": args.direction}
    if args.method == "exact":
        res = activation_patching(model, setup, **sweep)
    else:
        res = attribution_patching(model, setup, qk_fix=args.method == "atp*", **sweep)
    print(f"{args.method} patching of {args.component} ({args.direction}) on {model.name}: {res.metric} "
          f"clean {res.clean_value:.4f}, corrupted {res.corrupted_value:.4f}")
    span = res.clean_value - res.corrupted_value
    for cell, v in res.top(args.top):
        extra = f"  normalised {(v - res.corrupted_value) / span:+.3f}" if res.can_normalize else ""
        print(f"  {res.cell_label(cell):<40} {res.metric} {v:+.4f}{extra}")
    rep = Report(f"interp patch — {model.name}", command=command_line(),
                 subtitle=f"clean {args.prompt!r} vs corrupted {args.corrupt!r}")
    sec = rep.section("Patching", "The metric after each patch: normalised, 1 means the clean behaviour is restored "
                                  "and 0 that nothing changed.")
    sec.result(res)
    emit(args, rep)
    return 0
