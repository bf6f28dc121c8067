"""Compile RASP programs with Tracr and export each compiled model, its known circuit and Tracr's own outputs.

Run with the Tracr venv (JAX and Haiku stay out of interp's dependencies)::

    .venv-tracr/bin/python data/circuits/build_tracr.py            # every program
    .venv-tracr/bin/python data/circuits/build_tracr.py reverse    # one

For each program ``<name>`` it writes ``data/circuits/<name>/``:

- ``model.safetensors``: the weights as a GPT-2 state dict (``transformer.wte/wpe``, per block ``attn.c_attn``,
  ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``, and ``lm_head``). Tracr's residual stream (``d_res``
  labelled directions) is padded with zero directions to ``n_embd = n_heads * d_head``; each head's query,
  key and value are padded to ``d_head``; Tracr's ``1/sqrt(key_size)`` attention scale is folded into the
  query weights (the GPT-2 config says ``scale_attn_weights=False``). Tracr has no layer norm: the loader
  (:func:`interp.circuits.load_compiled`) replaces GPT-2's norms by the identity.
- ``tracr.json``: the GPT-2 config fields, the input vocabulary (value -> id, BOS and PAD included), the
  output space (categorical values or one numerical output), the residual stream's labels, the known circuit
  (which heads / MLPs the compiler assigned to which RASP operation, and the edges between them), and
  ``fixture``: inputs with Tracr's outputs on them (the unembedded residual before the argmax, the decoded
  output, and what the RASP program itself evaluates to).

Only numpy and the standard library beyond Tracr: the safetensors file is written by hand (little-endian F32).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tracr.compiler import (
    basis_inference,
    craft_graph_to_model,
    craft_model_to_transformer,
    expr_to_craft_graph,
    lib,
    nodes,
    rasp_to_graph,
)
from tracr.craft import bases, transformers
from tracr.rasp import rasp
from tracr.transformer import encoder

HERE = Path(__file__).resolve().parent
BOS, PAD = "compiler_bos", "compiler_pad"
MAX_SEQ_LEN = 5
N_FIXTURE = 24


def _programs() -> dict[str, tuple[Any, list[Any], str]]:
    return {
        "reverse": (lib.make_reverse(rasp.tokens), [1, 2, 3], "reverse the sequence"),
        "hist": (lib.make_hist(), ["a", "b", "c"], "how often each token occurs in the sequence"),
        "sort": (lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=MAX_SEQ_LEN, min_key=1), [1, 2, 3, 4],
                 "sort the sequence (ties by position)"),
        "frac_prevs": (lib.make_frac_prevs(rasp.tokens == "x"), ["a", "b", "x"],
                       "fraction of the tokens so far that are 'x'"),
    }


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def _label(expr: rasp.RASPExpr) -> str:
    return expr.label


def compile_program(program: rasp.SOp, vocab: list[Any]) -> dict[str, Any]:
    """Tracr's compile_rasp_to_model, step by step, keeping the graph and the layer allocation."""
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, set(vocab), MAX_SEQ_LEN)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100)
    alloc = craft_graph_to_model._allocate_modules_to_layers(graph, sources)
    craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
    assembled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft_model, graph=graph, sink=sink, max_seq_len=MAX_SEQ_LEN, compiler_bos=BOS,
        compiler_pad=PAD, causal=False)
    return {"graph": graph, "sink": sink, "alloc": alloc, "assembled": assembled}


def place_blocks(graph: Any, alloc: dict[Any, int]) -> dict[str, list[tuple[str, int, list[int]]]]:
    """Per RASP node label, its pieces ``(kind, layer, heads)`` in the compiled model, in order.

    Mirrors craft_graph_to_model: half-layer ``n`` (even: attention, odd: MLP) is model layer ``n // 2``;
    an attention half-layer's heads are its blocks' heads in allocation order; a residual block (selector
    width) puts its attention at ``n`` and its MLP at ``n + 1``.
    """
    n_heads: dict[int, int] = {}
    placed: dict[str, list[tuple[str, int, list[int]]]] = {}

    def put(label: str, block: Any, half: int) -> None:
        if half % 2 == 0:
            k = len(list(block.as_multi().heads()))
            start = n_heads.get(half, 0)
            n_heads[half] = start + k
            placed.setdefault(label, []).append(("attn", half // 2, list(range(start, start + k))))
        else:
            placed.setdefault(label, []).append(("mlp", half // 2, []))

    for node_id, half in alloc.items():
        node = graph.nodes[node_id]
        block = node.get(nodes.MODEL_BLOCK)
        if block is None:
            continue
        if isinstance(block, transformers.SeriesWithResiduals):
            assert len(block.blocks) == 2
            put(node_id, block.blocks[0], half)
            put(node_id, block.blocks[1], half + 1)
        else:
            put(node_id, block, half)
    return placed


def _pieces_names(pieces: list[tuple[str, int, list[int]]]) -> list[list[str]]:
    out = []
    for kind, layer, heads in pieces:
        out.append([f"L{layer}H{h}" for h in heads] if kind == "attn" else [f"MLP{layer}"])
    return out


def known_circuit(graph: Any, sink: Any, placed: dict[str, list[tuple[str, int, list[int]]]], vocab: list[Any]
                  ) -> dict[str, Any]:
    """The circuit by RASP data flow: which components compute each operation and which edges feed them.

    ``tokens`` is the input embedding (sender ``input``); ``indices`` are the position embeddings, the same in
    every run and not a node of interp's graph, so reads of ``indices`` are no edge. The constant directions
    every compiled model reads (the ``one`` direction, BOS in every key) carry nothing that differs between
    runs and are left out too, as are the query and key reads of an always-true selector. ``task_edges``: the
    edges whose sender's value differs between random inputs of the same length (e.g. ``reverse``'s length
    sub-circuit is constant there), the truth for tasks that corrupt by resampling tokens.
    """
    def senders(expr: rasp.SOp) -> list[str]:
        lab = _label(expr)
        if lab == rasp.tokens.label:
            return ["input"]
        if lab == rasp.indices.label:
            return []
        if lab not in placed:
            raise ValueError(f"{lab} has no compiled block")
        return _pieces_names(placed[lab])[-1]

    edges: set[tuple[str, str]] = set()
    ops = []
    for node_id, pieces in placed.items():
        expr = graph.nodes[node_id][nodes.EXPR]
        names = _pieces_names(pieces)
        first = names[0]
        if isinstance(expr, (rasp.Aggregate, rasp.SelectorWidth)):
            sel = expr.selector
            if not isinstance(sel, rasp.Select):
                raise ValueError(f"{node_id}: only plain Select selectors are supported")
            # a selector that is always true ignores its queries and keys
            always = sel.predicate == rasp.Comparison.TRUE
            reads = {"q": [] if always else senders(sel.queries), "k": [] if always else senders(sel.keys)}
            if isinstance(expr, rasp.Aggregate):
                reads["v"] = senders(expr.sop)
            for h in first:
                for port, ss in reads.items():
                    edges |= {(s, f"{h}.{port}") for s in ss}
            if len(names) == 2:  # selector width: its MLP reads its attention
                edges |= {(h, m) for h in first for m in names[1]}
        elif isinstance(expr, (rasp.Map, rasp.SequenceMap)):
            for child in expr.children:
                edges |= {(s, m) for s in senders(child) for m in first}
        else:
            raise ValueError(f"{node_id}: {type(expr).__name__} is not handled")
        ops.append({"op": node_id, "type": type(expr).__name__,
                    "components": [n for piece in names for n in piece]})
    out_sop = sink[nodes.EXPR]
    edges |= {(s, "logits") for s in senders(out_sop)}
    # which senders compute a value that differs between inputs of the same length (the benchmark's tasks
    # corrupt by resampling the tokens at the same length): the input always; an operation when RASP's
    # evaluation of it differs across random inputs
    rng = np.random.default_rng(123)
    samples = [[vocab[int(i)] for i in rng.integers(0, len(vocab), MAX_SEQ_LEN)] for _ in range(64)]
    varies = {"input": True}
    for node_id, pieces in placed.items():
        expr = graph.nodes[node_id][nodes.EXPR]
        vals = {json.dumps([_plain(v) for v in rasp.evaluate(expr, xs)]) for xs in samples}
        for piece in _pieces_names(pieces):
            for n in piece:
                varies[n] = len(vals) > 1
    task_edges = sorted(e for e in edges if varies[e[0]])
    return {"operations": ops, "edges": sorted(edges), "task_edges": task_edges, "output": _label(out_sop)}


def export(name: str, program: rasp.SOp, vocab: list[Any], about: str, seed: int = 0) -> dict[str, Any]:
    c = compile_program(program, vocab)
    am = c["assembled"]
    cfg = am.model_config
    params = {k: {p: np.asarray(v) for p, v in d.items()} for k, d in am.params.items()}
    labels = list(am.residual_labels)
    d_res = len(labels)
    H, ks, L = cfg.num_heads, cfg.key_size, cfg.num_layers
    d_head = max(ks, math.ceil(d_res / H))
    n_embd = H * d_head
    tok = params["token_embed"]["embeddings"]  # [vocab_in, d_res]
    pos = params["pos_embed"]["embeddings"]  # [positions, d_res]
    out_basis = c["sink"][nodes.OUTPUT_BASIS]
    out_idx = [labels.index(str(b)) for b in out_basis]
    categorical = isinstance(am.output_encoder, encoder.CategoricalEncoder)
    n_out = len(out_idx)
    vocab_size = max(tok.shape[0], n_out)

    def pad_res(m: np.ndarray) -> np.ndarray:  # [..., d_res] -> [..., n_embd]
        z = np.zeros((*m.shape[:-1], n_embd), np.float32)
        z[..., :d_res] = m
        return z

    t: dict[str, np.ndarray] = {}
    wte = np.zeros((vocab_size, n_embd), np.float32)
    wte[:tok.shape[0], :d_res] = tok
    t["transformer.wte.weight"] = wte
    t["transformer.wpe.weight"] = pad_res(pos)
    for layer in range(L):
        a = f"transformer/layer_{layer}/attn"
        qkv = np.zeros((n_embd, 3 * n_embd), np.float32)
        qkv_b = np.zeros(3 * n_embd, np.float32)
        proj = np.zeros((n_embd, n_embd), np.float32)
        for j, part in enumerate(("query", "key", "value")):
            w = params[f"{a}/{part}"]["w"].reshape(d_res, H, ks)
            b = params[f"{a}/{part}"]["b"].reshape(H, ks)
            scale = 1.0 / math.sqrt(ks) if part == "query" else 1.0
            for h in range(H):
                col = j * n_embd + h * d_head
                qkv[:d_res, col:col + ks] = w[:, h] * scale
                qkv_b[col:col + ks] = b[h] * scale
        lin = params[f"{a}/linear"]["w"].reshape(H, ks, d_res)
        for h in range(H):
            proj[h * d_head:h * d_head + ks, :d_res] = lin[h]
        p = f"transformer.h.{layer}"
        t[f"{p}.attn.c_attn.weight"], t[f"{p}.attn.c_attn.bias"] = qkv, qkv_b
        t[f"{p}.attn.c_proj.weight"] = proj
        t[f"{p}.attn.c_proj.bias"] = pad_res(params[f"{a}/linear"]["b"])
        m = f"transformer/layer_{layer}/mlp"
        t[f"{p}.mlp.c_fc.weight"] = np.zeros((n_embd, cfg.mlp_hidden_size), np.float32)
        t[f"{p}.mlp.c_fc.weight"][:d_res] = params[f"{m}/linear_1"]["w"]
        t[f"{p}.mlp.c_fc.bias"] = params[f"{m}/linear_1"]["b"].astype(np.float32)
        t[f"{p}.mlp.c_proj.weight"] = pad_res(params[f"{m}/linear_2"]["w"])
        t[f"{p}.mlp.c_proj.bias"] = pad_res(params[f"{m}/linear_2"]["b"])
    head = np.zeros((vocab_size, n_embd), np.float32)
    for o, i in enumerate(out_idx):
        head[o, i] = 1.0
    t["lm_head.weight"] = head

    enc = am.input_encoder.encoding_map
    placed = place_blocks(c["graph"], c["alloc"])
    circuit = known_circuit(c["graph"], c["sink"], placed, vocab)

    # Tracr's own outputs on random inputs (every input at the full length: BOS + MAX_SEQ_LEN tokens)
    rng = np.random.default_rng(seed)
    fixture = []
    for _ in range(N_FIXTURE):
        xs = [vocab[int(i)] for i in rng.integers(0, len(vocab), MAX_SEQ_LEN)]
        o = am.apply([BOS, *xs])
        resid = np.asarray(o.transformer_output)[0]  # [T, d_res]
        outs = resid[:, out_idx]
        expected = rasp.evaluate(program, xs)
        fixture.append({"tokens": [BOS, *xs], "ids": [int(enc[x]) for x in [BOS, *xs]],
                        "outputs": outs.astype(float).round(7).tolist(),
                        "decoded": [_plain(v) for v in o.decoded[1:]],
                        "expected": [_plain(v) for v in expected]})
    config = {
        "name": name, "about": about, "source": "tracr-pypi compile_rasp_to_model (step by step, see build_tracr.py)",
        "gpt2": {"n_layer": L, "n_head": H, "n_embd": n_embd, "n_inner": cfg.mlp_hidden_size,
                 "vocab_size": vocab_size, "n_positions": int(pos.shape[0]), "activation_function": "relu",
                 "scale_attn_weights": False, "tie_word_embeddings": False, "is_causal": False},
        "d_res": d_res, "key_size": ks, "d_head": d_head,
        "vocab": {str(k): int(v) for k, v in enc.items()},
        "vocab_values": [_plain(v) for v in vocab],
        "bos": BOS, "pad": PAD, "max_seq_len": MAX_SEQ_LEN,
        "output": {"categorical": categorical, "n_out": n_out,
                   "values": ([_plain(v) for v in am.output_encoder.decode(list(range(n_out)))] if categorical else None)},
        "residual_labels": labels,
        "circuit": circuit,
        "fixture": fixture,
    }
    out = HERE / name
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", t)
    (out / "tracr.json").write_text(json.dumps(config, indent=1) + "\n")
    acc = np.mean([f["decoded"] == f["expected"] for f in fixture])
    print(f"{name}: {L} layers, {H} heads (key size {ks}), d_res {d_res} -> n_embd {n_embd}, mlp {cfg.mlp_hidden_size}, "
          f"{len(circuit['edges'])} circuit edges ({len(circuit['task_edges'])} vary at a fixed length); Tracr's decoded output == RASP's on {acc:.0%} of {N_FIXTURE}")
    for op in circuit["operations"]:
        print(f"   {op['op']} ({op['type']}): {', '.join(op['components'])}")
    return config


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        return round(v, 7)
    return v


def main(argv: list[str]) -> None:
    progs = _programs()
    for name in argv or list(progs):
        prog, vocab, about = progs[name]
        export(name, prog, vocab, about)


if __name__ == "__main__":
    main(sys.argv[1:])
