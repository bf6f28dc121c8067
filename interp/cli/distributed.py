"""``interp capture-ray``: capture a dataset with several Ray workers into one store (local path or URL)."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, dataset_args, dataset_of, model_arg

ORDER = 11


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = add_command(sub, common, "capture-ray",
                    help="capture a dataset with several Ray workers into one trace store",
                    description="Split a dataset over Ray workers (each loads the model once) that write disjoint "
                                "shards of one store at a local path or fsspec URL. Resumable: after a crash, "
                                "rerun the same command; corrupt shards are found by sha256 and captured again. "
                                "Connects to RAY_ADDRESS / --address when given, else starts a local Ray.",
                    example="interp capture-ray --model smollm2-135m --dataset data/prompts.txt "
                            "--hooks resid_post -o out/store --workers 2")
    model_arg(c)
    dataset_args(c)
    c.add_argument("-o", "--out", required=True, help="store directory or fsspec URL (s3://bucket/prefix ...)")
    c.add_argument("--workers", type=int, default=2, help="Ray workers (default: %(default)s)")
    c.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a new local Ray); a cluster "
                                    "started with `ray start --head` needs RAY_AUTH_MODE=token in this environment")
    c.add_argument("--local", action="store_true", help="no Ray: run the same workers one after another here")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--dtype", default="float32", help="storage dtype (float32, bfloat16, float16)")
    c.add_argument("--prepend-bos", action="store_true")
    c.add_argument("--verify", default="sha256", choices=["sha256", "size", "none"],
                   help="how existing shards are checked on resume (default: %(default)s)")
    c.add_argument("--overwrite", action="store_true", help="replace a store captured with other settings")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp import distributed

    dataset, hooks = dataset_of(args)
    res = distributed.capture(args.model, dataset, hooks=hooks, out=args.out, workers=args.workers,
                              backend="local" if args.local else "ray", address=args.address,
                              batch_size=args.batch_size, dtype=args.dtype, max_tokens=args.max_tokens,
                              column=args.column, prepend_bos=args.prepend_bos, overwrite=args.overwrite,
                              verify=args.verify)
    print("\n" + res.summary())
    return 0
