"""Distributed capture throughput: tokens captured per second with 1 vs 2 local Ray workers.

Side by side in one process, rounds interleaved (the machine is shared; medians are reported):

- ``serial``: ``interp.trace.capture`` in this process (one torch thread), the single-machine path;
- ``ray-1`` / ``ray-2``: ``interp.distributed.capture`` with 1 or 2 Ray actors (one torch thread each)
  on a local Ray started with ``num_cpus=2``.

Tokens/s counts the capture phase only (``CaptureRun.seconds`` starts once the workers have loaded
the model); ``wall`` is the whole call, worker start-up included. Every run writes a fresh store.

    .venv/bin/python benchmarks/distributed.py [--seqs 96] [--seq 64] [--batch 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp import distributed
from interp.trace import capture

WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
         "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her",
         "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "will"]


def texts(n: int, words: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n, words), generator=g).tolist()
    return [" ".join(WORDS[i] for i in row) for row in idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seqs", type=int, default=96)
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence (max_tokens)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hooks", default="blocks.*5.hook_resid_post")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = interp.load_model(args.model)
    data = texts(args.seqs, args.seq * 2)
    root = Path(tempfile.mkdtemp(prefix="interp-bench-dist-"))
    rates: dict[str, list[float]] = {"serial": [], "ray-1": [], "ray-2": []}
    walls: dict[str, list[float]] = {k: [] for k in rates}
    n_tokens = 0
    for r in range(args.rounds):
        for name in rates:
            out = root / f"{name}-{r}"
            t0 = time.perf_counter()
            if name == "serial":
                store = capture(model, data, hooks=args.hooks, out=out, batch_size=args.batch, max_tokens=args.seq,
                                progress=False)
                wall = time.perf_counter() - t0
                n_tokens, rate = store.n_tokens, store.n_tokens / wall
            else:
                run = distributed.capture(args.model, data, hooks=args.hooks, out=str(out), workers=int(name[-1]),
                                          batch_size=args.batch, max_tokens=args.seq, progress=False)
                wall = time.perf_counter() - t0
                n_tokens, rate = run.n_tokens, run.tokens_per_second
            rates[name].append(rate)
            walls[name].append(wall)
            print(f"round {r} {name:7s} {rate:8.0f} tokens/s  (wall {wall:5.1f} s)", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{args.model}: {args.seqs} sequences x {args.seq} tokens = {n_tokens} tokens, batch {args.batch}, "
          f"hooks {args.hooks}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds, medians")
    for k in rates:
        print(f"  {k:7s} {med[k]:8.0f} tokens/s   wall {statistics.median(walls[k]):6.1f} s   "
              f"x{med[k] / med['serial']:.2f} vs serial")
    print(f"  ray-2 / ray-1 = {med['ray-2'] / med['ray-1']:.2f}x")


if __name__ == "__main__":
    main()
