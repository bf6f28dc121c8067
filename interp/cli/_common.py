"""Plumbing the subcommands share: the subparser factory, ``--model``, ``--json``/``--html`` and their writer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_command(sub: Any, common: argparse.ArgumentParser, name: str, *, help: str, description: str,
                example: str) -> argparse.ArgumentParser:
    """A subparser with the shared ``--debug``/``--quiet`` flags and an ``example:`` epilog."""
    return sub.add_parser(name, parents=[common], help=help, description=description,
                          epilog="example:\n  " + example, formatter_class=argparse.RawDescriptionHelpFormatter)


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="known name, hub id or local directory (default: %(default)s)")


def output_args(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--html``, shared by every subcommand that computes results."""
    p.add_argument("--json", metavar="PATH",
                   help='write the numbers as JSON: {"sections": {..: {name: {"axes", "labels", "values"}}}}')
    p.add_argument("--html", metavar="PATH", help="write the figures as a standalone HTML page")


def emit(args: argparse.Namespace, rep: Any) -> None:
    """Write ``--json`` (labelled numbers) and ``--html`` (figures as a standalone page) when asked."""
    if getattr(args, "json", None):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep.to_dict(), indent=1, default=str), encoding="utf-8")
        print(f"json    {args.json}")
    if getattr(args, "html", None):
        rep.write(args.html, json_path=args.json or Path(args.html).with_suffix(".json"))
        print(f"html    {args.html}")
