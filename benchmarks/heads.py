"""Heads speed on SmolLM2-135M (30 layers x 9 heads = 270 heads, d_model 576, d_head 64).

1. SVD of every head's OV and QK circuit: interp's factored SVD (QR of each thin factor + SVD of a
   64 x 64 core) vs TransformerLens' ``FactoredMatrix(A, B).S`` (SVD of each factor + SVD of the core)
   vs materialising the 576 x 576 products and calling ``torch.linalg.svdvals``.
2. All-pairs Q-, K- and V-composition scores (36,450 sender/receiver pairs per kind):
   ``composition_scores`` vs TransformerLens' ``utilities.composition_scores`` fed one sender layer at a
   time (its all-at-once broadcast needs ~18 GB) vs the materialised definition
   ``‖OV_a @ Y_b‖_F / (‖OV_a‖_F ‖Y_b‖_F)`` with dense 576 x 576 products, timed on
   ``--dense-pairs`` pairs and extrapolated (all pairs would take hours).

3. The sparse attention decomposition of all 270 heads over a 64-token prompt against one forward with the
   pattern captured (issue 24, goal <= 5x): ``benchmarks/attention_decomposition.py``, run from here too
   (``--only decompose`` runs this part alone, ``--only circuits`` parts 1-2).

Rounds are interleaved; medians are printed. One torch thread unless ``--threads``. On a shared
machine the wall time mostly measures waiting for a core, so ratios use the process CPU time (with
one thread that is the compute time); wall medians are printed beside it.

    .venv/bin/python benchmarks/heads.py [--repeats 3] [--dense-heads 27] [--dense-pairs 300] [--only decompose]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from interp.models.circuits import composition_scores, factored_svd, ov_factors, qk_factors


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds; with one thread, CPU time is what a quiet machine would show as wall time."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-heads", type=int, default=27, help="heads per circuit for the dense SVD (extrapolated)")
    ap.add_argument("--dense-pairs", type=int, default=300, help="pairs for the dense composition (extrapolated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("all", "circuits", "decompose"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.only != "decompose":
        circuits(args)
    if args.only != "circuits":
        import importlib.util
        from pathlib import Path

        spec = importlib.util.spec_from_file_location("attention_decomposition",
                                                      Path(__file__).with_name("attention_decomposition.py"))
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print("\nSparse attention decomposition (issue 24):")
        mod.run(repeats=args.repeats)


def circuits(args: argparse.Namespace) -> None:
    """Parts 1 and 2: factored SVDs and composition scores."""
    from transformer_lens import FactoredMatrix
    from transformer_lens import utilities as tl_utils

    m = interp.load_model("smollm2-135m")
    w = m.weights
    OV = ov_factors(w, fold_norm=True)
    QK = qk_factors(w, fold_norm=True)
    L, H = OV[0].shape[:2]
    n_heads = L * H
    n_pairs = H * H * L * (L - 1) // 2
    flat = [tuple(t.flatten(0, 1) for t in f) for f in (OV, QK)]
    k = args.dense_heads

    def ours_svd() -> None:
        for a, b in flat:
            factored_svd(a, b)

    def tl_svd() -> None:
        for a, b in flat:
            _ = FactoredMatrix(a, b).S

    def dense_svd() -> None:  # k heads per circuit
        for a, b in flat:
            torch.linalg.svdvals(a[:k] @ b[:k])

    def ours_comp() -> None:
        for kind in ("q", "k", "v"):
            composition_scores(w, kind, fold_norm=True)

    ov_fm = FactoredMatrix(*OV)
    qk_fm = FactoredMatrix(*QK)
    rights = {"q": qk_fm, "k": qk_fm.T, "v": ov_fm}

    def tl_comp() -> None:
        for right in rights.values():
            for la in range(L - 1):
                tl_utils.composition_scores(ov_fm[la:la + 1], right[la + 1:])

    g = torch.Generator().manual_seed(0)
    pa = torch.randint(n_heads, (args.dense_pairs,), generator=g)
    pb = torch.randint(n_heads, (args.dense_pairs,), generator=g)
    ovd = (flat[0][0], flat[0][1])
    recv = {"q": flat[1], "k": (flat[1][1].transpose(-1, -2), flat[1][0].transpose(-1, -2)), "v": flat[0]}

    def dense_comp() -> None:  # dense_pairs pairs per kind
        for ya, yb in recv.values():
            for i, j in zip(pa.tolist(), pb.tolist(), strict=True):
                X = ovd[0][i] @ ovd[1][i]
                Y = ya[j] @ yb[j]
                _ = torch.linalg.matrix_norm(X @ Y) / torch.linalg.matrix_norm(X) / torch.linalg.matrix_norm(Y)

    jobs = {"svd ours": ours_svd, "svd TL": tl_svd, "svd dense": dense_svd,
            "comp ours": ours_comp, "comp TL": tl_comp, "comp dense": dense_comp}
    times: dict[str, list[float]] = {n: [] for n in jobs}
    walls: dict[str, list[float]] = {n: [] for n in jobs}
    with torch.no_grad():
        for r in range(args.repeats):
            for name, fn in jobs.items():
                wall, cpu = timed(fn)
                times[name].append(cpu)
                walls[name].append(wall)
            print(f"round {r + 1}/{args.repeats} (cpu s): " + ", ".join(f"{n} {t[-1]:.2f}" for n, t in times.items())
                  + " | wall s: " + ", ".join(f"{t[-1]:.2f}" for t in walls.values()), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    print("wall medians (s): " + ", ".join(f"{n} {statistics.median(t):.2f}" for n, t in walls.items()))
    svd_dense_all = med["svd dense"] * n_heads / k
    comp_dense_all = med["comp dense"] * n_pairs / args.dense_pairs
    print(f"\nSmolLM2-135M, {n_heads} heads, torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}; CPU-time medians of {args.repeats} interleaved rounds")
    print(f"SVD of all OV + QK circuits ({2 * n_heads} matrices):")
    print(f"  interp factored        {med['svd ours']:8.2f} s")
    print(f"  TransformerLens FM.S   {med['svd TL']:8.2f} s   ratio TL/interp {med['svd TL'] / med['svd ours']:.2f}x")
    print(f"  dense 576x576 svdvals  {svd_dense_all:8.2f} s   (extrapolated from {k} heads/circuit: "
          f"{med['svd dense']:.2f} s)   ratio dense/factored {svd_dense_all / med['svd ours']:.1f}x")
    print(f"All-pairs Q+K+V composition ({3 * n_pairs} scores):")
    print(f"  interp factored        {med['comp ours']:8.2f} s")
    print(f"  TransformerLens utils  {med['comp TL']:8.2f} s   ratio TL/interp {med['comp TL'] / med['comp ours']:.2f}x")
    print(f"  dense products         {comp_dense_all:8.1f} s   (extrapolated from {args.dense_pairs} pairs/kind: "
          f"{med['comp dense']:.2f} s)   ratio dense/factored {comp_dense_all / med['comp ours']:.0f}x")


if __name__ == "__main__":
    main()
