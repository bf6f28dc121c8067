"""Transcoders: planted MLP maps, on-the-fly training streams, the spliced loss, interp and SAELens files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from interp.features import (
    SAEConfig,
    SparseAutoencoder,
    Transcoder,
    activation_stream,
    evaluate_transcoder,
    mlp_in_hook,
    spliced_ce,
    train_on_model,
    transcoder_ce,
)

SAELENS_PY = Path(__file__).resolve().parents[1] / ".venv-saelens" / "bin" / "python"


def planted(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = sum_i ReLU(x . e_i - 1.5) d_i``: 40 sparse ReLU units from 16-d inputs to 12-d outputs."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(16, 40, generator=torch.Generator().manual_seed(99))
    D = torch.randn(40, 12, generator=torch.Generator().manual_seed(98))
    x = torch.randn(n, 16, generator=g)
    return x, torch.relu(x @ E / 4 - 0.6) @ D


def test_transcoder_learns_a_planted_sparse_map_better_than_linear_regression() -> None:
    x, y = planted(24_000)
    tc = Transcoder(SAEConfig(d_sae=96, k=12, batch_size=512, n_tokens=150_000, lr=3e-3, dead_after=20_000),
                    skip=True, progress=False).fit_pairs(x[:20_000], y[:20_000])
    ev = evaluate_transcoder(tc, x[20_000:], y[20_000:])
    # the linear baseline: least squares with a bias (what the skip connection alone can do)
    X = torch.cat([x[:20_000], torch.ones(20_000, 1)], 1)
    coef = torch.linalg.lstsq(X, y[:20_000]).solution
    pred = torch.cat([x[20_000:], torch.ones(4000, 1)], 1) @ coef
    yt = y[20_000:]
    lin_ev = 1 - float((yt - pred).pow(2).sum() / (yt - yt.mean(0)).pow(2).sum())
    assert ev.explained_variance > lin_ev + 0.15 and ev.explained_variance > 0.7
    assert ev.l0 <= 12 + 1e-6
    hand = 1 - float((yt - tc.forward(x[20_000:])).pow(2).sum() / (yt - yt.mean(0)).pow(2).sum())
    assert ev.explained_variance == pytest.approx(hand, abs=1e-4)


def test_stream_keeps_hooks_paired_and_shuffles(tiny_llama: Any) -> None:
    ids = torch.randint(3, 128, (12, 8), generator=torch.Generator().manual_seed(0))
    mlp_in = mlp_in_hook(tiny_llama, layer=1)
    batches = list(activation_stream(tiny_llama, ids, hooks=["blocks.1.hook_resid_mid", mlp_in], batch_size=16,
                                     seqs_per_forward=3, buffer_batches=2, epochs=1))
    assert sum(b[mlp_in].shape[0] for b in batches) == 96  # every row served once
    norm = tiny_llama.hf.model.layers[1].post_attention_layernorm
    for b in batches:  # the MLP input is the RMSNorm of resid_mid, row by row: the pairs survived the shuffle
        r = b["blocks.1.hook_resid_mid"]
        hand = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
        assert torch.allclose(b[mlp_in], hand, atol=1e-5)
    # shuffled: consecutive rows of the first batch do not come from consecutive positions of one window
    rows = tiny_llama.run(ids, capture="blocks.1.hook_resid_mid").trace["blocks.1.hook_resid_mid"].reshape(-1, 64)
    first = batches[0]["blocks.1.hook_resid_mid"]
    where = [int((rows - r).abs().sum(-1).argmin()) for r in first]
    assert where != sorted(where)


def test_train_on_model_trains_saes_and_transcoders_together(tiny_llama: Any) -> None:
    ids = torch.randint(3, 128, (64, 16), generator=torch.Generator().manual_seed(1))
    cfg = SAEConfig(d_sae=48, k=4, batch_size=128, n_tokens=128 * 12, lr=3e-3)
    out = train_on_model(tiny_llama, ids, dictionaries={
        "sae": SparseAutoencoder(cfg, hook="resid_post.0"),
        "tc": Transcoder(cfg, hook=mlp_in_hook(tiny_llama, layer=0), out_hook="mlp_out.0", skip=True)},
        buffer_batches=4, progress=False)
    assert out["sae"].fitted and out["tc"].fitted and out["tc"].W_skip_ is not None
    assert len(out["tc"].history_["ev"]) == 12 and out["tc"].history_["ev"][-1] > out["tc"].history_["ev"][0]
    assert out["sae"].hook == "blocks.0.hook_resid_post" and out["tc"].out_hook == "blocks.0.hook_mlp_out"


def test_transcoder_ce_modes_against_independent_runs(tiny_llama: Any) -> None:
    ids = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    tc = Transcoder(SAEConfig(d_sae=16, k=2), hook=mlp_in_hook(tiny_llama, layer=1), out_hook="mlp_out.1")
    tc.W_enc_, tc.b_enc_ = torch.randn(64, 16), torch.zeros(16)
    tc.W_dec_, tc.b_dec_ = torch.zeros(16, 64), torch.zeros(64)  # predicts zero: spliced = zero-ablated
    clean, spliced, zero = transcoder_ce(tiny_llama, (ids, mask), transcoder=tc)
    sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, n_tokens=256, batch_size=64), progress=False).fit(
        torch.randn(256, 64))
    ref = spliced_ce(tiny_llama, (ids, mask), sae=sae, hook="mlp_out.1")  # clean and Ablate("mlp_out.1")
    logits = tiny_llama.run((ids, mask)).logits
    hand = float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 128), ids[:, 1:].reshape(-1)))
    assert clean == pytest.approx(hand, rel=1e-5) and clean == pytest.approx(ref.clean, rel=1e-6)
    assert zero == pytest.approx(ref.zero, rel=1e-6) and spliced == pytest.approx(zero, rel=1e-6)


def saved(tmp: Path) -> Transcoder:
    x, y = planted(4096)
    return Transcoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=2048), hook="hf:model.layers.1.mlp",
                      out_hook="blocks.1.hook_mlp_out", skip=True, progress=False).fit_pairs(3 * x, y)


def test_save_load_interp_and_saelens_layout(tmp_path: Path) -> None:
    tc = saved(tmp_path)
    x = torch.randn(5, 16)
    back = Transcoder.load(tc.save(tmp_path / "interp"))
    assert torch.allclose(back.forward(x), tc.forward(x)) and back.out_hook == tc.out_hook
    d = tc.save_saelens(tmp_path / "sl")
    cfg = json.loads((d / "cfg.json").read_text())
    w = load_file(str(d / "sae_weights.safetensors"))
    # SAELens' skip transcoder: W_dec @ act(W_enc x + b_enc) + W_skip x + b_dec (no scaling), TopK act by hand
    pre = x @ w["W_enc"] + w["b_enc"]
    v, i = pre.topk(cfg["topk_k"], dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    hand = z @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T
    assert torch.allclose(hand, tc.forward(x), atol=1e-5)
    assert cfg["architecture"] == "skip_transcoder" and cfg["hook_name_out"] == "blocks.1.hook_mlp_out"
    again = Transcoder.load(d)
    assert torch.allclose(again.forward(x), tc.forward(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not SAELENS_PY.exists(), reason="SAELens lives in .venv-saelens (make saelens)")
def test_saelens_reads_the_saved_transcoder(tmp_path: Path) -> None:
    """SAELens 6 loads the directory as a SkipTranscoder with the same weights and pre-activations (its
    transcoders apply ReLU, not TopK, so the comparison stops before the activation)."""
    tc = saved(tmp_path)
    d = tc.save_saelens(tmp_path / "sl")
    x = torch.randn(5, 16)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; from sae_lens import SAE\n"
        "sae = SAE.load_from_disk(sys.argv[1], device='cpu')\n"
        "x = torch.load(sys.argv[2], weights_only=True)\n"
        "print(type(sae).__name__); print((x @ sae.W_enc + sae.b_enc).tolist())\n")
    out = subprocess.run([str(SAELENS_PY), "-c", code, str(d), str(tmp_path / "x.pt")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "SkipTranscoder"
    theirs = torch.tensor(json.loads(lines[-1]))
    ours = tc.pre_activations(x)
    assert torch.allclose(theirs, ours, atol=1e-5)
