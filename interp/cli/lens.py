"""``interp lens``: logit lens (and, with ``--tuned``, tuned lens) of a prompt, printed per layer at its last token."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from interp.cli._common import add_command, emit, model_arg, output_args, positions_arg

if TYPE_CHECKING:
    from interp.lens import LogitLensResult

ORDER = 20


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    lp = add_command(sub, common, "lens", help="logit lens: each layer's residual stream read as next-token predictions",
                     description="Decode every layer's residual stream through the final norm and the "
                                 "unembedding; print the top token per layer at the last token (or at --positions).",
                     example="interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris' "
                             "--tuned auto --html lens.html")
    model_arg(lp)
    lp.add_argument("--prompt", required=True, help="the text to read")
    lp.add_argument("--target", help="a token (exactly one, e.g. ' Paris') whose rank is tracked")
    lp.add_argument("--top-k", type=int, default=5, help="top tokens kept per layer and position (default: %(default)s)")
    lp.add_argument("--hooks", action="append", default=None,
                    help="the streams to decode, repeatable: resid_post (default), resid_mid, attn_out, mlp_out, "
                         "resid_pre, some layers only (resid_post.-1) or a glob ('blocks.*.hook_attn_out')")
    positions_arg(lp, help="the tokens to decode and print: -1 (the last), 0,3,-1 or a slice like 2:5 "
                           "(default: decode every token, print the last)")
    lp.add_argument("--tuned", metavar="PATH|auto",
                    help="also read through a tuned lens: a directory saved by TunedLens.save, or 'auto' for the one "
                         "saved for this model (data/lenses/<model> or $INTERP_HOME/lenses/<model>)")
    lp.add_argument("--decoder-lens", action="store_true",
                    help="DecoderLens for an encoder-decoder (--model toy-t5 or a saved T5/BART/Marian directory): "
                         "what the decoder generates from each encoder layer, for the --prompt as source")
    lp.add_argument("--reference", help="with --decoder-lens: the expected output (per-layer loss and exact match)")
    lp.add_argument("--max-new-tokens", type=int, default=16,
                    help="with --decoder-lens: generation bound (default: %(default)s)")
    output_args(lp)
    lp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import BadInputError
    from interp.lens import LensComparison, logit_lens
    from interp.lens.tuned_lens import as_tuned_lens
    from interp.report import Report
    from interp.trace.trace import command_line

    if args.decoder_lens:
        return _decoder_lens(args)
    model = interp.load_model(args.model)
    hooks = args.hooks or ["resid_post"]
    lens = as_tuned_lens(model, args.tuned) if args.tuned else None
    if lens is not None and hooks != ["resid_post"]:
        raise BadInputError(f"--tuned reads every layer's resid_post; it cannot go with --hooks {' '.join(hooks)}")
    trace = model.run(args.prompt, capture=[*hooks, "logits"]).trace  # one run for both lenses
    res = logit_lens(model, trace, hooks=hooks, target=args.target, top_k=args.top_k, positions=args.positions)
    tuned = (lens.apply(model, trace, target=args.target, top_k=args.top_k, positions=args.positions)
             if lens is not None else None)
    read = res.read_mask()[0].nonzero().flatten().tolist()
    for p in read if args.positions is not None else read[-1:]:
        _table(model.name, res, tuned, p)
    rep = Report(f"interp lens — {model.name}", command=command_line(), subtitle=f"prompt: {args.prompt!r}")
    views = ("grid", "kl", "target_rank") if res.target_rank is not None else ("grid", "kl")
    sec = rep.section("Logit lens", "Each layer's residual stream read as a next-token prediction: cells show the top "
                                    "token coloured by its probability, the curves how far each reading is from the "
                                    "output (KL, nats)" + (" and the target's rank." if args.target else "."))
    sec.result(res, views=views, batch=0)
    if tuned is not None:
        sec = rep.section("Tuned lens", "The same readings through a tuned lens (one learned affine map per layer), "
                                        "which tracks the output earlier than the logit lens: compare the KL per layer.")
        sec.result(tuned, views=tuple(v for v in views if v != "kl"), name="tuned LogitLensResult", batch=0)
        sec.result(LensComparison.from_results(res, tuned), views=("kl",))
    emit(args, rep)
    return 0


def _table(model_name: str, res: LogitLensResult, tuned: LogitLensResult | None, p: int) -> None:
    """One line per layer at padded position ``p`` of the prompt: top token, probability, entropy, KL (target)."""
    print(f"logit lens of {model_name} at token {p} {res.tokens[0][p]!r}")
    head = f"{'layer':>6}  {'top token':<16} {'p':>6} {'entropy':>8} {'KL':>8}"
    head += f" {'rank':>7} {'p(target)':>10}" if res.target_rank is not None else ""
    print(head + (f"  {'tuned top':<16} {'tuned KL':>8}" if tuned is not None else ""))
    for L, label in enumerate(res.layer_labels):
        line = (f"{label:>6}  {res.top_tokens(L, 0, p)[0]!r:<16} {float(res.top_probs[L, 0, p, 0]):6.3f} "
                f"{float(res.entropy[L, 0, p]):8.3f} {float(res.kl_to_final[L, 0, p]):8.3f}")
        if res.target_rank is not None and res.target_prob is not None:
            line += f" {int(res.target_rank[L, 0, p]):7d} {float(res.target_prob[L, 0, p]):10.4f}"
        if tuned is not None:
            line += f"  {tuned.top_tokens(L, 0, p)[0]!r:<16} {float(tuned.kl_to_final[L, 0, p]):8.3f}"
        print(line)


def _decoder_lens(args: argparse.Namespace) -> int:
    """``--decoder-lens``: one line per encoder layer (generated text, reference loss), and the report."""
    from interp.lens import decoder_lens
    from interp.models import load_encdec
    from interp.report import Report
    from interp.report.sections.decoder_lens import decoder_lens_section
    from interp.trace.trace import command_line

    model = load_encdec(args.model)
    res = decoder_lens(model, [args.prompt], references=[args.reference] if args.reference else None,
                       max_new_tokens=args.max_new_tokens)
    print(f"DecoderLens of {model.name} on {args.prompt!r}" + (f" (reference {args.reference!r})" if args.reference
                                                                 else ""))
    print(f"{'layer':>6}  {'loss':>7}  generated")
    for k, label in enumerate(res.layer_labels):
        print(f"{label:>6}  {float(res.loss[k, 0]):7.3f}  {res.outputs[k][0]!r}")
    rep = Report(f"interp lens --decoder-lens — {model.name}", command=command_line(), subtitle=f"source: {args.prompt!r}")
    decoder_lens_section(rep, res)
    emit(args, rep)
    return 0
