"""Sparse attention decomposition speed on SmolLM2-135M (30 layers x 9 heads, d_head 64, rotary).

All 270 heads' decompositions over one 64-token prompt (every causal pair, every singular component of the
offset-dependent effective QK matrix: 270 x 64 SVDs of a 64 x 64 core, then 270 x 2,080 pairs x 64 terms, the
sparse set of each) against one forward with the pattern of every layer captured. Goal: <= 5x.

Rounds are interleaved; medians printed. One torch thread unless ``--threads``. Ratios use process CPU time
(with one thread, the compute time a quiet machine would show as wall time); wall medians are printed beside.

    .venv/bin/python benchmarks/attention_decomposition.py [--repeats 3] [--tokens 64]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = interp.load_model("smollm2-135m")
    text = " ".join(["The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire."] * 8)
    ids = m.encode(text, max_tokens=args.tokens)[0]
    assert ids.shape[1] == args.tokens
    with interp.quiet():
        m.run(ids, capture="pattern")  # warm-up
        fwd, dec = [], []
        for _ in range(args.repeats):
            fwd.append(timed(lambda: m.run(ids, capture="pattern")))
            dec.append(timed(lambda: attention_decomposition(m, ids, progress=False)))
    f_cpu = statistics.median(c for _, c in fwd)
    d_cpu = statistics.median(c for _, c in dec)
    print(f"SmolLM2-135M, {args.tokens} tokens, {args.threads} thread(s), {args.repeats} rounds")
    print(f"forward + pattern capture: cpu {f_cpu:.3f} s (wall {statistics.median(w for w, _ in fwd):.3f} s)")
    print(f"attention_decomposition, all 270 heads: cpu {d_cpu:.3f} s (wall {statistics.median(w for w, _ in dec):.3f} s)")
    print(f"ratio (cpu): {d_cpu / f_cpu:.1f}x  (goal <= 5x)")


if __name__ == "__main__":
    main()
