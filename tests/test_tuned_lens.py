"""The tuned lens: training from a store on tiny models, against direct computations; the shipped SmolLM2 lens."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from interp.lens import LensComparison, TunedLens, compare_lenses, logit_lens
from interp.models import Model
from interp.trace import ModelMismatchError, TraceStore, capture

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
    return capture(model, texts, "blocks.*.hook_resid_post", tmp_path_factory.mktemp("lens") / "store",
                   batch_size=8, progress=False)


def _fit(model: Model, store: TraceStore, **kw) -> TunedLens:
    kw = {"steps": 40, "batch_size": 64, "lr": 3e-3, "matmul_dtype": torch.float32, "progress": False} | kw
    return TunedLens(**kw).fit(model, store)


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
    cmp = compare_lenses(tiny_llama, lens, held_out, progress=False)
    assert cmp.tuned_better_before_last(), (cmp.kl_logit, cmp.kl_tuned)
    assert float(cmp.kl_tuned[-1]) == pytest.approx(float(cmp.kl_logit[-1]), abs=1e-6)  # last layer: identity
    assert cmp.n_tokens == 12 * 24


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


def test_seeded_training_is_deterministic(tiny_llama: Model, store: TraceStore) -> None:
    a, b = _fit(tiny_llama, store, steps=5), _fit(tiny_llama, store, steps=5)
    c = _fit(tiny_llama, store, steps=5, seed=1)
    assert torch.equal(a.weight_, b.weight_) and a.history_ == b.history_
    assert not torch.equal(a.weight_, c.weight_)


def test_save_load_round_trip(tiny_llama: Model, store: TraceStore, tmp_path: Path) -> None:
    lens = _fit(tiny_llama, store, steps=3)
    lens.save(tmp_path / "lens")
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert meta["fingerprint"] == tiny_llama.fingerprint and len(meta["history"]) == 3
    back = TunedLens.load(tmp_path / "lens")
    assert torch.equal(back.weight_, lens.weight_) and torch.equal(back.bias_, lens.bias_)
    assert back.history_ == lens.history_ and back.steps == 3
    cmp = compare_lenses(tiny_llama, back, ["hello world"], progress=False)
    cmp.save(tmp_path / "cmp")
    again = LensComparison.load(tmp_path / "cmp")
    assert torch.equal(again.kl_tuned, cmp.kl_tuned) and list(again.to_frame().columns) == ["layer", "kl_logit",
                                                                                           "kl_tuned"]


def test_default_matmul_dtype_is_the_fast_one_and_recorded(tiny_llama: Model, store: TraceStore,
                                                           tmp_path: Path) -> None:
    """``matmul_dtype=None`` measures bf16 vs float32 here (bf16 is emulated on AVX2-only CPUs) and saves both."""
    import time

    from interp.lens.tuned_lens import fast_matmul_dtype

    a, w = torch.randn(64, 256), torch.randn(256, 512)

    def best(dtype: torch.dtype) -> float:
        x, y = a.to(dtype), w.to(dtype)
        x @ y
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            x @ y
            ts.append(time.perf_counter() - t0)
        return min(ts)

    chosen = fast_matmul_dtype("cpu")
    ratio = best(torch.bfloat16) / best(torch.float32)
    if ratio > 2 or ratio < 0.5:  # a clear winner on this CPU must be the one chosen
        assert chosen == (torch.float32 if ratio > 1 else torch.bfloat16), ratio
    lens = _fit(tiny_llama, store, steps=1, matmul_dtype=None)
    assert lens.matmul_dtype is None and lens.matmul_dtype_ in (torch.float32, torch.bfloat16)
    meta = json.loads(lens.save(tmp_path / "lens").joinpath("lens.json").read_text())
    assert meta["config"]["matmul_dtype"] is None and meta["matmul_dtype_used"] in ("float32", "bfloat16")
    assert TunedLens.load(tmp_path / "lens").matmul_dtype is None


def test_bad_inputs(tiny_llama: Model, tiny_gpt2: Model, store: TraceStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        TunedLens(init="random")
    with pytest.raises(ValueError, match="steps must be"):
        TunedLens(steps=-1)
    with pytest.raises(RuntimeError, match="not fitted"):
        TunedLens().translate(torch.zeros(2, 4), 0)
    with pytest.raises(ModelMismatchError):
        TunedLens(steps=0).fit(tiny_gpt2, store)
    lens = _fit(tiny_llama, store, steps=0)
    with pytest.raises(ModelMismatchError, match="trained for"):
        lens.apply(tiny_gpt2, "hello")
    with pytest.raises(FileNotFoundError, match="no tuned lens"):
        TunedLens.load(tmp_path)
    partial = capture(tiny_llama, ["a b c"], "blocks.0.hook_resid_post", tmp_path / "partial", progress=False)
    with pytest.raises(KeyError, match="lacks"):
        TunedLens(steps=0).fit(tiny_llama, partial)


@pytest.mark.slow
def test_shipped_smollm2_lens_beats_the_logit_lens_at_every_layer(smollm2: Model) -> None:
    """The lens in data/ (trained on the corpus' train split) on held-out paragraphs of the corpus."""
    sys.path.insert(0, str(REPO / "data" / "lenses"))
    from corpus import corpus_chunks

    lens = TunedLens.load(SHIPPED)
    held_out = corpus_chunks(smollm2.tokenizer, "test", 128)[:8]
    cmp = compare_lenses(smollm2, lens, held_out, progress=False)
    assert cmp.n_tokens > 500
    assert cmp.tuned_better_before_last(), (cmp.kl_logit, cmp.kl_tuned)
    assert float(cmp.kl_tuned[:-1].mean()) < 0.5 * float(cmp.kl_logit[:-1].mean())
    res = lens.apply(smollm2, "The capital of France is", target=" Paris")
    assert res.top_tokens(layer=-1)[0] == " Paris"
