"""Layer dropping with healing on SmolLM2-135M: the ``capitals`` task (40 items) with ``n = 0..--max-n`` blocks
dropped by angular distance, each cell also scored after healing the final norm (``--steps`` Adam steps of 8
texts from ``--texts`` corpus paragraphs, seed 0).

    .venv/bin/python benchmarks/layers_heal.py [--max-n 6] [--steps 20] [--texts 32] [--train norm]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.layers import corpus_texts, drop_layers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-n", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--train", default="norm")
    ap.add_argument("--task", default="capitals")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = interp.load_model("smollm2-135m")
    t, c = time.perf_counter(), time.process_time()
    res = drop_layers(model, args.task, methods=("angular",), max_drop=args.max_n, heal=args.train,
                      heal_texts=corpus_texts(args.texts), heal_steps=args.steps, progress=False)
    print(f"SmolLM2-135M, {args.task}: angular dropping, healed: {res.healed} ({args.texts} corpus texts)")
    print(res.to_frame().drop(columns=["method"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wall {time.perf_counter() - t:.0f} s, cpu {time.process_time() - c:.0f} s")


if __name__ == "__main__":
    main()
