"""Train residual-stream SAEs and per-layer transcoders for SmolLM2-135M on the fly (no activation cache).

Dictionaries (TopK, 4,096 features, k = 32): SAEs at ``blocks.3.hook_resid_post`` and ``blocks.4.hook_resid_post``
(feature flow through block 4 reads them) and transcoders with a skip connection for the MLPs of blocks 3
and 4 (MLP input = the output of ``post_attention_layernorm`` -> ``hook_mlp_out``). All four train together
from one stream of forwards that stop after block 4, shuffled across a buffer of 32 batches of 1,024 rows.

Corpus (offline, mixed): the English prose of ``data/corpus/english.txt`` and Python source from the standard
library (every ``*.py`` file under the stdlib root in sorted order up to ``--code-chars`` characters), packed into
128-token windows; 2% of the windows are held out for evaluation.

Results are cached in ``$INTERP_HOME/features/smollm2-135m-dicts`` (default ``~/.cache/interp``); ``--ship``
copies them in float16 to ``data/features/smollm2-135m-4k`` (SAEs) and ``data/features/smollm2-135m-transcoders``.

    nice -n 10 .venv/bin/python data/features/build_dicts.py --tokens 1000000 --max-minutes 45 --ship
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sysconfig
import time
from pathlib import Path

import torch

import interp
from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae
from interp.features.stream import pack_tokens, train_on_model
from interp.features.transcoder import Transcoder, evaluate_transcoder, mlp_in_hook

ROOT = Path(__file__).resolve().parents[2]
SAE_HOOKS = ["blocks.3.hook_resid_post", "blocks.4.hook_resid_post"]
TC_LAYERS = [3, 4]


def corpus(code_chars: int) -> list[str]:
    """English paragraphs (one per line of english.txt) and stdlib source files, interleaved deterministically."""
    prose = [ln for ln in (ROOT / "data" / "corpus" / "english.txt").read_text(encoding="utf-8").splitlines() if ln]
    code, n = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i in range(0, len(text), 2000):  # file chunks, so that one file does not fill a window run
            code.append(text[i:i + 2000])
            n += len(code[-1])
        if n >= code_chars:
            break
    out, step = [], max(1, len(prose) // max(1, len(code)))
    ci = 0
    for i, p in enumerate(prose):
        out.append(p)
        if i % step == 0 and ci < len(code):
            out.append(code[ci])
            ci += 1
    return out + code[ci:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (5e-4 leaves the decoder rows at "
                    "cosine ~0.6 with their random initialisation after 1M tokens)")
    ap.add_argument("--code-chars", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    home = Path(os.environ.get("INTERP_HOME", Path.home() / ".cache" / "interp")) / "features" / "smollm2-135m-dicts"
    model = interp.load_model("smollm2-135m")
    ids = pack_tokens(model, corpus(args.code_chars), context=128)
    g = torch.Generator().manual_seed(0)
    ids = ids[torch.randperm(ids.shape[0], generator=g)]
    n_test = max(8, ids.shape[0] // 50)
    test, train = ids[:n_test], ids[n_test:]
    print(f"corpus: {ids.numel()} tokens in {ids.shape[0]} windows of 128 ({train.numel()} train, "
          f"{test.numel()} held out)", flush=True)
    cfg = SAEConfig(d_sae=args.d_sae, k=args.k, batch_size=1024, n_tokens=args.tokens, lr=args.lr, warmup_steps=50,
                    dead_after=200_000)
    dicts: dict[str, SparseAutoencoder] = {h: SparseAutoencoder(cfg, hook=h) for h in SAE_HOOKS}
    for layer in TC_LAYERS:
        dicts[f"transcoder.{layer}"] = Transcoder(cfg, hook=mlp_in_hook(model, layer=layer),
                                                  out_hook=f"blocks.{layer}.hook_mlp_out", skip=True)
    t0 = time.perf_counter()
    out = train_on_model(model, train, dictionaries=dicts, n_tokens=args.tokens, buffer_batches=32, seed=0,
                         max_seconds=None if args.max_minutes is None else 60 * args.max_minutes, progress=True)
    seconds = time.perf_counter() - t0
    # held-out evaluation: rows of every hook, spliced loss on 16 windows
    hooks = sorted({h for d in out.values() for h in ([d.hook, d.out_hook] if isinstance(d, Transcoder) else [d.hook])})
    with torch.no_grad():
        acts = model.run(test, capture=hooks, stop_early=True).trace.activations
    rows = {h: a.reshape(-1, a.shape[-1]).float() for h, a in acts.items()}
    report: dict[str, dict[str, float]] = {}
    ce_ids = (test[:16], torch.ones_like(test[:16]))
    for name, d in out.items():
        tokens = int(d.history_["tokens"][-1])
        if isinstance(d, Transcoder):
            ev = evaluate_transcoder(d, rows[d.hook], rows[d.out_hook], model=model, ce_inputs=ce_ids)
            rec = {"explained_variance": ev.explained_variance, "l0": ev.l0, "dead_fraction": ev.dead_fraction,
                   "ce_clean": ev.ce_clean, "ce_spliced": ev.ce_spliced, "ce_zero": ev.ce_zero}
            dest = home / "transcoders" / name
        else:
            e = evaluate_sae(model, rows[d.hook], sae=d, ce_inputs=ce_ids)
            rec = {"explained_variance": e.explained_variance, "l0": e.l0, "dead_fraction": e.dead_fraction,
                   "ce_clean": e.ce_clean, "ce_spliced": e.ce_spliced, "ce_zero": e.ce_zero}
            dest = home / "saes" / d.hook
        rec["tokens"] = tokens
        report[name] = rec
        d.save(dest)
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}), flush=True)
    summary = {"seconds": seconds, "held_out_tokens": int(test.numel()), "corpus_tokens": int(ids.numel()),
               "dictionaries": report}
    (home / "report.json").write_text(json.dumps(summary, indent=1))
    if args.ship:
        for sub, dst in (("saes", "smollm2-135m-4k"), ("transcoders", "smollm2-135m-transcoders")):
            target = ROOT / "data" / "features" / dst
            shutil.rmtree(target, ignore_errors=True)
            for src in sorted((home / sub).iterdir()):
                cls = Transcoder if sub == "transcoders" else SparseAutoencoder
                cls.load(src).save(target / src.name, dtype=torch.float16)
        (ROOT / "data" / "features" / "smollm2-135m-4k.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
