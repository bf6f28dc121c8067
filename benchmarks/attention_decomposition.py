"""Sparse attention decomposition speed on SmolLM2-135M (30 layers x 9 heads, d_head 64, rotary).

All 270 heads' decompositions over one 64-token prompt (every causal pair: 270 x 2,080 pairs x 64 singular
components, the sparse set of each) against one forward with the pattern of every layer captured. Goal: <= 5x
(issue 24). Also run by ``benchmarks/heads.py`` (its third part).

The default (content) method takes one SVD per head; ``--per-offset`` also times the per-offset method (one
SVD per head and offset: 270 x 64 SVDs). The first decomposition of a model also builds the model's cached
per-head weight views (like every heads tool); it is timed apart ("first call"), the rounds after a warm-up.

Rounds are interleaved; medians printed. One torch thread unless ``--threads``. Ratios use process CPU time
(with one thread, the compute time a quiet machine would show as wall time); wall medians are printed beside.

    .venv/bin/python benchmarks/attention_decomposition.py [--repeats 3] [--tokens 64] [--per-offset]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.heads import attention_decomposition


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def run(repeats: int = 3, tokens: int = 64, per_offset: bool = False) -> None:
    """Time and print (the caller sets the torch threads)."""
    m = interp.load_model("smollm2-135m")
    text = " ".join(["The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire."] * 8)
    ids = m.encode(text, max_tokens=tokens)[0]
    assert ids.shape[1] == tokens
    jobs: dict[str, Callable[[], object]] = {
        "forward + pattern capture": lambda: m.run(ids, capture="pattern"),
        "attention_decomposition (content)": lambda: attention_decomposition(m, ids, progress=False)}
    if per_offset:
        jobs["attention_decomposition (per_offset)"] = lambda: attention_decomposition(m, ids, per_offset=True,
                                                                                        progress=False)
    with interp.quiet():
        m.run(ids, capture="pattern")  # warm-up
        first = timed(jobs["attention_decomposition (content)"])  # also builds the cached weight views
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in jobs}
        for _ in range(repeats):
            for k, fn in jobs.items():
                res[k].append(timed(fn))
    cpu = {k: statistics.median(c for _, c in v) for k, v in res.items()}
    wall = {k: statistics.median(w for w, _ in v) for k, v in res.items()}
    f = cpu["forward + pattern capture"]
    print(f"SmolLM2-135M, {tokens} tokens, all 270 heads, {torch.get_num_threads()} thread(s), "
          f"CPU-time medians of {repeats} interleaved rounds")
    for k in jobs:
        ratio = "" if k.startswith("forward") else f"   ratio {cpu[k] / f:.1f}x"
        print(f"  {k:38s} cpu {cpu[k]:7.3f} s (wall {wall[k]:7.3f} s){ratio}")
    print(f"  first call (content, builds the weight views) cpu {first[1]:.3f} s, ratio {first[1] / f:.1f}x")
    print(f"goal: content ratio <= 5x -> {'met' if cpu['attention_decomposition (content)'] <= 5 * f else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-offset", action="store_true", help="also time the per-offset method (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run(args.repeats, args.tokens, args.per_offset)


if __name__ == "__main__":
    main()
