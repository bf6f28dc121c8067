"""GPU benchmark (issue 19): interp's oracle checks and timings on CUDA, with TransformerLens and nnsight in the same run.

Run from the repository root on a machine with a CUDA GPU::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py                       # SmolLM2-135M, float32
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py --dtype bfloat16
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py --model /path/to/local/model --no-write

Without CUDA it stops at once with a message and exit status 3 (``--smoke-on-cpu`` runs every code path on the
CPU, with small sizes, for checking the script itself; it writes nothing and measures nothing worth reading).

What it does, on the GPU:

1. Oracles (pass/fail, maximum difference):
   - Hugging Face equality: ``model.run(..., capture=<every module-level hook>)`` logits vs the plain
     ``model.hf(...)`` forward: bit-identical; with q/k/v/pattern captured (interp's attention kernel) vs the
     eager forward: bit-identical too;
   - patching equals the loop: ``activation_patching(component="resid_pre")`` (batched, packed) vs one
     ``Patch`` run per (layer, position);
   - logit lens equals the oracle: ``logit_lens`` top-1 ids and entropies vs ``adapter.unembed(final_norm(resid))``
     softmaxed by hand;
   - a trace saved from the GPU run loads on the CPU with equal values and its dtype.
2. Timings (CUDA-synchronised, median of ``--repeats`` round-robin rounds, each side on its own copy of the model):
   capture of every layer's ``resid_post`` (plain forward, interp, TransformerLens ``run_with_cache``, nnsight
   ``.save()``), activation patching (interp batched, interp loop, TransformerLens ``get_act_patch_resid_pre``),
   SAE training (interp TopK SAE tokens/s; SAELens when ``--saelens-python`` names a venv that has it).
3. A profiler note: CUDA memcpy events (host<->device) during one capture and one patching sweep; the hot loops
   should show none beyond the inputs going up and the results coming down.

Results go to stdout and (unless ``--no-write``) into ``benchmarks/RESULTS.md`` between the markers
``<!-- gpu.py begin -->`` and ``<!-- gpu.py end -->`` (replaced on each run).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- gpu.py begin -->", "<!-- gpu.py end -->"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
NO_CUDA_EXIT = 3
N_LAYERS: int | None = None  # the layers of the patching sweeps (None: all; the CPU smoke run takes 2)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="known name or local directory (default: %(default)s)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sae-steps", type=int, default=300)
    ap.add_argument("--saelens-python", help="python of a venv with sae-lens (it pins TransformerLens < 4)")
    ap.add_argument("--no-peers", action="store_true", help="skip TransformerLens and nnsight")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--smoke-on-cpu", action="store_true",
                    help="run every code path on the CPU with tiny sizes (checks the script; no measurement)")
    return ap.parse_args()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def rounds(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per side; sides alternate in a rotating order so that slow spells hit every side alike."""
    for fn in sides.values():
        fn()  # warm-up (kernels, caches)
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(sides[k])[0])
    return {k: statistics.median(v) for k, v in times.items()}


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.add("| " + " | ".join(header) + " |")
        self.add("|" + "---|" * len(header))
        for r in rows:
            self.add("| " + " | ".join(str(x) for x in r) + " |")
        self.add()


def section(rep: Report, title: str, fn: Callable[[], None]) -> None:
    """Run one part; a failure is reported and the other parts still run."""
    rep.add(f"### {title}\n")
    try:
        fn()
    except Exception as e:  # a peer missing or broken must not hide the other results
        rep.add(f"FAILED: {type(e).__name__}: {str(e)[:400]}\n")


# --- oracles ------------------------------------------------------------------------------------------------

def oracles(rep: Report, m: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
    from interp.hooks import run_with_hooks
    from interp.lens import logit_lens
    from interp.trace import Trace

    rows = []
    with torch.no_grad():
        plain = m.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
    kernel_comps = {c for k in m.adapter.kernels for c in k.components}
    names = [s.name for s in m.sites() if not s.component.inside_attention and s.component not in kernel_comps]
    out = run_with_hooks(m, ids, mask, capture=names)
    rows.append(["HF forward == run capturing every module hook", torch.equal(out.logits, plain),
                 f"{(out.logits - plain).abs().max().item():.2e}"])
    saved = m.config._attn_implementation
    m.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            eager = m.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
        att = run_with_hooks(m, ids, mask, capture=["q", "k", "v", "pattern"])
    finally:
        m.config._attn_implementation = saved
    rows.append(["eager forward == run capturing q/k/v/pattern", torch.equal(att.logits, eager),
                 f"{(att.logits - eager).abs().max().item():.2e}"])

    # patching equals the loop
    from interp.hooks import Patch
    from interp.patching import activation_patching, prepare

    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John")
    layers = list(range(N_LAYERS or m.dims.n_layers))
    batched = activation_patching(m, s, component="resid_pre", layers=layers, progress=False).values.float().cpu()
    clean = run_with_hooks(m, s.input_ids, capture="resid_pre").activations
    ans, wrong = int(s.metric.answer[0]), int(s.metric.wrong[0])
    loop = torch.empty(len(layers), s.n_pos)
    with torch.no_grad():
        for L in layers:
            name = f"blocks.{L}.hook_resid_pre"
            for p in range(s.n_pos):
                lg = run_with_hooks(m, s.corrupt_ids, interventions=[Patch(name, source=clean[name], positions=[p])]).logits
                loop[L, p] = (lg[0, -1, ans] - lg[0, -1, wrong]).float().cpu()
    diff = (batched.reshape(loop.shape) - loop).abs().max().item()
    tol = 1e-4 if m.dtype == torch.float32 else 5e-2
    rows.append([f"activation_patching == loop of {loop.numel()} Patch runs", diff <= tol, f"{diff:.2e}"])

    # logit lens equals the oracle
    res = logit_lens(m, (ids, mask), top_k=1)
    trace = m.run((ids, mask), capture="resid_post").trace
    resid = trace.stack("resid_post").to(m.device)  # [layer, batch, pos, d_model]
    with torch.no_grad():
        logits = m.adapter.unembed(m.hf, m.apply_final_norm(resid)).float()
    probs = logits.softmax(-1)
    ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1).cpu()
    real = mask.bool().cpu()
    top_ok = bool((res.top_ids[..., 0][:, real] == logits.argmax(-1).cpu()[:, real]).float().mean() > 0.999)
    ediff = (res.entropy[:, real] - ent[:, real]).abs().max().item()
    rows.append(["logit_lens == unembed(final_norm(resid)) by hand (top-1 ids, entropy)", top_ok and ediff < 1e-3,
                 f"entropy {ediff:.2e}"])

    # a trace from the GPU loads on the CPU
    with tempfile.TemporaryDirectory() as tmp:
        trace.save(Path(tmp) / "t")
        back = Trace.load(Path(tmp) / "t")
        keep = mask.bool().cpu()  # padding positions are not stored
        a, b = back.stack("resid_post")[:, keep], trace.stack("resid_post").cpu()[:, keep]
        rows.append(["trace saved on the GPU loads on the CPU (real tokens)", a.device.type == "cpu" and
                     torch.equal(a, b) and a.dtype == b.dtype, f"dtype {a.dtype}"])
    rep.table(["check", "pass", "max |diff|"], rows)


# --- timings ------------------------------------------------------------------------------------------------

def capture_timings(rep: Report, m: Any, ids: torch.Tensor, mask: torch.Tensor, args: argparse.Namespace) -> None:
    n = m.dims.n_layers
    hf = m.hf

    def plain() -> None:
        with torch.no_grad():
            hf(input_ids=ids, attention_mask=mask, use_cache=False)

    def ours() -> None:
        m.run((ids, mask), capture="resid_post")

    sides: dict[str, Callable[[], Any]] = {"plain HF forward": plain, "interp run(capture=resid_post)": ours}
    if not args.no_peers:
        with contextlib.suppress(ImportError):
            from transformer_lens.model_bridge import TransformerBridge

            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                bridge = TransformerBridge.boot_transformers("bench", hf_model=copy.deepcopy(hf),
                                                             tokenizer=m.tokenizer, device=str(m.device))
            names = [f"blocks.{L}.hook_resid_post" for L in range(n)]

            def tl() -> None:
                with torch.no_grad():
                    bridge.run_with_cache(ids, attention_mask=mask, names_filter=lambda x: x in names)

            sides["TransformerLens run_with_cache"] = tl
        with contextlib.suppress(ImportError):
            from nnsight import LanguageModel

            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                lm = LanguageModel(copy.deepcopy(hf), tokenizer=m.tokenizer)
            layers_path = m.adapter.layers

            def nn() -> None:
                with torch.no_grad(), lm.trace({"input_ids": ids, "attention_mask": mask}):
                    blocks = lm
                    for part in layers_path.split("."):
                        blocks = getattr(blocks, part)
                    saved = []
                    for L in range(n):  # a for loop: a comprehension's list is undefined after the block
                        saved.append(blocks[L].output.save())

            sides["nnsight .save()"] = nn
    med = rounds(sides, args.repeats)
    base = med["plain HF forward"]
    rep.table(["side", "median s", "vs plain"], [[k, f"{v:.4f}", f"{v / base:.2f}x"] for k, v in med.items()])
    if "TransformerLens run_with_cache" in med:
        rep.add(f"interp / TransformerLens: {med['interp run(capture=resid_post)'] / med['TransformerLens run_with_cache']:.2f}x")
    if "nnsight .save()" in med:
        rep.add(f"interp / nnsight: {med['interp run(capture=resid_post)'] / med['nnsight .save()']:.2f}x\n")


def patching_timings(rep: Report, m: Any, args: argparse.Namespace) -> None:
    from interp.hooks import Patch, run_with_hooks
    from interp.patching import activation_patching, prepare

    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John")
    clean = run_with_hooks(m, s.input_ids, capture="resid_pre").activations
    n_layers = N_LAYERS or m.dims.n_layers

    def batched() -> Any:
        return activation_patching(m, s, component="resid_pre", layers=list(range(n_layers)), progress=False)

    def loop() -> None:
        with torch.no_grad():
            for L in range(n_layers):
                name = f"blocks.{L}.hook_resid_pre"
                for p in range(s.n_pos):
                    run_with_hooks(m, s.corrupt_ids, interventions=[Patch(name, source=clean[name], positions=[p])])

    sides: dict[str, Callable[[], Any]] = {"interp activation_patching": batched, "interp loop of Patch runs": loop}
    if not args.no_peers and not N_LAYERS:  # TransformerLens' sweep always covers every layer
        with contextlib.suppress(ImportError):
            from transformer_lens.model_bridge import TransformerBridge
            from transformer_lens.patching import get_act_patch_resid_pre

            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                bridge = TransformerBridge.boot_transformers("bench", hf_model=copy.deepcopy(m.hf),
                                                             tokenizer=m.tokenizer, device=str(m.device))
            with torch.no_grad():
                _, cache = bridge.run_with_cache(s.input_ids)
            ans, wrong = int(s.metric.answer[0]), int(s.metric.wrong[0])

            def tl() -> Any:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return get_act_patch_resid_pre(bridge, s.corrupt_ids, cache,
                                                   lambda lg: lg[0, -1, ans] - lg[0, -1, wrong])

            sides["TransformerLens get_act_patch_resid_pre"] = tl
    med = rounds(sides, max(1, args.repeats // 2))
    rep.add(f"{n_layers} layers x {s.n_pos} positions = {n_layers * s.n_pos} cells\n")
    base = med["interp loop of Patch runs"]
    rep.table(["side", "median s", "loop / side"], [[k, f"{v:.3f}", f"{base / v:.1f}x"] for k, v in med.items()])
    if "TransformerLens get_act_patch_resid_pre" in med:
        rep.add(f"TransformerLens / interp batched: "
                f"{med['TransformerLens get_act_patch_resid_pre'] / med['interp activation_patching']:.1f}x\n")


def sae_timings(rep: Report, m: Any, ids: torch.Tensor, mask: torch.Tensor, args: argparse.Namespace) -> None:
    from interp.features import SAEConfig, SparseAutoencoder

    hook = f"blocks.{m.dims.n_layers // 2}.hook_resid_post"
    acts = m.run((ids, mask), capture=hook).trace[hook]
    rows_ = acts[mask.bool().to(acts.device)].float()
    while rows_.shape[0] < 4096 * 4:
        rows_ = torch.cat([rows_, rows_ + 0.01 * torch.randn_like(rows_)])
    batch = 4096 if not args.smoke_on_cpu else 256
    cfg = SAEConfig(d_sae=16 * m.dims.d_model, k=32, batch_size=batch, n_tokens=args.sae_steps * batch,
                    warmup_steps=10, dead_after=10**9)
    t, _ = timed(lambda: SparseAutoencoder(cfg, progress=False).fit(rows_))
    ours = args.sae_steps * batch / t
    w = torch.randn(m.dims.d_model, cfg.d_sae, device=rows_.device)
    x = rows_[:batch]
    t_mm, _ = timed(lambda: [x @ w for _ in range(20)])
    rep.table(["side", "tokens/s"], [["interp TopK SAE fit", f"{ours:,.0f}"],
                                     ["one [batch, d] @ [d, d_sae] product per batch (reference)",
                                      f"{20 * batch / t_mm:,.0f}"]])
    if args.saelens_python:
        bench = Path(__file__).resolve().parent / "sae.py"
        rep.add(f"SAELens: run `{args.saelens_python} {bench}` for its side (it needs its own venv); "
                "the ratio there is computed in one run.\n")


def profiler_note(rep: Report, m: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
    from torch.profiler import ProfilerActivity, profile

    from interp.patching import activation_patching, prepare

    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    rows = []
    for name, fn in (("capture resid_post", lambda: m.run((ids, mask), capture="resid_post")),
                     ("activation_patching resid_pre", lambda: activation_patching(
                         m, s, component="resid_pre", layers=list(range(N_LAYERS or m.dims.n_layers)), progress=False))):
        fn()
        with profile(activities=activities) as prof:
            fn()
            sync()
        events = prof.key_averages()
        htod = sum(e.count for e in events if "HtoD" in e.key)
        dtoh = sum(e.count for e in events if "DtoH" in e.key)
        items = sum(e.count for e in events if e.key in ("aten::item", "aten::_local_scalar_dense"))
        rows.append([name, htod, dtoh, items])
    rep.table(["run", "memcpy host->device", "memcpy device->host", "aten::item (syncs)"], rows)


# --- main ---------------------------------------------------------------------------------------------------

def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available() and not args.smoke_on_cpu:
        print("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False here: torch "
              f"{torch.__version__}); nothing was measured. Run it on a machine with one, or pass --smoke-on-cpu "
              "to check the script's code paths on the CPU.", file=sys.stderr)
        return NO_CUDA_EXIT
    import interp

    device = "cuda" if not args.smoke_on_cpu else "cpu"
    if args.smoke_on_cpu:
        global N_LAYERS
        args.batch, args.seq, args.repeats, args.sae_steps = 2, 16, 1, 3
        args.no_write = True
        N_LAYERS = 2
        torch.set_num_threads(1)
    m = interp.load_model(args.model, dtype=args.dtype, device=device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.dims.d_vocab, (args.batch, args.seq), generator=g).to(device)
    mask = torch.ones_like(ids)
    mask[1, args.seq // 2:] = 0  # one padded row: the oracles cover padding
    rep = Report()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run, not a measurement)"
    rep.add(f"## GPU benchmark ({dt.date.today()}): {m.name}, {args.dtype}, batch {args.batch} x {args.seq} tokens\n")
    rep.add(f"device: {gpu}; torch {torch.__version__}; {platform.platform()}\n")
    rep.add(f"command: `python benchmarks/gpu.py {' '.join(sys.argv[1:])}`\n")
    section(rep, "Oracles", lambda: oracles(rep, m, ids, mask))
    section(rep, "Capture: every layer's resid_post", lambda: capture_timings(rep, m, ids, mask, args))
    section(rep, "Activation patching (resid_pre, every layer x position)", lambda: patching_timings(rep, m, args))
    section(rep, "SAE training", lambda: sae_timings(rep, m, ids, mask, args))
    section(rep, "Profiler: host/device copies in the hot loops", lambda: profiler_note(rep, m, ids, mask))
    if not args.no_write:
        text = RESULTS.read_text() if RESULTS.exists() else ""
        block = f"{BEGIN}\n" + "\n".join(rep.lines) + f"\n{END}"
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        RESULTS.write_text(text)
        print(f"written to {RESULTS}", file=sys.stderr)
    if torch.cuda.is_available():
        rep.add(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
