"""``interp layers``: which layers and heads matter (task scores, layer dropping, Painters, head importance and
pruning, representation quality per layer)."""

from __future__ import annotations

import argparse
from typing import Any

from interp.cli._common import add_command, emit, model_arg, nonneg_int, output_args, positive_int

ORDER = 48
STUDIES = ("score", "drop", "painters", "heads", "prune", "quality")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "layers", help="layer and head studies: drop, reorder, prune; quality per layer",
                    description="Score a task suite with the model as it is (score), with blocks or sublayers dropped "
                                "(drop: by angular distance, sublayer similarity, skip-loss, at random), with a middle "
                                "span skipped, shuffled, reversed, repeated or run in parallel (painters); rank every "
                                "head by Michel et al.'s importance (heads) and prune heads (prune); measure "
                                "representation quality per layer (quality).",
                    example="interp layers drop --task capitals --max-drop 6 --methods angular,random --html drop.html")
    p.add_argument("study", choices=STUDIES, help="what to run")
    model_arg(p)
    p.add_argument("--task", default="capitals",
                   help="a shipped suite (capitals, arithmetic, copying, heldout) or a task JSON file "
                        "(default: %(default)s)")
    p.add_argument("--limit", type=positive_int, help="use only the task's first N items")
    p.add_argument("--methods", help="comma-separated: drop: angular,attn,mlp,skip_loss,random; "
                                     "prune: importance,random,entropy; painters: skip,shuffle,reverse,repeat,parallel")
    p.add_argument("--max-drop", type=nonneg_int, help="drop: the most blocks dropped (default: n_layers - 1)")
    p.add_argument("--heal", choices=("norm", "lora"),
                   help="drop: also score after healing each cell (a seeded fine-tune of the final norm, or LoRA on "
                        "the remaining blocks, on the shipped corpus)")
    p.add_argument("--heal-steps", type=positive_int, default=30, help="drop: healing steps (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sequences per forward (default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=10, help="heads: heads listed (default: %(default)s)")
    output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp import layers
    from interp.report import Report
    from interp.trace.trace import command_line

    task = layers.load_task(args.task)
    if args.limit:
        task = task.head(args.limit)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    model = interp.load_model(args.model)
    rep = Report(f"interp layers {args.study} — {model.name}", command=command_line(), subtitle=f"task: {task!r}")
    bs = args.batch_size
    res: Any
    if args.study == "score":
        s = layers.score(model, task, batch_size=bs)
        print(f"{task.name}: accuracy {s.accuracy:.3f} (chance {s.chance:.3f}), mean log-likelihood {s.loglik:.3f}, "
              f"{len(s.correct)} items")
        emit(args, rep)
        return 0
    if args.study == "drop":
        res = layers.drop_layers(model, task, max_drop=args.max_drop, batch_size=bs,
                                 methods=methods or layers.studies.METHODS, heal=args.heal,
                                 heal_steps=args.heal_steps)
        views: tuple[str, ...] = ("accuracy", "loglik", "heal_loss") if args.heal else ("accuracy", "loglik")
    elif args.study == "painters":
        res = layers.painters(model, task, batch_size=bs, variants=methods or layers.studies.VARIANTS)
        views = ("accuracy", "loglik")
    elif args.study == "heads":
        res = layers.head_importance(model, task, batch_size=min(bs, 8))
        for h in res.ranking()[:args.top]:
            L, H = (int(x) for x in h[1:].split("H"))
            print(f"{h:<8} {float(res.importance[L, H]):.4g}")
        views = ("heatmap", "ranked")
    elif args.study == "prune":
        res = layers.prune_heads(model, task, batch_size=bs, by=methods or layers.importance.PRUNE_BY)
        views = ("accuracy", "loglik")
    else:
        texts = [it.prompt for it in task.items] if task.kind == "choice" else list(task.texts)
        res = layers.representation_quality(model, texts, batch_size=bs)
        views = ("curves",)
    print(res.summary())
    sec = rep.section(type(res).__name__, (type(res).__doc__ or "").strip().split("\n\n")[0])
    sec.result(res, views=views)
    emit(args, rep)
    return 0
