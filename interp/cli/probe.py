"""``interp probe``: linear and k-sparse probes of a labelled set, per layer."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args
from interp.errors import BadInputError

ORDER = 40


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "probe", help="linear and k-sparse probes of a labelled set at every layer",
                    description="Fit standardised, class-balanced linear probes (and k-sparse probes on the top-k "
                                "dimensions, and a control task) at every selected hook, held out by sequence. "
                                "Reads a captured store (--store) or captures the labelled set first.",
                    example="interp probe --set python_prose --labels label --max-seqs 96 --html probe.html")
    model_arg(p)
    p.add_argument("--set", default="python_prose",
                   help="a shipped labelled set (python_prose, digits, list_position) or a Parquet path "
                        "(default: %(default)s)")
    p.add_argument("--store", help="probe this captured TraceStore instead (its metadata holds the labels)")
    p.add_argument("--labels", default="label",
                   help="label column: per sequence (label) or per character (char_labels) (default: %(default)s)")
    p.add_argument("--hooks", default="blocks.*.hook_resid_post", help="hook names or patterns (default: %(default)s)")
    p.add_argument("--position", default="all",
                   help="all | last | mean | an int position (default: %(default)s)")
    p.add_argument("--task", choices=["classification", "regression"], default="classification")
    p.add_argument("--ks", default="1,2,4,8,16,32,64", help="k-sparse levels, comma-separated (default: %(default)s)")
    p.add_argument("--ranking", choices=["f_stat", "mean_diff", "l1"], default="f_stat")
    p.add_argument("--cv", type=int, default=0, help="cross-validation folds by sequence (default: none)")
    p.add_argument("--no-control", action="store_true", help="skip the control task")
    p.add_argument("--max-seqs", type=int, default=None, help="use only the first N sequences of the set")
    p.add_argument("--max-tokens", type=int, default=64, help="truncate sequences (default: %(default)s)")
    p.add_argument("--save", metavar="DIR", help="save the ProbeResult (safetensors + JSON)")
    output_args(p)
    p.set_defaults(func=run)


def _position(text: str) -> str | int:
    if text in ("all", "last", "mean"):
        return text
    try:
        return int(text)
    except ValueError:
        raise BadInputError(f"--position must be all, last, mean or an int, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import tempfile

    from interp.probing import LabelledSet, probe
    from interp.report import Report
    from interp.trace import TraceStore, capture
    from interp.trace.trace import command_line

    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise BadInputError(f"--ks must be comma-separated ints, got {args.ks!r}") from None
    position = _position(args.position)
    tmp = None
    if args.store:
        source, labels, what = TraceStore(args.store), args.labels, args.store
    else:
        import interp

        ds = LabelledSet.load(args.set)
        if args.max_seqs:
            ds = ds.select(args.max_seqs)
        model = interp.load_model(args.model)
        tmp = tempfile.TemporaryDirectory()
        source = capture(model, list(ds.texts), args.hooks, f"{tmp.name}/store", max_tokens=args.max_tokens,
                         progress=not args.quiet)
        labels, what = ds.column(args.labels), f"{ds.name} ({len(ds)} sequences) through {model.name}"
    res = probe(source, labels, hooks=args.hooks, position=position, task=args.task, ks=ks, ranking=args.ranking,
                cv=args.cv, control=not args.no_control, progress=not args.quiet)
    if tmp is not None:
        tmp.cleanup()
    score = "R2" if args.task == "regression" else "acc"
    print(f"probes of {args.labels!r} on {what}, position={args.position}, {int(res.is_test.sum())} held-out examples")
    print(f"{'hook':>28} {score:>7} {'control':>8} {'select':>7} " + " ".join(f"{'k=' + str(k):>6}" for k in res.ks)
          + "  top dims")
    for i, h in enumerate(res.hooks):
        print(f"{h:>28} {float(res.accuracy[i]):7.3f} {float(res.control_accuracy[i]):8.3f} "
              f"{float(res.selectivity[i]):7.3f} " + " ".join(f"{a:6.3f}" for a in res.sparse_accuracy[i].tolist())
              + f"  {res.top_neurons(i, 4)}")
    if args.save:
        res.save(args.save)
        print(f"saved   {args.save}")
    rep = Report(f"interp probe — {args.labels}", command=command_line(), subtitle=what)
    sec = rep.section("Probing", 'How well a linear probe reads the labels from each layer, against a control task.')
    b = res.best_layer()
    sec.figure(res.plot("layers")).figure(res.plot("k", layer=b)).figure(res.plot("hist", layer=b))
    sec.numbers("accuracy", res.accuracy, axes=["layer"], labels={"layer": res.layer_labels})
    sec.numbers("selectivity", res.selectivity, axes=["layer"], labels={"layer": res.layer_labels})
    sec.numbers("sparse_accuracy", res.sparse_accuracy, axes=["layer", "k"],
                labels={"layer": res.layer_labels, "k": list(res.ks)})
    emit(args, rep)
    return 0
