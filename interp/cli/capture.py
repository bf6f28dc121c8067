"""``interp capture``: stream a dataset's activations into a trace store."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from interp.cli._common import add_command, dataset_args, dataset_of, emit, model_arg, output_args

if TYPE_CHECKING:
    from interp.report import Report
    from interp.trace import TraceStore

ORDER = 10
SUMMARY_ROWS = 65536


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = add_command(sub, common, "capture", help="capture activations of a dataset into a trace store",
                    description="Run a model over texts and stream the chosen hooks into a trace store "
                                "(resumable: rerun the same command after an interruption).",
                    example="interp capture --model smollm2-135m --dataset data/prompts.txt "
                            "--hooks resid_post -o out/store")
    model_arg(c)
    dataset_args(c)
    c.add_argument("-o", "--out", required=True, help="store directory")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--dtype", default="float32", help="storage dtype (float32, bfloat16, float16)")
    c.add_argument("--prepend-bos", action="store_true")
    c.add_argument("--verify", default="size", choices=["size", "sha256", "none"],
                   help="how finished shards are checked when a capture resumes (default: %(default)s)")
    c.add_argument("--overwrite", action="store_true", help="replace a store captured with other settings")
    output_args(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.trace import capture

    dataset, hooks = dataset_of(args)
    model = interp.load_model(args.model)
    store = capture(model, dataset, hooks=hooks, out=args.out, batch_size=args.batch_size, dtype=args.dtype,
                    max_tokens=args.max_tokens, column=args.column, prepend_bos=args.prepend_bos,
                    overwrite=args.overwrite, verify=args.verify)
    size = sum(s.bytes for s in store.shards())
    print(f"\nstore   {store.path}  ({size / 2**20:.1f} MiB in {len(store.shards())} shards, complete={store.complete})")
    print(f"model   {model!r}  fingerprint {store.manifest.trace.model_fingerprint}")
    print(f"data    {store.n_seqs} sequences, {store.n_tokens} tokens")
    print(f"hooks   {len(store.hooks)}: {', '.join(store.hooks[:3])}{' ...' if len(store.hooks) > 3 else ''}")
    norms = _mean_norms(store)
    if norms:
        print(f"\nmean L2 norm per token (first {SUMMARY_ROWS} tokens at most):")
        for h, v in norms.items():
            print(f"  {h:<32} {v:10.2f}")
    emit(args, _capture_report(store, norms))
    return 0


def _mean_norms(store: TraceStore) -> dict[str, float]:
    import torch

    from interp.trace.layout import is_dense

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


def _capture_report(store: TraceStore, norms: dict[str, float]) -> Report:
    from interp.plot import layer_curves
    from interp.report import Report
    from interp.sites import Site

    rep = Report("interp capture", command=store.manifest.trace.command,
                 subtitle=f"{store.n_seqs} sequences, {store.n_tokens} tokens -> {store.path}")
    sec = rep.section("Store", 'What the capture wrote: the mean residual-stream norm per layer over every stored token.')
    sec.table(["property", "value"], [("path", store.path), ("model", store.manifest.trace.model_id),
                                      ("sequences", store.n_seqs), ("tokens", store.n_tokens),
                                      ("hooks", len(store.hooks)), ("complete", store.complete)])
    by_comp: dict[str, dict[int, float]] = {}
    for h, v in norms.items():
        site = Site.parse(h)
        if site.layer is not None:
            by_comp.setdefault(site.component.short, {})[site.layer] = v
    for comp, vals in by_comp.items():
        layers = sorted(vals)
        sec.figure(layer_curves({comp: [vals[L] for L in layers]}, x=layers, y_title="mean L2 norm per token",
                                title=f"{comp}: mean norm per layer"))
        sec.numbers(f"{comp}.mean_norm", [vals[L] for L in layers], axes=["layer"], labels={"layer": layers})
    sec.code(json.loads(store.manifest.to_json()), caption="manifest.json")
    return rep
