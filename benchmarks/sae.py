"""SAE training speed: interp vs SAELens training the same TopK SAE on the same SmolLM2 activations.

SAELens lives in its own virtual environment (it pins transformer-lens < 4; see FACTS.md)::

    make saelens   # = python3 -m venv .venv-saelens; pip install torch==2.13.0; pip install sae-lens

This script captures ``blocks.4.hook_resid_post`` of SmolLM2-135M on the bundled corpus, saves the
token rows to a .safetensors file, and times rounds of training on those rows: interp in this
process (rows from a tensor, and streamed from the TraceStore), SAELens 6 in a subprocess
(``TopKTrainingSAE`` + ``SAETrainer`` fed the same rows, dense and with ``use_sparse_activations``).
Rounds are interleaved and medians reported; every side runs on one thread.

The bound: a TopK SAE cannot avoid the encoder's dense product ``[batch, d_in] @ [d_in, d_sae]``; each round also
times that one product with ``torch.mm`` (same process, same thread, interleaved with the training rounds), and the
script prints interp's training rate as a fraction of it (1.0 would mean the rest of the step is free). Several
sizes run with ``--sizes 4096:32,16384:64``.

    .venv/bin/python benchmarks/sae.py [--tokens 20000] [--steps 40] [--rounds 3] [--sizes 4096:32] [--no-saelens]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SAELENS_PY = str(Path(__file__).resolve().parents[1] / ".venv-saelens" / "bin" / "python")  # `make saelens`
HOOK = "blocks.4.hook_resid_post"

SAELENS_SIDE = r'''
import json, sys, time, torch
torch.set_num_threads(1)
from safetensors.torch import load_file
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig
from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig
a = json.loads(sys.argv[1])
x = load_file(a["acts"])["acts"]
def rows():
    g = torch.Generator().manual_seed(0)
    while True:
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0] - a["batch"] + 1, a["batch"]):
            yield x[perm[i:i + a["batch"]]]
cfg = TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=a["d_sae"], k=a["k"], device="cpu", dtype="float32",
                            use_sparse_activations=a["sparse"])
sae = TopKTrainingSAE(cfg)
tcfg = SAETrainerConfig(total_training_samples=a["steps"] * a["batch"], train_batch_size_samples=a["batch"],
                        lr=a["lr"], lr_end=a["lr"], lr_warm_up_steps=a["warmup"], device="cpu",
                        logger=LoggingConfig(log_to_wandb=False))
t = time.perf_counter()
SAETrainer(tcfg, sae, rows()).fit()
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "tokens_per_s": a["steps"] * a["batch"] / dt}))
'''


def capture_rows(n_tokens: int, work: Path) -> tuple[Path, Path]:
    import interp
    from interp.trace import capture

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "features"))
    from build import paragraphs  # the corpus paragraphs the shipped SAEs were trained on

    model = interp.load_model("smollm2-135m")
    texts = paragraphs(Path(__file__).resolve().parents[1] / "data" / "corpus" / "english.txt")
    n_seqs = max(16, n_tokens // 120)
    store = capture(model, texts[:n_seqs], out=work / "store", hooks=HOOK, batch_size=16, max_tokens=128)
    x = torch.cat(list(store.iter_tokens(HOOK, batch_size=8192, dtype=torch.float32)))
    acts = work / "acts.safetensors"
    save_file({"acts": x.contiguous()}, str(acts))
    return work / "store", acts


def time_mm(args: argparse.Namespace) -> float:
    """Rows per second of the one dense product: ``[batch, d_in] @ [d_in, d_sae]`` with torch.mm."""
    x, w = torch.randn(args.batch, 576), torch.randn(576, args.d_sae)
    torch.mm(x, w)
    t = time.perf_counter()
    for _ in range(args.steps):
        torch.mm(x, w)
    return args.steps * args.batch / (time.perf_counter() - t)


def time_interp(data: object, args: argparse.Namespace) -> float:
    from interp.features import SAEConfig, SparseAutoencoder

    cfg = SAEConfig(d_sae=args.d_sae, k=args.k, batch_size=args.batch, n_tokens=args.steps * args.batch,
                    lr=args.lr, warmup_steps=args.warmup, dead_after=10**9)
    t = time.perf_counter()
    SparseAutoencoder(cfg, progress=False).fit(data, hook=HOOK if not isinstance(data, torch.Tensor) else None)
    return args.steps * args.batch / (time.perf_counter() - t)


def time_saelens(acts: Path, args: argparse.Namespace, sparse: bool) -> float | None:
    spec = {"acts": str(acts), "d_sae": args.d_sae, "k": args.k, "batch": args.batch, "steps": args.steps,
            "lr": args.lr, "warmup": args.warmup, "sparse": sparse}
    out = subprocess.run([SAELENS_PY, "-c", SAELENS_SIDE, json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        errs = [ln for ln in out.stderr.splitlines() if "Error" in ln and not ln.startswith(" ")]
        print(f"SAELens side (use_sparse_activations={sparse}) failed: {(errs or ['?'])[-1][:300]}", file=sys.stderr)
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="4096:32", help="d_sae:k pairs, comma-separated (e.g. 4096:32,16384:64)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-saelens", action="store_true", help="skip the SAELens side")
    args = ap.parse_args()
    torch.set_num_threads(1)
    have_saelens = Path(SAELENS_PY).exists() and not args.no_saelens
    sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store_path, acts = capture_rows(args.tokens, Path(tmp))
        from interp.trace import TraceStore

        store = TraceStore(store_path)
        from safetensors.torch import load_file

        x = load_file(str(acts))["acts"]
        for d_sae, k in sizes:
            args.d_sae, args.k = d_sae, k
            print(f"\n{x.shape[0]} rows of {HOOK} (d_in {x.shape[1]}); TopK SAE d_sae {d_sae}, k {k}, batch "
                  f"{args.batch}, {args.steps} steps per round, {args.rounds} rounds, 1 thread per side")
            res: dict[str, list[float]] = {"matmul bound": [], "interp (tensor)": [], "interp (TraceStore)": [],
                                           "SAELens dense": [], "SAELens sparse": []}
            ratios: dict[str, list[float]] = {"interp (tensor)": [], "interp (TraceStore)": []}
            for r in range(args.rounds):
                res["matmul bound"].append(time_mm(args))
                res["interp (tensor)"].append(time_interp(x, args))
                ratios["interp (tensor)"].append(res["interp (tensor)"][-1] / res["matmul bound"][-1])
                res["matmul bound"].append(time_mm(args))
                res["interp (TraceStore)"].append(time_interp(store, args))
                ratios["interp (TraceStore)"].append(res["interp (TraceStore)"][-1] / res["matmul bound"][-1])
                if have_saelens:
                    for name, sparse in (("SAELens dense", False), ("SAELens sparse", True)):
                        v = time_saelens(acts, args, sparse)
                        if v is not None:
                            res[name].append(v)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in res.items() if v), flush=True)
            med = {k: statistics.median(v) for k, v in res.items() if v}
            print("median tokens/s:")
            for name, v in med.items():
                print(f"  {name:<22} {v:10.0f}")
            for name in ("interp (tensor)", "interp (TraceStore)"):
                print(f"ratio {name} / matmul bound (median of each run over the product timed just before it): "
                      f"{statistics.median(ratios[name]):.2f}")
            peers = [v for name, v in med.items() if name.startswith("SAELens")]
            if peers:
                best = max(peers)
                for name in ("interp (tensor)", "interp (TraceStore)"):
                    print(f"ratio {name} / best SAELens: {med[name] / best:.2f}x")
            else:
                print("no SAELens timing (skipped, not installed in .venv-saelens: make saelens, or it failed: see "
                      "above): no SAELens ratio")


if __name__ == "__main__":
    main()
