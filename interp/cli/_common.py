"""Plumbing the subcommands share: the subparser factory, ``--model``, ``--json``/``--html`` and their writer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import BadInputError

if TYPE_CHECKING:
    from interp.sites import HeadRef


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
        raise BadInputError(f"no dataset file at {args.dataset!r}")
    return (args.prompt if args.prompt else args.dataset), (args.hooks or ["blocks.*.hook_resid_post"])


def heads_type(text: str) -> list[HeadRef]:
    """``--heads L5H1,L6H9`` → heads; argparse reports a bad value as a usage error (status 2)."""
    from interp.sites import parse_heads

    return parse_heads(text)


def positions_type(text: str) -> int | list[int] | slice:
    """``--positions -1``, ``0,3,-1`` or a slice ``2:5`` / ``-3:`` → a position selection (see interp.sites)."""
    t = text.strip()
    if ":" in t:
        parts = t.split(":")
        if len(parts) > 3:
            raise BadInputError(f"bad slice {text!r}")
        return slice(*(int(p) if p.strip() else None for p in parts))
    items = [int(p) for p in t.split(",") if p.strip()]
    if not items:
        raise BadInputError(f"no positions in {text!r}")
    return items[0] if len(items) == 1 and "," not in t else items


def heads_arg(p: argparse.ArgumentParser, help: str = "heads, e.g. L5H1,L6H9 (layer 5 head 1, layer 6 head 9)",
              **kw: Any) -> None:
    """``--heads``: heads in the one spelling (``L5H1,L6H9``)."""
    p.add_argument("--heads", type=heads_type, metavar="L5H1,...", help=help, **kw)


def positions_arg(p: argparse.ArgumentParser, help: str = "token positions: -1 (each prompt's last token), "
                  "0,3,-1 or a slice like 2:5 (default: every position)", **kw: Any) -> None:
    """``--positions``: ints (negative from each sequence's end), lists and slices."""
    p.add_argument("--positions", type=positions_type, metavar="POS", help=help, **kw)


def output_args(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--html``, shared by every subcommand that computes results."""
    p.add_argument("--json", metavar="PATH",
                   help='write the numbers as JSON: {"sections": {..: {name: {"axes", "labels", "values"}}}}')
    p.add_argument("--html", metavar="PATH", help="write the figures as a standalone HTML page")


def emit(args: argparse.Namespace, rep: Any) -> None:
    """Write ``--json`` (labelled numbers) and ``--html`` (figures as a standalone page) when asked, atomically."""
    if getattr(args, "json", None):
        from interp.trace.layout import atomic_write_bytes

        atomic_write_bytes(Path(args.json), json.dumps(rep.to_dict(), indent=1, default=str).encode("utf-8"))
        print(f"json    {args.json}")
    if getattr(args, "html", None):
        rep.write(args.html, json_path=args.json or Path(args.html).with_suffix(".json"))
        print(f"html    {args.html}")
