"""``interp features``: train an SAE on a stored hook, show a feature's flow across layers, steer with a feature."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from interp.cli._common import add_command, emit, model_arg, nonneg_int, output_args
from interp.errors import BadInputError

if TYPE_CHECKING:
    from interp.report import Report

ORDER = 60


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "features", help="sparse autoencoders: train, feature flow, steering",
                    description="train: fit a TopK (or ReLU + L1) SAE on one hook of a trace store. "
                                "flow: classify the features of a residual SAE by their predecessors and draw one "
                                "feature's flow graph (Laptev et al. 2025). steer: generate with a feature amplified "
                                "or suppressed. flow and steer read a directory of SAEs (default: the SmolLM2 SAEs "
                                "shipped in data/features/smollm2-135m). Hooks in any spelling: resid_post.4, "
                                "blocks.4.hook_resid_post, resid_post.-1. graph: the attribution graph of --prompt "
                                "through per-layer transcoders (default: those shipped in "
                                "data/features/smollm2-135m-transcoders), pruned by influence on the top logits.",
                    example="interp features flow --hook resid_post.4 --feature 20 --html flow.html\n"
                            "  interp features train --store /tmp/st --hook resid_post.4 --out /tmp/sae\n"
                            "  interp features steer --hook resid_post.4 --feature 20 --add 40 "
                            "--prompt 'I went to the'\n"
                            "  interp features graph --prompt 'The capital of France is' --html graph.html")
    p.add_argument("action", choices=["train", "flow", "steer", "graph"], help="what to do")
    model_arg(p)
    p.add_argument("--store", help="train: the trace store directory")
    p.add_argument("--hook", help="the hook, e.g. resid_post.4 (train: default the store's only hook; flow/steer: "
                                  "the feature's SAE)")
    p.add_argument("--out", help="train: directory to save the SAE in")
    p.add_argument("--d-sae", type=int, default=2048, help="train: number of features (default: %(default)s)")
    p.add_argument("--k", type=int, default=32, help="train: active features per token for TopK (default: %(default)s)")
    p.add_argument("--activation", choices=["topk", "relu"], default="topk",
                   help="train: SAE kind (default: %(default)s)")
    p.add_argument("--l1", type=float, default=3e-3, help="train: L1 coefficient for relu (default: %(default)s)")
    p.add_argument("--n-tokens", type=int, default=200_000, help="train: training rows (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1024, help="train: rows per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="train: Adam learning rate (default: %(default)s)")
    p.add_argument("--checkpoint-dir", help="train: write checkpoints here")
    p.add_argument("--resume", action="store_true", help="train: continue from --checkpoint-dir")
    p.add_argument("--saes",
                   help="flow/steer: directory with one sub-directory per SAE (default: shipped SmolLM2 SAEs)")
    p.add_argument("--feature", type=nonneg_int, help="flow/steer: the feature index (0 ... d_sae - 1)")
    p.add_argument("--direction", choices=["backward", "forward"], default="backward",
                   help="flow: where the feature comes from, or where it goes (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="flow: cosine a link needs (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="steer: multiply the feature's activation (0 = suppress)")
    p.add_argument("--add", type=float, default=0.0, help="steer: add this much of the feature (SAE units)")
    p.add_argument("--path", action="store_true",
                   help="steer: edit every residual feature on the feature's backward flow path (--threshold)")
    p.add_argument("--prompt", help="steer: the prompt to continue")
    p.add_argument("--max-new-tokens", type=int, default=20, help="steer: tokens to generate (default: %(default)s)")
    p.add_argument("--transcoders", help="graph: directory with one sub-directory per transcoder (default: shipped)")
    p.add_argument("--max-feature-nodes", type=int, default=None,
                   help="graph: compute rows for at most this many features (default: all)")
    p.add_argument("--node-threshold", type=float, default=0.8,
                   help="graph: cumulative influence of the features and errors kept (default: %(default)s)")
    p.add_argument("--edge-threshold", type=float, default=0.98,
                   help="graph: cumulative influence of the edges kept (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise BadInputError(f"interp features {args.action} needs {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from interp.report import Report
    from interp.trace.trace import command_line

    rep = Report(f"interp features {args.action}", command=command_line())
    {"train": _train, "flow": _flow, "steer": _steer, "graph": _graph}[args.action](args, rep)
    emit(args, rep)
    return 0


def _train(args: argparse.Namespace, rep: Report) -> None:
    from pathlib import Path

    from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae
    from interp.trace import TraceStore

    _need(args, "store", "out")
    store = TraceStore(args.store)
    cfg = SAEConfig(d_sae=args.d_sae, k=args.k, activation=args.activation, l1_coeff=args.l1, n_tokens=args.n_tokens,
                    batch_size=args.batch_size, lr=args.lr)
    sae = SparseAutoencoder(cfg).fit(store, hook=args.hook,
                                     checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                                     resume=args.resume)
    sae.save(args.out)
    ev = evaluate_sae(None, store, sae=sae, max_rows=20_000)
    print(f"saved   {args.out}  ({sae!r})")
    print(f"train-set EV {ev.explained_variance:.3f}, L0 {ev.l0:.1f}, dead {ev.dead_fraction:.3f} "
          f"(on up to 20k stored rows)")
    sec = rep.section("SAE training", "How the sparse autoencoder trained (explained variance, L0 over k and dead "
                                      "features over training tokens) and how often each feature fires.")
    sec.figure(sae.plot("training"))
    sec.result(ev, views=["frequency"])
    sec.table(["metric", "value"], [(k, v) for k, v in ev.metrics().items() if v == v])  # (NaN: no spliced CE)
    for key in ("ev", "l0", "dead_fraction", "loss"):
        sec.numbers(f"training_{key}", sae.history_[key], axes=["step"])


def _flow(args: argparse.Namespace, rep: Report) -> None:
    import interp
    from interp.features import canonical_hook, classify_features, feature_flow, load_saes

    _need(args, "hook", "feature")
    saes = load_saes(args.saes)
    model = interp.load_model(args.model)
    hook = canonical_hook(args.hook, model)
    sec = rep.section("Feature flow", "Where a feature's SAE direction comes from across layers: nodes are features "
                                      "(r = residual stream, attn/mlp = a block's sublayer), edges the cosine of "
                                      "their directions, upstream on the left.")
    try:
        cls = classify_features(model, saes=saes, hook=hook, threshold=args.threshold)
    except BadInputError as e:  # no predecessors (e.g. a forward flow from the first SAE)
        print(f"(no classification: {e})")
    else:
        print(f"features of {hook} by origin: {cls.counts()}")
        if 0 <= args.feature < len(cls.classes):
            print(f"feature {args.feature}: {cls.classes[args.feature]} (best cosine resid/attn/mlp: "
                  + " / ".join(f"{float(v):.2f}" for v in cls.scores[:, args.feature]) + ")")
        sec.result(cls, views=["counts"])
    graph = feature_flow(model, saes=saes, hook=hook, feature=args.feature, direction=args.direction,
                         threshold=args.threshold)
    print(f"{graph!r}")
    for a, b, v in graph.edges:
        print(f"  {graph.label(a):>14} -> {graph.label(b):<14} cos {v:.3f}   "
              f"{', '.join(graph.top_tokens[b][:5]) if graph.top_tokens else ''}")
    sec.result(graph, views=["graph"])
    sec.table(["upstream", "downstream", "cosine"], [(graph.label(a), graph.label(b), round(v, 4))
                                                     for a, b, v in graph.edges])


def _steer(args: argparse.Namespace, rep: Report) -> None:
    import interp
    from interp.features import canonical_hook, feature_flow, load_saes, path_edits, steer
    from interp.hooks import FeatureEdit

    _need(args, "hook", "feature", "prompt")
    saes = load_saes(args.saes)
    model = interp.load_model(args.model)
    hook = canonical_hook(args.hook, model)
    if hook not in saes:
        raise BadInputError(f"no SAE for {hook}; the SAEs read: {', '.join(saes)}")
    edits = [FeatureEdit(hook, sae=saes[hook], feature=args.feature, scale=args.scale, add=args.add)]
    if args.path:
        graph = feature_flow(model, saes=saes, hook=hook, feature=args.feature, threshold=args.threshold, top_n=1)
        edits = path_edits(graph, saes, scale=args.scale, add=args.add)
        print(f"steering {len(edits)} features on the path: " + ", ".join(f"{e.site} #{e.feature}" for e in edits))
    res = steer(model, args.prompt, interventions=edits, max_new_tokens=args.max_new_tokens)
    print(res)
    rep.section("Steering", "The model's greedy continuation of the prompt before and after the feature edits.") \
        .result(res).table(["run", "continuation"], [("before", res.before), ("after", res.after)])


def _graph(args: argparse.Namespace, rep: Report) -> None:
    import interp
    from interp.features import attribution_graph
    from interp.features.graph import load_transcoders

    _need(args, "prompt")
    model = interp.load_model(args.model)
    tcs = load_transcoders(args.transcoders)
    g = attribution_graph(model, args.prompt, transcoders=tcs, max_feature_nodes=args.max_feature_nodes,
                          node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    print(repr(g))
    frame = g.to_frame()
    for row in frame.reindex(frame.weight.abs().sort_values(ascending=False).index).head(15).itertuples():
        print(f"  {row.source:>22} -> {row.target:<22} {row.weight:+.3f}")
    rep.section("Attribution graph", "Direct effects between transcoder features (orange), token embeddings (grey), "
                                     "error nodes (squares) and the top logits (green) under frozen attention and "
                                     "norms; positions across, layers up; pruned by influence on the logits.") \
        .result(g, views=["graph"])
