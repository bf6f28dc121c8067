"""``python -m interp.cli`` runs the ``interp`` command."""

from interp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
