"""The ``interp`` command line.

Examples::

    interp models
    interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris'
    interp capture --model smollm2-135m --dataset data/prompts.txt --hooks 'blocks.*.hook_resid_post' -o out/store

Each subcommand is one module of this package with ``ORDER`` (its place in ``--help``) and
``register(subparsers, common)``, which adds its parser and sets ``func``. Flags use the one vocabulary of
:mod:`interp.sites` (``--hooks resid_post``, ``--heads L5H1,L6H9``, ``--positions -1``). interp's errors print
one line and exit with status 2; anything else is a bug (status 1); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence


def _command_modules() -> list:
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted((m for m in mods if hasattr(m, "register")), key=lambda m: (m.ORDER, m.__name__))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description="Mechanistic-interpretability workbench.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command.

    interp's own errors (:class:`interp.InterpError`: bad input, a model mismatch, a corrupt store, a missing
    optional dependency) print one line and exit with status 2. Anything else is a bug: one line saying so
    (and how to see the traceback) and status 1; ``--debug`` shows the traceback.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(format="interp: %(message)s", level=logging.WARNING if args.quiet else logging.INFO)
    logging.getLogger("interp").setLevel(logging.WARNING if args.quiet else logging.INFO)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from interp.errors import InterpError
    from interp.progress import quiet

    try:
        with quiet(args.quiet):
            return int(args.func(args))
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except InterpError as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"interp: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"interp: internal error (a bug in interp; rerun with --debug for the traceback and report it): "
              f"{type(e).__name__}: {msg}", file=sys.stderr)
        return 1


__all__ = ["main"]
