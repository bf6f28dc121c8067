"""The tuned lens: training from a store on tiny models, against direct computations; the shipped SmolLM2 lens."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_lens import check_v01_fixture

import interp
from interp.errors import BadInputError, CorruptStoreError, ModelMismatchError, SchemaVersionError
from interp.lens import LensComparison, TunedLens, compare_lenses, fast_matmul_dtype, logit_lens
from interp.lens import tuned_lens as tuned_lens_module
from interp.models import Model
from interp.trace import TraceStore, capture

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "lenses" / "smollm2-135m"


def _texts(model: Model, n: int, seed: int, length: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.dims.d_vocab, 100), (n, length), generator=g)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Model]) -> TraceStore:
    model = tiny_models["llama"]
    ids = _texts(model, 48, seed=0)
    texts = model.tokenizer.batch_decode(ids)
    return capture(model, texts, out=tmp_path_factory.mktemp("lens") / "store", hooks="resid_post", batch_size=8,
                   progress=False)


def _fit(model: Model, data: object, **kw) -> TunedLens:
    kw = {"steps": 40, "batch_size": 64, "lr": 3e-3, "matmul_dtype": torch.float32, "progress": False} | kw
    return TunedLens(**kw).fit(model, data)


def test_untrained_lens_is_the_logit_lens(tiny_llama: Model, store: TraceStore) -> None:
    lens = _fit(tiny_llama, store, steps=0)
    tr = store.trace(range(4))
    a, b = logit_lens(tiny_llama, tr, target=5), lens.apply(tiny_llama, tr, target=5)
    assert b.lens == "tuned" and a.lens == "logit"
    torch.testing.assert_close(b.kl_to_final, a.kl_to_final, equal_nan=True)
    assert torch.equal(a.top_ids, b.top_ids)


def test_first_step_loss_is_the_logit_lens_kl(tiny_llama: Model, store: TraceStore) -> None:
    """At identity the training loss is the mean logit-lens KL of the batch (computed by logit_lens, per token)."""
    lens = _fit(tiny_llama, store, steps=1, batch_size=store.n_tokens)  # one batch = every row of the store
    kl = logit_lens(tiny_llama, store.trace()).kl_to_final[:-1]  # [layer, batch, pos], NaN at padding
    want = float(torch.nanmean(kl.flatten(1), dim=1).mean())
    assert lens.history_[0] == pytest.approx(want, rel=1e-4)


def test_training_beats_the_logit_lens_on_held_out_tokens(tiny_llama: Model, store: TraceStore) -> None:
    lens = _fit(tiny_llama, store)
    assert lens.history_[-1] < 0.7 * lens.history_[0]
    held_out = tiny_llama.tokenizer.batch_decode(_texts(tiny_llama, 12, seed=99))
    cmp = compare_lenses(tiny_llama, held_out, lens=lens, progress=False)
    assert cmp.tuned_better_before_last(), (cmp.kl_logit, cmp.kl_tuned)
    assert float(cmp.kl_tuned[-1]) == pytest.approx(float(cmp.kl_logit[-1]), abs=1e-6)  # last layer: identity
    assert cmp.n_tokens == 12 * 24
    # the same tokens as one trace, as token ids, and as a store (read a batch of sequences at a time)
    ids = _texts(tiny_llama, 12, seed=99)
    held_store = capture(tiny_llama, held_out, out=store.path.parent / "held", hooks="resid_post", progress=False)
    for other in (tiny_llama.run(ids, capture="resid_post").trace, ids, held_store):
        again = compare_lenses(tiny_llama, other, lens=lens, batch_size=5, progress=False)
        assert again.n_tokens == cmp.n_tokens
        torch.testing.assert_close(again.kl_tuned, cmp.kl_tuned, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(again.kl_logit, cmp.kl_logit, rtol=1e-4, atol=1e-5)


def test_least_squares_init_matches_weighted_lstsq(tiny_llama: Model, store: TraceStore) -> None:
    lens = _fit(tiny_llama, store, steps=0, init="least_squares", ridge=0.0)
    n = tiny_llama.dims.n_layers
    tr = store.trace()
    real = tr.attention_mask.bool()
    y = tr[f"blocks.{n - 1}.hook_resid_post"][real].double()
    w = 1 / y.norm(dim=-1, keepdim=True)  # sqrt of the 1/|y|^2 row weights
    for L in range(n - 1):
        x = tr[f"blocks.{L}.hook_resid_post"][real].double()
        X = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        sol = torch.linalg.lstsq(X * w, y * w).solution
        got = torch.cat([lens.weight_[L].double() + torch.eye(x.shape[1], dtype=torch.float64), lens.bias_[L, None]])
        torch.testing.assert_close(got, sol, rtol=1e-3, atol=1e-3)
    assert lens.n_tokens_init_ == store.n_tokens


def test_fit_takes_any_inputs(tiny_llama: Model, store: TraceStore, tmp_path: Path) -> None:
    """A trace, texts, or a store without resid_post are read (or run) into memory; the closed-form fit is the
    same as on the store of the same tokens."""
    ref = _fit(tiny_llama, store, steps=0, init="least_squares")
    trace = store.trace()
    partial = capture(tiny_llama, list(tiny_llama.tokenizer.batch_decode(_texts(tiny_llama, 48, seed=0))),
                      out=tmp_path / "partial", hooks="resid_post.0", batch_size=8, progress=False)
    for data in (trace, partial):
        lens = _fit(tiny_llama, data, steps=0, init="least_squares")
        assert lens.n_tokens_init_ == store.n_tokens
        torch.testing.assert_close(lens.weight_, ref.weight_, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(lens.bias_, ref.bias_, rtol=1e-4, atol=1e-4)
    few = _fit(tiny_llama, ["w1 w2 w3", "w4 w5"], steps=3, batch_size=4)  # fewer rows than a batch: epochs carry
    assert len(few.history_) == 3 and few.n_tokens_ == 12


def test_seeded_training_is_deterministic(tiny_llama: Model, store: TraceStore) -> None:
    a, b = _fit(tiny_llama, store, steps=5), _fit(tiny_llama, store, steps=5)
    c = _fit(tiny_llama, store, steps=5, seed=1)
    assert torch.equal(a.weight_, b.weight_) and a.history_ == b.history_
    assert not torch.equal(a.weight_, c.weight_)


def test_save_load_round_trip(tiny_llama: Model, store: TraceStore, tmp_path: Path) -> None:
    lens = _fit(tiny_llama, store, steps=3)
    lens.save(tmp_path / "lens")
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert meta["class"] == "TunedLens" and meta["schema_version"] == 1 and meta["interp_version"] == interp.__version__
    assert meta["fingerprint"] == tiny_llama.fingerprint and len(meta["history"]) == 3 and meta["hook"] == "resid_post"
    back = TunedLens.load(tmp_path / "lens")
    assert torch.equal(back.weight_, lens.weight_) and torch.equal(back.bias_, lens.bias_)
    assert back.history_ == lens.history_ and back.steps == 3 and back.matmul_dtype_ == torch.float32
    cmp = compare_lenses(tiny_llama, ["hello world"], lens=tmp_path / "lens", progress=False)
    cmp.save(tmp_path / "cmp")
    again = LensComparison.load(tmp_path / "cmp")
    assert torch.equal(again.kl_tuned, cmp.kl_tuned) and list(again.to_frame().columns) == ["layer", "kl_logit",
                                                                                           "kl_tuned"]
    assert repr(again) == repr(cmp) and "tensor(" not in repr(cmp) and cmp.plot().data
    d = json.loads(json.dumps(cmp.to_dict()))
    assert d["arrays"]["kl_tuned"]["axes"] == ["layer"] and d["attributes"]["n_tokens"] == cmp.n_tokens


def test_saved_lens_versions(tiny_llama: Model, store: TraceStore, tmp_path: Path) -> None:
    lens = _fit(tiny_llama, store, steps=1)
    path = lens.save(tmp_path / "lens")
    meta = json.loads((path / "lens.json").read_text())
    (path / "lens.json").write_text(json.dumps({**meta, "schema_version": 2, "interp_version": "9.0"}))
    with pytest.raises(SchemaVersionError, match=r"schema version 2, written by interp 9\.0.*upgrade interp"):
        TunedLens.load(path)
    (path / "lens.json").write_text(json.dumps({**meta, "config": {**meta["config"], "new_knob": 3}, "extra": 1}))
    assert TunedLens.load(path).steps == 1  # unknown keys are dropped
    (path / "lens.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match="not valid JSON"):
        TunedLens.load(path)
    (path / "lens.json").write_text(json.dumps({**meta, "class": "SparseAutoencoder"}))
    with pytest.raises(BadInputError, match="holds a SparseAutoencoder, not a TunedLens"):
        TunedLens.load(path)


def test_matmul_dtype_choice_and_its_record(tiny_llama: Model, store: TraceStore, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``matmul_dtype=None`` asks :func:`fast_matmul_dtype` (bf16 only where a timer says it is faster, bf16 on
    GPUs that support it), trains the KL steps in that dtype, and records it; no timing happens in this test."""
    times = {torch.bfloat16: 1.0, torch.float32: 3.0}
    assert fast_matmul_dtype("cpu", timer=times.__getitem__) == torch.bfloat16
    times = {torch.bfloat16: 90.0, torch.float32: 1.0}  # bf16 emulated on an AVX2-only CPU
    assert fast_matmul_dtype("cpu", timer=times.__getitem__) == torch.float32
    times = {torch.bfloat16: 0.8, torch.float32: 1.0}  # within timing noise: never risk the emulated bf16
    assert fast_matmul_dtype("cpu", timer=times.__getitem__) == torch.float32
    noisy = iter([5.0, 2.0, 1.0])  # float32 slowed once by a busy machine, then timed again: 1.0 vs bf16 2.0
    assert fast_matmul_dtype("cpu", timer=lambda d: next(noisy)) == torch.float32
    assert fast_matmul_dtype("meta", timer=lambda d: 0.0 if d == torch.bfloat16 else 1.0) == torch.float32
    for supported, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert fast_matmul_dtype("cuda") == want

    asked: list[torch.device] = []

    def choose(device: torch.device) -> torch.dtype:
        asked.append(device)
        return torch.bfloat16

    monkeypatch.setattr(tuned_lens_module, "fast_matmul_dtype", choose)
    auto = _fit(tiny_llama, store, steps=2, matmul_dtype=None)
    assert asked == [tiny_llama.device] and auto.matmul_dtype is None and auto.matmul_dtype_ == torch.bfloat16
    bf16 = _fit(tiny_llama, store, steps=2, matmul_dtype=torch.bfloat16)
    fp32 = _fit(tiny_llama, store, steps=2, matmul_dtype=torch.float32)
    assert auto.history_ == bf16.history_ and auto.history_ != fp32.history_  # the steps ran in the chosen dtype
    assert fp32.matmul_dtype_ == torch.float32 and len(asked) == 1  # an explicit dtype asks nobody
    meta = json.loads(auto.save(tmp_path / "lens").joinpath("lens.json").read_text())
    assert meta["config"]["matmul_dtype"] is None and meta["matmul_dtype_used"] == "bfloat16"
    back = TunedLens.load(tmp_path / "lens")
    assert back.matmul_dtype is None and back.matmul_dtype_ == torch.bfloat16
    assert _fit(tiny_llama, store, steps=0, matmul_dtype=None).matmul_dtype_ is None and len(asked) == 1


def test_bad_inputs(tiny_llama: Model, tiny_gpt2: Model, store: TraceStore, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"bad init 'random'; valid: 'identity' or 'least_squares'"):
        TunedLens(init="random")
    with pytest.raises(BadInputError, match=r"bad steps -1; valid: an int >= 0"):
        TunedLens(steps=-1)
    with pytest.raises(BadInputError, match=r"bad lr 0; valid"):
        TunedLens(lr=0)
    with pytest.raises(BadInputError, match="not fitted"):
        TunedLens().translate(torch.zeros(2, 4), 0)
    with pytest.raises(ModelMismatchError):
        TunedLens(steps=0).fit(tiny_gpt2, store)
    lens = _fit(tiny_llama, store, steps=0)
    with pytest.raises(BadInputError, match=r"bad layer 2; valid: -2\.\.1"):
        lens.translate(torch.zeros(2, 64), 2)
    with pytest.raises(ModelMismatchError, match="trained for"):
        lens.apply(tiny_gpt2, "hello")
    with pytest.raises(BadInputError, match="no tuned lens in"):
        TunedLens.load(tmp_path)
    with pytest.raises(BadInputError, match="no tuned lens is saved for 'tiny-llama'"):
        compare_lenses(tiny_llama, ["w1 w2"], lens="auto")
    with pytest.raises(BadInputError, match="no inputs"):
        compare_lenses(tiny_llama, [], lens=lens)
    with pytest.raises(BadInputError, match=r"bad batch_size 0"):
        compare_lenses(tiny_llama, ["w1 w2"], lens=lens, batch_size=0)


def test_v01_fixtures_load(tiny_llama: Model) -> None:
    """Lenses and comparisons saved by interp 0.1 (schema 0, float32 and float16 weights) load; a v0.1 lens
    reads through today's apply."""
    lens = check_v01_fixture("TunedLens")
    half = check_v01_fixture("TunedLens_float16")
    assert lens.weight_.dtype == half.weight_.dtype == torch.float32
    torch.testing.assert_close(half.weight_, lens.weight_.half().float())
    assert lens.matmul_dtype_ == torch.float32  # what its KL steps ran in (recorded as matmul_dtype_used)
    cmp = check_v01_fixture("LensComparison")
    assert cmp.tuned_better_before_last() and cmp.plot("kl").data
    translated = lens.translate(torch.ones(3, 64), 0)
    torch.testing.assert_close(translated, torch.ones(3, 64) + torch.ones(3, 64) @ lens.weight_[0] + lens.bias_[0])


@pytest.mark.slow
def test_shipped_smollm2_lens_beats_the_logit_lens_at_every_layer(smollm2: Model) -> None:
    """The lens in data/ (trained on the corpus' train split) on held-out paragraphs of the corpus."""
    sys.path.insert(0, str(REPO / "data" / "lenses"))
    from corpus import corpus_chunks

    lens = TunedLens.load(SHIPPED)
    assert json.loads((SHIPPED / "lens.json").read_text())["class"] == "TunedLens"
    held_out = corpus_chunks(smollm2.tokenizer, "test", 128)[:8]
    cmp = compare_lenses(smollm2, held_out, lens=lens, progress=False)
    assert cmp.n_tokens > 500
    assert cmp.tuned_better_before_last(), (cmp.kl_logit, cmp.kl_tuned)
    assert float(cmp.kl_tuned[:-1].mean()) < 0.5 * float(cmp.kl_logit[:-1].mean())
    res = lens.apply(smollm2, "The capital of France is", target=" Paris")
    assert res.top_tokens(layer=-1)[0] == " Paris"
    shipped = LensComparison.load(SHIPPED / "held_out")  # the measured held-out comparison saved beside it
    assert shipped.n_tokens == 10965 and shipped.tuned_better_before_last()
