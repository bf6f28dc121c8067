"""Train the tuned lens shipped in ``data/lenses/smollm2-135m`` and measure it on held-out text.

1. Capture every layer's ``resid_post`` (bfloat16) of the corpus' train split, packed in 128-token chunks,
   into a store (resumable: rerun after an interruption).
2. Fit :class:`interp.lens.TunedLens`: a closed-form least-squares warm start over every stored token,
   then KL steps on shuffled rows streamed from the store.
3. Compare with the logit lens on the corpus' held-out split; save the lens (float16) and the comparison.

    .venv/bin/python data/lenses/train_smollm2.py [--store /tmp/corpus-smollm2-train] [--steps 40]
    .venv/bin/python data/lenses/train_smollm2.py --eval-only   # step 3 only, on the shipped lens
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import interp
from interp.lens import TunedLens, compare_lenses
from interp.models import Model
from interp.trace import capture

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from corpus import corpus_chunks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="/tmp/corpus-smollm2-train")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=str(HERE / "smollm2-135m"))
    ap.add_argument("--eval-only", action="store_true", help="skip capture and fit; measure the lens in --out")
    args = ap.parse_args()
    model = interp.load_model("smollm2-135m")
    if not args.eval_only:
        fit(model, args)
    evaluate(model, Path(args.out))


def fit(model: Model, args: argparse.Namespace) -> None:
    t0 = time.time()
    store = capture(model, corpus_chunks(model.tokenizer, "train", 128), out=args.store, hooks="resid_post",
                    batch_size=16, dtype="bfloat16", max_tokens=128)
    print(f"store: {store.n_tokens} tokens in {time.time() - t0:.0f} s")
    t0 = time.time()
    lens = TunedLens(steps=args.steps, batch_size=args.batch_size, init="least_squares", lr=1e-3).fit(model, store)
    print(f"fit: {time.time() - t0:.0f} s; KL per step {[round(x, 3) for x in lens.history_]}")
    lens.save(args.out, dtype=torch.float16)


def evaluate(model: Model, out: Path) -> None:
    t0 = time.time()
    cmp = compare_lenses(model, corpus_chunks(model.tokenizer, "test", 128), lens=TunedLens.load(out))
    cmp.save(out / "held_out")
    print(f"held-out comparison: {time.time() - t0:.0f} s")
    print(f"held-out tokens: {cmp.n_tokens}; tuned better at every layer before the last: {cmp.tuned_better_before_last()}")
    print("layer  KL logit  KL tuned")
    for L in range(cmp.n_layers):
        print(f"{L:5d}  {float(cmp.kl_logit[L]):8.3f}  {float(cmp.kl_tuned[L]):8.3f}")


if __name__ == "__main__":
    main()
