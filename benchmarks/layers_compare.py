"""Head importance (Michel et al.) on SmolLM2-135M compared with per-head activation patching and induction
scores: Spearman's rank correlation over the 270 heads (small batches; CPU).

    .venv/bin/python benchmarks/layers_compare.py [--texts 16] [--threads 1]

Importance is measured twice: on the first ``--texts`` paragraphs of the ``heldout`` task (general next-token
loss) and on the patching prompts themselves (the IOI prompt's loss). Patching: ``z`` of every head, clean
values into the corrupted run (names swapped), metric the logit difference of the two names. Induction:
``induction_scores`` on 8 sequences of 32 repeated random tokens.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.induction import induction_scores
from interp.layers import head_importance, load_task
from interp.patching import activation_patching, prepare

CLEAN = ["When Mary and John went to the store, John gave a drink to",
         "When Tom and Anna went to the park, Anna gave a ball to"]
CORRUPT = ["When Mary and John went to the store, Mary gave a drink to",
           "When Tom and Anna went to the park, Tom gave a ball to"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = interp.load_model("smollm2-135m")
    t0 = time.perf_counter()
    texts = list(load_task("heldout").texts[: args.texts])
    imp_text = head_importance(model, texts, batch_size=8, progress=False)
    imp_ioi = head_importance(model, CLEAN, progress=False)
    t1 = time.perf_counter()
    setup = prepare(model, CLEAN, corrupt=CORRUPT, answer=[" Mary", " Tom"], wrong=[" John", " Anna"])
    patch = activation_patching(model, setup, component="z", progress=False)
    t2 = time.perf_counter()
    ind = induction_scores(model, n_seq=8, half=32, progress=False)
    t3 = time.perf_counter()
    print(f"SmolLM2-135M, {args.threads} thread(s); importance on {len(texts)} heldout texts "
          f"({imp_text.n_tokens} tokens) and on the {len(CLEAN)} IOI prompts; patching z of 270 heads on the IOI "
          f"pair (clean logit diff {patch.clean_value:.3f}, corrupted {patch.corrupted_value:.3f}); induction on "
          f"8 x 2 x 32 repeated tokens")
    print(f"time: importance {t1 - t0:.1f} s, patching {t2 - t1:.1f} s, induction {t3 - t2:.1f} s (wall)")
    for name, imp in (("importance on heldout text", imp_text), ("importance on the IOI prompts", imp_ioi)):
        res = imp.compare(patching=patch, induction=ind)
        rho = res.spearman()
        print(f"{name}: Spearman rho vs patching {rho['patching']:+.3f}, vs induction {rho['induction']:+.3f}; "
              f"top 5 {res.ranking()[:5]}")
    f = imp_text.compare(patching=patch, induction=ind).to_frame()
    top_p = f.sort_values("patching", ascending=False).head(5)
    top_i = f.sort_values("induction", ascending=False).head(5)
    print("top 5 patching heads (their importance rank on heldout text):",
          [f"L{r.layer}H{r.head} ({int(r.rank)})" for r in top_p.itertuples()])
    print("top 5 induction heads (their importance rank on heldout text):",
          [f"L{r.layer}H{r.head} ({int(r.rank)})" for r in top_i.itertuples()])


if __name__ == "__main__":
    main()
