"""Knowledge-conflict heads on SmolLM2-135M (issue 24): do the found heads move the answer on held-out prompts
more than the same number of random heads?

Heads are found on the shipped ``train`` conflict prompts (:func:`conflict_heads`, attribution of
``logit(memory) − logit(context)``) and intervened on over the ``heldout`` prompts: pruning the memory heads,
pruning the context heads, and the dual intervention toward either side. Each is compared with ``--random``
random head sets of the same size (same factors). Printed per intervention: the memory rate (share of prompts
where the memorised answer's logit beats the context's) before/after with Wilson 95% intervals, the random
sets' mean and 2.5–97.5 percentiles, and the mean margin shift with a bootstrap 95% interval (prompts
resampled) against the random sets' margin shifts (mean, percentiles, and how many random sets moved the
margin at least as far: the one-sided rank p-value, add-one).

    .venv/bin/python benchmarks/conflicts.py [--k 3] [--random 20]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.patching.conflicts import (
    ConflictIntervention,
    conflict_heads,
    conflict_intervention,
    dual_intervention,
    load_conflicts,
)


def show(name: str, res: ConflictIntervention, toward: int) -> None:
    """``toward``: +1 if the intervention should raise the margin (toward memory), -1 if lower it."""
    r = res.random_margin_shift.double()
    lo, hi = (float(torch.quantile(r, q)) for q in (0.025, 0.975))
    p = (1 + int((r * toward >= res.margin_shift * toward).sum())) / (1 + len(r))
    print(f"{name}: heads {','.join(res.heads)}" + (f" factors {res.factors}" if res.factors else
                                                     f" factor {res.factor:g}"))
    print(f"  memory rate {res.before:.2f} [{res.before_ci[0]:.2f}, {res.before_ci[1]:.2f}] -> found "
          f"{res.after:.2f} [{res.after_ci[0]:.2f}, {res.after_ci[1]:.2f}]; random mean "
          f"{float(res.random_after.mean()):.2f} [{res.random_ci[0]:.2f}, {res.random_ci[1]:.2f}]")
    print(f"  margin shift found {res.margin_shift:+.3f} [{res.margin_shift_ci[0]:+.3f}, {res.margin_shift_ci[1]:+.3f}]"
          f"; random mean {float(r.mean()):+.3f} [{lo:+.3f}, {hi:+.3f}]; p(random >= found) = {p:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    m = interp.load_model("smollm2-135m")
    train, test = load_conflicts("train"), load_conflicts("heldout")
    with interp.quiet():
        found = conflict_heads(m, train, k=args.k)
        print(f"SmolLM2-135M: heads found on {len(train)} train prompts (k={args.k}), tested on {len(test)} held-out "
              f"prompts, {args.random} random head sets each")
        print(f"memory heads {','.join(found.memory_heads)}; context heads {','.join(found.context_heads)}; "
              f"train margin {found.margin:+.3f}")
        n = args.random
        show("prune memory heads (-> context)", conflict_intervention(m, test, heads=found.memory_heads, factor=0.0,
                                                                      n_random=n), -1)
        show("prune context heads (-> memory)", conflict_intervention(m, test, heads=found.context_heads, factor=0.0,
                                                                      n_random=n), +1)
        show("dual toward context (memory x0, context x2)", dual_intervention(m, test, heads=found, side="context",
                                                                            n_random=n), -1)
        show("dual toward memory (memory x2, context x0)", dual_intervention(m, test, heads=found, side="memory",
                                                                           n_random=n), +1)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
