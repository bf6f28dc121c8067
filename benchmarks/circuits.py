"""Circuit discovery on models whose circuits are known: every method's AUROC against the truth, CPR, CMD, time.

1. The shipped toy induction model (2 attention-only layers, 4 heads) on repeated random tokens; truth: the
   K-composition circuit read off its attention patterns (:func:`interp.circuits.toy_truth`), 22 of 81 edges.
   Edge level: exact patching, EAP, EAP-IG over the inputs (5 steps), EAP-IG over the activations (5 steps),
   ACDC (metric distance threshold 0.5). Exact patching's edges/s is printed too.
1b. The Tracr-compiled models (``reverse``, ``hist``, ``sort``, ``frac_prevs``; :func:`interp.circuits.load_compiled`):
   truth: the circuit the compiler built (:func:`interp.circuits.compiled_truth`, the edges that vary at a fixed
   length); task: the fixture inputs, corrupted by the next fixture input; ACDC threshold 0.01.
2. The two strict-IIT models of interp.causal (``iit-ioi``, ``iit-equality``): the circuits in their
   ``causal.json`` are node sets (strict IIT trained the other heads to be irrelevant), so these are scored at
   node level: AUROC of node scores against the circuit's nodes. Clean prompts from the task, corrupted
   prompts resampled from it; metric: the clean answer's logit minus the corrupted answer's.
3. With ``--smollm2``: the IOI prompt pairs on SmolLM2-135M (no ground truth): EAP's time against one plain
   forward + backward of the same batch (goal: <= 3x), EAP-IG's faithfulness curve, the top nodes.

AUROC is pessimistic (ties count against the method, as InterpBench). Times are single runs on a shared
machine (wall clock, after one warm-up run per model).

Run:  .venv/bin/python benchmarks/circuits.py [--smollm2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Literal

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from interp.circuits import (  # noqa: E402
    COMPILED,
    Circuit,
    CircuitTask,
    EdgeRunner,
    build_graph,
    compiled_task,
    compiled_truth,
    discover,
    edge_auroc,
    faithfulness,
    induction_task,
    ioi_task,
    load_compiled,
    load_toy,
    toy_truth,
)
from interp.models import Model  # noqa: E402


def _row(name: str, method: str, c: Circuit, truth: Circuit, cpr: float, cmd: float) -> None:
    print(f"| {name} | {method} | {c.level} | {edge_auroc(c, truth):.3f} | {cpr:.3f} | {cmd:.3f} | "
          f"{c.meta['seconds']:.3f} |")


def _bench(name: str, model: Model, task: CircuitTask, truth: Circuit, level: Literal["edge", "node"],
           acdc_threshold: float) -> None:
    runner = EdgeRunner(model, task)
    discover(model, task, method="eap", level=level, runner=runner)  # warm-up
    for method in ("exact", "eap", "eap-ig", "eap-ig-act", "acdc"):
        c = discover(model, task, method=method, level=level, runner=runner, threshold=acdc_threshold,  # type: ignore[arg-type]
                     progress=False)
        f = faithfulness(model, task, circuit=c, runner=runner)
        _row(name, method + (" (5 steps)" if method.startswith("eap-ig") else ""), c, truth, f.cpr, f.cmd)
        if method == "exact":
            print(f"|   | exact: {c.n_units / c.meta['seconds']:.0f} {level}s/s | | | | | |")


def toy() -> None:
    m = load_toy()
    _bench("toy induction", m, induction_task(m), toy_truth(m), "edge", 0.5)


def compiled(name: str) -> None:
    m = load_compiled(name)
    truth = compiled_truth(m)
    _bench(f"tracr {name} ({int(truth.selected.sum())}/{truth.n_units})", m, compiled_task(m), truth, "edge", 0.01)


def iit(name: str) -> None:
    from interp.causal import load_iit_model

    it = load_iit_model(name)
    m = it.model
    data = it.task.sample(64, seed=0)
    prompts = [list(p) for p in data.base]
    half = len(prompts) // 2
    ids = torch.tensor(prompts)
    clean, corrupt = ids[:half], ids[half:2 * half]
    labels = [int(x) for x in data.labels]
    ans, wrong = torch.tensor(labels[:half]), torch.tensor(labels[half:2 * half])
    keep = ans != wrong
    task = CircuitTask(clean[keep], torch.ones_like(clean[keep]), corrupt[keep], ans[keep], wrong[keep],
                       "logit_diff", "corrupted", name)
    g = build_graph(m)
    nodes = set()
    for item in it.circuit["nodes"]:
        hook = item.split("[")[0].split("@")[0]
        layer = int(hook.split(".")[1])
        if hook.startswith("mlp_out"):
            nodes.add(f"MLP{layer}")
        else:
            nodes |= {h.strip() for h in item.split("[")[1].split("]")[0].split(",")}
    nodes.add("input")
    sel = torch.tensor([s in nodes for s in g.senders])
    truth = Circuit.from_graph(g, sel.float(), sel, level="node", method="truth")
    _bench(name, m, task, truth, "node", 0.5)


def smollm2() -> None:
    import interp

    m = interp.load_model("smollm2-135m")
    task = ioi_task(m, n=4)
    runner = EdgeRunner(m, task)
    discover(m, task, method="eap", runner=runner)  # warm-up
    t0 = time.perf_counter()
    c = discover(m, task, method="eap", runner=runner)
    t_eap = time.perf_counter() - t0
    ids, mask = task.input_ids, task.attention_mask
    last = task.last
    t0 = time.perf_counter()
    logits = m.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
    task.values(logits[torch.arange(len(ids)), last][None]).mean().backward()
    t_fb = time.perf_counter() - t0
    m.hf.zero_grad(set_to_none=True)
    print(f"SmolLM2 IOI ({len(ids)} pairs, {c.n_units} edges): EAP {t_eap:.2f}s vs one forward+backward "
          f"{t_fb:.2f}s = {t_eap / t_fb:.1f}x (goal <= 3x; EAP also holds the clean and corrupted runs' sender outputs)")
    ig = discover(m, task, method="eap-ig", runner=runner)
    curve = faithfulness(m, task, circuit=ig, runner=runner)
    print(f"EAP-IG (5 steps) {ig.meta['seconds']:.1f}s; faithfulness CPR {curve.cpr:.3f} CMD {curve.cmd:.3f}: "
          + ", ".join(f"{float(x):g}: {float(f):.2f}" for x, f in zip(curve.fractions, curve.faithfulness, strict=True)))
    print("top 12 edges:", ", ".join(f"{s}->{r}" for s, r, _ in ig.top(12).edge_list()))
    node = discover(m, task, method="eap-ig", level="node", runner=runner)
    print("top 10 nodes:", ", ".join(f"{s} {w:+.2f}" for s, _, w in node.top(10).edge_list()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", action="store_true", help="also the IOI pairs on SmolLM2-135M")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine more threads oversubscribe it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print("| model | method | level | AUROC vs truth | CPR | CMD | seconds |")
    print("|---|---|---|---|---|---|---|")
    toy()
    for name in COMPILED:
        compiled(name)
    iit("iit-ioi")
    iit("iit-equality")
    if args.smollm2:
        smollm2()


if __name__ == "__main__":
    main()
