"""``interp heads``: SVD of the heads' OV/QK circuits, composition scores and a communication channel."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, heads_arg, heads_type, model_arg, output_args
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
    register_decompose(p)
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.heads import channel, composition, head_svd
    from interp.report import Report
    from interp.trace.trace import command_line

    if getattr(args, "action", None) == "decompose":
        return run_decompose(args)
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


# -- `interp heads decompose` (added for the sparse attention decomposition) --------------------------------
def register_decompose(p: argparse.ArgumentParser) -> None:
    """Options of ``interp heads decompose`` (on the ``heads`` parser: its first word selects the action)."""
    p.add_argument("action", nargs="?", choices=["decompose"], default=None,
                   help="'decompose': split attention scores over singular QK components (Franco & Crovella "
                        "2024) and build the communication graph on --prompt")
    p.add_argument("--prompt", action="append", help="decompose: a prompt (repeatable)")
    p.add_argument("--share", type=float, default=0.9, help="decompose: share of the score the sparse set reaches "
                                                            "(default: %(default)s)")
    p.add_argument("--receivers", type=heads_type, default=None,
                   help="decompose: receiving heads of the graph, e.g. L9H1,L10H5 (default: the --heads, else every "
                        "head of the last layer)")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="decompose: validate the N strongest edges by subspace removal (default: %(default)s)")
    p.add_argument("--per-offset", action="store_true",
                   help="decompose, rotary models: one SVD per head and offset instead of one per head (slower)")


def run_decompose(args: argparse.Namespace) -> int:
    import interp
    from interp.heads import attention_decomposition, communication_graph, subspace_removal
    from interp.report import Report
    from interp.sites import HeadRef
    from interp.trace.trace import command_line

    if not args.prompt:
        raise BadInputError("interp heads decompose needs --prompt TEXT (repeatable)")
    if not 0 < args.share <= 1:
        raise BadInputError(f"bad --share {args.share}; valid: a number in (0, 1]")
    model = interp.load_model(args.model)
    L, H = model.dims.n_layers, model.dims.n_heads
    heads = args.heads or [HeadRef(L - 1, h) for h in range(H)]
    receivers = args.receivers or [h for h in heads if h.layer > 0]
    dec = attention_decomposition(model, args.prompt, heads=heads, share=args.share,
                                  per_offset=bool(getattr(args, "per_offset", False)))
    sp = dec.sparsity(0.1)
    print(f"{model.name}: {len(dec.heads)} heads decomposed; terms sum to the scores within {dec.max_error:.2e}")
    print(f"{'head':>6} {'n_sparse (att>=0.1)':>20}")
    for h, v in zip(dec.heads, sp.tolist(), strict=True):
        print(f"{h:>6} {v:20.2f}")
    rep = Report(f"interp heads decompose — {model.name}", command=command_line(),
                 subtitle=f"share={args.share}, {len(args.prompt)} prompt(s)")
    sec = rep.section("Attention decomposition", "Scores split over singular components of each head's QK matrix.")
    sec.result(dec, views=["pair", "sparsity"])
    if receivers:
        g = communication_graph(model, args.prompt, receivers=receivers, share=args.share)
        print(f"{'sender':>8} {'receiver':>9} {'side':>4} {'weight':>9}")
        for s, r, side, w in g.top_edges(args.top):
            print(f"{s:>8} {r:>9} {side:>4} {w:+9.3f}")
        rep.section("Communication graph", "Earlier heads writing the sparse components a head reads "
                                           "(q: at the destination, k: at the source).").result(g, views=["graph"])
        if args.validate > 0:
            v = subspace_removal(model, args.prompt, graph=g, n_edges=args.validate)
            for e, s, r, p in zip(v.edges, v.sparse_drop.tolist(), v.random_drop.mean(1).tolist(),
                                  v.p_values().tolist(), strict=True):
                print(f"validate {e}: score drop {s:+.3f} (random subspaces {r:+.3f}, p {p:.3f})")
            rep.section("Subspace removal", "Removing the sparse subspace from the sender vs random subspaces."
                        ).result(v)
    emit(args, rep)
    return 0
