"""``interp lens``: logit lens (and, with ``--tuned``, tuned lens) of a prompt, printed per layer at the last token."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args

ORDER = 20


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    lp = add_command(sub, common, "lens", help="logit lens: each layer's residual stream read as next-token predictions",
                     description="Decode every layer's residual stream through the final norm and the "
                                 "unembedding; print the top token per layer at the last position.",
                     example="interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris' "
                             "--tuned auto --html lens.html")
    model_arg(lp)
    lp.add_argument("--prompt", required=True, help="the text to read")
    lp.add_argument("--target", help="a token (exactly one, e.g. ' Paris') whose rank is tracked")
    lp.add_argument("--top-k", type=int, default=5, help="top tokens kept per layer and position (default: %(default)s)")
    lp.add_argument("--tuned", metavar="PATH|auto",
                    help="also read through a tuned lens: a directory saved by TunedLens.save, or 'auto' for the one "
                         "saved for this model (data/lenses/<model> or $INTERP_HOME/lenses/<model>)")
    output_args(lp)
    lp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.lens import LensComparison, TunedLens, find_tuned_lens, logit_lens
    from interp.report import Report
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)
    lens = None
    if args.tuned == "auto":
        lens = find_tuned_lens(model)
        if lens is None:
            raise FileNotFoundError(f"no tuned lens saved for {model.name!r}: train one (interp.lens.TunedLens) or "
                                    "pass --tuned PATH")
    elif args.tuned:
        lens = TunedLens.load(args.tuned)
    trace = model.run(args.prompt, capture="blocks.*.hook_resid_post").trace
    res = logit_lens(model, trace, target=args.target, top_k=args.top_k)
    tuned = lens.apply(model, trace, target=args.target, top_k=args.top_k) if lens is not None else None
    n = res.n_real(0)
    print(f"logit lens of {model.name} at the last token {res.tokens[0][n - 1]!r}")
    head = f"{'layer':>6}  {'top token':<16} {'p':>6} {'entropy':>8} {'KL':>8}"
    head += f" {'rank':>7} {'p(target)':>10}" if res.target_rank is not None else ""
    print(head + (f"  {'tuned top':<16} {'tuned KL':>8}" if tuned is not None else ""))
    for L, label in enumerate(res.layer_labels):
        line = (f"{label:>6}  {res.top_tokens(L)[0]!r:<16} {float(res.top_probs[L, 0, n - 1, 0]):6.3f} "
                f"{float(res.entropy[L, 0, n - 1]):8.3f} {float(res.kl_to_final[L, 0, n - 1]):8.3f}")
        if res.target_rank is not None and res.target_prob is not None:
            line += f" {int(res.target_rank[L, 0, n - 1]):7d} {float(res.target_prob[L, 0, n - 1]):10.4f}"
        if tuned is not None:
            line += f"  {tuned.top_tokens(L)[0]!r:<16} {float(tuned.kl_to_final[L, 0, n - 1]):8.3f}"
        print(line)
    rep = Report(f"interp lens — {model.name}", command=command_line(), subtitle=f"prompt: {args.prompt!r}")
    sec = rep.section("Logit lens", "Each layer's residual stream read as a next-token prediction: cells show the top token, colour its probability.")
    sec.figure(res.plot()).figure(res.plot_kl(batch=0))
    if res.target_rank is not None:
        sec.figure(res.plot_target_rank())
    for name, entry in res.to_dict().items():
        if name != "tokens":
            sec.numbers(name, entry["values"], axes=entry["axes"], labels=entry["labels"])
    if tuned is not None:
        sec = rep.section("Tuned lens", 'The same readings through a tuned lens, which tracks the output earlier than the logit lens.')
        sec.figure(tuned.plot()).figure(LensComparison.from_results(res, tuned).plot())
        if tuned.target_rank is not None:
            sec.figure(tuned.plot_target_rank())
        for name, entry in tuned.to_dict().items():
            if name != "tokens":
                sec.numbers(name, entry["values"], axes=entry["axes"], labels=entry["labels"])
    emit(args, rep)
    return 0
