"""Train the shipped IIT models (strict IIT, on a CPU in minutes) and save them to data/causal/<name>/.

Run from the repository root:  .venv/bin/python data/causal/train.py [iit-equality] [iit-ioi]

Each model is a 2-layer GPT-2 (d_model 64, 4 heads, MLP 256) trained with strict interchange intervention
training (interp.causal.train_iit) so that its alignment holds and its non-aligned sites do not matter; the
scores measured afterwards (task accuracy, IIA per variable on 512 fresh pairs, task accuracy with every
non-aligned site resample-ablated) are stored in causal.json beside the weights.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from interp.causal import AlignedSite, Alignment, IITModel, hierarchical_equality, toy_ioi, toy_transformer, train_iit  # noqa: E402
from interp.causal.iit import ablated_accuracy  # noqa: E402

SPECS = {
    "iit-equality": {
        "task": hierarchical_equality, "task_args": {"n_symbols": 6}, "vocab": 9, "n_ctx": 5,
        "alignment": {"WX": ("mlp_out.0", 1), "WY": ("mlp_out.0", 3)},
        "non_aligned": [AlignedSite("z.0", heads=[2, 3]), AlignedSite("z.1", heads=[2, 3]),
                        AlignedSite("mlp_out.0", positions=[0, 2, 4]), AlignedSite("mlp_out.1", positions=[0, 1, 2, 3])],
        "aux": {"WX": 1, "WY": 3}, "steps": 2500, "lr": 3e-3, "weights": (1.0, 1.0, 1.0),
        "circuit": {
            "nodes": ["z.0[L0H0,L0H1]", "mlp_out.0@1 (WX)", "mlp_out.0@3 (WY)", "z.1[L1H0,L1H1]", "mlp_out.1@4 (O)"],
            "description": "layer-0 heads 0-1 bring a to b's position and c to d's; the layer-0 MLP computes "
                           "WX = (a = b) at position 1 and WY = (c = d) at position 3; layer-1 heads 0-1 bring "
                           "both to the '=' position, where the layer-1 MLP computes O = (WX = WY). Strict IIT "
                           "made layer-0 heads 2-3, layer-1 heads 2-3 and the MLPs at the other positions "
                           "irrelevant. Trained with auxiliary targets (WX after b, WY after d) to leave the "
                           "plateau of this XOR-like task."},
    },
    "iit-ioi": {
        "task": toy_ioi, "task_args": {"n_names": 12}, "vocab": 12, "n_ctx": 3,
        "alignment": {"S": ("mlp_out.0", 2), "IO": AlignedSite("z.1", positions=2, heads=[0])},
        "non_aligned": [AlignedSite("z.0", heads=[1, 2, 3]), AlignedSite("z.1", heads=[1, 2, 3]),
                        AlignedSite("mlp_out.0", positions=[0, 1]), AlignedSite("mlp_out.1", positions=[0, 1])],
        "aux": {}, "steps": 900, "lr": 2e-3, "weights": (1.0, 3.0, 1.0),
        "circuit": {
            "nodes": ["z.0[L0H0]", "mlp_out.0@2 (S)", "z.1[L1H0]@2 (IO: name mover)", "mlp_out.1@2"],
            "description": "layer-0 head 0 compares the repeated name with the first ones; the layer-0 MLP at the "
                           "last position holds S (which slot is repeated); layer-1 head 0, a name mover, attends "
                           "to the other slot and writes its name (IO). Strict IIT made layer-0 heads 1-3, layer-1 "
                           "heads 1-3 and the MLPs at positions 0-1 irrelevant."},
    },
}


def train(name: str, seed: int = 0) -> IITModel:
    spec = SPECS[name]
    task = spec["task"](**spec["task_args"])
    model = toy_transformer(vocab=spec["vocab"], n_ctx=spec["n_ctx"], d_model=64, n_heads=4, d_mlp=256, seed=seed,
                            name=name)
    t = time.perf_counter()
    res = train_iit(model, task, alignment=spec["alignment"], non_aligned=spec["non_aligned"], steps=spec["steps"],
                    batch_size=64, lr=spec["lr"], aux=spec["aux"], loss_weights=spec["weights"], seed=seed,
                    eval_every=100, eval_n=256, progress=False)
    seconds = time.perf_counter() - t
    shipped = IITModel(model=model, task=task, alignment=Alignment(spec["alignment"]),
                       non_aligned=tuple(spec["non_aligned"]), circuit=spec["circuit"], task_args=spec["task_args"],
                       training={**res.config, "seconds": round(seconds, 1), "strict": True,
                                 "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_mlp": 256}})
    out = shipped.save(HERE / name)
    # measure the saved (float16) weights, as users load them
    loaded = IITModel.load(out, name=name)
    from interp.causal import iia, task_accuracy

    metrics = {"task_accuracy": task_accuracy(loaded.model, task.sample(512, seed=1001)), "n": 512}
    for i, v in enumerate(loaded.alignment):
        r = iia(loaded.model, task.sample(512, variables=[v], seed=2001 + i), alignment=loaded.alignment,
                progress=False)
        metrics[f"iia_{v}"] = round(float(r.iia[0]), 4)
    metrics["ablated_accuracy"] = ablated_accuracy(loaded.model, task, sites=loaded.non_aligned, n=512, seed=3001)
    shipped.metrics = metrics
    shipped.save(out)
    res.save(out / "training")  # the IITResult: curves of the losses, accuracy and held-out IIA
    logging.getLogger("interp").info("%s: %s (%.0f s)", name, metrics, seconds)
    print(name, metrics, f"trained in {seconds:.0f} s", flush=True)
    return shipped


if __name__ == "__main__":
    torch.set_num_threads(1)
    for n in sys.argv[1:] or list(SPECS):
        train(n)
