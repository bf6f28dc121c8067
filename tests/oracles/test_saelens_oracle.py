"""SAELens itself (in its own virtual environment, /tmp/saelens-venv) against interp's reading and writing of
its layout: the same SAE encodes and decodes the same activations to the same numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.features import SAEConfig, SparseAutoencoder, save_saelens

SAELENS_PY = Path("/tmp/saelens-venv/bin/python")
pytestmark = [pytest.mark.oracle,
              pytest.mark.skipif(not SAELENS_PY.exists(), reason="SAELens venv missing (see benchmarks/sae.py)")]

SIDE = r'''
import sys, torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig
mode, d = sys.argv[1], sys.argv[2]
x = load_file(d + "/x.safetensors")["x"]
if mode == "make":
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=40, k=5))
    with torch.no_grad():
        sae.b_enc.normal_(); sae.b_dec.normal_()
    sae.save_inference_model(d + "/sae")
    loaded = SAE.load_from_disk(d + "/sae")
else:
    loaded = SAE.load_from_disk(d + "/sae")
with torch.no_grad():
    z = loaded.encode(x)
    save_file({"z": z.contiguous(), "x_hat": loaded.decode(z).contiguous()}, d + "/out.safetensors")
'''


def run_side(mode: str, d: Path) -> dict[str, torch.Tensor]:
    out = subprocess.run([str(SAELENS_PY), "-c", SIDE, mode, str(d)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return load_file(str(d / "out.safetensors"))


def test_interp_reads_an_sae_saved_by_saelens(tmp_path) -> None:
    x = torch.randn(10, 24)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    ref = run_side("make", tmp_path)
    print(json.loads((tmp_path / "sae" / "cfg.json").read_text()))
    sae = SparseAutoencoder.load(tmp_path / "sae")
    assert sae.config.activation == "topk" and sae.config.k == 5
    assert torch.allclose(sae.encode(x), ref["z"], atol=1e-5)
    assert torch.allclose(sae.decode(ref["z"]), ref["x_hat"], atol=1e-5)


def test_saelens_reads_an_sae_saved_by_interp(tmp_path) -> None:
    x = torch.randn(2000, 24) * 5
    sae = SparseAutoencoder(SAEConfig(d_sae=48, k=4, batch_size=256, n_tokens=2048), progress=False).fit(x)
    save_saelens(sae, tmp_path / "sae")
    save_file({"x": x[:10].contiguous()}, str(tmp_path / "x.safetensors"))
    ref = run_side("read", tmp_path)
    assert torch.allclose(sae.encode(x[:10]), ref["z"], atol=1e-4)
    assert torch.allclose(sae.reconstruct(x[:10]), ref["x_hat"], atol=1e-4)
