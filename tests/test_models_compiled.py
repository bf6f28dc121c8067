"""The Tracr-compiled models load by name through the model registry (``interp.load_model("tracr-reverse")``).

Oracle: ``tracr.json``'s fixture, recorded by data/circuits/build_tracr.py: what Tracr's own JAX model computed
on its inputs (the unembedded residual) and what the RASP program evaluates to.
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.errors import BadInputError, UnknownNameError
from interp.models.compiled import COMPILED_MODELS, compiled_config, compiled_ids, compiled_outputs


@pytest.mark.parametrize("name", COMPILED_MODELS)
def test_load_model_by_name_computes_the_programs_outputs(name: str) -> None:
    m = interp.load_model(name)
    assert m.name == name and m.adapter.family == "gpt2" and m.tokenizer is None
    cfg = compiled_config(name)
    ids = torch.tensor([f["ids"] for f in cfg["fixture"]])
    tracr = torch.tensor([f["outputs"] for f in cfg["fixture"]])  # [batch, pos, n_out], from JAX
    ours = compiled_outputs(m, ids)
    assert torch.allclose(ours, tracr, atol=1e-5), float((ours - tracr).abs().max())
    expected = [f["expected"] for f in cfg["fixture"]]  # RASP's answers, every position after BOS
    if cfg["output"]["categorical"]:
        values = cfg["output"]["values"]
        assert [[values[i] for i in row] for row in ours[:, 1:].argmax(-1).tolist()] == expected
    else:
        assert torch.allclose(ours[:, 1:, 0], torch.tensor(expected, dtype=torch.float), atol=1e-4)
    assert torch.equal(compiled_ids(m, [f["tokens"][1:] for f in cfg["fixture"]]), ids)


def test_reverse_by_hand_and_the_tools_run_on_it() -> None:
    m = interp.load_model("tracr-reverse")
    cfg = compiled_config("reverse")
    values = cfg["output"]["values"]
    out = compiled_outputs(m, compiled_ids(m, [[1, 2, 3], [3, 3, 1]])).argmax(-1)[:, 1:]
    assert [[values[i] for i in row] for row in out.tolist()] == [[3, 2, 1], [1, 3, 3]]
    acts = m.run(compiled_ids(m, [[1, 2, 3]]), capture=["resid_post", "result.3"]).trace
    assert len(acts.names) == m.dims.n_layers + 1


def test_dtype_device_and_errors() -> None:
    m = interp.load_model("tracr-hist", dtype="float64", device="cpu")
    assert m.dtype == torch.float64
    cfg = compiled_config("hist")
    ids = torch.tensor([f["ids"] for f in cfg["fixture"]])
    tracr = torch.tensor([f["outputs"] for f in cfg["fixture"]], dtype=torch.float64)
    with torch.no_grad():
        ours = m.hf(input_ids=ids).logits[..., :cfg["output"]["n_out"]]
    assert torch.allclose(ours, tracr, atol=1e-5)
    with pytest.raises(BadInputError, match="device_map"):
        interp.load_model("tracr-hist", device_map="auto")
    with pytest.raises(UnknownNameError, match="tracr-hist"):
        interp.load_model("tracr-hsit")


def test_the_old_name_still_loads_the_same_model() -> None:
    from interp.circuits import load_compiled

    old, new = load_compiled("sort"), interp.load_model("tracr-sort")
    assert old.name == new.name == "tracr-sort"
    assert old.fingerprint == new.fingerprint


def test_cli_takes_them_by_name(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from interp.cli import main

    out = tmp_path / "c.json"  # type: ignore[operator]
    assert main(["circuit", "--model", "tracr-hist", "--method", "eap", "--top", "4", "--json", str(out), "--quiet"]) == 0
    data = json.dumps(json.loads(out.read_text()))
    assert "Circuit" in data and "tracr-hist" in data
    assert "L0H0" in capsys.readouterr().out
