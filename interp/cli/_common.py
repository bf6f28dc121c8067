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


def dataset_args(p: argparse.ArgumentParser) -> None:
    """``--prompt``/``--dataset``/``--column``/``--hooks`` of the capture commands (read back by :func:`dataset_of`)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a text to capture (repeatable)")
    src.add_argument("--dataset", help=".txt (one sequence per line) or .parquet file")
    p.add_argument("--column", default="text", help="text column of a .parquet dataset (default: %(default)s)")
    p.add_argument("--hooks", action="append", default=None,
                   help="hook name or glob pattern, repeatable (default: 'blocks.*.hook_resid_post')")


def dataset_of(args: argparse.Namespace) -> tuple[list[str] | str, list[str]]:
    """The texts (or dataset file) and hook patterns of :func:`dataset_args`; a missing file is an error."""
    if args.dataset and not Path(args.dataset).exists():
        raise FileNotFoundError(f"no dataset file at {args.dataset!r}")
    return (args.prompt if args.prompt else args.dataset), (args.hooks or ["blocks.*.hook_resid_post"])


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
