"""The ``interp`` command line.

Examples::

    interp models
    interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris'
    interp capture --model smollm2-135m --dataset data/prompts.txt --hooks resid_post -o out/store
    interp report --model smollm2-135m --prompt 'The capital of France is' --corrupt 'The capital of Italy is'

Each subcommand is one module of this package with ``ORDER`` (its place in ``--help``) and
``register(subparsers, common)``, which adds its parser (:func:`interp.cli._common.add_command`) and sets
``func``. Flags use the one vocabulary of :mod:`interp.sites` (``--hooks resid_post``, ``--heads L5H1,L6H9``,
``--positions -1``); subcommands that compute results take ``--json PATH`` and ``--html PATH``.

interp's errors (:class:`interp.InterpError`) and errors about a path the user named (missing, a directory, no
permission, a full disk) print one line and exit with status 2; anything else is a bug:
one line saying so and status 1; ``--debug`` shows the traceback. ``--quiet`` hides progress bars.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

EXIT_BAD_INPUT = 2  # interp's own errors (and argparse's usage errors)
EXIT_BUG = 1  # anything else
EXIT_INTERRUPTED = 130
# errors about a path the user named (not found, a directory, not a directory, no permission, disk full, read-only)
USER_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENOSPC,
                         errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EEXIST, errno.EFBIG})
# Flags whose values may start with "-" (``--positions -3:``, ``--layers -2,-1``): argparse would read such a value
# as an unknown flag, so main() glues it to its flag (``--positions=-3:``) first.
SIGNED_VALUE_FLAGS = ("--positions", "--layers")
EPILOG = """examples:
  interp models
  interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris'
  interp capture --model smollm2-135m --dataset data/prompts.txt --hooks resid_post -o out/store
  interp report --prompt 'The capital of France is' --corrupt 'The capital of Italy is' --html report.html

Flags are spelled the same in every command: --model, --prompt, --corrupt, --hooks resid_post,
--heads L5H1,L6H9, --positions -1, --component, --layers, --json PATH, --html PATH.
`interp COMMAND --help` explains a command with an example. Errors in what you asked print one line
and exit with status 2; anything else is a bug in interp (status 1; --debug shows the traceback)."""


def _command_modules() -> list[ModuleType]:
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted((m for m in mods if hasattr(m, "register")), key=lambda m: (m.ORDER, m.__name__))


def _parser() -> argparse.ArgumentParser:
    from interp.version import __version__

    p = argparse.ArgumentParser(prog="interp", description="Mechanistic-interpretability workbench.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub, common)
    return p


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def glue_signed_values(argv: Sequence[str]) -> list[str]:
    """``["--positions", "-3:"]`` → ``["--positions=-3:"]`` for the flags of :data:`SIGNED_VALUE_FLAGS`.

    Example:
        >>> glue_signed_values(["lens", "--positions", "-2,-1", "--layers", "3"])
        ['lens', '--positions=-2,-1', '--layers', '3']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in SIGNED_VALUE_FLAGS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command; returns the exit status.

    interp's own errors (:class:`interp.InterpError`: bad input, a model mismatch, a corrupt store, a missing
    optional dependency) print one line and return status 2. Anything else is a bug: one line saying so (and how
    to see the traceback) and status 1; with ``--debug`` the exception propagates with its traceback.

    Example:
        >>> from interp.cli import main
        >>> main(["report", "--prompt", ""])
        2
    """
    args = _parser().parse_args(glue_signed_values(sys.argv[1:] if argv is None else argv))
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(format="interp: %(message)s", level=level)
    logging.getLogger("interp").setLevel(level)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from interp.errors import InterpError
    from interp.progress import quiet

    try:
        # --quiet turns bars off; without it the library switch (INTERP_PROGRESS) decides
        with quiet() if args.quiet else contextlib.nullcontext():
            return int(args.func(args))
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InterpError as e:
        if args.debug:
            raise
        print(f"interp: error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a path the user gave: missing, a directory, no permission, disk full -- bad input too
        if args.debug or e.errno not in USER_ERRNOS:
            if args.debug:
                raise
            print(f"interp: internal error (a bug in interp; rerun with --debug for the traceback and report it): "
                  f"{type(e).__name__}: {_first_line(e)}", file=sys.stderr)
            return EXIT_BUG
        print(f"interp: error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        if args.debug:
            raise
        print(f"interp: internal error (a bug in interp; rerun with --debug for the traceback and report it): "
              f"{type(e).__name__}: {_first_line(e)}", file=sys.stderr)
        return EXIT_BUG


__all__ = ["glue_signed_values", "main"]
