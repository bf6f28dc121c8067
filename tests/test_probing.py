"""Probing against planted ground truth, hand computations and scikit-learn written out independently."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _v01 import summarize

from interp.errors import BadInputError, ModelMismatchError, UnknownNameError
from interp.hooks import Add, Project
from interp.probing import (
    ActivationSource,
    LabelledSet,
    LinearProbe,
    ProbeResult,
    align_char_labels,
    build_examples,
    control_labels,
    probe,
    rank_dimensions,
    scores,
    split_by_sequence,
    synthetic_trace,
    token_labels,
)
from interp.sites import UnknownHookError
from interp.trace import Manifest, Trace, TraceStore, capture, load_result

PLANTED = (3, 17, 40)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"


@pytest.fixture(scope="module")
def planted() -> tuple[Trace, list[list[int]]]:
    return synthetic_trace(n_seqs=60, seq_len=12, d=64, planted=PLANTED, n_layers=3, planted_layer=1, seed=0)


@pytest.mark.parametrize("ranking", ["f_stat", "mean_diff", "l1"])
def test_planted_feature_recovered_exactly(planted, ranking: str) -> None:
    tr, labels = planted
    res = probe(None, tr, labels=labels, hooks="resid_post", ks=[1, 2, 3, 4, 8], ranking=ranking, progress=False)
    assert res.hooks == tuple(f"blocks.{L}.hook_resid_post" for L in range(3))
    assert set(res.top_neurons(1, k=3)) == set(PLANTED)          # exactly the planted dimensions
    assert res.top_neurons(1, k=1)[0] in PLANTED                 # k = 1 localises one of them
    # Bayes accuracy with all 3 planted dims: Phi(1.5 * sqrt(3)) = 0.995; with one: Phi(1.5) = 0.933
    assert float(res.sparse_accuracy[1, 2]) > 0.97
    assert 0.88 < float(res.sparse_accuracy[1, 0]) < 0.98
    assert float(res.accuracy[1]) > 0.95
    # layers without the plant are at chance
    assert float(res.accuracy[0]) < 0.62 and float(res.accuracy[2]) < 0.62
    assert res.best_row() == 1 and res.best_hook() == "blocks.1.hook_resid_post"
    # the dense direction lives on the planted dims and points to class 1
    d = res.direction(1)
    assert set(d.abs().topk(3).indices.tolist()) == set(PLANTED) and (d[list(PLANTED)] > 0).all()
    assert float(d[list(PLANTED)].pow(2).sum()) > 0.6


def test_hook_spellings_select_the_same_rows(planted) -> None:
    tr, labels = planted
    kw = {"labels": labels, "ks": [1], "control": False, "progress": False}
    full = probe(None, tr, hooks="blocks.*.hook_resid_post", **kw)
    assert probe(None, tr, hooks="resid_post", **kw).hooks == full.hooks
    last = probe(None, tr, hooks="resid_post.-1", **kw)          # without a model: the last layer the trace holds
    assert last.hooks == ("blocks.2.hook_resid_post",)
    assert torch.equal(last.accuracy, full.accuracy[2:])
    assert probe(None, tr, hooks=[("resid_post", 1), "resid_post.0"], **kw).hooks == full.hooks[:2]
    # rows of the result are picked by layer or by any spelling of the hook
    assert full.row(1) == full.row("resid_post.1") == full.row("blocks.1.hook_resid_post") == 1
    assert full.row(-1) == full.row("resid_post.-1") == 2
    with pytest.raises(BadInputError, match="layer 7"):
        full.row(7)
    with pytest.raises(UnknownNameError, match=r"mlp_out\.1"):
        full.row("mlp_out.1")
    with pytest.raises(UnknownHookError, match="mlp_out"):
        probe(None, tr, hooks="mlp_out", **kw)


def test_split_by_sequence_has_no_leakage() -> None:
    groups = torch.arange(50).repeat_interleave(7)
    train, test = split_by_sequence(groups, test_size=0.3, seed=3)
    assert (train ^ test).all()
    assert not set(groups[train].tolist()) & set(groups[test].tolist())
    assert len(set(groups[test].tolist())) == 15


def test_sequence_identity_does_not_leak_into_the_test_score() -> None:
    # Every sequence carries a random label and a private random offset on all its tokens: a probe
    # can memorise sequences but nothing generalises. A split by token would score ~1.0; by sequence ~0.5.
    g = torch.Generator().manual_seed(0)
    n, T, d = 80, 10, 96
    seq_label = torch.randint(0, 2, (n,), generator=g)
    x = 0.1 * torch.randn(n, T, d, generator=g) + 3 * torch.randn(n, 1, d, generator=g)
    tr = _trace({"blocks.0.hook_resid_post": x})
    res = probe(None, tr, labels=seq_label.tolist(), hooks="resid_post.0", ks=[1], control=False, progress=False)
    assert float(res.train_accuracy[0]) > 0.99
    assert float(res.accuracy[0]) < 0.7


def _trace(acts: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> Trace:
    x = next(iter(acts.values()))
    ids = torch.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2]) % 7
    mask = torch.ones_like(ids) if mask is None else mask
    man = Manifest("synthetic", "synthetic", "float32", {k: list(v.shape) for k, v in acts.items()})
    return Trace(input_ids=ids, attention_mask=mask, tokens=tuple(tuple(map(str, r)) for r in ids.tolist()),
                 activations=acts, manifest=man)


def test_align_char_labels_by_hand() -> None:
    tokens = ["Items", ":", " apple", ",", " river", "."]
    text = "".join(tokens)
    labels = [-1] * 6 + [0] * 6 + [-1] + [1] * 6 + [-1]
    assert len(labels) == len(text)
    assert align_char_labels(tokens, labels) == [-1, -1, 0, -1, 1, -1]
    assert token_labels([tokens], [labels]) == [[None, None, 0, None, 1, None]]
    assert token_labels([["a", "b"]], ["x"]) == [["x", "x"]]                   # per-sequence
    assert token_labels([["ab", "c"]], [[5, None]]) == [[5, None]]             # per-token
    assert token_labels([["ab", "c"]], [np.array([5, 6])]) == [[5, 6]]         # arrays are lists
    with pytest.raises(BadInputError, match="fit neither"):
        token_labels([["ab", "cd"]], [[1, 2, 3]])
    with pytest.raises(BadInputError, match="run past"):
        align_char_labels(["abc", "def"], [1, 1, 1, 1, 1])


def test_positions_by_hand() -> None:
    labels = [["a", "b", "c"], ["d", None]]
    ex = build_examples([3, 2], labels)
    assert ex.rows.tolist() == [0, 1, 2, 3] and ex.labels == ["a", "b", "c", "d"]
    assert build_examples([3, 2], labels, positions=-3 + 1).rows.tolist() == [1, 3]     # -2: each sequence's own
    assert build_examples([3, 2], labels, positions=[0, -1]).rows.tolist() == [0, 2, 3]  # seq 1's last has no label
    assert build_examples([3, 2], labels, positions=slice(1, None)).rows.tolist() == [1, 2]
    pooled = build_examples([3, 2], labels, positions=slice(1, None), pool="mean")   # seq 1's span ends at None
    assert pooled.rows.tolist() == [1, 2] and pooled.example_of_row.tolist() == [0, 0] and pooled.labels == ["c"]
    x = torch.arange(10.0).reshape(1, 5, 2).repeat(1, 1, 1)
    x = torch.stack([x[0], x[0] + 100])                                           # [2, 5, 2]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    src = ActivationSource(_trace({"blocks.0.hook_resid_post": x}, mask))
    ex = build_examples(src.lengths, [["p"] * 3, ["q"] * 5], pool="mean")
    feats = src.features("blocks.0.hook_resid_post", ex)
    assert torch.allclose(feats, torch.stack([x[0, :3].mean(0), x[1].mean(0)]))
    last = src.features("blocks.0.hook_resid_post", build_examples(src.lengths, [["p"] * 3, ["q"] * 5], positions=-1))
    assert torch.equal(last, torch.stack([x[0, 2], x[1, 4]]))
    with pytest.raises(BadInputError, match="'first'"):
        build_examples([3], [["a"] * 3], positions="first")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="-1"):
        build_examples([3], [["a"] * 3], positions="last")  # type: ignore[arg-type]


def test_negative_positions_in_a_padded_batch() -> None:
    # right-padded: -1 is each sequence's last REAL token, never padding; an oracle gathers it by hand
    lengths = [12, 5, 9, 3] * 10
    tr, labels = synthetic_trace(n_seqs=40, seq_len=12, d=16, planted=(4,), lengths=lengths, seed=2)
    x = tr["resid_post.0"]
    for pos in (-1, -3, 0):
        src = ActivationSource(tr)
        ex = build_examples(src.lengths, token_labels(src.tokens, labels), positions=pos, token_ids=src.token_ids)
        want = torch.stack([x[i, n + pos if pos < 0 else pos] for i, n in enumerate(lengths)])
        assert torch.equal(src.features("blocks.0.hook_resid_post", ex), want)
        assert ex.labels == [lab[n + pos if pos < 0 else pos] for lab, n in zip(labels, lengths, strict=True)]
        idx = [n + pos if pos < 0 else pos for n in lengths]
        assert ex.token_ids.tolist() == [int(tr.input_ids[i, j]) for i, j in enumerate(idx)]
    res = probe(None, tr, labels=labels, hooks="resid_post.0", positions=-1, ks=[1], control=False, progress=False)
    assert res.positions == "-1" and res.example_labels.shape == (40,)
    # the planted dimension is read at the last real token of every sequence
    assert res.top_neurons(0) == [4]
    # a position outside a sequence's real tokens names the sequence
    with pytest.raises(BadInputError, match="sequence 3"):
        probe(None, tr, labels=labels, hooks="resid_post.0", positions=-4, progress=False)
    with pytest.raises(BadInputError, match="sequence 1"):
        probe(None, tr, labels=labels, hooks="resid_post.0", positions=[0, 7], progress=False)


def test_linear_probe_matches_sklearn_pipeline() -> None:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)) * rng.uniform(0.1, 10, size=10) + rng.normal(size=10)
    y = (X[:, 1] / 5 + rng.normal(size=300) > 0.8).astype(int)                   # imbalanced
    ref = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=500)).fit(X, y)
    probe_ = LinearProbe()
    ours = probe_.fit(torch.from_numpy(X), y)
    assert ours is probe_                                                          # fit returns the estimator
    assert np.array_equal(ours.predict(X), ref.predict(X))
    assert np.allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-6)
    yr = X @ rng.normal(size=10)
    ref_r = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, yr)
    ours_r = LinearProbe(task="regression", alpha=2.0).fit(X, yr)
    assert np.allclose(ours_r.predict(X), ref_r.predict(X))
    # direction_ in activation space: w / scale, normalised
    w = ref[-1].coef_[0] / ref[0].scale_
    assert np.allclose(ours.direction_.numpy(), w / np.linalg.norm(w), atol=1e-5)
    # learned state ends in "_"; an unfitted probe says so
    assert {"mean_", "scale_", "coef_", "intercept_", "classes_", "direction_"} <= set(vars(ours))
    assert not any(k.endswith("_") for k in vars(LinearProbe()))
    with pytest.raises(BadInputError, match="not fitted"):
        LinearProbe().predict(X)
    with pytest.raises(BadInputError, match="'clustering'"):
        LinearProbe(task="clustering")  # type: ignore[arg-type]


def test_array_utilities_take_tensors_and_arrays() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 20, generator=g)
    y = (X[:, 7] + 0.1 * X[:, 3] > 0).long()
    for method in ("f_stat", "mean_diff", "l1"):
        a = rank_dimensions(X, y, method=method)  # type: ignore[arg-type]
        b = rank_dimensions(X.numpy(), y.tolist(), method=method)  # type: ignore[arg-type]
        assert torch.equal(a, b) and int(a[0]) == 7
    # f_stat is the ANOVA F statistic, written out: between-class over within-class variance
    s = scores(X, y, method="f_stat")
    x, yy = X.double().numpy(), y.numpy()
    groups = [x[yy == c] for c in (0, 1)]
    grand = x.mean(0)
    between = sum(len(gr) * (gr.mean(0) - grand) ** 2 for gr in groups) / 1
    within = sum(((gr - gr.mean(0)) ** 2).sum(0) for gr in groups) / (len(x) - 2)
    assert np.allclose(s, between / within, rtol=1e-4)
    with pytest.raises(UnknownNameError, match="'random'"):
        scores(X, y, method="random")  # type: ignore[arg-type]


def test_control_task_and_selectivity(planted) -> None:
    ids = torch.tensor([4, 4, 9, 1, 9, 4])
    c = control_labels(ids, np.array([0, 1, 0, 1, 1, 0]), seed=2)
    assert c[0] == c[1] == c[5] and c[2] == c[4]
    assert np.array_equal(control_labels(ids.numpy(), torch.tensor([0, 1, 0, 1, 1, 0]), seed=2), c)
    tr, labels = planted
    res = probe(None, tr, labels=labels, hooks="resid_post.1", ks=[1], progress=False)
    assert torch.allclose(res.selectivity, res.accuracy - res.control_accuracy)
    # control labels follow the random token ids (50 types), which the activations do not encode
    assert float(res.control_accuracy[0]) < 0.75 and float(res.selectivity[0]) > 0.25


def test_cv_regression_and_multiclass() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, 16, generator=g)
    target = (2 * x[..., 5] - x[..., 9]).tolist()
    res = probe(None, _trace({"blocks.0.hook_resid_post": x}), labels=target, task="regression", ks=[1, 2], cv=4,
                ranking="mean_diff", control=False, progress=False)
    assert float(res.accuracy[0]) > 0.99 and float(res.cv_mean[0]) > 0.99
    assert set(res.top_neurons(0, k=2)) == {5, 9}
    cls = torch.randint(0, 3, (40, 6), generator=g)
    x2 = torch.randn(40, 6, 16, generator=g)
    x2[..., 2] += 3 * (cls == 1)
    x2[..., 7] += 3 * (cls == 2)
    res2 = probe(None, _trace({"blocks.0.hook_resid_post": x2}), labels=cls.tolist(), ks=[1, 2, 4], progress=False)
    assert set(res2.top_neurons(0, k=2)) == {2, 7} and res2.classes == ("0", "1", "2")
    assert res2.directions.shape == (1, 3, 16) and float(res2.sparse_accuracy[0, 1]) > 0.9
    # removing a multiclass probe removes its whole subspace (one direction per class)
    proj = res2.removal(0)
    assert proj.directions.shape == (3, 16)
    out = proj.apply(torch.randn(2, 5, 16, generator=g))
    assert float((out @ res2.directions[0].T).abs().max()) < 1e-5


def test_store_matches_trace_and_streams_by_shard(tiny_llama, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 100, (int(n),), generator=g))
             for n in torch.randint(4, 10, (24,), generator=g)]
    labels = [int("w7" in t.split()[-2:]) for t in texts]                          # arbitrary per-sequence label
    labels[:2] = [0, 1]
    st = capture(tiny_llama, texts, out=tmp_path / "st", hooks="resid_post", batch_size=5, progress=False)
    assert len(st.shards()) == 5
    tr = TraceStore(tmp_path / "st").trace()
    for positions, pool in ((None, None), (-1, None), (None, "mean")):
        a = probe(None, st, labels=labels, positions=positions, pool=pool, ks=[1, 2], progress=False)
        b = probe(None, tr, labels=labels, positions=positions, pool=pool, ks=[1, 2], progress=False)
        c = probe(tiny_llama, st, labels=labels, positions=positions, pool=pool, ks=[1, 2], progress=False)
        assert torch.allclose(a.accuracy, b.accuracy) and torch.equal(a.neurons, b.neurons)
        assert torch.allclose(a.directions, b.directions, atol=1e-5)
        assert torch.equal(a.accuracy, c.accuracy) and torch.equal(a.directions, c.directions)
    # streaming: every shard read asks for one hook only, and hooks are visited one after the other
    calls: list[list[str]] = []
    real = st.read_shard
    st.read_shard = lambda info, hooks=None: calls.append(list(hooks)) or real(info, hooks)  # type: ignore[method-assign]
    probe(tiny_llama, st, labels=labels, positions=-1, ks=[1], control=False, progress=False)
    assert all(len(c) == 1 for c in calls) and len(calls) == 2 * len(st.shards())
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    with pytest.raises(UnknownHookError, match="holds no hook"):
        probe(None, st, labels=labels, hooks="mlp_out")
    with pytest.raises(UnknownNameError, match="'label'"):
        probe(None, st, labels="label")


def test_model_runs_texts_and_fills_missing_hooks(tiny_llama) -> None:
    g = torch.Generator().manual_seed(1)
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 60, (int(n),), generator=g))
             for n in torch.randint(3, 9, (20,), generator=g)]
    labels = [i % 2 for i in range(20)]
    kw = {"labels": labels, "positions": -1, "ks": [1, 2], "progress": False}
    direct = probe(tiny_llama, texts, hooks="mlp_out", **kw)
    assert direct.hooks == ("blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out")
    held = tiny_llama.run(texts, capture="mlp_out").trace
    assert torch.equal(probe(None, held, hooks="mlp_out", **kw).directions, direct.directions)
    # a trace without the hooks is run again on its tokens; with them it is read as it is
    other = tiny_llama.run(texts, capture="resid_post.0").trace
    assert torch.equal(probe(tiny_llama, other, hooks="mlp_out", **kw).directions, direct.directions)
    with pytest.raises(BadInputError, match="pattern"):
        probe(tiny_llama, texts, hooks="pattern.0", **kw)
    with pytest.raises(BadInputError, match="Trace or a TraceStore"):
        probe(None, texts, hooks="mlp_out", **kw)
    synthetic, syn_labels = synthetic_trace(n_seqs=4, seq_len=3, d=64, planted=(1,))
    with pytest.raises(ModelMismatchError):
        probe(tiny_llama, synthetic, labels=syn_labels, hooks="resid_post.0", progress=False)


def test_intervention_and_removal_edit_the_model_run(tiny_llama) -> None:
    g = torch.Generator().manual_seed(2)
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 60, (6,), generator=g)) for _ in range(24)]
    labels = [int(t.split()[-1][1:]) % 2 for t in texts]
    res = probe(tiny_llama, texts, labels=labels, hooks="resid_post.0", positions=-1, ks=[1], progress=False)
    add = res.intervention(0, scale=2.5, positions=-1)
    assert isinstance(add, Add) and add.site.name == "blocks.0.hook_resid_post" and add.scale == 2.5
    default = res.intervention("resid_post.0")
    assert default.scale == pytest.approx(4.0 * float(res.projection_std[0]))
    base = tiny_llama.run(texts[:3], capture="resid_post.0").trace["resid_post.0"]
    steered = tiny_llama.run(texts[:3], capture="resid_post.0", interventions=[add]).trace["resid_post.0"]
    assert torch.allclose(steered[:, -1] - base[:, -1], 2.5 * res.direction(0).expand(3, -1), atol=1e-5)
    assert torch.equal(steered[:, :-1], base[:, :-1])
    rem = res.removal(0)
    assert isinstance(rem, Project) and rem.scale == 0.0
    removed = tiny_llama.run(texts[:3], capture="resid_post.0", interventions=[rem]).trace["resid_post.0"]
    assert float((removed @ res.direction(0)).abs().max()) < 1e-4
    d = res.direction(0)
    assert torch.allclose(removed, base - (base @ d)[..., None] * d, atol=1e-5)  # the rest is untouched
    with pytest.raises(BadInputError, match="cls"):
        res.intervention(0, cls=3)


def test_result_roundtrip_frame_views_and_surface(planted, tmp_path) -> None:
    tr, labels = planted
    res = probe(None, tr, labels=labels, ks=[1, 2, 4], cv=3, progress=False)
    back = ProbeResult.load(res.save(tmp_path / "r"))
    assert back.hooks == res.hooks and back.ks == res.ks and back.positions == "all" and back.pool is None
    for name in ProbeResult.AXES:
        assert torch.equal(getattr(back, name), getattr(res, name)), name
    df = res.to_frame()
    row = df[(df.metric == "sparse_accuracy") & (df.layer == "1") & (df.k == 4)]
    assert float(row.value.iloc[0]) == pytest.approx(float(res.sparse_accuracy[1, 2]))
    for view in ProbeResult.VIEWS:
        assert len(res.plot(view).data) >= 2
    assert res.plot("k", layer=2).layout.title.text.startswith("k-sparse probes at blocks.2.hook_resid_post")
    with pytest.raises(UnknownNameError, match="'bars'"):
        res.plot("bars")
    d = res.to_dict()
    json.dumps(d)
    assert d["arrays"]["sparse_accuracy"]["labels"] == {"layer": ["0", "1", "2"], "k": [1, 2, 4]}
    assert "top_activations" not in d["arrays"] and d["attributes"]["positions"] == "all"
    text = repr(res)
    assert len(text) < 300 and "best='resid_post.1'" in text and "tensor(" not in text
    assert "views: layers, k, hist" in res.summary()
    with pytest.raises(UnknownNameError, match=r"blocks\.9\.hook_resid_post"):
        res.direction("blocks.9.hook_resid_post")
    with pytest.raises(BadInputError, match="bad k 0"):
        res.top_neurons(1, k=0)


def test_bad_arguments_name_the_value(planted) -> None:
    tr, labels = planted
    kw = {"labels": labels, "hooks": "resid_post.0", "progress": False}
    for bad, match in (({"task": "clustering"}, "'clustering'"), ({"ranking": "random"}, "'random'"),
                       ({"ks": [4, 2]}, r"\[4, 2\]"), ({"pool": "max"}, "'max'"), ({"positions": "last"}, "'last'"),
                       ({"positions": 12}, "position 12"), ({"cv": 1}, "cv 1"), ({"test_size": 1.5}, "1.5")):
        with pytest.raises(BadInputError, match=match):
            probe(None, tr, **kw, **bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="at least 2 classes"):
        probe(None, tr, labels=[[0] * 12] * 60, progress=False)
    with pytest.raises(BadInputError, match="label entries"):
        probe(None, tr, labels=[0, 1], progress=False)
    with pytest.raises(BadInputError, match="'l1' is for classification"):
        probe(None, tr, labels=labels, task="regression", ranking="l1")


def test_labelled_sets_ship_and_align() -> None:
    for name, n in (("python_prose", 320), ("digits", 300), ("list_position", 300)):
        ds = LabelledSet.load(name)
        assert len(ds) == n and all(len(m["char_labels"]) == len(t) for t, m in zip(ds.texts, ds.metadata, strict=True))
    pp = LabelledSet.load("python_prose")
    assert set(pp.column("label")) == {"python", "prose"}
    assert sum(lab == "python" for lab in pp.column("label")) == 160
    dg = LabelledSet.load("digits")
    t, cl = dg.texts[0], dg.metadata[0]["char_labels"]
    assert [c for c, v in zip(t, cl, strict=True) if v == 1] == [c for c in t if c.isdigit()]
    with pytest.raises(UnknownNameError, match="python_prose"):
        LabelledSet.load("python_pros")
    with pytest.raises(BadInputError, match=r"nope\.parquet"):
        LabelledSet.load("nope.parquet")
    with pytest.raises(UnknownNameError, match="'labels'"):
        pp.column("labels")


def test_v01_fixture_loads_with_its_values() -> None:
    path = FIXTURES / "ProbeResult"
    expected = json.loads((path / "expected.json").read_text())
    res = ProbeResult.load(path)
    assert expected["rel"] == 0.0
    for expr, want in expected["tensors"].items():
        assert summarize(getattr(res, expr.removeprefix("obj."))) == want, expr
    renamed = {"obj.position": None, "obj.best_layer()": None}  # checked below under their new names
    for expr, want in expected["values"].items():
        if expr in renamed:
            continue
        got = getattr(res, expr.removeprefix("obj."))
        assert json.loads(json.dumps(list(got) if isinstance(got, tuple) else got)) == want, expr
    # v0.1's position="all" is positions="all" without pooling; best_layer() (a row index) is best_row()
    assert expected["values"]["obj.position"] == "all" and res.positions == "all" and res.pool is None
    assert res.best_row() == expected["values"]["obj.best_layer()"]
    # the loaded result works: views, an intervention; interp.load_result finds the class
    assert len(res.plot("layers").data) >= 2 and res.intervention(0).site.name == "blocks.0.hook_resid_post"
    assert not math.isnan(float(res.cv_mean[0]))
    again = load_result(path)
    assert isinstance(again, ProbeResult) and torch.equal(again.directions, res.directions)


def test_v01_position_spellings_upgrade(tmp_path) -> None:
    from interp.probing.result import _from_v0

    for old, new in (("all", ("all", None)), ("last", ("-1", None)), ("mean", ("all", "mean")), ("-2", ("-2", None)),
                     ("slice(1, None, None)", ("1:", "mean")), ("slice(None, -1, 2)", (":-1:2", "mean"))):
        fields: dict = {"position": old}
        _from_v0({}, fields)
        assert (fields["positions"], fields["pool"]) == new and "position" not in fields


@pytest.mark.slow
def test_smollm2_python_vs_prose(smollm2) -> None:
    ds = LabelledSet.load("python_prose").select(64)
    hooks = [f"resid_post.{L}" for L in (0, 6, 12)]
    tr = smollm2.run(list(ds.texts), capture=hooks, metadata=ds.metadata, max_tokens=32, stop_early=True).trace
    res = probe(smollm2, tr, labels="label", hooks=hooks, ks=[1, 4], n_threads=1, progress=False)
    # recorded: held-out token accuracy 0.95+ from layer 4 on (see docs/probing.md); the control task stays lower
    assert float(res.accuracy.max()) > 0.93
    assert float(res.selectivity[res.best_row()]) > 0.2
    mean = probe(None, tr, labels="label", hooks="resid_post", pool="mean", ks=[1, 4], control=False, n_threads=1,
                 progress=False)
    assert float(mean.accuracy.max()) > 0.95
