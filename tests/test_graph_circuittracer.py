"""Attribution graphs against circuit-tracer 0.5.0 itself (its own venv, ``.venv-circuittracer``; skipped without it).

A tiny random Llama (saved with ``save_pretrained``) and one ReLU transcoder with a skip connection per layer (the
activation circuit-tracer's per-layer transcoders have); the prompt starts with a BOS token. circuit-tracer runs in a
subprocess: the same weights in a TransformerLens ``HookedTransformer``, its ``TransformerLensReplacementModel`` with
a ``TranscoderSet`` of the same tensors, ``attribute`` and ``prune_graph``. Compared: the active features (positions
>= 1: circuit-tracer zeroes position 0), every edge between the nodes both graphs have, and interp's pruning against
circuit-tracer's ``prune_graph`` run on interp's unpruned graph.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_llama
from safetensors.torch import load_file, save_file

import interp
from interp.features import SAEConfig, Transcoder
from interp.features.graph import attribution_graph

CT_PY = Path(__file__).resolve().parents[1] / ".venv-circuittracer" / "bin" / "python"

CT_SIDE = r'''
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
from torch.nn.functional import relu
from transformers import AutoModelForCausalLM
from transformer_lens import HookedTransformerConfig
import transformer_lens.loading_from_pretrained as loading
from transformer_lens.pretrained.weight_conversions import convert_llama_weights
from circuit_tracer import attribute
from circuit_tracer.graph import Graph, prune_graph
from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
d = Path(sys.argv[1]); a = json.loads((d / "spec.json").read_text())
cfg = json.loads((d / "model" / "config.json").read_text())
cfg["rope_theta"] = (cfg.pop("rope_parameters", None) or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
(d / "model" / "config.json").write_text(json.dumps(cfg))  # transformers 4.57 reads rope_theta
hf = AutoModelForCausalLM.from_pretrained(d / "model", torch_dtype=torch.float32).eval()
tl_cfg = HookedTransformerConfig(**{**loading.convert_hf_model_config(str(d / "model")), "device": "cpu",
                                    "dtype": torch.float32, "n_ctx": 32, "rotary_base": cfg["rope_theta"],
                                    "tokenizer_name": None})
class Tok:  # no tokenizer needed: token ids in, a BOS id first
    all_special_ids, padding_side, bos_token_id, eos_token_id, pad_token_id = [0, 1, 2], "right", 1, 2, 0
    def decode(self, ids): return " ".join(str(int(i)) for i in (ids if hasattr(ids, "__iter__") else [ids]))
model = TransformerLensReplacementModel(tl_cfg)
model.load_and_process_state_dict(convert_llama_weights(hf, tl_cfg), fold_ln=False, center_writing_weights=False,
                                  center_unembed=False, fold_value_biases=False)
Tok.vocab_size = tl_cfg.d_vocab
model.tokenizer = Tok()
w = load_file(str(d / "transcoders.safetensors"))
tcs = {}
for L in range(tl_cfg.n_layers):
    tc = SingleLayerTranscoder(tl_cfg.d_model, a["d_sae"], relu, L, skip_connection=True, device=torch.device("cpu"),
                               dtype=torch.float32)
    with torch.no_grad():
        tc.W_enc.copy_(w[f"{L}.W_enc"].T); tc.b_enc.copy_(w[f"{L}.b_enc"]); tc.W_dec.copy_(w[f"{L}.W_dec"])
        tc.b_dec.copy_(w[f"{L}.b_dec"]); tc.W_skip.copy_(w[f"{L}.W_skip"].T)
    tcs[L] = tc
model._configure_replacement_model(TranscoderSet(tcs, feature_input_hook="mlp.hook_in",
                                                 feature_output_hook="mlp.hook_out"))
g = attribute(torch.tensor(a["ids"]), model, batch_size=8)
# circuit-tracer's prune_graph on interp's unpruned graph laid out in circuit-tracer's node order
ours = load_file(str(d / "interp_full.safetensors"))
n_f = a["interp_n_features"]
g2 = Graph(input_string="", input_tokens=torch.tensor(a["ids"]), active_features=torch.zeros(n_f, 3, dtype=torch.long),
           adjacency_matrix=ours["A"], cfg=g.cfg, selected_features=torch.arange(n_f), activation_values=torch.zeros(n_f),
           logit_targets=g.logit_targets, logit_probabilities=g.logit_probabilities, scan="interp")
res = {"A": g.adjacency_matrix.contiguous(), "active": g.active_features[g.selected_features].contiguous(),
       "values": g.activation_values[g.selected_features].contiguous(), "logit_ids": g.logit_token_ids}
for i, (nt, et) in enumerate(a["thresholds"]):
    pr = prune_graph(g2, node_threshold=nt, edge_threshold=et)
    res[f"node_mask{i}"], res[f"edge_mask{i}"] = pr.node_mask, pr.edge_mask.contiguous()
save_file(res, str(d / "ct.safetensors"))
import os; os._exit(0)  # TransformerLensReplacementModel.__del__ fails at interpreter exit (TransformerLens 3.2)
'''


def relu_transcoders(n_layers: int, d: int, d_sae: int) -> tuple[dict[int, Transcoder], dict[str, torch.Tensor]]:
    tcs, tensors = {}, {}
    for L in range(n_layers):
        g = torch.Generator().manual_seed(50 + L)
        w = {"W_enc": torch.randn(d, d_sae, generator=g) / d**0.5, "b_enc": -1.0 - 0.3 * torch.rand(d_sae, generator=g),
             "W_dec": torch.randn(d_sae, d, generator=g) / d**0.5, "b_dec": 0.1 * torch.randn(d, generator=g),
             "W_skip": 0.1 * torch.randn(d, d, generator=g) / d**0.5}
        tc = Transcoder(SAEConfig(d_sae=d_sae, activation="relu", apply_b_dec_to_input=False, normalize_input=False),
                        hook=f"hf:model.layers.{L}.post_attention_layernorm", out_hook=f"mlp_out.{L}", skip=True,
                        progress=False)
        tc.W_enc_, tc.b_enc_, tc.W_dec_, tc.b_dec_, tc.W_skip_ = (w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec",
                                                                                  "W_skip"))
        tcs[L] = tc
        tensors.update({f"{L}.{k}": v for k, v in w.items()})
    return tcs, tensors


@pytest.mark.slow
@pytest.mark.oracle
@pytest.mark.skipif(not CT_PY.exists(), reason="circuit-tracer 0.5.0 lives in .venv-circuittracer: python3 -m venv "
                    ".venv-circuittracer && .venv-circuittracer/bin/pip install torch==2.13.0 circuit-tracer==0.5.0")
def test_graph_equals_circuit_tracer(tmp_path: Path) -> None:
    hf = make_llama().eval()
    hf.save_pretrained(tmp_path / "model")
    model = interp.from_hf(hf, name="tiny-llama-ct")
    ids = [1, 17, 42, 9, 77, 3, 64, 5]  # BOS (1) first: circuit-tracer keeps a prompt that starts with a special id
    d = hf.config.hidden_size
    tcs, tensors = relu_transcoders(hf.config.num_hidden_layers, d, 48)
    save_file(tensors, str(tmp_path / "transcoders.safetensors"))
    kw: dict[str, Any] = {"transcoders": tcs, "batch_size": 8, "progress": False}
    full = attribution_graph(model, torch.tensor(ids), node_threshold=1.0, edge_threshold=1.0, **kw)
    thresholds = [(0.8, 0.98), (0.9, 0.95)]  # the defaults; one where interp's earlier rule kept 3 nodes more
    pruned = [attribution_graph(model, torch.tensor(ids), node_threshold=nt, edge_threshold=et, **kw)
              for nt, et in thresholds]
    nodes = [(k, int(lay), int(p), int(f)) for k, lay, p, f in zip(full.kind, full.layer, full.pos, full.feature,
                                                                      strict=True)]
    order = [i for k in ("feature", "error", "embedding", "logit") for i, n in enumerate(nodes) if n[0] == k]
    A_full = full.adjacency(dense=True)
    save_file({"A": A_full[order][:, order].contiguous()}, str(tmp_path / "interp_full.safetensors"))
    n_feat = full.kind.count("feature")
    (tmp_path / "spec.json").write_text(json.dumps({"ids": ids, "d_sae": 48, "interp_n_features": n_feat,
                                                    "thresholds": thresholds}))
    out = subprocess.run([str(CT_PY), "-c", CT_SIDE, str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    ct = load_file(str(tmp_path / "ct.safetensors"))

    # the same active features (positions >= 1) with the same activations, the same logit targets
    n_layers, T = hf.config.num_hidden_layers, len(ids)
    ct_nodes = [("feature", *map(int, f.tolist())) for f in ct["active"]]
    ct_nodes += [("error", L, p, -1) for L in range(n_layers) for p in range(T)]
    ct_nodes += [("embedding", -1, p, -1) for p in range(T)]
    ct_nodes += [("logit", n_layers, T - 1, int(t)) for t in ct["logit_ids"].tolist()]
    where = {n: i for i, n in enumerate(nodes)}
    mine = {n for n in nodes if n[0] == "feature" and n[2] >= 1}
    assert mine == {n for n in ct_nodes if n[0] == "feature"} and len(mine) > 20
    assert any(n[0] == "feature" and n[2] == 0 for n in nodes)  # interp keeps the BOS position's features
    ours_act = torch.tensor([float(full.value[where[n]]) for n in ct_nodes if n[0] == "feature"])
    assert torch.allclose(ours_act, ct["values"], rtol=1e-4, atol=1e-5)
    assert [n for n in nodes if n[0] == "logit"] == [n for n in ct_nodes if n[0] == "logit"]

    # every edge between the nodes both have (circuit-tracer's position-0 error nodes are zero vectors)
    shared = [i for i, n in enumerate(ct_nodes) if n in where and not (n[0] == "error" and n[2] == 0)]
    theirs = ct["A"][shared][:, shared]
    ours = A_full[[where[ct_nodes[i]] for i in shared]][:, [where[ct_nodes[i]] for i in shared]]
    assert int((theirs != 0).sum()) > 500
    assert float((ours - theirs).abs().max()) <= 1e-4 * float(theirs.abs().max())

    # interp's pruning is circuit-tracer's prune_graph on the same (interp's unpruned) graph
    o = torch.tensor(order)
    for i, g in enumerate(pruned):
        kept_ct = torch.zeros(len(nodes), dtype=torch.bool)
        kept_ct[order] = ct[f"node_mask{i}"]
        assert torch.equal(g.kept, kept_ct) and 0 < int(kept_ct.sum()) < len(nodes), thresholds[i]
        t, s = torch.nonzero(ct[f"edge_mask{i}"], as_tuple=True)
        theirs_edges = set(zip(o[t].tolist(), o[s].tolist(), strict=True))
        assert set(zip(g.edge_target.tolist(), g.edge_source.tolist(), strict=True)) == theirs_edges, thresholds[i]
