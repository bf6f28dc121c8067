"""interp.causal against pyvene 0.1.8, side by side: the same interchanges, the same DAS, time per step.

1. Fixed interchange interventions on the shipped IIT model ``iit-equality`` (WX at mlp_out.0 position 1; WX and
   WY from two sources at once): IIA of both libraries (they must be equal) and the time of each.
2. DAS (a full rotation, k dims swapped) on the same task, site, seed, data, batches, steps and optimiser: the
   held-out IIA of both (goal: within 0.02) and the time per training step (goal: interp >= 2x faster).
3. With ``--smollm2``: DAS on SmolLM2-135M for the IOI task's ``io_position`` at ``resid_post.L`` (last token,
   one template so positions align), interp vs pyvene per training step.

Rounds alternate (interp, pyvene, interp, pyvene...) and medians are reported; the machine is shared.

Run:  .venv/bin/python benchmarks/causal.py [--rounds 3] [--steps 40] [--smollm2 --layer 15]
      .venv/bin/python benchmarks/causal.py --quick    (a smoke run: one round, few steps)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "oracles"))
sys.path.insert(0, str(ROOT / "tests"))  # conftest, imported by the oracle module

from interp.causal import das, iia, ioi, load_iit_model  # noqa: E402
from interp.causal.engine import encode_prompts  # noqa: E402
from interp.causal.task import answer_ids  # noqa: E402
from interp.causal.tasks import NAMES  # noqa: E402


def fixed(rounds: int) -> None:
    import pyvene as pv

    eq = load_iit_model("iit-equality")
    m, task = eq.model, eq.task
    cand = answer_ids(m.dims.d_vocab, None, task.candidates)
    for label, variables, reps, locs in (
            ("WX at mlp_out.0@1", ["WX"], [(0, "mlp_output")], [1]),
            ("WX, WY from two sources", ["WX", "WY"], [(0, "mlp_output"), (0, "mlp_output")], [1, 3])):
        data = task.sample(1024, variables=variables, seed=1)
        base, _ = encode_prompts(m, data.base)
        srcs = [encode_prompts(m, data.sources[v])[0] for v in variables]
        cfs = answer_ids(m.dims.d_vocab, None, data.counterfactuals)
        b = len(data)
        cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(L, c, "pos", 1) for L, c in reps],
                                    intervention_types=pv.VanillaIntervention)
        ivm = pv.IntervenableModel(cfg, model=copy.deepcopy(m.hf))
        loc = [[[p]] * b for p in locs]
        t_ours, t_pv = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            ours = iia(m, data, alignment=eq.alignment if len(variables) == 2 else {"WX": ("mlp_out.0", 1)},
                       batch_size=b, progress=False)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                _, cf = ivm({"input_ids": base}, [{"input_ids": s} for s in srcs], {"sources->base": (loc, loc)})
            theirs = (cand[cf.logits[:, -1][:, cand].argmax(-1)] == cfs)
            t_pv.append(time.perf_counter() - t)
        same = bool(torch.equal(ours.correct[0], theirs))
        print(f"fixed interchange, {label}, n={b}: IIA interp {float(ours.iia[0]):.4f} pyvene "
              f"{float(theirs.float().mean()):.4f} (every pair the same: {same}); time interp "
              f"{statistics.median(t_ours) * 1e3:.1f} ms, pyvene {statistics.median(t_pv) * 1e3:.1f} ms")


def das_side_by_side(model, train, held, hook: str, layer: int, component: str, pos: int, k: int, steps: int,
                     lr: float, batch_size: int, rounds: int, label: str) -> None:
    from test_pyvene_oracle import pyvene_das

    assert held.candidates is not None
    cand = answer_ids(model.dims.d_vocab, model.tokenizer, held.candidates)
    ours_t, theirs_t, ours_iia, theirs_iia, whole_t = [], [], [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        res = das(model, train, site=(hook, pos), k=k, steps=steps, lr=lr, batch_size=batch_size, test=held, seed=0,
                  progress=False)
        whole_t.append(time.perf_counter() - t)
        ours_t.append(res.config["seconds_per_step"])
        ours_iia.append(res.iia)
        acc, _, per_step = pyvene_das(copy.deepcopy(model.hf), layer, component, pos, k, train, held, steps=steps,
                                      lr=lr, batch_size=batch_size, seed=0, cand=cand, tokenizer=model.tokenizer)
        theirs_t.append(per_step)
        theirs_iia.append(acc)
    o, p = statistics.median(ours_t), statistics.median(theirs_t)
    print(f"DAS {label} (k={k}, {steps} steps, batch {batch_size}): held-out IIA interp {ours_iia[-1]:.4f} pyvene "
          f"{theirs_iia[-1]:.4f} (diff {abs(ours_iia[-1] - theirs_iia[-1]):.4f}); per step interp {o * 1e3:.1f} ms "
          f"(whole call incl. setup and evaluation), pyvene {p * 1e3:.1f} ms (training loop only): {p / o:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="one round of a few steps (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps = 1, 4
    torch.set_num_threads(1)
    fixed(args.rounds)
    eq = load_iit_model("iit-equality")
    data = eq.task.sample(640, variables=["WX"], seed=21)
    train, held = data.split(0.25, seed=0)
    das_side_by_side(eq.model, train, held, "mlp_out.0", 0, "mlp_output", 1, 2, args.steps, 1e-2, 32, args.rounds,
                     "iit-equality WX at mlp_out.0@1")
    das_side_by_side(eq.model, train, held, "resid_post.1", 1, "block_output", 4, 2, args.steps, 1e-2, 32, args.rounds,
                     "iit-equality WX at resid_post.1@4")
    if args.smollm2:
        import interp

        model = interp.load_model("smollm2-135m")
        # one template (positions align for pyvene); predictions read among the names on both sides
        task = replace(ioi(templates=["When {A} and {B} went to the store, {S} gave a drink to"]),
                       candidates=tuple(" " + n for n in NAMES))
        data = task.sample(160 if not args.quick else 24, variables=["io_position"], seed=0)
        train, held = data.split(0.25, seed=0)
        n = model.encode(data.base[0])[0].shape[1]
        das_side_by_side(model, train, held, f"resid_post.{args.layer}", args.layer, "block_output", n - 1, 1,
                         args.steps, 1e-2, 16, args.rounds, f"SmolLM2-135M IOI io_position at resid_post.{args.layer}@-1")


if __name__ == "__main__":
    main()
