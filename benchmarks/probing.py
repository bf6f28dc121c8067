"""Probing 30 layers x >= 20k token rows from a TraceStore: time, peak memory, and the peer side by side.

Captures ``data/probing/python_prose.parquet`` (320 sequences, up to 64 tokens: ~20k token rows)
through SmolLM2-135M at every ``blocks.*.hook_resid_post`` into a temporary store, then

1. ``interp.probing.probe`` on the store (one hook at a time: dense probe, control task, k-sparse
   probes k = 1..64), measuring wall time and peak memory (tracemalloc of Python/NumPy allocations and
   the process RSS high-water mark);
2. the peer: the same dense probes written directly with scikit-learn (``StandardScaler`` +
   ``LogisticRegression(class_weight="balanced")``) on the same split, after loading every layer into
   memory at once (what one does without a store): its time, memory and accuracies, with the ratio.

Rounds alternate (interp, peer, interp, peer...) and medians are reported; the machine is shared.

Run:  .venv/bin/python benchmarks/probing.py [--rounds 2] [--layers 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_interp(store_path: Path, hooks: list[str], dense_only: bool = False) -> dict:
    import sklearn.feature_selection
    import sklearn.linear_model
    import sklearn.metrics  # noqa: F401  (imported before the baseline, as the peer does)

    from interp.probing import probe
    from interp.trace import TraceStore

    base = rss_peak_mib()
    t = time.perf_counter()
    extra = {"ks": [1], "control": False} if dense_only else {}
    res = probe(None, TraceStore(store_path), labels="label", hooks=hooks, n_threads=1, progress=False, **extra)
    dt = time.perf_counter() - t
    b = res.best_row()
    return {"time": dt, "mem": rss_peak_mib() - base, "acc": res.accuracy.tolist(),
            "ctrl": res.control_accuracy.tolist(), "sel": res.selectivity.tolist(),
            "k1": res.sparse_accuracy[:, 0].tolist(), "ks": list(res.ks), "best": b,
            "best_sparse": res.sparse_accuracy[b].tolist(), "neurons": res.top_neurons(res.hooks[b], k=min(8, res.neurons.shape[1]))}


def run_peer(store_path: Path, hooks: list[str]) -> dict:
    """scikit-learn by hand on every layer loaded at once (no streaming)."""
    import sklearn.feature_selection
    import sklearn.metrics  # noqa: F401  (same imports as the interp side)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from interp.probing import split_by_sequence
    from interp.trace import TraceStore

    base = rss_peak_mib()
    t = time.perf_counter()
    st = TraceStore(store_path)
    _, mask = st.tokens()
    lengths = mask.sum(1)
    meta = st.metadata()
    y = np.concatenate([[m["label"] == "python"] * int(n) for m, n in zip(meta, lengths, strict=True)]).astype(int)
    groups = torch.arange(len(lengths)).repeat_interleave(lengths)
    train, test = split_by_sequence(groups, test_size=0.25, seed=0)
    tr, te = train.numpy(), test.numpy()
    # every layer in memory: [layer, rows, d]
    acts = {h: [] for h in hooks}
    for info in st.shards():
        shard = st.read_shard(info, hooks)
        for h in hooks:
            acts[h].append(shard[h].numpy())
    X_all = {h: np.concatenate(v) for h, v in acts.items()}
    del acts
    accs = []
    for h in hooks:
        X = X_all[h]
        m = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=100))
        m.fit(X[tr], y[tr])
        accs.append(float(m.score(X[te], y[te])))
    dt = time.perf_counter() - t
    return {"time": dt, "mem": rss_peak_mib() - base, "acc": accs}


def side(name: str, path: Path, layers: int) -> dict:
    """Run one side in a fresh process (so that its RSS high-water mark is its own)."""
    out = subprocess.run([sys.executable, __file__, "--side", name, "--store", str(path), "--layers", str(layers)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--store", help="reuse a store captured earlier (default: capture into a temp dir)")
    ap.add_argument("--side", choices=["interp", "interp-dense", "peer"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    hooks = [f"blocks.{L}.hook_resid_post" for L in range(args.layers)]  # full names: the peer reads shards by them
    if args.side:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            if args.side == "peer":
                out = run_peer(Path(args.store), hooks)
            else:
                out = run_interp(Path(args.store), hooks, dense_only=args.side == "interp-dense")
        print(json.dumps(out))
        return 0
    import interp
    from interp.trace import TraceStore, capture

    tmp = tempfile.TemporaryDirectory()
    path = Path(args.store) if args.store else Path(tmp.name) / "store"
    if not (path / "manifest.json").exists():
        model = interp.load_model("smollm2-135m")
        t = time.perf_counter()
        capture(model, ROOT / "data/probing/python_prose.parquet", out=path, hooks="resid_post",
                max_tokens=64, batch_size=16, progress=False)
        print(f"capture: {time.perf_counter() - t:.1f} s")
        del model
    st = TraceStore(path)
    layer_mib = st.n_tokens * 576 * 4 / 2**20
    print(f"store: {st.n_seqs} sequences, {st.n_tokens} token rows, {len(st.hooks)} hooks; one layer = "
          f"{layer_mib:.0f} MiB, all {len(hooks)} = {layer_mib * len(hooks):.0f} MiB (float32)")
    ri, rd, rp = [], [], []
    for r in range(args.rounds):
        ri.append(side("interp", path, args.layers))
        print(f"round {r}: interp.probing {ri[-1]['time']:.1f} s, +{ri[-1]['mem']:.0f} MiB RSS", flush=True)
        rd.append(side("interp-dense", path, args.layers))
        print(f"round {r}: interp.probing dense only {rd[-1]['time']:.1f} s, +{rd[-1]['mem']:.0f} MiB RSS", flush=True)
        rp.append(side("peer", path, args.layers))
        print(f"round {r}: sklearn by hand (dense only) {rp[-1]['time']:.1f} s, +{rp[-1]['mem']:.0f} MiB RSS", flush=True)
    ti, mi = statistics.median(x["time"] for x in ri), statistics.median(x["mem"] for x in ri)
    tp, mp = statistics.median(x["time"] for x in rp), statistics.median(x["mem"] for x in rp)
    td, md = statistics.median(x["time"] for x in rd), statistics.median(x["mem"] for x in rd)
    res, accs = ri[-1], rp[-1]["acc"]
    print(f"\nmedians over {args.rounds} rounds ({len(hooks)} layers x {st.n_tokens} rows; RSS above the process's "
          "RSS after imports):")
    print(f"  interp.probing (dense + control + {len(res['ks'])} k-sparse, streamed): {ti:.1f} s, "
          f"+{mi:.0f} MiB = {mi / layer_mib:.1f} layers")
    print(f"  interp.probing (dense only, streamed):                   {td:.1f} s, +{md:.0f} MiB = {md / layer_mib:.1f} layers")
    print(f"  sklearn by hand (dense only, all layers in memory):      {tp:.1f} s, +{mp:.0f} MiB = {mp / layer_mib:.1f} layers")
    print(f"  dense only, interp/peer: time {td / tp:.2f}x, memory {md / mp:.2f}x; full probing (dense + control + "
          f"{len(res['ks'])} k-sparse per layer) / peer: time {ti / tp:.2f}x, memory {mi / mp:.2f}x")
    diff = np.abs(np.array(rd[-1]["acc"]) - np.array(accs)).max()
    print(f"  dense held-out accuracy, max |interp - sklearn| over layers: {diff:.4f}")
    b = res["best"]
    print(f"  best layer {b}: accuracy {res['acc'][b]:.4f}, control {res['ctrl'][b]:.4f}, selectivity {res['sel'][b]:.4f}")
    print("  accuracy by layer: " + " ".join(f"{a:.3f}" for a in res["acc"]))
    print("  control by layer:  " + " ".join(f"{a:.3f}" for a in res["ctrl"]))
    print("  1-sparse by layer: " + " ".join(f"{a:.3f}" for a in res["k1"]))
    print(f"  k-sparse at layer {b}: " + " ".join(f"k={k}:{a:.3f}" for k, a in zip(res["ks"], res["best_sparse"], strict=True)))
    print(f"  top neurons at layer {b}: {res['neurons']}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
