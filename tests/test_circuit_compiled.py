"""Tracr-compiled models (data/circuits): the converted GPT-2 against Tracr's own outputs, the programs' answers
and the circuits known from the compilation.

Oracles: ``tracr.json``'s fixture holds what Tracr's JAX model computed on its inputs (the unembedded residual)
and what the RASP program evaluates to, recorded by data/circuits/build_tracr.py; the true circuits below are
also written out by hand from the RASP programs in tracr.compiler.lib.
"""

from __future__ import annotations

import pytest
import torch

from interp.circuits import (
    COMPILED,
    EdgeRunner,
    compiled_config,
    compiled_ids,
    compiled_outputs,
    compiled_task,
    compiled_truth,
    discover,
    edge_auroc,
    load_compiled,
)
from interp.errors import BadInputError, UnknownNameError
from interp.models import Model


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    return {n: load_compiled(n) for n in COMPILED}


@pytest.mark.parametrize("name", COMPILED)
def test_converted_model_computes_what_tracr_computed(models: dict[str, Model], name: str) -> None:
    cfg = compiled_config(name)
    m = models[name]
    assert m.adapter.family == "gpt2"
    ids = torch.tensor([f["ids"] for f in cfg["fixture"]])
    tracr = torch.tensor([f["outputs"] for f in cfg["fixture"]])  # [batch, pos, n_out], from JAX
    ours = compiled_outputs(m, ids)
    assert ours.shape == tracr.shape
    assert torch.allclose(ours, tracr, atol=1e-5), float((ours - tracr).abs().max())
    # the program's own answers (RASP's evaluation), every position after BOS: 100% accuracy
    expected = [f["expected"] for f in cfg["fixture"]]
    if cfg["output"]["categorical"]:
        values = cfg["output"]["values"]
        decoded = [[values[i] for i in row] for row in ours[:, 1:].argmax(-1).tolist()]
        assert decoded == expected
    else:
        assert torch.allclose(ours[:, 1:, 0], torch.tensor(expected, dtype=torch.float), atol=1e-4)
    # and the tokens spelled out give the same ids
    assert torch.equal(compiled_ids(m, [f["tokens"][1:] for f in cfg["fixture"]]), ids)


# The circuits read off the RASP programs by hand (tracr.compiler.lib; one head per attention layer):
# hist = SelectorWidth(Select(tokens, tokens, EQ)): a head whose query and key read the tokens, its MLP;
# sort = make_sort_unique(tokens, keys = tokens + i/5): keys in MLP0; target_pos = SelectorWidth(Select(keys,
#   keys, LT)) in L1H0 + MLP1; Aggregate(Select(target_pos, indices, EQ), tokens) in L2H0 (key: target_pos);
# frac_prevs = numerical Aggregate(Select(indices, indices, LEQ), tokens == "x"): MLP0 computes the bool, L1H0
#   averages it (its query and key read positions only);
# reverse = Aggregate(Select(indices, opp_idx - 1, EQ), tokens): length (L0H0 + MLP0), opp_idx (MLP1),
#   opp_idx - 1 (MLP2), the head L3H0; length reads an always-true selector (no q/k edge).
HAND = {
    "hist": {("input", "L0H0.q"), ("input", "L0H0.k"), ("L0H0", "MLP0"), ("MLP0", "logits")},
    "sort": {("input", "MLP0"), ("MLP0", "L1H0.q"), ("MLP0", "L1H0.k"), ("L1H0", "MLP1"), ("MLP1", "L2H0.k"),
             ("input", "L2H0.v"), ("L2H0", "logits")},
    "frac_prevs": {("input", "MLP0"), ("MLP0", "L1H0.v"), ("L1H0", "logits")},
    "reverse": {("L0H0", "MLP0"), ("MLP0", "MLP1"), ("MLP1", "MLP2"), ("MLP2", "L3H0.q"), ("input", "L3H0.v"),
                ("L3H0", "logits")},
}


@pytest.mark.parametrize("name", COMPILED)
def test_known_circuit_is_the_programs_data_flow(models: dict[str, Model], name: str) -> None:
    full = compiled_truth(models[name], which="all")
    assert {(s, r) for s, r, _ in full.edge_list()} == HAND[name]
    task = {(s, r) for s, r, _ in compiled_truth(models[name]).edge_list()}
    # reverse's length sub-circuit is the same for every input of one length: not a task edge
    want = {("input", "L3H0.v"), ("L3H0", "logits")} if name == "reverse" else HAND[name]
    assert task == want


@pytest.mark.parametrize("name", COMPILED)
def test_ablating_each_true_edge_breaks_the_output_and_no_other_edge_does(models: dict[str, Model], name: str
                                                                          ) -> None:
    m = models[name]
    task = compiled_task(m)
    truth = compiled_truth(m)
    runner = EdgeRunner(m, task)
    gap = abs(runner.clean_value - runner.corrupted_value)
    assert gap > 0.1
    # one edge at a time fed from the corrupted run: a hand loop over edges, one masked run each
    adj = runner.graph.adjacency()
    for i, (s, r) in enumerate(runner.graph.edges.tolist()):
        mask = torch.zeros(1, *adj.shape)
        mask[0, s, r] = 1.0
        change = abs(float(runner.metric(mask)[0]) - runner.clean_value)
        if truth.selected[i]:
            assert change > 0.1 * gap, (runner.graph.edge_names()[i], change, gap)
        else:
            assert change < 1e-4, (runner.graph.edge_names()[i], change)
    # the circuit alone (every other edge patched) keeps the clean behaviour exactly
    keep = runner.graph.dense(truth.edge_mask().float())
    assert abs(float(runner.metric((adj.float() - keep)[None])[0]) - runner.clean_value) < 1e-4


@pytest.mark.slow
def test_exact_patching_and_acdc_recover_every_compiled_circuit(models: dict[str, Model]) -> None:
    for name in COMPILED:
        m = models[name]
        task, truth = compiled_task(m), compiled_truth(m)
        runner = EdgeRunner(m, task)
        for method in ("exact", "acdc"):
            c = discover(m, task, method=method, runner=runner, threshold=0.01, progress=False)
            assert edge_auroc(c, truth) == 1.0, (name, method)
        assert torch.equal(c.selected, truth.selected), name  # ACDC keeps exactly the true edges


def test_compiled_errors(models: dict[str, Model]) -> None:
    with pytest.raises(UnknownNameError):
        load_compiled("nope")
    with pytest.raises(BadInputError):
        compiled_ids(models["hist"], [["a", "z"]])
    with pytest.raises(BadInputError):
        compiled_task(models["hist"], batch=0)
