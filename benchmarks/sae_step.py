"""One TopK SAE training step against the encoder-product bound, with the step's large buffers reused or fresh.

Interleaved in one process, one thread: ``torch.mm`` of a ``[1024, 576]`` batch with a ``[576, d_sae]`` matrix (the one
dense product a TopK step cannot avoid), then a :class:`~interp.features.train.Fitter` step allocating its
pre-activation and gradient buffers afresh (as before issue 22's second pass), then one reusing them. Prints the
median times and the median of the per-round ratios (bound time / step time; 1.0 = the rest of the step is free).

    nice -n 10 .venv/bin/python benchmarks/sae_step.py [--rounds 8] [--sizes 16384:64,4096:32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interp.features import SAEConfig, SparseAutoencoder
from interp.features.train import Fitter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--sizes", default="16384:64,4096:32")
    args = ap.parse_args()
    torch.set_num_threads(1)
    B, d = 1024, 576
    x = torch.randn(8 * B, d, generator=torch.Generator().manual_seed(0))
    for size in args.sizes.split(","):
        S, k = (int(v) for v in size.split(":"))
        cfg = SAEConfig(d_sae=S, k=k, batch_size=B, n_tokens=10**9)
        fits = {}
        for reuse in (False, True):
            f = Fitter(SparseAutoencoder(cfg, progress=False), x[:B])
            f.reuse_buffers = reuse
            f.step(x[:B])
            f.step(x[B:2 * B])
            fits[reuse] = f
        W = torch.randn(S, d)
        times: dict[str, list[float]] = {"bound": [], "fresh": [], "reused": []}
        for r in range(args.rounds):
            rows = x[(r % 8) * B:((r % 8) + 1) * B]
            for name in ("bound", "fresh", "reused"):
                t = time.perf_counter()
                if name == "bound":
                    torch.mm(rows, W.T)
                else:
                    fits[name == "reused"].step(rows)
                times[name].append(time.perf_counter() - t)
        ratio = {n: statistics.median(b / s for b, s in zip(times["bound"], times[n], strict=True))
                 for n in ("fresh", "reused")}
        med = {n: 1000 * statistics.median(v) for n, v in times.items()}
        print(f"{S}:{k} median ms: bound {med['bound']:.0f}, step (fresh buffers) {med['fresh']:.0f}, step (reused "
              f"buffers) {med['reused']:.0f}; paired ratio to bound: fresh {ratio['fresh']:.2f}, reused "
              f"{ratio['reused']:.2f}")


if __name__ == "__main__":
    main()
