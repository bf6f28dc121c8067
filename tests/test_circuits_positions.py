"""Edge scores per token position (``discover_by_position``) and the circuit plotted per position.

Oracle: EAP at one position written out from interp's hook points, not from the circuit engine: what a sender
wrote (``hook_embed``, a head's ``attn.hook_result``) in the clean and corrupted runs, times the gradient of the
metric at what the receiver reads (a head's ``hook_k_input``, the last ``hook_resid_post`` for the logits).
"""

from __future__ import annotations

import pytest
import torch

from interp.circuits import Circuit, discover, discover_by_position, induction_task, load_toy
from interp.errors import BadInputError
from interp.hooks import run_with_hooks
from interp.models import Model


@pytest.fixture(scope="module")
def toy() -> Model:
    return load_toy()


@pytest.fixture(scope="module")
def task(toy: Model) -> object:
    return induction_task(toy, batch=4)


def _metric(task: object) -> object:
    last = task.last  # type: ignore[attr-defined]

    def m(logits: torch.Tensor) -> torch.Tensor:
        rows = logits[torch.arange(logits.shape[0]), last]
        return (rows.gather(1, task.answer[:, None]) - rows.gather(1, task.wrong[:, None])).mean()  # type: ignore[attr-defined]

    return m


def test_position_scores_equal_eap_written_out_from_hook_points(toy: Model, task: object) -> None:
    c = discover_by_position(toy, task)
    ids, mask, corrupt = task.input_ids, task.attention_mask, task.corrupt_ids  # type: ignore[attr-defined]
    names = ["embed", "result.0"]
    clean = run_with_hooks(toy, ids, mask, capture=names, grads=["k_input.1", "resid_post.1"], metric=_metric(task))
    src = run_with_hooks(toy, corrupt, mask, capture=names).activations
    a = clean.activations
    d_embed = src["hook_embed"] - a["hook_embed"]  # [batch, pos, d]
    d_head = src["blocks.0.attn.hook_result"] - a["blocks.0.attn.hook_result"]  # [batch, pos, head, d]
    g_logits = clean.grads["blocks.1.hook_resid_post"]
    g_k = clean.grads["blocks.1.hook_k_input"]  # [batch, pos, kv_head, d]
    want = {
        "input->logits": (d_embed * g_logits).sum(-1).sum(0),  # zero: the prompts differ only before the query
        "L0H1->logits": (d_head[:, :, 1] * g_logits).sum(-1).sum(0),
        "L0H2->L1H3.k": (d_head[:, :, 2] * g_k[:, :, 3]).sum(-1).sum(0),
        "input->L1H0.k": (d_embed * g_k[:, :, 0]).sum(-1).sum(0),
    }
    names_of = c.unit_names()
    for edge, per_pos in want.items():
        got = c.position_scores[names_of.index(edge)]
        assert edge == "input->logits" or per_pos.abs().max() > 1e-4, edge
        torch.testing.assert_close(got, per_pos.float(), rtol=1e-4, atol=1e-5, msg=lambda s, e=edge: f"{e}: {s}")


@pytest.mark.parametrize(("method", "level"), [("eap", "edge"), ("eap-ig", "edge"), ("eap", "node")])
def test_position_scores_sum_to_the_scores_of_discover(toy: Model, task: object, method: str, level: str) -> None:
    c = discover_by_position(toy, task, method=method, level=level, steps=3)  # type: ignore[arg-type]
    ref = discover(toy, task, method=method, level=level, steps=3, progress=False)  # type: ignore[arg-type]
    assert c.position_scores.shape == (ref.n_units, task.input_ids.shape[1])  # type: ignore[union-attr,attr-defined]
    torch.testing.assert_close(c.position_scores.sum(1), ref.scores, rtol=1e-4, atol=1e-5)  # type: ignore[union-attr]
    torch.testing.assert_close(c.scores, ref.scores, rtol=1e-4, atol=1e-5)


def test_plot_by_position_draws_node_position_pairs(toy: Model, task: object) -> None:
    c = discover_by_position(toy, task).top(4)
    fig = c.plot(positions=True, max_edges=10)
    labels = list(fig.data[-1].text)  # the node trace is last
    ps = c.position_scores[c.selected]  # type: ignore[index]
    # the 10 (edge, position) pairs of largest |score| among the 4 selected edges, each drawn between its two nodes
    flat = ps.abs().flatten()
    top = torch.sort(flat, descending=True, stable=True).indices[:10]
    sel = c.selected.nonzero().flatten()
    expected_nodes = set()
    for i in top.tolist():
        e, p = divmod(i, ps.shape[1])
        s, r = c.unit_names()[int(sel[e])].split("->")
        expected_nodes |= {f"{s} @ {c.positions[p]}", f"{r.split('.')[0]} @ {c.positions[p]}"}
    assert set(labels) == expected_nodes
    hover = [h for t in fig.data[:-1] for h in (t.hovertext or []) if h]
    assert sum(" at " in str(h) for h in hover) == 10
    assert "by position" in fig.layout.title.text
    # without positions the plot is the usual one: nodes without positions
    assert not any(" @ " in str(t) for t in c.plot().data[-1].text)


def test_plot_by_position_without_position_scores_is_a_clear_error(toy: Model, task: object) -> None:
    c = discover(toy, task, method="eap", progress=False)
    with pytest.raises(BadInputError, match="discover_by_position"):
        c.plot(positions=True)


def test_saved_and_errors(toy: Model, task: object, tmp_path: object) -> None:
    c = discover_by_position(toy, task, level="node")
    back = Circuit.load(c.top(3).save(tmp_path / "c"))  # type: ignore[operator]
    assert torch.equal(back.position_scores, c.position_scores) and back.positions == c.positions  # type: ignore[arg-type]
    assert c.to_dict()["arrays"]["position_scores"]["axes"] == ["unit", "pos"]
    with pytest.raises(BadInputError, match="'eap' or 'eap-ig'"):
        discover_by_position(toy, task, method="exact")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"position_scores must be \[2, pos\]"):
        Circuit(scores=torch.zeros(2), selected=torch.zeros(2, dtype=torch.bool), edges=torch.tensor([[0, 0], [0, 1]]),
                senders=("input",), receivers=("L0H0.q", "logits"), position_scores=torch.zeros(3, 4))
