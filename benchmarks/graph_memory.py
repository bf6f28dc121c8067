"""Attribution-graph peak memory before and after the row-block rework (issue 22), same prompt, same transcoders.

"Before" is ``interp/features/graph.py`` as of ``--before`` (a commit; default the last one with the dense ``N x N``
adjacency), loaded from git into a scratch module; "after" is the working tree's. Each side runs in its own
subprocess (so one side's peak cannot hide the other's) on SmolLM2-135M with random TopK transcoders (``--d-sae``
features, k = 32, skip) on the first ``--layers`` blocks, a 16-token prompt, ``--max-feature-nodes`` feature rows.
Peak memory is the subprocess's maximum resident set size minus its size just before the graph (model,
its cached per-head weight views and the transcoders loaded). Both sides also print their kept-edge count so the outputs can be compared.

    nice -n 10 .venv/bin/python benchmarks/graph_memory.py [--layers 12] [--max-feature-nodes 64] [--before COMMIT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "ede8fac"  # the last commit whose graph.py held the dense adjacency

SIDE = r'''
import importlib.util, json, resource, sys, time, torch
import interp
from interp.features import SAEConfig, Transcoder
from interp.features.transcoder import mlp_in_hook
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("graph_side", a["module"])
mod = importlib.util.module_from_spec(spec); sys.modules["graph_side"] = mod; spec.loader.exec_module(mod)
model = interp.load_model("smollm2-135m")
ids, _ = model.encode("When Mary and John went to the store, John gave a drink to Mary because she was thirsty and")
ids = ids[0, :16]
tcs = {}
for layer in range(a["layers"]):
    g = torch.Generator().manual_seed(layer)
    tc = Transcoder(SAEConfig(d_sae=a["d_sae"], k=32, apply_b_dec_to_input=False), progress=False,
                    hook=mlp_in_hook(model, layer=layer), out_hook=f"mlp_out.{layer}", skip=True)
    tc.W_enc_, tc.b_enc_ = torch.randn(576, a["d_sae"], generator=g) / 24, torch.zeros(a["d_sae"])
    tc.W_dec_, tc.b_dec_ = torch.randn(a["d_sae"], 576, generator=g) / 24, torch.zeros(576)
    tc.W_skip_ = torch.zeros(576, 576)
    tcs[layer] = tc
_ = model.weights  # the model's per-head weight views (built once, cached): not the graph's
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
g = mod.attribution_graph(model, ids, transcoders=tcs, max_feature_nodes=a["max_feature_nodes"], batch_size=32,
                          node_threshold=a["node_threshold"], edge_threshold=a["edge_threshold"], progress=False)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n = len(g.kind)
edges = int(g.edge_weight.numel()) if hasattr(g, "edge_weight") else int((g.adjacency != 0).sum())
print(json.dumps({"nodes": n, "kept_nodes": int(g.kept.sum()), "edges": edges, "seconds": dt,
                  "rss_before_mib": rss0, "peak_rss_mib": rss}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--max-feature-nodes", type=int, default=64)
    ap.add_argument("--node-threshold", type=float, default=0.8)
    ap.add_argument("--edge-threshold", type=float, default=0.98)
    ap.add_argument("--before", default=BEFORE)
    ap.add_argument("--skip-before", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "graph_before.py"
        old.write_text(subprocess.run(["git", "show", f"{args.before}:interp/features/graph.py"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
        sides = [("after (row blocks)", str(ROOT / "interp" / "features" / "graph.py"))]
        if not args.skip_before:
            sides.insert(0, (f"before (dense N x N, {args.before})", str(old)))
        cfg = {"layers": args.layers, "d_sae": args.d_sae, "max_feature_nodes": args.max_feature_nodes,
               "node_threshold": args.node_threshold, "edge_threshold": args.edge_threshold}
        print(f"SmolLM2-135M, 16 tokens, random transcoders on blocks 0-{args.layers - 1} ({args.d_sae} features, "
              f"k 32), rows for {args.max_feature_nodes} features + the logits, 1 thread")
        for name, path in sides:
            out = subprocess.run([sys.executable, "-c", SIDE, json.dumps({**cfg, "module": path})], cwd=ROOT,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: failed: {out.stderr[-1500:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name}: {r['nodes']} nodes, kept {r['kept_nodes']} nodes / {r['edges']} edges; "
                  f"time {r['seconds']:.1f} s; peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"graph's own peak {r['peak_rss_mib'] - r['rss_before_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
