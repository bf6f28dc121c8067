"""``interp report``: the main job — every tool on a prompt, one self-contained HTML report and its JSON."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, model_arg

ORDER = 100
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    r = add_command(sub, common, "report", help="run every tool on a prompt and write an HTML report",
                    description="The main job: run the tools on the model and a prompt, and write one "
                                "self-contained HTML report (works offline) plus a JSON dump of its numbers "
                                "(see docs/cli.md for its layout).",
                    example="interp report --model smollm2-135m --prompt 'The capital of France is' "
                            "--corrupt 'The capital of Italy is' --html report.html")
    model_arg(r)
    r.add_argument("--prompt", default=DEFAULT_PROMPT, help="the clean prompt (default: %(default)r)")
    r.add_argument("--corrupt", help="a corrupted prompt with the same number of tokens (adds the patching section)")
    r.add_argument("-o", "--html", metavar="PATH", default="report.html", help="HTML path (default: %(default)s)")
    r.add_argument("--json", metavar="PATH", help="JSON path (default: the HTML path with .json)")
    r.add_argument("--sections", type=_names, metavar="NAMES",
                   help="only these tools' sections, comma-separated (e.g. lens,heads; '' for none; "
                        "default: all of them)")
    r.add_argument("--fast", action="store_true", help="the tools' quick settings (smaller sweeps, fewer steps)")
    r.add_argument("--language-prompts", choices=["translation", "repetition", "cloze", "all"],
                   help="add the latent-language section on this shipped prompt set (data/lens/latent_language.jsonl)")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.errors import BadInputError
    from interp.report import build_report
    from interp.report.sections import section_modules

    if not args.prompt.strip():
        raise BadInputError("--prompt is empty; give the text to analyse")
    section_modules(args.sections)  # an unknown section name fails before the model loads
    model = interp.load_model(args.model)
    rep = build_report(model, args.prompt, corrupt=args.corrupt, fast=args.fast, sections=args.sections,
                       language_prompts=args.language_prompts)
    out = rep.write(args.html, json_path=args.json)
    print(f"report  {out.resolve()}  ({out.stat().st_size / 2**20:.1f} MiB, {len(rep.sections)} sections)")
    print(f"json    {args.json or out.with_suffix('.json')}")
    return 0
