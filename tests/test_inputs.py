"""The ``inputs`` every tool takes (interp.trace.inputs): a trace or store is read as it is when it holds the
hooks, re-run otherwise (a store in batches), and another model's trace is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interp.errors import ModelMismatchError
from interp.models import Model
from interp.trace import TraceStore, capture
from interp.trace.inputs import concat_traces, ensure_trace, token_batches

TEXTS = ["a b c", "d e", "f g h i", "j"]


def test_texts_traces_and_stores(tiny_llama: Model, tmp_path: Path) -> None:
    direct = ensure_trace(tiny_llama, TEXTS, "resid_post")
    assert direct.names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert ensure_trace(tiny_llama, direct, "resid_post.1") is direct  # held: used as it is
    again = ensure_trace(tiny_llama, direct, ["resid_post.1", "z.0"])  # missing z: re-run on its tokens
    torch.testing.assert_close(again["resid_post.1"], direct["resid_post.1"])
    store = capture(tiny_llama, TEXTS, out=tmp_path / "s", hooks="resid_post.1", batch_size=2, progress=False)
    from_store = ensure_trace(tiny_llama, store, "resid_post.1")
    ids, mask = store.tokens()
    torch.testing.assert_close(from_store["resid_post.1"] * mask[..., None], direct["resid_post.1"][:, :ids.shape[1]]
                               * mask[..., None])
    rerun = ensure_trace(tiny_llama, TraceStore(tmp_path / "s"), ["resid_post.1", "mlp_out.0"], batch_size=3)
    assert rerun.n_seqs == 4 and rerun["mlp_out.0"].shape[:2] == ids.shape
    assert [m["text"] for m in rerun.metadata] == TEXTS


def test_another_models_trace_is_refused(tiny_llama: Model, tiny_gpt2: Model) -> None:
    tr = ensure_trace(tiny_gpt2, torch.tensor([[1, 2, 3]]), "resid_post")
    with pytest.raises(ModelMismatchError):
        ensure_trace(tiny_llama, tr, "resid_post")


def test_batches_and_concat(tiny_llama: Model) -> None:
    batches = list(token_batches(tiny_llama, TEXTS, 3))
    assert [b[0].shape[0] for b in batches] == [3, 1]
    parts = [tiny_llama.run(b, capture="z.0").trace for b in token_batches(tiny_llama, torch.ones(5, 4, dtype=torch.long), 2)]
    whole = concat_traces(parts)
    assert whole.n_seqs == 5 and whole["z.0"].shape[0] == 5
