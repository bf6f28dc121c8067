"""Representation quality read from a TraceStore (streamed shard by shard) against the in-memory path, and
the lens KL beside it against a KL computed from Hugging Face hidden states by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tokenizer, randomize
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp.errors import BadInputError
from interp.layers import quality_views, representation_quality
from interp.models import Model
from interp.trace import TraceStore, capture

TEXTS = ["w1 w2 w3 w4 w5 w6", "w9 w8 w7 w6 w5", "w3 w3 w4 w4 w5 w8 w9", "w10 w11 w12 w13 w14 w15 w16",
         "w20 w30 w40 w50 w60"]


@pytest.fixture(scope="module")
def llama3() -> Model:
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      vocab_size=104, max_position_embeddings=32, tie_word_embeddings=False)
    return interp.from_hf(randomize(LlamaForCausalLM(cfg), 5).eval(), tokenizer=make_tokenizer(), name="llama3")


def test_quality_from_a_store_equals_the_in_memory_path(llama3: Model, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "st"
    capture(llama3, quality_views(TEXTS, n_views=3, seed=0), hooks="resid_post", out=path, batch_size=4,
            progress=False)
    store = TraceStore(path)
    assert len(store.shards()) == 4  # 15 sequences in shards of 4: the reader streams several
    reads: list[int] = []
    real_read = TraceStore.read_shard

    def counted(self: TraceStore, info: object, hooks: object = None) -> dict[str, torch.Tensor]:
        reads.append(info.index)  # type: ignore[attr-defined]
        return real_read(self, info, hooks)  # type: ignore[arg-type]

    def no_whole_load(*a: object, **k: object) -> None:
        raise AssertionError("the store must be streamed, not loaded as one trace")

    monkeypatch.setattr(TraceStore, "read_shard", counted)
    monkeypatch.setattr(TraceStore, "trace", no_whole_load)
    got = representation_quality(llama3, store, n_views=3, progress=False)
    assert sorted(reads) == [0, 1, 2, 3]  # each shard read once
    want = representation_quality(llama3, TEXTS, n_views=3, batch_size=2, progress=False)
    assert got.metrics == want.metrics and got.n_prompts == 5 and got.n_views == 3
    torch.testing.assert_close(got.values, want.values, rtol=1e-4, atol=1e-5)
    # prompt-only metrics from a store of the plain prompts: every sequence is a prompt
    plain = tmp_path / "plain"
    capture(llama3, TEXTS, hooks="resid_post", out=plain, batch_size=2, progress=False)
    metrics = ("prompt_entropy", "dataset_entropy", "curvature")
    torch.testing.assert_close(representation_quality(llama3, TraceStore(plain), metrics=metrics).values,
                               representation_quality(llama3, TEXTS, metrics=metrics).values, rtol=1e-4, atol=1e-5)


def test_store_bad_input(llama3: Model, tmp_path: Path) -> None:
    part = tmp_path / "part"
    capture(llama3, TEXTS, hooks=["resid_post.0", "resid_post.1"], out=part, progress=False)
    with pytest.raises(BadInputError, match="lacks 1 of the 3 resid_post"):
        representation_quality(llama3, TraceStore(part), metrics=("curvature",))
    full = tmp_path / "full"
    capture(llama3, TEXTS, hooks="resid_post", out=full, progress=False)
    with pytest.raises(BadInputError, match="n_views=3"):
        representation_quality(llama3, TraceStore(full), n_views=3)  # 5 sequences are not groups of 3 views


def test_lens_kl_beside_the_metrics(llama3: Model) -> None:
    from interp.lens import logit_lens

    res = representation_quality(llama3, TEXTS, metrics=("prompt_entropy", "curvature"), progress=False)
    lens = logit_lens(llama3, TEXTS)
    both = res.with_lens(lens)
    # oracle: KL(final || layer) from HF hidden states, through the final norm and the LM head by hand
    hf = llama3.hf
    kls: list[list[float]] = [[] for _ in range(3)]
    for t in TEXTS:
        ids = torch.tensor([llama3.tokenizer(t, add_special_tokens=False)["input_ids"]])
        outs: list[torch.Tensor] = []
        hooks = [hf.model.layers[i].register_forward_hook(
            lambda mod, a, o, outs=outs: outs.append((o[0] if isinstance(o, tuple) else o)[0])) for i in range(3)]
        with torch.no_grad():
            final = hf(input_ids=ids, use_cache=False).logits[0].double().log_softmax(-1)
            for h in hooks:
                h.remove()
            for i, x in enumerate(outs):
                lq = hf.lm_head(hf.model.norm(x)).double().log_softmax(-1)
                kls[i] += (final.exp() * (final - lq)).sum(-1).tolist()
    want = np.array([np.mean(k) for k in kls])
    assert both.lens_kl is not None and both.lens == "logit"
    np.testing.assert_allclose(both.lens_kl.numpy(), want, rtol=1e-3, atol=1e-5)
    fig = both.plot("lens")
    names = [t.name for t in fig.data]
    assert names[:2] == ["prompt_entropy", "curvature"] and names[2].startswith("logit lens KL (")
    import tempfile

    again = type(both).load(both.save(Path(tempfile.mkdtemp()) / "r"))
    assert again.lens == "logit" and torch.equal(again.lens_kl, both.lens_kl)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="3 layers"):
        res.with_lens(torch.ones(4))
