"""Layer and head study speed on SmolLM2-135M (30 layers x 9 heads = 270 heads).

1. Head importance for all 270 heads over ``--tokens`` tokens (sequences of ``--seq`` tokens from the shipped
   corpus, batches of ``--batch``): ``head_importance`` (one forward + one backward per batch, a per-sequence
   head mask) vs a plain Hugging Face forward + backward of the same batches' loss (no mask). The issue's target:
   at most 2 forward + backward passes per batch.
2. A drop-n-blocks sweep, n = 0..``--max-n``, on the first ``--items`` items of the 500-item ``copying`` task:
   one ``score`` run (all items batched, ``--batch`` sequences per forward) per n, blocks dropped from the
   middle; the time per n is printed.

One torch thread unless ``--threads``. On a shared machine wall time mostly measures waiting for a core, so the
ratio uses the process CPU time; wall time is printed beside it.

    .venv/bin/python benchmarks/layers.py [--tokens 10000] [--seq 64] [--batch 16] [--items 500] [--max-n 15]
                                          [--parts heads,sweep]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.layers import head_importance, load_task, score, skip

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--max-n", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", default="heads,sweep", help="which parts to run: heads, sweep (comma-separated)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s)")
    model = interp.load_model("smollm2-135m")

    text = (ROOT / "data" / "corpus" / "english.txt").read_text()[:400_000]
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    n_seq = max(1, args.tokens // args.seq)
    batch = torch.tensor(ids[: n_seq * args.seq]).view(n_seq, args.seq)
    mask = torch.ones_like(batch)
    if "heads" in parts:
        heads_part(model, batch, mask, n_seq, args)
    if "sweep" in parts:
        sweep_part(model, args)


def heads_part(model: interp.Model, batch: torch.Tensor, mask: torch.Tensor, n_seq: int,
               args: argparse.Namespace) -> None:
    def plain() -> None:
        for s in range(0, n_seq, args.batch):
            b = batch[s:s + args.batch]
            logits = model.hf(input_ids=b, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), b[:, 1:].flatten())
            loss.backward()
        model.hf.zero_grad(set_to_none=True)

    def ours() -> None:
        head_importance(model, (batch, mask), batch_size=args.batch, progress=False)

    for p in model.hf.parameters():
        p.requires_grad_(True)
    rows = []
    for name, fn in (("plain HF forward+backward", plain), ("head_importance (270 heads)", ours)):
        t, c = time.perf_counter(), time.process_time()
        fn()
        rows.append((name, time.perf_counter() - t, time.process_time() - c))
    for p in model.hf.parameters():
        p.requires_grad_(False)
    print(f"\nhead importance over {n_seq} x {args.seq} = {n_seq * args.seq} tokens, batches of {args.batch}")
    for name, wall, cpu in rows:
        print(f"  {name:<30} wall {wall:7.1f} s   cpu {cpu:7.1f} s")
    print(f"  ratio (cpu): {rows[1][2] / rows[0][2]:.2f} x one forward+backward per batch")


def sweep_part(model: interp.Model, args: argparse.Namespace) -> None:
    task = load_task("copying").head(args.items)
    L = model.dims.n_layers
    print(f"\ndrop-n sweep on {len(task)} copying items (4 choices each), one batched score per n")
    total = 0.0
    for n in range(args.max_n + 1):
        start = (L - n) // 2
        ivs = skip(model, blocks=list(range(start, start + n))) if n else []
        t, c = time.perf_counter(), time.process_time()
        s = score(model, task, interventions=ivs, batch_size=args.batch * 4, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        total += wall
        print(f"  n={n:2d} blocks {f'{start}..{start + n - 1}' if n else '-':>6}: accuracy {s.accuracy:.3f}  "
              f"wall {wall:6.1f} s  cpu {cpu:6.1f} s")
    print(f"  sweep total wall {total:.1f} s")


if __name__ == "__main__":
    main()
