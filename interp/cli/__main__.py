"""``python -m interp.cli`` runs the ``interp`` command."""

from interp.cli import main

raise SystemExit(main())
