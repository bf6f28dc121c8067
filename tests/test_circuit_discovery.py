"""Circuit discovery (interp.circuits) against independent oracles.

The oracle is a hand-written Llama forward in plain torch (``_ref``) that keeps every sender's output
separately and builds each receiver's input as the explicit sum of what its senders wrote, taking the
source run's value for patched edges: exact edge patching is compared with it edge by edge, EAP with
autograd through it. Node patching is compared with interp's own ``Patch`` of a head's ``z``.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from interp.circuits import (
    Circuit,
    EdgeRunner,
    FaithfulnessCurve,
    build_graph,
    circuit_metric,
    discover,
    edge_auroc,
    faithfulness,
    induction_task,
    load_toy,
    make_task,
    toy_truth,
)
from interp.errors import BadInputError
from interp.hooks import Patch
from interp.models import Model


def _task(m: Model, metric: str = "logit_diff", ablation: str = "corrupted") -> object:
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(3, m.dims.d_vocab, (3, 7), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 1:4] = torch.randint(3, m.dims.d_vocab, (3, 3), generator=gen)
    return make_task(m, clean, corrupt=corrupt, answer=[5, 6, 7], wrong=[8, 9, 10], metric=metric, ablation=ablation)


def _ref(m: Model, ids: torch.Tensor, patched: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
         src: dict[str, torch.Tensor] | None = None, leaves: dict[str, torch.Tensor] | None = None
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hand-written forward of a Llama model with the residual stream kept as separate sender outputs."""
    hf, d = m.hf, m.dims
    gqa = d.n_kv_heads != d.n_heads
    outs: dict[str, torch.Tensor] = {"input": hf.model.embed_tokens(ids)}
    pos = torch.arange(ids.shape[1])[None]
    cos, sin = hf.model.rotary_emb(outs["input"], pos)

    def read(receiver: str) -> torch.Tensor:
        x = sum((src[u] if (u, receiver) in patched else v) for u, v in outs.items())  # type: ignore[index]
        return x + leaves[receiver] if leaves and receiver in leaves else x

    for L, blk in enumerate(hf.model.layers):
        a = blk.self_attn
        dh = d.d_head
        heads = []
        for h in range(d.n_heads):
            g = h // d.n_rep
            kvname = f"L{L}KV{g}" if gqa else f"L{L}H{h}"
            q = blk.input_layernorm(read(f"L{L}H{h}.q")) @ a.q_proj.weight[h * dh:(h + 1) * dh].T
            k = blk.input_layernorm(read(f"{kvname}.k")) @ a.k_proj.weight[g * dh:(g + 1) * dh].T
            v = blk.input_layernorm(read(f"{kvname}.v")) @ a.v_proj.weight[g * dh:(g + 1) * dh].T
            q, k = apply_rotary_pos_emb(q[:, None], k[:, None], cos, sin)
            s = (q[:, 0] @ k[:, 0].transpose(-1, -2)) / math.sqrt(dh)
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
            z = torch.softmax(s, -1) @ v
            heads.append(z @ a.o_proj.weight[:, h * dh:(h + 1) * dh].T)
        for h in range(d.n_heads):
            outs[f"L{L}H{h}"] = heads[h]
        if f"MLP{L}" in build_graph(m).senders:
            outs[f"MLP{L}"] = blk.mlp(blk.post_attention_layernorm(read(f"MLP{L}")))
    logits = hf.lm_head(hf.model.norm(read("logits")))
    return logits[:, -1], outs


def _ref_metric(task: object, last: torch.Tensor) -> float:
    return float(task.values(last[None]).mean())  # type: ignore[attr-defined]


def test_graph_names_and_edges(tiny_llama: Model) -> None:
    g = build_graph(tiny_llama)
    assert g.senders == ("input", "L0H0", "L0H1", "L0H2", "L0H3", "MLP0", "L1H0", "L1H1", "L1H2", "L1H3", "MLP1")
    assert "L1KV1.k" in g.receivers and "L1H1.k" not in g.receivers  # grouped-query: k/v inputs per KV head
    names = set(g.edge_names())
    assert "L0H2->MLP0" in names and "MLP0->L1H0.q" in names and "MLP1->logits" in names
    assert "L1H0->L1H1.q" not in names and "MLP0->MLP0" not in names and "L0H0->L0H1.q" not in names
    # per receiver: (4 q + 2 k + 2 v) * 1 sender in layer 0, MLP0 reads 5, layer 1 inputs read 6, MLP1 10, logits 11
    assert g.n_edges == 8 * 1 + 5 + 8 * 6 + 10 + 11


def test_exact_edge_patching_matches_hand_written_loop(tiny_llama64: Model) -> None:
    m = tiny_llama64
    task = _task(m)
    g = build_graph(m)
    c = discover(m, task, method="exact", progress=False)
    with torch.no_grad():
        clean_last, _ = _ref(m, task.input_ids)
        _, src = _ref(m, task.corrupt_ids)
        clean_val = _ref_metric(task, clean_last)
        assert clean_val == pytest.approx(c.clean_value, abs=1e-9)
        names = g.edge_names()
        for i in torch.linspace(0, g.n_edges - 1, 17).long().tolist():  # a spread of edges, every receiver kind
            s, r = names[i].split("->")
            last, _ = _ref(m, task.input_ids, {(s, r)}, src)
            assert float(c.scores[i]) == pytest.approx(_ref_metric(task, last) - clean_val, abs=1e-9), names[i]
        # several edges at once (one run), and every edge (= the corrupted run)
        runner = EdgeRunner(m, task, graph=g)
        pick = [3, 20, 41, 70]
        mask = g.dense(torch.isin(torch.arange(g.n_edges), torch.tensor(pick)).double())[None]
        last, _ = _ref(m, task.input_ids, {tuple(names[i].split("->")) for i in pick}, src)  # type: ignore[misc]
        assert float(runner.metric(mask)[0]) == pytest.approx(_ref_metric(task, last), abs=1e-9)
        corrupted = m.run(task.corrupt_ids).logits[:, -1]
        every = float(runner.metric(g.adjacency().double()[None])[0])
    assert every == pytest.approx(_ref_metric(task, corrupted), abs=1e-9)


def test_eap_matches_hand_computed_gradient(tiny_llama64: Model) -> None:
    m = tiny_llama64
    task = _task(m)
    g = build_graph(m)
    c = discover(m, task, method="eap", progress=False)
    with torch.no_grad():
        _, src = _ref(m, task.corrupt_ids)
        _, clean = _ref(m, task.input_ids)
    leaves = {r: torch.zeros(*task.input_ids.shape, m.dims.d_model, dtype=torch.float64, requires_grad=True)
              for r in g.receivers}
    last, _ = _ref(m, task.input_ids, leaves=leaves)
    grads = dict(zip(leaves, torch.autograd.grad(_ref_metric_t(task, last), list(leaves.values())), strict=True))
    want = torch.tensor([float(((src[g.senders[s]] - clean[g.senders[s]]) * grads[g.receivers[r]]).sum())
                         for s, r in g.edges.tolist()], dtype=torch.float64)
    torch.testing.assert_close(c.scores.double(), want, rtol=1e-5, atol=1e-7)
    # node level: the sum over each node's outgoing edges
    node = discover(m, task, method="eap", level="node", progress=False)
    torch.testing.assert_close(node.scores.double(), torch.zeros(len(g.senders), dtype=torch.float64)
                               .index_add_(0, g.edges[:, 0], want), rtol=1e-5, atol=1e-7)


def _ref_metric_t(task: object, last: torch.Tensor) -> torch.Tensor:
    return task.values(last[None]).mean()  # type: ignore[attr-defined, no-any-return]


def test_eap_ig_one_step_is_eap_and_more_steps_differ(tiny_llama: Model) -> None:
    task = _task(tiny_llama)
    runner = EdgeRunner(tiny_llama, task, graph=build_graph(tiny_llama))
    eap = discover(tiny_llama, task, method="eap", runner=runner)
    ig1 = discover(tiny_llama, task, method="eap-ig", steps=1, runner=runner)
    ig4 = discover(tiny_llama, task, method="eap-ig", steps=4, runner=runner)
    torch.testing.assert_close(ig1.scores, eap.scores)
    assert not torch.allclose(ig4.scores, eap.scores)
    # integrated gradients over the input: the input node's scores sum (over its edges, all positions)
    # closer to the exact effect of patching the whole input than EAP's single gradient does
    exact_all = runner.corrupted_value - runner.clean_value
    ig_total = float(discover(tiny_llama, task, method="eap-ig", steps=32, runner=runner, level="node").scores[0])
    eap_total = float(discover(tiny_llama, task, method="eap", runner=runner, level="node").scores[0])
    assert abs(ig_total - exact_all) < abs(eap_total - exact_all)


def _groups(g: object) -> list[list[str]]:
    """MIB's nodes for EAP-IG over activations, written out: the input, each layer's heads, each MLP."""
    out: list[list[str]] = [["input"]]
    for L in range(max(g.sender_layer) + 1):  # type: ignore[attr-defined]
        out.append([s for s in g.senders if s.startswith(f"L{L}H")])  # type: ignore[attr-defined]
        if f"MLP{L}" in g.senders:  # type: ignore[attr-defined]
            out.append([f"MLP{L}"])
    return out


def test_eap_ig_over_activations_is_the_hand_riemann_sum(tiny_llama64: Model) -> None:
    """For each upstream node (a layer's heads together, as MIB) and step k, the hand-written forward runs
    with that node's output at ``src + k/steps (clean - src)`` everywhere it is read; the edge score is the
    source-minus-clean output dotted with the mean over steps of the gradient at the receiver's input."""
    m = tiny_llama64
    task = _task(m)
    g = build_graph(m)
    steps = 3
    c = discover(m, task, method="eap-ig-act", steps=steps, progress=False)
    with torch.no_grad():
        _, src = _ref(m, task.corrupt_ids)
        _, clean = _ref(m, task.input_ids)
    want = torch.zeros(g.n_edges, dtype=torch.float64)
    for group in _groups(g):
        mean_grad = {r: torch.zeros(*task.input_ids.shape, m.dims.d_model, dtype=torch.float64) for r in g.receivers}
        for k in range(1, steps + 1):
            mixed = {u: src[u] + k / steps * (clean[u] - src[u]) for u in group}
            patched = {(u, r) for u in group for r in g.receivers}
            leaves = {r: torch.zeros(*task.input_ids.shape, m.dims.d_model, dtype=torch.float64, requires_grad=True)
                      for r in g.receivers}
            last, _ = _ref(m, task.input_ids, patched=patched, src=mixed, leaves=leaves)
            # a receiver inside the interpolated node reads nothing that matters (its output is replaced)
            grads = torch.autograd.grad(_ref_metric_t(task, last), list(leaves.values()), allow_unused=True)
            for r, gr in zip(leaves, grads, strict=True):
                if gr is not None:
                    mean_grad[r] += gr / steps
        for e, (s, r) in enumerate(g.edges.tolist()):
            if g.senders[s] in group:
                want[e] = float(((src[g.senders[s]] - clean[g.senders[s]]) * mean_grad[g.receivers[r]]).sum())
    torch.testing.assert_close(c.scores.double(), want, rtol=1e-5, atol=1e-7)


def test_eap_ig_over_activations_one_step_is_eap_and_completeness(tiny_llama: Model) -> None:
    task = _task(tiny_llama)
    runner = EdgeRunner(tiny_llama, task)
    eap = discover(tiny_llama, task, method="eap", runner=runner)
    act1 = discover(tiny_llama, task, method="eap-ig-act", steps=1, runner=runner)
    torch.testing.assert_close(act1.scores, eap.scores)
    # integrated gradients' completeness: a one-sender node's scores summed over its edges tend, with the
    # steps, to the exact effect of patching the node (every edge out of it) from the source
    exact = discover(tiny_llama, task, method="exact", level="node", runner=runner, progress=False)
    ig = discover(tiny_llama, task, method="eap-ig-act", steps=48, level="node", runner=runner)
    eap_node = discover(tiny_llama, task, method="eap", level="node", runner=runner)
    single = [i for i, s in enumerate(runner.graph.senders) if s == "input" or s.startswith("MLP")]
    err_ig = (ig.scores[single] - exact.scores[single]).abs()
    err_eap = (eap_node.scores[single] - exact.scores[single]).abs()
    assert float(err_ig.max()) < 0.05 * float(exact.scores[single].abs().max())
    assert float(err_ig.sum()) < float(err_eap.sum())


@pytest.mark.parametrize("which", ["llama64", "gpt2"])
def test_node_patching_equals_patching_the_head_output(which: str, tiny_llama64: Model, tiny_gpt2: Model) -> None:
    m = tiny_llama64 if which == "llama64" else tiny_gpt2
    task = _task(m)
    node = discover(m, task, method="exact", level="node", progress=False)
    corrupt_z = m.run(task.corrupt_ids, capture="z.1").trace["z.1"]
    for h in range(m.dims.n_heads):
        last = m.run(task.input_ids, interventions=[Patch("z.1", corrupt_z, heads=[h])]).logits[:, -1]
        want = float(task.values(last[None]).mean()) - node.clean_value
        assert float(node.scores[node.senders.index(f"L1H{h}")]) == pytest.approx(want, abs=1e-9 if which == "llama64"
                                                                                  else 1e-4)


def test_gpt2_endpoints_and_layer0_edges(tiny_gpt2: Model) -> None:
    """GPT-2's fused q/k/v projection: no edge patched is the clean run, every edge the corrupted run, and
    patching every edge into layer 0's q/k/v is patching the token embedding that layer 0 reads."""
    task = _task(tiny_gpt2)
    r = EdgeRunner(tiny_gpt2, task, graph=build_graph(tiny_gpt2))
    with torch.no_grad():
        corrupted = tiny_gpt2.run(task.corrupt_ids).logits[:, -1]
        clean = tiny_gpt2.run(task.input_ids).logits[:, -1]
    g = r.graph
    ends = r.metric(torch.stack([torch.zeros(len(g.senders), len(g.receivers)), g.adjacency().float()]))
    assert float(ends[1]) == pytest.approx(float(task.values(corrupted[None]).mean()), abs=1e-4)
    assert float(ends[0]) == pytest.approx(float(task.values(clean[None]).mean()), abs=1e-4)
    layer0 = torch.tensor([g.receiver_layer[rr] == 0 and "." in g.receivers[rr] for _, rr in g.edges.tolist()])
    got = float(r.metric(g.dense(layer0.float())[None])[0])
    ln1 = tiny_gpt2.hf.transformer.h[0].ln_1
    emb_c = tiny_gpt2.hf.transformer.wte(task.corrupt_ids)

    def attn_in(act: torch.Tensor, site: object) -> torch.Tensor:
        pos = tiny_gpt2.hf.transformer.wpe(torch.arange(act.shape[1]))
        return ln1(emb_c + pos)

    from interp.hooks import Lambda

    with torch.no_grad():
        want = tiny_gpt2.run(task.input_ids, interventions=[Lambda("hf:transformer.h.0.attn:input", fn=attn_in)]).logits
    assert got == pytest.approx(float(task.values(want[:, -1][None]).mean()), abs=1e-4)


def test_mean_and_zero_ablation_sources(tiny_llama: Model) -> None:
    for ablation in ("mean", "zero"):
        task = _task(tiny_llama, ablation=ablation)
        r = EdgeRunner(tiny_llama, task, graph=build_graph(tiny_llama))
        if ablation == "zero":
            assert float(r.src_out.abs().max()) == 0.0
        else:
            torch.testing.assert_close(r.src_out[0], r.clean_out.mean(0))
    with pytest.raises(BadInputError, match="corrupt="):
        make_task(tiny_llama, torch.ones(1, 3, dtype=torch.long), ablation="corrupted", answer=[1])


def test_faithfulness_endpoints_and_summaries(tiny_llama: Model) -> None:
    task = _task(tiny_llama)
    runner = EdgeRunner(tiny_llama, task, graph=build_graph(tiny_llama))
    c = discover(tiny_llama, task, method="exact", runner=runner)
    curve = faithfulness(tiny_llama, task, circuit=c, runner=runner)
    f = curve.faithfulness
    assert float(f[0]) == pytest.approx(0.0, abs=1e-5) and float(f[-1]) == pytest.approx(1.0, abs=1e-5)
    # CPR / CMD: trapezoids by hand
    x = curve.fractions.tolist()
    cpr = sum((x[i + 1] - x[i]) * (float(f[i]) + float(f[i + 1])) / 2 for i in range(len(x) - 1))
    cmd = sum((x[i + 1] - x[i]) * (abs(1 - float(f[i])) + abs(1 - float(f[i + 1]))) / 2 for i in range(len(x) - 1))
    assert curve.cpr == pytest.approx(cpr, abs=1e-6) and curve.cmd == pytest.approx(cmd, abs=1e-6)
    # one size by hand: keep the top 10 edges, patch the rest
    top = c.top(10)
    val = float(circuit_metric(tiny_llama, task, circuits=[top], runner=runner)[0])
    g = runner.graph
    kept = set(map(tuple, g.edges[top.selected].tolist()))
    mask = torch.tensor([0.0 if (s, r) in kept else 1.0 for s, r in g.edges.tolist()])
    assert val == pytest.approx(float(runner.metric(g.dense(mask)[None])[0]), abs=1e-5)


def test_acdc_keeps_edges_that_matter(tiny_llama: Model) -> None:
    task = _task(tiny_llama, metric="kl")
    runner = EdgeRunner(tiny_llama, task, graph=build_graph(tiny_llama))
    c = discover(tiny_llama, task, method="acdc", threshold=0.02, runner=runner, progress=False)
    assert 0 < int(c.selected.sum()) < c.n_units
    # the kept circuit is within the threshold budget of the full model: its KL is small next to the empty circuit's
    kl_kept = float(circuit_metric(tiny_llama, task, circuits=[c], runner=runner)[0])
    assert kl_kept < 0.5 * runner.corrupted_value
    # every removed edge raised the distance by less than the threshold when it was removed
    assert bool((c.scores[~c.selected] < 0.02).all()) and bool((c.scores[c.selected] >= 0.02).all())


def test_toy_model_k_composition_is_found() -> None:
    m = load_toy()
    task = induction_task(m)
    runner = EdgeRunner(m, task, graph=build_graph(m))
    truth = toy_truth(m)
    g = runner.graph
    names = g.edge_names()
    # planted truth by construction: ablating the previous-token heads' edges into the induction keys breaks
    # induction; the same edges from the other layer-0 heads matter less than half as much (the trained toy is
    # not perfectly sparse: they carry some of the key's token content)
    kcomp = [i for i, n in enumerate(names) if n.split("->")[1].endswith(".k") and n.startswith(("L0H2", "L0H3"))]
    other = [i for i, n in enumerate(names) if n.split("->")[1].endswith(".k") and n.startswith(("L0H0", "L0H1"))]
    assert {names[i] for i in kcomp} <= {n for n, s in zip(names, truth.selected.tolist(), strict=True) if s}
    vals = runner.metrics(torch.stack([g.dense(torch.isin(torch.arange(g.n_edges), torch.tensor(ix)).float())
                                       for ix in (kcomp, other)]))
    drop_k, drop_other = runner.clean_value - float(vals[0]), runner.clean_value - float(vals[1])
    assert drop_k > 0.5 * (runner.clean_value - runner.corrupted_value) and drop_other < 0.5 * drop_k
    for method in ("exact", "eap-ig"):
        c = discover(m, task, method=method, runner=runner, progress=False)
        assert edge_auroc(c, truth) > 0.8


def test_circuit_surface(tiny_llama: Model, tmp_path: object) -> None:
    task = _task(tiny_llama)
    c = discover(tiny_llama, task, method="eap", progress=False)
    top = c.top(5)
    assert int(top.selected.sum()) == 5 and len(top.edge_list()) == 5
    assert [abs(w) for _, _, w in top.edge_list()] == sorted((abs(w) for _, _, w in top.edge_list()), reverse=True)
    thr = c.threshold(float(c.scores.abs().median()))
    assert int(thr.selected.sum()) >= c.n_units // 2
    assert set(top.nodes()) >= {s for s, _, _ in top.edge_list()}
    loaded = Circuit.load(top.save(tmp_path))  # type: ignore[arg-type]
    torch.testing.assert_close(loaded.scores, top.scores)
    assert loaded.edge_list() == top.edge_list() and loaded.senders == top.senders
    df = top.to_frame()
    assert list(df.columns) == ["sender", "receiver", "score", "selected", "rank"] and len(df) == c.n_units
    fig = top.plot()
    assert fig.data and top.plot("scores").data
    assert "eap" in repr(top)
    curve = faithfulness(tiny_llama, task, circuit=c, fractions=[0.0, 0.5, 1.0])
    assert isinstance(FaithfulnessCurve.load(curve.save(tmp_path / "f")), FaithfulnessCurve)  # type: ignore[operator]
    truth = Circuit.from_graph(build_graph(tiny_llama), top.selected.float(), top.selected)
    assert edge_auroc(c, truth) == 1.0


def test_bad_inputs(tiny_llama: Model, tiny_neox_sequential: Model) -> None:
    tiny_neox = tiny_neox_sequential
    task = _task(tiny_llama)
    with pytest.raises(BadInputError, match="method"):
        discover(tiny_llama, task, method="nope")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="steps"):
        discover(tiny_llama, task, method="eap-ig", steps=0)
    with pytest.raises(BadInputError, match="families"):
        build_graph(tiny_neox)
    with pytest.raises(BadInputError, match="lengths"):
        make_task(tiny_llama, torch.ones(1, 3, dtype=torch.long), corrupt=torch.ones(1, 4, dtype=torch.long), answer=1)


def test_cli_circuit(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from interp.cli import main

    out = tmp_path / "c.json"  # type: ignore[operator]
    rc = main(["circuit", "--model", "toy-induction", "--task", "induction", "--method", "eap", "--top", "5",
               "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "CPR" in text and "L1H" in text
    data = json.loads(out.read_text())
    assert "Circuit" in json.dumps(data)
    assert main(["circuit", "--model", "toy-induction", "--task", "nope", "--quiet"]) == 2
    assert main(["circuit", "--model", "toy-induction", "--quiet"]) == 2


def test_report_section(tiny_llama: Model) -> None:
    from interp.report import build_report

    rep = build_report(tiny_llama, "w1 w2 w3 w4 w5 w6", corrupt="w1 w2 w9 w4 w5 w6", sections=["circuit"], fast=True)
    assert "Circuit" in [s.title for s in rep.sections]
    assert "Circuit" not in [s.title for s in build_report(tiny_llama, "w1 w2 w3", sections=["circuit"], fast=True).sections]
