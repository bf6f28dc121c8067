"""``interp circuit``: find the circuit of a task (edges between heads, MLPs and the logits) and its faithfulness."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from interp.cli._common import add_command, emit, model_arg, output_args, positive_int

ORDER = 36


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "circuit", help="circuit discovery: score the edges of a task's circuit",
                    description="Score every edge (or node) of the model's graph (input embeddings, each head's "
                                "q/k/v inputs and output, each MLP, the logits) for a task by exact edge patching, "
                                "EAP, EAP-IG or ACDC, print the top edges and the faithfulness curve (CPR / CMD).",
                    example="interp circuit --model smollm2-135m --task ioi --method eap-ig --html circuit.html")
    model_arg(p)
    p.add_argument("--task", help="a shipped task (induction, ioi; compiled for the Tracr models tracr-reverse, "
                                  "tracr-hist, tracr-sort, tracr-frac_prevs, their default) or a JSON file "
                                  '{"clean": [...], "corrupt": [...], "answer": [...], "wrong": [...]}')
    p.add_argument("--prompt", help="a clean prompt (instead of --task)")
    p.add_argument("--corrupt", help="its corrupted twin (same number of tokens)")
    p.add_argument("--answer", help="the correct next token (e.g. ' Mary')")
    p.add_argument("--wrong", help="the competing token")
    p.add_argument("--method", default="eap-ig", choices=("exact", "eap", "eap-ig", "eap-ig-act", "acdc"),
                   help="scoring method; eap-ig integrates over the input embeddings, eap-ig-act over each "
                        "upstream node's activations (default: %(default)s)")
    p.add_argument("--level", default="edge", choices=("edge", "node"), help="edges or nodes (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=5, help="EAP-IG steps, both variants (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.01, help="ACDC threshold (default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=20, help="edges listed and drawn (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def _task(args: argparse.Namespace, model: Any) -> Any:
    from interp.circuits import make_task, named_task
    from interp.errors import BadInputError

    if args.task and args.prompt:
        raise BadInputError("give --task or --prompt, not both")
    if args.prompt:
        if not args.corrupt:
            raise BadInputError("--prompt needs --corrupt (a corrupted twin with the same number of tokens)")
        return make_task(model, args.prompt, corrupt=args.corrupt, answer=args.answer, wrong=args.wrong, name="prompt")
    if model.name.startswith("tracr-") and args.task in (None, "compiled"):
        from interp.circuits import compiled_task

        return compiled_task(model)
    if not args.task:
        raise BadInputError("give --task (induction, ioi or a JSON file) or --prompt/--corrupt")
    path = Path(args.task)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise BadInputError(f"no task file at {args.task!r}")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BadInputError(f"{args.task} is not valid JSON: {e}") from None
        if not isinstance(spec, dict) or "clean" not in spec or "corrupt" not in spec:
            raise BadInputError(f"{args.task} must be a JSON object with 'clean' and 'corrupt' (and 'answer', 'wrong')")
        return make_task(model, spec["clean"], corrupt=spec["corrupt"], answer=spec.get("answer"),
                         wrong=spec.get("wrong"), name=path.stem)
    return named_task(model, name=args.task)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.circuits import EdgeRunner, discover, faithfulness
    from interp.report import Report
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)  # the shipped tracr-<name> models too
    task = _task(args, model)
    runner = EdgeRunner(model, task)
    c = discover(model, task, method=args.method, level=args.level, steps=args.steps, threshold=args.threshold,
                 runner=runner)
    chosen = c if args.method == "acdc" else c.top(args.top)
    print(f"{task.name}: {task.metric_name} clean {c.clean_value:.3f}, every edge ablated {c.corrupted_value:.3f}; "
          f"{c.n_units} {c.level}s scored by {c.method} in {c.meta['seconds']:.2f}s")
    print(f"{'sender':<10} {'receiver':<12} {'score':>10}")
    for s, r, w in chosen.edge_list()[:args.top]:
        print(f"{s:<10} {r:<12} {w:+10.4f}")
    curve = faithfulness(model, task, circuit=c, runner=runner)
    print(f"faithfulness: CPR {curve.cpr:.3f}, CMD {curve.cmd:.3f}; "
          + ", ".join(f"{float(x):g}: {float(f):.2f}" for x, f in zip(curve.fractions, curve.faithfulness, strict=True)))
    rep = Report(f"interp circuit — {model.name}", command=command_line(), subtitle=f"task: {task.name}")
    sec = rep.section("Circuit", f"The {args.top} strongest {c.level}s by {c.method} (edge width: |score|), and the "
                                 "faithfulness of the top circuits over their size.")
    sec.result(chosen, views=("graph",))
    sec.result(curve, views=("curve",))
    emit(args, rep)
    return 0
