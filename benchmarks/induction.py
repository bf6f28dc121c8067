"""Induction-head scoring speed on SmolLM2: interp.induction.induction_scores vs one forward with pattern capture.

Scoring all 270 heads (induction, previous-token, duplicate-token scores and the per-token loss) on
16 sequences of BOS + 2 x 64 repeated random tokens, against the forward that any scorer must run: one
forward capturing every ``attn.hook_pattern`` (interp's hooked run; the target of issue 9 is <= 1.2x).
The peer is TransformerLens' ``detect_head`` on its TransformerBridge (one forward per sequence and per
head kind; ``--tl-seqs`` sequences, scaled to the full batch). Rounds are interleaved; medians reported.

    .venv/bin/python benchmarks/induction.py [--n-seq 16] [--half 64] [--repeats 5] [--tl-seqs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.hooks import run_with_hooks
from interp.induction import induction_scores, repeated_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-seq", type=int, default=16)
    ap.add_argument("--half", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tl-seqs", type=int, default=2, help="sequences timed for TransformerLens (0 to skip)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = interp.load_model("smollm2-135m")
    ids = repeated_tokens(m, n_seq=args.n_seq, half=args.half, seed=0)
    mask = torch.ones_like(ids)

    def capture() -> None:
        with torch.no_grad():
            run_with_hooks(m, ids, mask, capture="blocks.*.attn.hook_pattern")

    def plain() -> None:
        with torch.no_grad():
            m.hf(input_ids=ids, use_cache=False)

    def score() -> None:
        with torch.no_grad():
            induction_scores(m, ids, progress=False)

    sides = {"forward + capture all patterns": capture, "induction_scores (3 scores + loss)": score,
             "plain HF forward (sdpa)": plain}
    tl = None
    if args.tl_seqs:
        from transformer_lens.head_detector import detect_head
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers("smollm2-135m-local", hf_model=copy.deepcopy(m.hf),
                                                     tokenizer=copy.deepcopy(m.tokenizer), device="cpu")
        texts = [m.tokenizer.decode(row[1:]) for row in ids[: args.tl_seqs]]

        def tl() -> None:
            with torch.no_grad():
                for kind in ("induction_head", "previous_token_head", "duplicate_token_head"):
                    detect_head(bridge, texts, kind)

        sides[f"TransformerLens detect_head x3 kinds ({args.tl_seqs} seqs)"] = tl
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.repeats):
        order = list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]
        for k in order:
            t0 = time.perf_counter()
            sides[k]()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["forward + capture all patterns"])
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); batch {args.n_seq} x {ids.shape[1]} tokens (BOS + 2 x {args.half}); {args.repeats} "
          "interleaved rounds, medians")
    for k, ts in times.items():
        med = statistics.median(ts)
        extra = ""
        if tl is not None and k.startswith("TransformerLens"):
            full = med * args.n_seq / args.tl_seqs
            extra = f"  (scaled to {args.n_seq} seqs: {full:.2f} s, {full / base:.1f}x)"
        print(f"{k:55s} {med:7.3f} s  {med / base:5.2f}x{extra}")


if __name__ == "__main__":
    main()
