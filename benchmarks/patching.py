"""Patching speed on SmolLM2-135M: the full resid_pre sweep (30 layers x every position) of an IOI pair.

Sides, all in this process, on the same prompt pair and metric (logit difference ' Mary' - ' John'):
- loop: one full forward per (layer, position), patched through ``interp.hooks.Patch`` (the baseline);
- batched: ``interp.patching.activation_patching`` (runs stacked in the batch, each starting at its layer);
- TransformerLens: ``transformer_lens.patching.get_act_patch_resid_pre`` on ``TransformerBridge`` (own copy);
- attribution: ``interp.patching.attribution_patching`` (plain, and with the AtP* options), with its
  Pearson correlation to the exact sweep.

Batched and attribution run ``--repeats`` times interleaved (medians); the loop and TransformerLens
(minutes each) run ``--slow-repeats`` times. One torch thread everywhere (``--threads``).

    .venv/bin/python benchmarks/patching.py [--repeats 3] [--slow-repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.hooks import Patch, run_with_hooks
from interp.patching import activation_patching, attribution_patching, prepare

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = interp.load_model("smollm2-135m")
    s = prepare(m, CLEAN, CORRUPT, answer=" Mary", wrong=" John")
    ans, wrong = int(s.metric.answer[0]), int(s.metric.wrong[0])
    n_layers, n_pos = m.dims.n_layers, s.n_pos
    print(f"SmolLM2-135M, {n_pos} tokens, {n_layers} x {n_pos} = {n_layers * n_pos} cells; torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)")
    print(f"clean logit diff {s.clean_value:.3f}, corrupted {s.corrupted_value:.3f}")

    clean_acts = run_with_hooks(m, s.input_ids, capture="blocks.*.hook_resid_pre").activations

    def loop() -> torch.Tensor:
        out = torch.empty(n_layers, n_pos)
        with torch.no_grad():
            for L in range(n_layers):
                name = f"blocks.{L}.hook_resid_pre"
                for p in range(n_pos):
                    lg = run_with_hooks(m, s.corrupt_ids, interventions=[Patch(name, source=clean_acts[name], positions=[p])]).logits
                    out[L, p] = lg[0, -1, ans] - lg[0, -1, wrong]
        return out

    def batched() -> torch.Tensor:
        return activation_patching(s, "resid_pre", progress=False).values

    def attribution() -> Any:
        return attribution_patching(s, "resid_pre", progress=False)

    times: dict[str, list[float]] = {k: [] for k in ("batched", "attribution", "loop", "TransformerLens")}
    results: dict[str, Any] = {}
    batched(), attribution()  # warm-up
    for r in range(args.repeats):
        for name, fn in ((("batched", batched), ("attribution", attribution)) if r % 2 == 0
                         else (("attribution", attribution), ("batched", batched))):
            t, results[name] = timed(fn)
            times[name].append(t)
            print(f"  round {r}: {name} {t:.2f} s", file=sys.stderr)
    for r in range(args.slow_repeats):
        t, results["loop"] = timed(loop)
        times["loop"].append(t)
        print(f"  round {r}: loop {t:.2f} s", file=sys.stderr)
    if not args.no_tl:
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.patching import get_act_patch_resid_pre

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers("smollm2-135m-local", hf_model=copy.deepcopy(m.hf),
                                                         tokenizer=copy.deepcopy(m.tokenizer), device="cpu")
        with torch.no_grad():
            _, cache = bridge.run_with_cache(s.input_ids)

        def tl_metric(logits: torch.Tensor) -> torch.Tensor:
            return logits[0, -1, ans] - logits[0, -1, wrong]

        def tl() -> torch.Tensor:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return get_act_patch_resid_pre(bridge, s.corrupt_ids, cache, tl_metric)

        for r in range(args.slow_repeats):
            t, results["TransformerLens"] = timed(tl)
            times["TransformerLens"].append(t)
            print(f"  round {r}: TransformerLens {t:.2f} s", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    exact = results["batched"]
    print(f"\n{'side':<34}{'median s':>10}{'loop / side':>13}   max |diff| vs loop")
    for k in med:
        diff = "" if k == "attribution" else f"{float((results[k].float() - results['loop']).abs().max()):.2e}"
        print(f"{k:<34}{med[k]:>10.2f}{med['loop'] / med[k]:>13.1f}   {diff}")
    if "TransformerLens" in med:
        print(f"TransformerLens / batched: {med['TransformerLens'] / med['batched']:.1f}x")
    exact_res = activation_patching(s, "resid_pre", progress=False)
    for label, kw in (("AtP", {}), ("AtP + q/k softmax fix", {"qk_fix": True}),
                      ("AtP + GradDrop", {"grad_drop": True}), ("AtP* (q/k fix + GradDrop)", {"qk_fix": True, "grad_drop": True})):
        t, est = timed(lambda kw=kw: attribution_patching(s, "resid_pre", exact=exact_res, progress=False, **kw))
        if kw.get("grad_drop"):
            x, y = est.values.flatten(), (exact - s.corrupted_value).abs().flatten()
            r = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
            kind = "r vs |exact effect|"
        else:
            r, kind = est.correlation(), "Pearson r vs exact"
        swapped = [i for i, (a, b) in enumerate(zip(s.input_ids[0].tolist(), s.corrupt_ids[0].tolist(), strict=True)) if a != b]
        rec = "" if kw.get("grad_drop") else (
            f", recovers {float(est.normalized[:, swapped].sum() / exact_res.normalized[:, swapped].sum()):.2f} of the "
            "effect at the swapped token")
        print(f"{label:<28} {t:6.2f} s  ({med['loop'] / t:6.1f}x the loop)  {kind} {r:.3f}{rec}")


if __name__ == "__main__":
    main()
