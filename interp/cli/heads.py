"""``interp heads``: SVD of the heads' OV/QK circuits, composition scores and a communication channel."""

from __future__ import annotations

import argparse
import re
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args
from interp.errors import BadInputError

ORDER = 45


def _head(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"L?(\d+)[.:H,](\d+)", text.strip(), flags=re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a head; write it as L5H2 (or 5.2)")
    return int(m.group(1)), int(m.group(2))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "heads", help="attention heads: OV/QK SVD, composition scores, channels",
                    description="Singular values and vocabulary readings of every head's OV (or QK) circuit, "
                                "all-pairs Q/K/V-composition scores against a random baseline, and the "
                                "sender→receiver channel of the strongest pair (or of --sender/--receiver).",
                    example="interp heads --model smollm2-135m --kind k --top 10 --html heads.html")
    model_arg(p)
    p.add_argument("--kind", choices=["q", "k", "v"], default="k", help="composition kind (default: %(default)s)")
    p.add_argument("--circuit", choices=["ov", "qk"], default="ov", help="circuit to decompose (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="pairs to list (default: %(default)s)")
    p.add_argument("--sender", type=_head, help="sender head for the channel, e.g. L3H1")
    p.add_argument("--receiver", type=_head, help="receiver head for the channel, e.g. L7H4")
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
        raise BadInputError(f"--top {args.top} must be >= 1")
    model = interp.load_model(args.model)
    fold = not args.no_fold
    comp = composition(model, kinds=(args.kind,), fold_norm=fold)
    pairs = comp.top_pairs(args.kind, args.top)
    i = comp.kinds.index(args.kind)
    print(f"{args.kind.upper()}-composition of {model.name}: random baseline "
          f"{comp.baseline_mean[i]:.4f} ± {comp.baseline_std[i]:.4f} ({comp.baseline})")
    print(f"{'sender':>8} {'receiver':>9} {'score':>7} {'z':>7}")
    for a, b, s, z in pairs:
        print(f"{f'L{a[0]}H{a[1]}':>8} {f'L{b[0]}H{b[1]}':>9} {s:7.4f} {z:7.1f}")
    sender, receiver = (args.sender, args.receiver) if args.sender is not None else pairs[0][:2]
    ch = channel(model, sender, receiver, args.kind, fold_norm=fold)
    print(f"channel L{sender[0]}H{sender[1]} -> L{receiver[0]}H{receiver[1]} ({args.kind}): score {ch.score:.4f}; "
          f"components read most: {ch.components(5)}")
    svd = head_svd(model, args.circuit, fold_norm=fold, top_components=2, n_tokens=8)
    la, ha = sender
    print(f"{args.circuit.upper()} of L{la}H{ha}: effective rank {float(svd.eff_rank[la, ha]):.1f}; component 0 "
          f"writes {[t for t, _ in svd.tokens(la, ha, 0, 'out')[:6]]}")
    rep = Report(f"interp heads — {model.name}", command=command_line(),
                 subtitle=f"{args.kind.upper()}-composition, {args.circuit.upper()} SVD, fold_norm={fold}")
    sec = rep.section("Composition", "How strongly each head's output feeds another head's queries, keys or values (composition scores).")
    sec.figure(comp.plot(args.kind)).figure(comp.plot(args.kind, style="graph", n_edges=max(args.top, 10)))
    sec.table(["sender", "receiver", "score", "z"],
              [[f"L{a[0]}H{a[1]}", f"L{b[0]}H{b[1]}", f"{s:.4f}", f"{z:.1f}"] for a, b, s, z in pairs])
    sec.numbers("composition", comp.of(args.kind), axes=["layer_a", "head_a", "layer_b", "head_b"])
    rep.section("Channel", "How much each singular component of the sender's output carries into the receiver.").figure(ch.plot()).numbers("contribution", ch.contribution, axes=["component"])
    sec = rep.section(f"{args.circuit.upper()} SVD", "The singular components of each head's circuit and the tokens they read and write.")
    sec.figure(svd.plot("rank")).figure(svd.plot("spectrum", la, ha)).figure(svd.plot("tokens", la, ha))
    sec.numbers("singular_values", svd.S, axes=["layer", "head", "component"])
    sec.numbers("effective_rank", svd.eff_rank, axes=["layer", "head"])
    emit(args, rep)
    return 0
