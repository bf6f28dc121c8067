"""interp.causal: distributed alignment search (planted truth on the IIT-trained models), learned subspaces as
interventions, interchange intervention training, and the shipped models' alignments."""

from __future__ import annotations

import pytest
import torch

from interp.causal import (
    AlignedSite,
    SubspaceResult,
    ablated_accuracy,
    das,
    hierarchical_equality,
    iia,
    load_iit_model,
    task_accuracy,
    toy_transformer,
    train_iit,
)
from interp.causal.engine import encode_prompts, last_logits, tail_logits
from interp.causal.task import answer_ids
from interp.errors import BadInputError, UnknownNameError
from interp.hooks import Project, SubspacePatch


@pytest.fixture(scope="module")
def equality():
    return load_iit_model("iit-equality")


@pytest.fixture(scope="module")
def eq_data(equality):
    return equality.task.sample(320, variables=["WX"], seed=7)


@pytest.mark.parametrize("name", ["iit-equality", "iit-ioi"])
def test_shipped_models_hold_their_alignment_and_ignore_the_rest(name: str) -> None:
    """IIA >= 0.98 for every aligned variable; strict IIT: resample-ablating every non-aligned site at once leaves
    the task accuracy unchanged."""
    shipped = load_iit_model(name)
    task, model = shipped.task, shipped.model
    acc = task_accuracy(model, task.sample(256, seed=99))
    assert acc >= 0.98
    for i, var in enumerate(shipped.alignment):
        res = iia(model, task.sample(256, variables=[var], seed=100 + i), alignment=shipped.alignment, progress=False)
        assert float(res.iia[0]) >= 0.98, (name, var, float(res.iia[0]))
    ablated = ablated_accuracy(model, task, sites=shipped.non_aligned, n=256, seed=5)
    assert ablated >= 0.98 and abs(ablated - acc) <= 0.02, (acc, ablated)
    # the recorded scores are what this test measures
    assert shipped.metrics["task_accuracy"] >= 0.98 and shipped.metrics["ablated_accuracy"] >= 0.98
    # and the aligned sites do matter: ablating them breaks the task
    assert ablated_accuracy(model, task, sites=[s for ss in shipped.alignment.values() for s in ss], n=256, seed=5) < 0.9


def test_das_recovers_the_planted_variable_and_nothing_elsewhere(equality, eq_data) -> None:
    """Planted truth: WX lives in mlp_out.0 at position 1. DAS from a random rotation finds it there and finds
    nothing (the null-intervention level, 0.5) where it is not."""
    train, held = eq_data.split(0.25, seed=0)
    kw = {"k": 1, "steps": 80, "lr": 1e-2, "batch_size": 32, "test": held, "seed": 0, "progress": False}
    aligned = das(equality.model, train, site=("mlp_out.0", 1), **kw)
    assert aligned.iia >= 0.95, aligned
    for site in (("mlp_out.0", 0), ("resid_post.0", 0)):
        other = das(equality.model, train, site=site, **kw)
        assert abs(other.iia - 0.5) <= 0.12, (site, other.iia)
    assert aligned.curve_loss[-1] < aligned.curve_loss[0]


@pytest.mark.parametrize("method", ["lowrank", "boundless"])
def test_das_variants(equality, eq_data, method: str) -> None:
    train, held = eq_data.split(0.25, seed=0)
    res = das(equality.model, train, site=AlignedSite("resid_post.0", positions=1), k=2, method=method, steps=80,
              lr=1e-2, test=held, progress=False)
    assert res.iia >= 0.9 and res.method == method
    if method == "boundless":
        assert res.boundary is not None and 1 <= res.k < 64 and res.k == round(res.boundary * 64)
    torch.testing.assert_close(res.basis @ res.basis.T, torch.eye(res.k), atol=1e-4, rtol=0)


def test_learned_subspace_is_an_intervention_and_a_probe(equality, eq_data) -> None:
    train, held = eq_data.split(0.25, seed=0)
    res = das(equality.model, train, site=("resid_post.0", 1), k=1, steps=60, lr=1e-2, test=held, progress=False)
    m = equality.model
    src_tr = m.run(torch.tensor(held.sources["WX"]), capture="resid_post.0").trace
    iv = res.intervention(src_tr)
    assert isinstance(iv, SubspacePatch) and iv.positions == 1
    logits = m.run(torch.tensor(held.base), interventions=[iv]).logits[:, -1]
    cand = answer_ids(m.dims.d_vocab, None, held.candidates)
    pred = cand[logits[:, cand].argmax(-1)]
    got = float((pred == answer_ids(m.dims.d_vocab, None, held.counterfactuals)).float().mean())
    assert got == pytest.approx(res.iia, abs=1e-9)  # the same interchange as the held-out score
    # the basis as a fixed subspace of an alignment scores the same
    again = iia(m, held, alignment={"WX": AlignedSite("resid_post.0", positions=1, basis=res.basis)}, progress=False)
    assert float(again.iia[0]) == pytest.approx(res.iia, abs=1e-9)
    assert isinstance(res.removal(), Project)
    coords = res.coordinates(src_tr["blocks.0.hook_resid_post"][:, 1])
    assert coords.shape == (len(held), 1)
    # the direction separates WX = True from WX = False, as a probe would
    wx = torch.tensor([x["a"] == x["b"] for x in held.source_inputs["WX"]])
    c = coords[:, 0]
    assert (c[wx].mean() - c[~wx].mean()).abs() > 2 * torch.cat([c[wx] - c[wx].mean(), c[~wx] - c[~wx].mean()]).std()


def test_tail_forward_is_exact(equality) -> None:
    m = equality.model
    ids = torch.tensor(equality.task.sample(16, seed=3).base)
    mask = torch.ones_like(ids)
    resid = m.run(ids, capture="resid_pre.1").trace["blocks.1.hook_resid_pre"]
    full = last_logits(m, ids, mask, [])
    torch.testing.assert_close(tail_logits(m, ids, mask, [], start_layer=1, resid=resid), full)
    assert not torch.allclose(tail_logits(m, ids, mask, [], start_layer=1, resid=torch.zeros_like(resid)), full)
    data = equality.task.sample(96, variables=["WX"], seed=4)
    a = das(m, data, site=("mlp_out.1", 4), k=2, steps=10, progress=False)
    b = das(m, data, site=("mlp_out.1", 4), k=2, steps=10, progress=False, tail=False)
    torch.testing.assert_close(a.basis, b.basis, atol=1e-5, rtol=0)


def test_das_bad_input(equality, eq_data) -> None:
    m = equality.model
    with pytest.raises(BadInputError, match=r"65 dimensions does not fit resid_post\.0, whose last axis has 64"):
        das(m, eq_data, site=("resid_post.0", 1), k=65, steps=1, progress=False)
    with pytest.raises(BadInputError, match="names 2 hook points"):
        das(m, eq_data, site=("resid_post", 1), steps=1, progress=False)
    with pytest.raises(UnknownNameError, match="DAS method 'pca'"):
        das(m, eq_data, site=("resid_post.0", 1), method="pca", steps=1, progress=False)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="slice"):
        das(m, eq_data, site=AlignedSite("resid_post.0", positions=slice(0, 2)), steps=1, progress=False)


def test_train_iit_runs_and_checks_its_arguments() -> None:
    task = hierarchical_equality(n_symbols=4)
    model = toy_transformer(vocab=7, n_ctx=5, d_model=16, n_heads=2, seed=0)
    before = [p.detach().clone() for p in model.hf.parameters()]
    res = train_iit(model, task, alignment={"WX": ("mlp_out.0", 1)}, non_aligned=[AlignedSite("z.0", heads="L0H1")],
                    aux={"WX": 1}, steps=4, batch_size=8, eval_every=2, eval_n=16, progress=False)
    assert res.strict and res.steps == (2, 4) and res.loss.shape == (2, 3) and res.iia.shape == (2, 1)
    assert res.non_aligned == ("z.0@all[L0H1]",) and res.ablated_accuracy is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.hf.parameters(), strict=True))
    assert all(not p.requires_grad for p in model.hf.parameters())
    for view in res.VIEWS:
        res.plot(view)
    with pytest.raises(BadInputError, match="non_aligned"):
        train_iit(model, task, alignment={"WX": ("mlp_out.0", 1)}, strict=True, steps=1, progress=False)
    with pytest.raises(BadInputError, match="lacks"):
        train_iit(model, task, alignment={"Q": ("mlp_out.0", 1)}, steps=1, progress=False)


def test_subspace_result_round_trip(tmp_path, equality, eq_data) -> None:
    res = das(equality.model, eq_data, site=AlignedSite("z.0", positions=1, heads=[0]), k=2, steps=5,
              progress=False)
    again = SubspaceResult.load(res.save(tmp_path / "s"))
    assert again.heads == (0,) and again.positions == 1 and torch.equal(again.basis, res.basis)
    assert again.site().label() == "blocks.0.attn.hook_z@1[0]/2d"
    ids, _ = encode_prompts(equality.model, eq_data.base[:4])
    assert equality.model.run(ids, interventions=[again.intervention(torch.zeros(4, 5, 4, 16))]).logits is not None


def test_sweep_over_subspace_sizes(equality, eq_data) -> None:
    from interp.causal import iia_sweep

    table = iia_sweep(equality.model, eq_data.subset(range(160)), component="resid_post", layers=[0],
                      positions=[0, 1], sizes=[0, 1], steps=40, lr=1e-2, progress=False)
    assert table.iia.shape == (1, 2, 2) and table.sizes == (0, 1) and table.method == "das"
    assert table.n == 48 and table.best()[:2] == (0, 1)  # held-out pairs; WX is at position 1
    assert float(table.iia[0, 1, 1]) >= 0.95 and abs(float(table.iia[0, 0, 1]) - 0.5) <= 0.2
    assert table.to_frame()["size"].tolist() == ["full", 1, "full", 1]
    for view in table.VIEWS:
        table.plot(view)
