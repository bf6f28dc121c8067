"""Logit lens speed: interp.lens.logit_lens over all layers and positions vs one batched matmul.

The baseline is the irreducible part of any logit lens: the stacked residual streams of every layer
times W_U in one matmul (no norm, no softmax, no metrics). The target (issue 4) is <= 1.5x.

    .venv/bin/python benchmarks/lens.py [--batch 4] [--seq 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.lens import logit_lens

WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "will", "more", "about", "can", "out"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=5)
    args = ap.parse_args()
    m = interp.load_model("smollm2-135m")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.dims.d_vocab, (args.batch, args.seq), generator=g)
    trace = m.run((ids, torch.ones_like(ids)), capture="blocks.*.hook_resid_post").trace
    stacked = trace.stack("hook_resid_post")  # [layer, batch, pos, d_model]
    W_U = m.weights.W_U

    def baseline() -> None:
        _ = stacked @ W_U

    def lens() -> None:
        logit_lens(m, trace, target=" Paris", top_k=args.top_k)

    def lens_no_target() -> None:
        logit_lens(m, trace, top_k=args.top_k)

    sides = {"one batched matmul (stack @ W_U)": baseline, "logit_lens (target + all metrics)": lens,
             "logit_lens (no target)": lens_no_target}
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        order = list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]
        for k in order:
            t0 = time.perf_counter()
            sides[k]()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["one batched matmul (stack @ W_U)"])
    print(f"command: python benchmarks/lens.py --batch {args.batch} --seq {args.seq} --repeats {args.repeats}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"workload: smollm2-135m, {m.dims.n_layers} layers x {args.batch} x {args.seq} tokens, vocab {m.dims.d_vocab}")
    print("| side | median | min | vs matmul (medians) |\n|---|---|---|---|")
    for k, ts in times.items():
        print(f"| {k} | {statistics.median(ts):.3f}s | {min(ts):.3f}s | {statistics.median(ts) / base:.2f}x |")
    ratio = statistics.median(times["logit_lens (target + all metrics)"]) / base
    print(f"logit lens / batched matmul: {ratio:.2f}x (target <= 1.5x) -> {'PASS' if ratio <= 1.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
