"""``interp probe``: linear and k-sparse probes of a labelled set, per layer."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args, positions_arg
from interp.errors import BadInputError

ORDER = 40


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "probe", help="linear and k-sparse probes of a labelled set at every layer",
                    description="Fit standardised, class-balanced linear probes (and k-sparse probes on the top-k "
                                "dimensions, and a control task) at every selected hook, held out by sequence. "
                                "Captures the labelled set (--set) through the model first, or reads a captured "
                                "store (--store; no model is loaded then).",
                    example="interp probe --set python_prose --labels label --max-seqs 96 --positions -1 "
                            "--html probe.html")
    model_arg(p)
    p.add_argument("--set", default="python_prose",
                   help="a shipped labelled set (python_prose, digits, list_position) or a Parquet path "
                        "(default: %(default)s)")
    p.add_argument("--store", help="probe this captured TraceStore instead (its metadata holds the labels)")
    p.add_argument("--labels", default="label",
                   help="label column: per sequence (label) or per character (char_labels) (default: %(default)s)")
    p.add_argument("--hooks", action="append", default=None,
                   help="hook name, short form or glob, repeatable: resid_post, mlp_post.3, 'blocks.*.hook_mlp_out' "
                        "(default: resid_post, every layer)")
    positions_arg(p, help="token positions probed: -1 (each sequence's last real token), 0,3,-1 or a slice like "
                          "2:5 (default: every real token)")
    p.add_argument("--pool", choices=["mean"], default=None,
                   help="mean: one example per sequence, the mean over its selected positions (default: every "
                        "selected token is an example)")
    p.add_argument("--task", choices=["classification", "regression"], default="classification")
    p.add_argument("--ks", default="1,2,4,8,16,32,64", help="k-sparse levels, comma-separated (default: %(default)s)")
    p.add_argument("--ranking", choices=["f_stat", "mean_diff", "l1"], default="f_stat")
    p.add_argument("--cv", type=int, default=0, help="cross-validation folds by sequence (default: none)")
    p.add_argument("--no-control", action="store_true", help="skip the control task")
    p.add_argument("--max-seqs", type=int, default=None, help="use only the first N sequences of the set")
    p.add_argument("--max-tokens", type=int, default=64, help="truncate sequences (default: %(default)s)")
    p.add_argument("--save", dest="save_dir", metavar="DIR", help="save the ProbeResult (safetensors + JSON)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from interp.probing import LabelledSet, probe
    from interp.report import Report
    from interp.trace import TraceStore, capture
    from interp.trace.trace import command_line

    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise BadInputError(f"bad --ks {args.ks!r}; valid: comma-separated ints, e.g. 1,2,4") from None
    hooks = args.hooks or ["resid_post"]
    options: dict[str, Any] = {"hooks": hooks, "positions": args.positions, "pool": args.pool, "task": args.task,
                               "ks": ks, "ranking": args.ranking, "cv": args.cv, "control": not args.no_control}
    if args.store:
        res = probe(None, TraceStore(args.store), labels=args.labels, **options)
        what = args.store
    else:
        import interp

        ds = LabelledSet.load(args.set)
        if args.max_seqs:
            ds = ds.select(args.max_seqs)
        model = interp.load_model(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            store = capture(model, list(ds.texts), out=f"{tmp}/store", hooks=hooks, max_tokens=args.max_tokens)
            res = probe(model, store, labels=ds.column(args.labels), **options)
        what = f"{ds.name} ({len(ds)} sequences) through {model.name}"
    score = "R2" if args.task == "regression" else "acc"
    pooled = ", mean-pooled" if res.pool else ""
    print(f"probes of {args.labels!r} on {what}, positions {res.positions}{pooled}, "
          f"{int(res.is_test.sum())} held-out examples")
    print(f"{'hook':>28} {score:>7} {'control':>8} {'select':>7} " + " ".join(f"{'k=' + str(k):>6}" for k in res.ks)
          + "  top dims")
    for i, h in enumerate(res.hooks):
        print(f"{h:>28} {float(res.accuracy[i]):7.3f} {float(res.control_accuracy[i]):8.3f} "
              f"{float(res.selectivity[i]):7.3f} " + " ".join(f"{a:6.3f}" for a in res.sparse_accuracy[i].tolist())
              + f"  {res.top_neurons(h, k=min(4, res.neurons.shape[1]))}")
    if args.save_dir:
        res.save(args.save_dir)
        print(f"saved   {args.save_dir}")
    rep = Report(f"interp probe — {args.labels}", command=command_line(), subtitle=what)
    sec = rep.section("Probing", "How well a linear probe reads the labels from each layer (held-out accuracy), "
                                 "against a control task that only memorises token types.")
    sec.result(res, views=["layers", "k", "hist"])
    emit(args, rep)
    return 0
