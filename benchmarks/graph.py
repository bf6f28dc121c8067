"""Attribution-graph time and peak memory on SmolLM2-135M: a 16-token prompt, one transcoder per layer (30).

The transcoders are random TopK ones (4,096 features, k = 32, with a skip connection) unless ``--transcoders DIR``
gives trained ones: the cost depends on the shapes and the number of active features, not on what they learned.
Backward passes are batched (``--batch-size`` targets per pass); ``--max-feature-nodes`` bounds how many feature
rows are computed (circuit-tracer's greedy order). Peak memory is the process's maximum resident set size.

    .venv/bin/python benchmarks/graph.py [--max-feature-nodes 256] [--batch-size 32] [--d-sae 4096]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import interp
from interp.features import SAEConfig, Transcoder, attribution_graph
from interp.features.transcoder import mlp_in_hook

PROMPT = "When Mary and John went to the store, John gave a drink to Mary because she was thirsty and"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-feature-nodes", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--transcoders", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = interp.load_model("smollm2-135m")
    ids, _ = model.encode(PROMPT)
    ids = ids[:, :16]
    if args.transcoders:
        from interp.features.graph import load_transcoders

        tcs = load_transcoders(args.transcoders)
    else:
        tcs = {}
        for layer in range(model.dims.n_layers):
            g = torch.Generator().manual_seed(layer)
            tc = Transcoder(SAEConfig(d_sae=args.d_sae, k=32, apply_b_dec_to_input=False), progress=False,
                            hook=mlp_in_hook(model, layer=layer), out_hook=f"mlp_out.{layer}", skip=True)
            tc.W_enc_, tc.b_enc_ = torch.randn(576, args.d_sae, generator=g) / 24, torch.zeros(args.d_sae)
            tc.W_dec_, tc.b_dec_ = torch.randn(args.d_sae, 576, generator=g) / 24, torch.zeros(576)
            tc.W_skip_ = torch.zeros(576, 576)
            tcs[layer] = tc
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    g = attribution_graph(model, ids[0], transcoders=tcs, max_feature_nodes=args.max_feature_nodes,
                          batch_size=args.batch_size, progress=True)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_active = sum(1 for k in g.kind if k == "feature")
    print(f"{ids.shape[1]} tokens, {len(tcs)} transcoders ({args.d_sae} features, k 32), {n_active} active features, "
          f"rows for {min(n_active, args.max_feature_nodes)} features + {g.kind.count('logit')} logits, "
          f"batch {args.batch_size}, {args.threads} thread(s)")
    print(f"time {dt:.1f} s; peak RSS {rss:.0f} MiB (before the graph {rss0:.0f} MiB); {g!r}")


if __name__ == "__main__":
    main()
