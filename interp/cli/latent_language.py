"""``interp latent-language``: which language each layer's logit / tuned lens reading speaks, on a shipped
translation / repetition / cloze prompt set."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args

ORDER = 21


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "latent-language",
                    help="latent language: lens probability mass per language per layer (Wendler et al.)",
                    description="Read every layer's residual stream at each prompt's last token through the logit "
                                "lens (and with --tuned the tuned lens) and sum the probability of the tokens that "
                                "start the answer word in each language; print the mean mass on the target "
                                "language, English and the source language per layer.",
                    example="interp latent-language --task translation --languages en,fr,de --tuned auto "
                            "--html latent.html")
    model_arg(p)
    p.add_argument("--task", default="translation", choices=("translation", "repetition", "cloze", "all"),
                   help="the shipped prompt set (data/lens/latent_language.jsonl; default: %(default)s)")
    p.add_argument("--prompts", help="a .jsonl prompt set in the same format instead of the shipped one")
    p.add_argument("--languages", help="comma-separated language codes kept (default: every one: en,fr,de,es,it)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--mode", default="word", choices=("word", "vocab"),
                   help="token sets: each prompt's answer word (word, default) or all words of a language (vocab)")
    p.add_argument("--tuned", metavar="PATH|auto", help="also read through a tuned lens (a saved directory or 'auto')")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import bad_value
    from interp.lens import latent_language, load_language_prompts
    from interp.lens.tuned_lens import as_tuned_lens
    from interp.report import Report
    from interp.report.sections.latent_language import latent_language_section
    from interp.trace.trace import command_line

    langs = [s.strip() for s in args.languages.split(",") if s.strip()] if args.languages else None
    items = load_language_prompts(args.task, languages=langs, path=args.prompts)
    if args.limit is not None:
        if args.limit < 1:
            raise bad_value("--limit", args.limit, "an int >= 1")
        items = items[:args.limit]
    model = interp.load_model(args.model)
    lenses: list[Any] = ["logit"] + ([as_tuned_lens(model, args.tuned)] if args.tuned else [])
    res = latent_language(model, items, languages=langs, lens=lenses, mode=args.mode)
    print(f"latent language of {model.name}: {len(items)} prompts ({args.task}), languages {', '.join(res.languages)}")
    for lens in res.lenses:
        curves = res.curves("role", lens=lens)
        names = list(curves)
        print(f"\n{lens} lens: mean mass per layer")
        print(f"{'layer':>6}  " + "  ".join(f"{n:>8}" for n in names))
        for L, label in enumerate(res.layer_labels):
            print(f"{label:>6}  " + "  ".join(f"{float(curves[n][0][L]):8.3f}" for n in names))
    print("\nlast layer's top token starts the answer (top-1), per task and target language:")
    acc = res.accuracy()
    for (task, tgt), d in acc.groupby(["task", "target"]):
        print(f"  {task:<12} {tgt:<4} {int(d['items'].sum()):4d} items  top-1 "
              f"{float((d.top1 * d['items']).sum() / d['items'].sum()):.2f}")
    rep = Report(f"interp latent-language — {model.name}", command=command_line(),
                 subtitle=f"{len(items)} {args.task} prompts")
    latent_language_section(rep, res)
    emit(args, rep)
    return 0
