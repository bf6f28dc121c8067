"""interp's EAP side by side with auto-circuit's on the same tiny GPT-2, the same prompts and the same edges.

auto-circuit 1.0.1 needs TransformerLens 2 (it imports ``transformer_lens.past_key_value_caching``, gone in 3
and 4), so it lives in its own venv; this script runs there and calls interp (in ``.venv``) in a subprocess.
Setup: ``make autocircuit`` (``.venv-autocircuit`` borrows torch 2.13 CPU and transformers from ``.venv-saelens``
through a ``.pth`` file, so nothing big is downloaded), which amounts to::

    python3 -m venv .venv-autocircuit
    echo "$PWD/.venv-saelens/lib/python3.11/site-packages" > .venv-autocircuit/lib/python3.11/site-packages/saelens.pth
    .venv-autocircuit/bin/pip install --no-deps auto-circuit==1.0.1 "transformer-lens>=2,<3" attrs ordered-set \\
        blobfile lxml pycryptodomex

Run::  .venv-autocircuit/bin/python benchmarks/circuits_autocircuit.py [--layers 4] [--d-model 64] [--heads 4]
           [--batch 8] [--pos 12] [--vocab 100] [--repeats 5] [--no-exact]

1. interp (a subprocess of ``.venv`` that runs one timed command per request, so the two sides' rounds
   interleave and share the machine's load): a seeded random GPT-2 (``transformers``), saved with
   ``save_pretrained``; random clean prompts and corrupted twins (positions 1-4 resampled), answer / wrong tokens;
   EAP over every edge (``EdgeRunner`` + ``discover(method="eap")``, both timed: the clean and corrupted runs are
   part of the cost on both sides); and a floor: the plain HF model's corrupted forward plus its clean forward
   and backward to the input embeddings (what any EAP must run).
2. auto-circuit (here): the same weights in a TransformerLens 2 ``HookedTransformer`` (``convert_gpt2_weights``,
   no folding or centering; its logits checked against the HF model's), ``patchable_model(factorized=True,
   separate_qkv=True, slice_output="last_seq")``, the same prompts in a ``PromptDataLoader``; EAP by
   ``mask_gradient_prune_scores(grad_function="logit", answer_function="avg_diff", mask_val=0.0)`` (its fast
   path) and by ``edge_attribution_patching_prune_scores`` (its reference replication of Syed et al.).
3. Edge names mapped (``Resid Start`` = ``input``, ``A1.2`` = ``L1H2``, ``A1.2.Q`` = ``L1H2.q``, ``MLP 1``,
   ``Resid End`` = ``logits``); auto-circuit minimises ``-avg_diff``, so its scores are interp's negated.
   Printed: each round's times with the load average, the edge counts, the largest relative difference (goal
   <= 1e-4), the median times, the median of the per-round ratios and interp's EAP over the floor.
4. Exact edge patching of every edge alone: interp's stacked runs (``discover(method="exact")``) against
   auto-circuit's patch masks (``src_ablations`` of the corrupted prompts, ``patch_mode``, one edge's mask set to 1
   per forward); the effects compared and edges/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERP_PY = str(ROOT / ".venv" / "bin" / "python")

INTERP_SIDE = r'''
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from transformers import GPT2Config, GPT2LMHeadModel
from interp.models import from_hf
from interp.circuits import EdgeRunner, discover, make_task
a = json.loads(sys.argv[1]); out = sys.argv[2]
torch.manual_seed(0)
cfg = GPT2Config(n_layer=a["layers"], n_embd=a["d_model"], n_head=a["heads"], n_positions=max(64, a["pos"]),
                 vocab_size=a["vocab"], attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
cfg._attn_implementation = "eager"
hf = GPT2LMHeadModel(cfg).eval()
hf.save_pretrained(out + "/model")
g = torch.Generator().manual_seed(1)
clean = torch.randint(0, a["vocab"], (a["batch"], a["pos"]), generator=g)
corrupt = clean.clone()
corrupt[:, 1:5] = torch.randint(0, a["vocab"], (a["batch"], 4), generator=g)
answer = torch.randint(0, a["vocab"], (a["batch"],), generator=g)
wrong = torch.randint(0, a["vocab"], (a["batch"],), generator=g)
torch.save({"clean": clean, "corrupt": corrupt, "answer": answer, "wrong": wrong}, out + "/prompts.pt")
m = from_hf(hf, name="tiny-gpt2")
task = make_task(m, clean, corrupt=corrupt, answer=answer, wrong=wrong)
rows = torch.arange(a["batch"])


def floor():
    # the least EAP can cost: one corrupted forward without gradients, one clean forward and a backward to the
    # input embeddings (no weight gradients), on the plain HF model
    with torch.no_grad():
        hf(input_ids=corrupt)
    emb = hf.transformer.wte(clean).detach().requires_grad_(True)
    logits = hf(inputs_embeds=emb).logits[:, -1]
    torch.autograd.grad((logits[rows, answer] - logits[rows, wrong]).mean(), emb)


res = {}
for line in sys.stdin:
    cmd = line.strip()
    t0 = time.perf_counter()
    if cmd == "eap":  # the runner's clean and corrupted runs are part of the cost
        res["eap"] = discover(m, task, method="eap", runner=EdgeRunner(m, task))
    elif cmd == "exact":
        res["exact"] = discover(m, task, method="exact", runner=res.setdefault("runner", EdgeRunner(m, task)),
                                progress=False)
    elif cmd == "floor":
        floor()
    elif cmd == "ready":
        pass
    elif cmd == "dump":
        c = res["eap"]
        json.dump({"edges": c.unit_names(), "scores": c.scores.tolist(),
                   "exact": res["exact"].scores.tolist() if "exact" in res else None}, open(out + "/interp.json", "w"))
    else:
        break
    print("RESULT", time.perf_counter() - t0, flush=True)
'''


class Interp:
    "interp's side, in ``.venv``: a subprocess that runs one timed command per request (rounds interleave)."

    def __init__(self, spec: dict[str, int], tmp: str) -> None:
        env = {**os.environ, "PYTHONPATH": ""}
        self.proc = subprocess.Popen([INTERP_PY, "-c", INTERP_SIDE, json.dumps(spec), tmp, str(ROOT)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def __call__(self, cmd: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return float(line.split()[1])
        raise RuntimeError(f"interp's side ended (exit code {self.proc.wait()})")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def map_edge(src: str, dest: str) -> str:
    def node(n: str, receiving: bool) -> str:
        if n == "Resid Start":
            return "input"
        if n == "Resid End":
            return "logits"
        if n.startswith("MLP "):
            return "MLP" + n.split()[1]
        parts = n[1:].split(".")
        name = f"L{parts[0]}H{parts[1]}"
        return name + (f".{parts[2].lower()}" if receiving and len(parts) == 3 else "")

    return f"{node(src, False)}->{node(dest, True)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pos", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round), interleaved")
    ap.add_argument("--no-exact", action="store_true", help="skip exact edge patching (one forward per edge there)")
    args = ap.parse_args()
    import torch as t

    t.set_num_threads(1)
    spec = {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "vocab": args.vocab,
            "batch": args.batch, "pos": args.pos}
    print(f"start: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        interp = Interp(spec, tmp)
        interp("ready")
        prompts = t.load(Path(tmp, "prompts.pt"), weights_only=True)

        from auto_circuit.data import PromptDataLoader, PromptDataset
        from auto_circuit.prune_algos.edge_attribution_patching import edge_attribution_patching_prune_scores
        from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
        from auto_circuit.utils.graph_utils import patchable_model
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel.from_pretrained(Path(tmp, "model")).eval()
        c = hf.config
        cfg = HookedTransformerConfig(
            n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=4 * c.n_embd,
            n_ctx=c.n_positions, d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
            eps=c.layer_norm_epsilon, use_attn_result=True, use_split_qkv_input=True, use_hook_mlp_in=True,
            default_prepend_bos=False)
        tl = HookedTransformer(cfg)
        tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                       center_unembed=False, fold_value_biases=False)
        tl.eval()
        with t.no_grad():
            gap = float((tl(prompts["clean"]) - hf(prompts["clean"]).logits).abs().max())
        print(f"TransformerLens 2 copy vs the HF model: max |logit difference| {gap:.2e}")
        model = patchable_model(tl, factorized=True, slice_output="last_seq", separate_qkv=True, device=t.device("cpu"))
        ds = PromptDataset(prompts["clean"], prompts["corrupt"], [a.view(1) for a in prompts["answer"]],
                           [w.view(1) for w in prompts["wrong"]])
        loader = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=len(ds), shuffle=False)

        def timed(fn: object) -> tuple[object, float]:
            t0 = time.perf_counter()
            res = fn()  # type: ignore[operator]
            return res, time.perf_counter() - t0

        # interleaved rounds: interp EAP, auto-circuit's fast path, its reference, the forward+backward floor
        times: dict[str, list[float]] = {"interp": [], "fast": [], "ref": [], "floor": []}
        fast: dict[str, t.Tensor] = {}
        ref: dict[str, t.Tensor] = {}
        for i in range(args.repeats + 1):
            ti = interp("eap")
            fast, tf = timed(lambda: mask_gradient_prune_scores(  # type: ignore[assignment]
                model, loader, None, grad_function="logit", answer_function="avg_diff", mask_val=0.0))
            ref, tr = timed(lambda: edge_attribution_patching_prune_scores(model, loader, None))  # type: ignore[assignment]
            tb = interp("floor")
            if i:  # round 0 warms up
                for k, v in zip(times, (ti, tf, tr, tb), strict=True):
                    times[k].append(v)
                print(f"round {i}: interp {ti * 1000:.1f} ms, auto-circuit mask_gradient {tf * 1000:.1f} ms "
                      f"({tf / ti:.2f}x), edge_attribution_patching {tr * 1000:.1f} ms, floor {tb * 1000:.1f} ms; "
                      f"{load()}", flush=True)

        from auto_circuit.utils.ablation_activations import src_ablations
        from auto_circuit.utils.graph_utils import patch_mode, set_all_masks
        from auto_circuit.utils.tensor_ops import batch_avg_answer_diff

        batch = next(iter(loader))

        def exact() -> dict[str, float]:
            """Every edge patched alone from the corrupted run, one forward per edge (auto-circuit's patch masks)."""
            res = {}
            with t.no_grad():
                base = float(batch_avg_answer_diff(model(batch.clean)[model.out_slice], batch))
                patch = src_ablations(model, batch.corrupt)
                set_all_masks(model, val=0.0)
                with patch_mode(model, patch):
                    for e in model.edges:
                        e.patch_mask(model).data[e.patch_idx] = 1.0
                        val = float(batch_avg_answer_diff(model(batch.clean)[model.out_slice], batch))
                        e.patch_mask(model).data[e.patch_idx] = 0.0
                        res[map_edge(e.src.name, e.dest.name)] = val - base
            return res

        ex_i: list[float] = []
        ex_a: list[float] = []
        theirs_exact: dict[str, float] = {}
        if not args.no_exact:
            for i in range(min(args.repeats, 3) + 1):
                te = interp("exact")
                theirs_exact, ta = timed(exact)  # type: ignore[assignment]
                if i:
                    ex_i.append(te)
                    ex_a.append(ta)
        interp("dump")
        interp.close()
        ours = json.loads(Path(tmp, "interp.json").read_text())

        mine = dict(zip(ours["edges"], ours["scores"], strict=True))
        rows: list[tuple[str, float | None, float, float]] = []
        for e in model.edges:
            name = map_edge(e.src.name, e.dest.name)
            rows.append((name, mine.get(name), float(fast[e.dest.module_name][e.patch_idx]),
                         float(ref[e.dest.module_name][e.patch_idx])))
        missing = [r[0] for r in rows if r[1] is None]
        print(f"edges: interp {len(mine)}, auto-circuit {len(rows)}, auto-circuit edges not in interp's graph "
              f"{len(missing)} {missing[:5]}")
        scale = max(abs(r[3]) for r in rows)
        for label, col in (("mask_gradient (fast)", 2), ("edge_attribution_patching (reference)", 3)):
            # auto-circuit's loss is -avg_diff: its scores are interp's negated (it ranks by magnitude)
            pairs = [(r[1], r[2] if col == 2 else r[3]) for r in rows if r[1] is not None]
            diffs = [abs(i + o) / scale for i, o in pairs]
            big = [abs(i + o) / abs(o) for i, o in pairs if abs(o) > 0.01 * scale]
            print(f"interp EAP vs auto-circuit {label}: max |interp + theirs| / max |score| = {max(diffs):.2e}; "
                  f"per edge, over the {len(big)} edges above 1% of the largest: max relative {max(big):.2e}")
        if ex_i:
            mine_exact = dict(zip(ours["edges"], ours["exact"], strict=True))
            ex_scale = max(abs(v) for v in theirs_exact.values())
            ex_diff = max(abs(mine_exact[k] - v) for k, v in theirs_exact.items()) / ex_scale
            n_edges = len(theirs_exact)
            ti, ta = statistics.median(ex_i), statistics.median(ex_a)
            print(f"exact edge patching (every edge alone): max |interp - auto-circuit| / max |effect| = "
                  f"{ex_diff:.2e}; interp {n_edges / ti:.0f} edges/s (stacked), auto-circuit {n_edges / ta:.0f} "
                  f"edges/s (one forward per edge): {ta / ti:.1f}x (median of {len(ex_i)} interleaved rounds)")
        med = {k: statistics.median(v) for k, v in times.items()}
        paired = statistics.median(f / i for f, i in zip(times["fast"], times["interp"], strict=True))
        print(f"time (median of {args.repeats} interleaved rounds, 1 thread): interp {med['interp'] * 1000:.1f} ms, "
              f"auto-circuit mask_gradient {med['fast'] * 1000:.1f} ms ({med['fast'] / med['interp']:.1f}x interp's; "
              f"median of the per-round ratios {paired:.1f}x), edge_attribution_patching {med['ref'] * 1000:.1f} ms "
              f"({med['ref'] / med['interp']:.1f}x)")
        print(f"floor (plain HF: corrupted forward + clean forward and backward to the embeddings): "
              f"{med['floor'] * 1000:.1f} ms; interp EAP = {med['interp'] / med['floor']:.2f}x the floor")
        print(f"model: GPT-2, {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {args.vocab}; "
              f"batch {args.batch} x {args.pos} tokens; {len(rows)} edges")
        print(f"end: {load()}")


if __name__ == "__main__":
    main()
