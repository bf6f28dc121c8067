"""Patching speed on SmolLM2-135M: the full resid_pre sweep (30 layers x every position) of an IOI pair.

Sides, all in this process, on the same prompt pair and metric (logit difference ' Mary' - ' John'):
- loop: one full forward per (layer, position), patched through ``interp.hooks.Patch`` (the baseline);
- batched: ``interp.patching.activation_patching`` (each patched run starts at its layer; the runs of one
  layer are packed into one forward of only their changed positions over the target run's cached
  keys/values; no-op cells, which write the target's own values, are not run);
- batched, ablated: the same with no-op cells run (``SKIP_NOOPS = False``), and with neither that nor
  packing (``PACK = False``: full-length rows stacked in the batch, the previous implementation);
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
from interp.patching import batched as batched_mod

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """(wall seconds, process CPU seconds) and the result. CPU time does not count what other processes
    or the hypervisor take from this one: on this shared VM, wall times of the same work vary up to 2x."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = interp.load_model("smollm2-135m")
    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John")
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

    def batched(skip: bool = True, pack: bool = True) -> torch.Tensor:
        batched_mod.SKIP_NOOPS, batched_mod.PACK = skip, pack
        try:
            return activation_patching(m, s, component="resid_pre", progress=False).values
        finally:
            batched_mod.SKIP_NOOPS = batched_mod.PACK = True

    variants = {"batched": batched, "batched, no-op cells run": lambda: batched(skip=False),
                "batched, full-length rows": lambda: batched(skip=False, pack=False)}

    def attribution() -> Any:
        return attribution_patching(m, s, component="resid_pre", progress=False)

    times: dict[str, list[tuple[float, float]]] = {k: [] for k in (*variants, "attribution", "loop", "TransformerLens")}
    results: dict[str, Any] = {}
    batched(), attribution()  # warm-up (fills the setup's caches: the clean/corrupted activations and keys/values)
    fast = [*variants.items(), ("attribution", attribution)]
    for r in range(args.repeats):
        for name, fn in (fast if r % 2 == 0 else fast[::-1]):
            t, results[name] = timed(fn)
            times[name].append(t)
            print(f"  round {r}: {name} {t[0]:.2f} s (CPU {t[1]:.2f} s)", file=sys.stderr)
    for r in range(args.slow_repeats):
        t, results["loop"] = timed(loop)
        times["loop"].append(t)
        print(f"  round {r}: loop {t[0]:.2f} s (CPU {t[1]:.2f} s)", file=sys.stderr)
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
            print(f"  round {r}: TransformerLens {t[0]:.2f} s (CPU {t[1]:.2f} s)", file=sys.stderr)

    med = {k: statistics.median(w for w, _ in v) for k, v in times.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items() if v}
    exact = results["batched"]
    skipped = int(sum(batched_mod._is_noop(s, (L, (batched_mod.Edit(None, p),)), "corrupted", "clean")
                      for L in range(n_layers) for p in range(n_pos)))
    print(f"no-op cells (not run by default): {skipped} of {n_layers * n_pos}")
    print(f"\n{'side':<30}{'wall s':>8}{'loop/side':>11}{'CPU s':>9}{'loop/side':>11}   max |diff| vs loop")
    for k in med:
        diff = "" if k == "attribution" else f"{float((results[k].float() - results['loop']).abs().max()):.2e}"
        print(f"{k:<30}{med[k]:>8.2f}{med['loop'] / med[k]:>10.1f}x{cpu[k]:>9.2f}{cpu['loop'] / cpu[k]:>10.1f}x   {diff}")
    if "TransformerLens" in med:
        for k in variants:
            print(f"TransformerLens / {k}: {med['TransformerLens'] / med[k]:.1f}x wall, "
                  f"{cpu['TransformerLens'] / cpu[k]:.1f}x CPU")
    (t, c), _ = timed(lambda: activation_patching(m, CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John",
                                                  component="resid_pre", progress=False))
    print(f"batched from a fresh prepare() (both runs, their captures and keys/values included): {t:.2f} s "
          f"(CPU {c:.2f} s), {med['loop'] / t:.1f}x the loop")
    exact_res = activation_patching(m, s, component="resid_pre", progress=False)
    for label, kw in (("AtP", {}), ("AtP + q/k softmax fix", {"qk_fix": True}),
                      ("AtP + GradDrop", {"grad_drop": True}), ("AtP* (q/k fix + GradDrop)", {"qk_fix": True, "grad_drop": True})):
        (t, _), est = timed(lambda kw=kw: attribution_patching(m, s, component="resid_pre", exact=exact_res,
                                                               progress=False, **kw))
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
