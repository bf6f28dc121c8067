"""``interp causal``: interchange intervention accuracy of a task's variable over layers × positions, a
subspace learned by distributed alignment search, or a shipped IIT-trained model's alignment."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args, positions_arg
from interp.errors import BadInputError

ORDER = 35


def _ints(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}; write comma-separated ints, e.g. 0,4,8") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "causal", help="causal abstraction: interchange interventions, IIA, DAS",
                    description="Draw base/source pairs of a task's high-level causal model and measure interchange "
                                "intervention accuracy (IIA) of one variable: the whole activation of --component "
                                "at each of --layers × --positions (default), or a subspace learned by distributed "
                                "alignment search at --hook (--das K). --iit-model scores a shipped IIT-trained "
                                "model's alignment instead (no --model needed).",
                    example="interp causal --task ioi --variable io_position --layers 0,8,12,16,20,29 "
                            "--positions -1 --n 32 --html causal.html")
    model_arg(p)
    p.add_argument("--task", default="ioi", help="ioi, addition, hierarchical_equality or toy_ioi (default: %(default)s)")
    p.add_argument("--variable", help="the variable interchanged (default: the task's first computed variable)")
    p.add_argument("--iit-model", metavar="NAME", help="a shipped IIT-trained model (iit-equality, iit-ioi) or its "
                                                        "directory: score its alignment and sweep --component")
    p.add_argument("--component", default="resid_post", help="component swept (default: %(default)s)")
    p.add_argument("--layers", type=_ints, help="layers swept, e.g. 0,8,16 or -1 (default: every layer)")
    positions_arg(p, help="positions swept (ints, negative from each prompt's last token; default: every position "
                          "when the prompts have one length, else -1)")
    p.add_argument("--das", type=int, metavar="K", help="learn a K-dim subspace at --hook (with --positions) instead")
    p.add_argument("--method", choices=["das", "lowrank", "boundless"], default="das")
    p.add_argument("--hook", help="the site of --das, e.g. resid_post.12")
    p.add_argument("--steps", type=int, default=100, help="DAS training steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-2, help="DAS learning rate (default: %(default)s)")
    p.add_argument("--n", type=int, default=64, help="base/source pairs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", dest="save_dir", metavar="DIR", help="save the result (safetensors + JSON)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.causal import das, get_task, iia, iia_sweep, load_iit_model
    from interp.report import Report
    from interp.trace.trace import command_line

    if args.n < 2:
        raise BadInputError(f"bad --n {args.n}; valid: an int >= 2")
    rep = Report("interp causal", command=command_line())
    if args.iit_model:
        shipped = load_iit_model(args.iit_model)
        model, task = shipped.model, shipped.task
        print(repr(shipped))
        for i, var in enumerate(shipped.alignment):
            one = iia(model, task.sample(args.n, variables=[var], seed=args.seed + i), alignment=shipped.alignment)
            print(f"IIA of {var} at {' + '.join(s.label() for s in shipped.alignment[var])} (n={one.n}): "
                  f"{float(one.iia[0]):.3f} [{float(one.lower[0]):.3f}, {float(one.upper[0]):.3f}]")
        data = task.sample(args.n, variables=list(shipped.alignment), seed=args.seed)
        res = iia(model, data, alignment=shipped.alignment)
        print(f"IIA with every variable interchanged at once, each from its own source (n={res.n}): "
              f"{float(res.iia[0]):.3f} [{float(res.lower[0]):.3f}, {float(res.upper[0]):.3f}]; task accuracy "
              f"{res.base_accuracy:.3f}")
        sec = rep.section("Alignment", "IIA of the trained alignment: 1 means every interchange gave the "
                                       "high-level model's counterfactual answer.")
        sec.result(res, views=["bars"])
        variable = args.variable or next(iter(shipped.alignment))
    else:
        task = get_task(args.task)
        model = interp.load_model(args.model)
        cm = task.causal_model
        variable = args.variable or cm.order[len(cm.inputs)]
    data = task.sample(args.n, variables=[variable], seed=args.seed)
    if args.das:
        if not args.hook:
            raise BadInputError("--das needs --hook (e.g. resid_post.12) and --positions")
        pos = args.positions if args.positions is not None else -1
        res_d = das(model, data, site=(args.hook, pos), k=args.das, method=args.method, steps=args.steps, lr=args.lr,
                    seed=args.seed)
        print(f"{args.method} k={res_d.k} at {res_d.hook} positions {pos}: held-out IIA {res_d.iia:.3f} "
              f"[{res_d.lower:.3f}, {res_d.upper:.3f}] (n={res_d.n_test}), training IIA {res_d.train_iia:.3f}")
        result: Any = res_d
        sec = rep.section("Distributed alignment search", f"How well a learned {res_d.k}-dimensional subspace carries "
                                                           f"{variable}: IIA on held-out pairs.")
        sec.result(res_d, views=["curve", "basis"])
    else:
        positions = args.positions
        if positions is not None and isinstance(positions, int):
            positions = [positions]
        if isinstance(positions, slice):
            raise BadInputError("--positions for a sweep must be ints (e.g. -3,-2,-1), not a slice")
        table = iia_sweep(model, data, variable=variable, component=args.component, layers=args.layers,
                          positions=positions if positions is not None else _default_positions(model, data))
        i, j, _ = table.best()
        print(f"IIA of {variable} on {task.name} (n={table.n}; base accuracy {table.base_accuracy:.3f}; a null "
              f"interchange scores {1 - table.changed:.2f}); best {float(table.iia[i, j, 0]):.3f} at "
              f"{table.component}.{table.layers[i]} position {table.position_labels[j]}")
        print(f"{'layer':>6} " + " ".join(f"{lab[:10]:>10}" for lab in table.position_labels))
        for a, L in enumerate(table.layers):
            print(f"{L:>6} " + " ".join(f"{float(v):10.3f}" for v in table.iia[a, :, 0]))
        result = table
        sec = rep.section("Interchange intervention accuracy",
                          f"IIA of {variable} with {table.component} taken from the source at each layer and "
                          "position: 1 = the site carries the variable, the null-intervention level = it does not.")
        sec.result(table, views=["heatmap", "layers"])
    if args.save_dir:
        result.save(args.save_dir)
        print(f"saved   {args.save_dir}")
    emit(args, rep)
    return 0


def _default_positions(model: Any, data: Any) -> list[int] | None:
    """Every position (``None``) when the bases have one token length, else the last one."""
    from interp.causal.engine import encode_prompts

    _, mask = encode_prompts(model, data.base)
    return None if len(set(mask.sum(1).tolist())) == 1 else [-1]


__all__ = ["register", "run"]
