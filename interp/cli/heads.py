"""``interp heads``: SVD of the heads' OV/QK circuits, composition scores and a communication channel."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, heads_arg, model_arg, output_args
from interp.errors import BadInputError

ORDER = 45


def head_type(text: str) -> Any:
    """``--sender L3H2`` → a head; argparse reports a bad one as a usage error (status 2) with interp's message."""
    from interp.sites import HeadRef

    try:
        return HeadRef.parse(text)
    except BadInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "heads", help="attention heads: OV/QK SVD, composition scores, channels",
                    description="Singular values and vocabulary readings of every head's OV (or QK) circuit, "
                                "all-pairs Q/K/V-composition scores against a random baseline, and the "
                                "sender→receiver channel of the strongest pair (or of --sender/--receiver).",
                    example="interp heads --model smollm2-135m --kind k --top 10 --sender L17H8 --receiver L18H7 "
                            "--html heads.html")
    model_arg(p)
    p.add_argument("--kind", choices=["q", "k", "v"], default="k",
                   help="composition kind: which input of the receiving head reads the sender (default: %(default)s)")
    p.add_argument("--circuit", choices=["ov", "qk"], default="ov", help="circuit to decompose (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="pairs to list (default: %(default)s)")
    heads_arg(p, help="heads whose SVD to compute and show, e.g. L5H1,L6H9 (default: every head; the spectrum "
                      "and token views show the first, or the sender)")
    p.add_argument("--sender", type=head_type, metavar="L3H2", help="sender head of the channel, e.g. L3H2")
    p.add_argument("--receiver", type=head_type, metavar="L5H1", help="receiver head of the channel, e.g. L5H1")
    p.add_argument("--no-fold", action="store_true", help="use raw weights (do not fold the attention norm weight)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.heads import channel, composition, head_svd
    from interp.report import Report
    from interp.trace.trace import command_line

    if (args.sender is None) != (args.receiver is None):
        raise BadInputError("give both --sender and --receiver, or neither")
    if args.top < 1:
        raise BadInputError(f"bad --top {args.top}; valid: an int >= 1")
    model = interp.load_model(args.model)
    fold = not args.no_fold
    kind = args.kind
    comp = composition(model, kinds=kind, fold_norm=fold)
    pairs = comp.top_pairs(kind, args.top)
    i = comp.kinds.index(kind)
    print(f"{kind.upper()}-composition of {model.name}: random baseline "
          f"{comp.baseline_mean[i]:.4f} ± {comp.baseline_std[i]:.4f} ({comp.baseline})")
    print(f"{'sender':>8} {'receiver':>9} {'score':>7} {'z':>7}")
    for a, b, s, z in pairs:
        print(f"{a!s:>8} {b!s:>9} {s:7.4f} {z:7.1f}")
    if args.sender is not None:
        sender, receiver = args.sender, args.receiver
    elif pairs:
        sender, receiver = pairs[0][:2]
    else:
        raise BadInputError(f"{model.name} has a single layer: no head pair can compose")
    ch = channel(model, sender=sender, receiver=receiver, kind=kind, fold_norm=fold)
    print(f"channel {sender} -> {receiver} ({kind}): score {ch.score:.4f}; components read most: {ch.components(5)}")
    svd = head_svd(model, circuit=args.circuit, heads=args.heads, fold_norm=fold, top_components=2, n_tokens=8)
    head = args.heads[0] if args.heads else sender
    print(f"{args.circuit.upper()} of {head}: effective rank {float(svd.eff_rank[head]):.1f}; component 0 "
          f"writes {[t for t, _ in svd.tokens(head, 0, 'out')[:6]]}")
    rep = Report(f"interp heads — {model.name}", command=command_line(),
                 subtitle=f"{kind.upper()}-composition, {args.circuit.upper()} SVD, fold_norm={fold}")
    reads = {"q": "queries", "k": "keys", "v": "values"}[kind]
    sec = rep.section("Composition", f"How strongly each head's output feeds a later head's {reads}: the strongest "
                                     "pairs as a graph, then every pair as a z-score against a random baseline.")
    sec.result(comp, views=["graph"], kind=kind, n_edges=max(args.top, 10))
    sec.figure(comp.plot("heatmap", kind=kind))
    sec.table(["sender", "receiver", "score", "z"], [[str(a), str(b), f"{s:.4f}", f"{z:.1f}"] for a, b, s, z in pairs])
    rep.section("Channel", "How much of the pair's composition each singular component of the sender's output "
                           "carries (contribution) and how much of it lies in the receiver's input subspace "
                           "(overlap).").result(ch)
    rep.section(f"{args.circuit.upper()} SVD", "The effective rank of each head's circuit, the singular values "
                                               f"of {head} and the tokens its first component reads and writes."
                ).result(svd, views=["rank"]).figure(svd.plot("spectrum", head=head)).figure(
                    svd.plot("tokens", head=head))
    emit(args, rep)
    return 0
