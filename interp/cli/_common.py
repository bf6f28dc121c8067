"""Plumbing the subcommands share: the subparser factory, the shared flags and the ``--json``/``--html`` writer.

The flags every subcommand spells the same way: ``--model``, ``--prompt`` (the main/clean text), ``--corrupt``
(a corrupted one), ``--hooks``, ``--heads L5H1,L6H9`` (:func:`heads_arg`), ``--positions -1``
(:func:`positions_arg`), ``--component``, ``--layers``, ``--json PATH`` and ``--html PATH`` (:func:`output_args`).

Example:
    >>> import argparse
    >>> from interp.cli._common import heads_arg, positions_arg
    >>> p = argparse.ArgumentParser()
    >>> heads_arg(p); positions_arg(p)
    >>> args = p.parse_args(["--heads", "L5H1,L6H9", "--positions", "-1"])
    >>> [str(h) for h in args.heads], args.positions
    (['L5H1', 'L6H9'], -1)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import BadInputError

if TYPE_CHECKING:
    from interp.report import Report
    from interp.sites import HeadRef


def add_command(sub: Any, common: argparse.ArgumentParser, name: str, *, help: str, description: str,
                example: str) -> argparse.ArgumentParser:
    """A subparser with the shared ``--debug``/``--quiet`` flags and an ``example:`` epilog."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], help=help, description=description, epilog="example:\n  " + example,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def model_arg(p: argparse.ArgumentParser) -> None:
    """``--model``: a known name, a hub id or a local directory (see ``interp models``)."""
    p.add_argument("--model", default="smollm2-135m", help="known name, hub id or local directory (default: %(default)s)")


def dataset_args(p: argparse.ArgumentParser) -> None:
    """``--prompt``/``--dataset``/``--column``/``--hooks`` of the capture commands (read back by :func:`dataset_of`)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a text to capture (repeatable)")
    src.add_argument("--dataset", help=".txt (one sequence per line) or .parquet file")
    p.add_argument("--column", default="text", help="text column of a .parquet dataset (default: %(default)s)")
    p.add_argument("--hooks", action="append", default=None,
                   help="hook name, short form or glob, repeatable: resid_post, z.3, 'blocks.*.hook_z' "
                        "(default: resid_post)")


def dataset_of(args: argparse.Namespace) -> tuple[list[str] | str, list[str]]:
    """The texts (or dataset file) and hook patterns of :func:`dataset_args`; a missing file is an error."""
    if args.dataset and not Path(args.dataset).exists():
        raise BadInputError(f"no dataset file at {args.dataset!r}")
    if args.dataset and Path(args.dataset).is_dir():
        raise BadInputError(f"--dataset {args.dataset!r} is a directory; valid: a .txt (one sequence per line) or "
                            ".parquet file")
    return (args.prompt if args.prompt else args.dataset), (args.hooks or ["resid_post"])


def heads_type(text: str) -> list[HeadRef]:
    """``--heads L5H1,L6H9`` → heads; argparse reports a bad value as a usage error (status 2)."""
    from interp.sites import parse_heads

    try:
        return parse_heads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positions_type(text: str) -> int | list[int] | slice:
    """``--positions -1``, ``0,3,-1`` or a slice ``2:5`` / ``-3:`` → a position selection (see interp.sites).

    Example:
        >>> positions_type("-1"), positions_type("0,3,-1"), positions_type("2:")
        (-1, [0, 3, -1], slice(2, None, None))
    """
    t = text.strip()
    try:
        if ":" in t:
            parts = t.split(":")
            if len(parts) > 3:
                raise BadInputError(f"bad slice {text!r}; write start:stop or start:stop:step, e.g. 2:5 or -3:")
            return slice(*(int(p) if p.strip() else None for p in parts))
        items = [int(p) for p in t.split(",") if p.strip()]
    except ValueError as e:
        msg = str(e) if isinstance(e, BadInputError) else f"bad positions {text!r}; write -1, 0,3,-1 or 2:5"
        raise argparse.ArgumentTypeError(msg) from None
    if not items:
        raise argparse.ArgumentTypeError(f"no positions in {text!r}; write -1, 0,3,-1 or 2:5")
    return items[0] if len(items) == 1 and "," not in t else items


def positive_int(text: str) -> int:
    """``--top 5``: an int >= 1; argparse reports anything else as a usage error (status 2).

    Example:
        >>> positive_int("3")
        3
    """
    return _int_at_least(text, 1)


def nonneg_int(text: str) -> int:
    """``--feature 0``: an int >= 0 (an index; negative indices are refused, not read from the end)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value {text!r}; valid: an integer >= {low}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"bad value {value}; valid: an integer >= {low}")
    return value


def heads_arg(p: argparse.ArgumentParser, help: str = "heads, e.g. L5H1,L6H9 (layer 5 head 1, layer 6 head 9)",
              **kw: Any) -> None:
    """``--heads``: heads in the one spelling (``L5H1,L6H9``)."""
    p.add_argument("--heads", type=heads_type, metavar="L5H1,...", help=help, **kw)


def positions_arg(p: argparse.ArgumentParser, help: str = "token positions: -1 (each prompt's last token), "
                  "0,3,-1 or a slice like 2:5 (default: every position)", **kw: Any) -> None:
    """``--positions``: ints (negative from each sequence's last real token), lists and slices."""
    p.add_argument("--positions", type=positions_type, metavar="POS", help=help, **kw)


def output_args(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--html``, shared by every subcommand that computes results."""
    p.add_argument("--json", metavar="PATH",
                   help='write the numbers as JSON: {"title", "command", "sections": {title: {name: data}}}, '
                        'data a labelled array {"axes", "labels", "values"} or a result\'s to_dict()')
    p.add_argument("--html", metavar="PATH", help="write the figures as a self-contained HTML page (works offline)")


def emit(args: argparse.Namespace, rep: Report) -> None:
    """Write ``--json`` (the report's :meth:`~interp.report.Report.to_dict`) and ``--html`` (its page) when asked,
    each atomically, and print where."""
    from interp.fileio import atomic_write_bytes

    if getattr(args, "json", None):
        atomic_write_bytes(Path(args.json), rep.to_json().encode("utf-8"))
        print(f"json    {args.json}")
    if getattr(args, "html", None):
        atomic_write_bytes(Path(args.html), rep.to_html().encode("utf-8"))
        print(f"html    {args.html}")
