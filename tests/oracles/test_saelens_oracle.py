"""SAELens itself (in its own virtual environment, .venv-saelens, made by `make saelens`) against interp's reading and writing of
its layout: the same SAE encodes and decodes the same activations to the same numbers. One SAELens process
does both directions (importing SAELens takes ~20 s here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.features import SAEConfig, SparseAutoencoder, save_saelens

SAELENS_PY = Path(__file__).resolve().parents[2] / ".venv-saelens" / "bin" / "python"  # made by `make saelens`
pytestmark = [pytest.mark.oracle,
              pytest.mark.skipif(not SAELENS_PY.exists(), reason="SAELens venv missing: run `make saelens`")]

SIDE = r'''
import sys, torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE, TopKTrainingSAE, TopKTrainingSAEConfig
d = sys.argv[1]
x = load_file(d + "/x.safetensors")
torch.manual_seed(0)
made = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x["a"].shape[1], d_sae=40, k=5))  # rescale_acts_by_decoder_norm
with torch.no_grad():
    made.b_enc.normal_(); made.b_dec.normal_()
made.save_inference_model(d + "/theirs")
out = {}
for name, key in (("theirs", "a"), ("ours", "b")):
    sae = SAE.load_from_disk(d + "/" + name)
    with torch.no_grad():
        z = sae.encode(x[key])
        out[name + ".z"], out[name + ".x_hat"] = z.contiguous(), sae.decode(z).contiguous()
save_file(out, d + "/out.safetensors")
'''


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = tmp_path_factory.mktemp("saelens")
    xb = torch.randn(2000, 24) * 5
    ours = SparseAutoencoder(SAEConfig(d_sae=48, k=4, batch_size=256, n_tokens=2048), progress=False).fit(xb)
    save_saelens(ours, d / "ours")
    xa = torch.randn(10, 24)
    save_file({"a": xa, "b": xb[:10].contiguous()}, str(d / "x.safetensors"))
    out = subprocess.run([str(SAELENS_PY), "-c", SIDE, str(d)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return d, xa, xb[:10], ours, load_file(str(d / "out.safetensors"))


def test_interp_reads_an_sae_saved_by_saelens(both) -> None:
    d, xa, _, _, ref = both
    sae = SparseAutoencoder.load(d / "theirs")
    assert sae.config.activation == "topk" and sae.config.k == 5
    assert torch.allclose(sae.encode(xa), ref["theirs.z"], atol=1e-5)
    assert torch.allclose(sae.decode(ref["theirs.z"]), ref["theirs.x_hat"], atol=1e-5)


def test_saelens_reads_an_sae_saved_by_interp(both) -> None:
    _, _, xb, ours, ref = both
    assert torch.allclose(ours.encode(xb), ref["ours.z"], atol=1e-4)
    assert torch.allclose(ours.reconstruct(xb), ref["ours.x_hat"], atol=1e-4)
