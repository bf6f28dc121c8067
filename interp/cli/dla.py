"""``interp dla``: direct logit attribution of a prompt's prediction to components and heads."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args

ORDER = 22


def _token(text: str) -> str | int:
    return int(text) if text.lstrip("-").isdigit() else text


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "dla", help="direct logit attribution: which components and heads write a prediction",
                    description="Split logit(answer) - logit(wrong) at one position over the residual stream's "
                                "writers (embeddings, each attention and MLP output) and over every head, through "
                                "the final norm frozen at its scale (TransformerLens' logit_attrs).",
                    example="interp dla --prompt 'When Mary and John went to the store, John gave a drink to' "
                            "--answer ' Mary' --wrong ' John' --html dla.html")
    model_arg(p)
    p.add_argument("--prompt", required=True, help="the text to read")
    p.add_argument("--answer", required=True, type=_token, help="one token (e.g. ' Mary', mind the space) or a token id")
    p.add_argument("--wrong", type=_token, help="the competing token (default: the answer's logit alone)")
    p.add_argument("--position", type=int, default=-1,
                   help="the position read (default: %(default)s, the last token; negative counts from the end)")
    p.add_argument("--top", type=int, default=10, help="heads listed (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import bad_value
    from interp.lens.dla import logit_attrs
    from interp.report import Report
    from interp.trace.trace import command_line

    if args.top < 1:
        raise bad_value("--top", args.top, "an int >= 1")
    model = interp.load_model(args.model)
    res = logit_attrs(model, args.prompt, answer=args.answer, wrong=args.wrong, positions=args.position)
    print(f"{res.metric} at {res.tokens[0][res.positions[0]]!r}: {float(res.logit_diff[0]):.3f} "
          f"(components {float(res.components[0].sum()):.3f} + constant {float(res.bias[0]):.3f})")
    order = res.components[0].abs().argsort(descending=True)[:args.top].tolist()
    print(f"{'component':<14} {'contribution':>12}")
    for i in order:
        print(f"{res.component_labels[i]:<14} {float(res.components[0, i]):+12.3f}")
    print(f"\n{'head':<14} {'contribution':>12}")
    for head, v in res.top_heads(args.top, batch=0):
        print(f"{head!s:<14} {v:+12.3f}")
    rep = Report(f"interp dla — {model.name}", command=command_line(), subtitle=f"prompt: {args.prompt!r}")
    sec = rep.section("Direct logit attribution",
                      f"How much each part of the model writes toward {res.metric}: bars right of zero push it up.")
    sec.result(res, views=("components", "heads"))
    emit(args, rep)
    return 0
