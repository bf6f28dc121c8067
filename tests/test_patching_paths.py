"""Path patching and back-patching against one full forward per patch (interp.hooks.Patch)."""

from __future__ import annotations

import pytest
import torch

from interp.errors import BadInputError
from interp.hooks import Patch, run_with_hooks
from interp.patching import back_patching, path_patching, prepare
from interp.sites import HeadRef

CLEAN = torch.tensor([[5, 17, 33, 9, 41, 22, 60]])
CORRUPT = torch.tensor([[5, 17, 71, 9, 41, 80, 60]])


def _ld(logits: torch.Tensor) -> float:
    return float(logits[0, -1, 3] - logits[0, -1, 4])


def _sender_run(m, ls, hs, last, capture=()):
    z = run_with_hooks(m, CORRUPT, capture="blocks.*.attn.hook_z").activations
    zc = run_with_hooks(m, CLEAN, capture="blocks.*.attn.hook_z").activations
    ivs = [Patch(f"blocks.{ls}.attn.hook_z", source=z[f"blocks.{ls}.attn.hook_z"], heads=[hs])]
    ivs += [Patch(f"blocks.{layer}.attn.hook_z", source=zc[f"blocks.{layer}.attn.hook_z"]) for layer in range(ls + 1, last + 1)]
    return run_with_hooks(m, CLEAN, interventions=ivs, capture=list(capture))


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_path_patching_to_receiver_inputs(tiny_llama, kind):
    m = tiny_llama
    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    recv = [(1, 0), "L1H3"]
    res = path_patching(m, s, receivers=recv, receiver_input=kind, progress=False)
    assert res.axes == ("layer", "head") and torch.isnan(res.values[1]).all()
    assert res.meta["receivers"] == ["L1H0", "L1H3"] and res.meta["receiver_input"] == [kind]
    site = f"blocks.1.attn.hook_{kind}"
    for hs in range(m.dims.n_heads):
        caught = _sender_run(m, 0, hs, 1, capture=[site]).activations[site]
        want = _ld(run_with_hooks(m, CLEAN, interventions=[Patch(site, source=caught, heads=[0, 3])]).logits)
        assert abs(float(res.values[0, hs]) - want) < 1e-4
    assert len(res.plot("paths", k=2).data) >= 2


def test_path_patching_to_logits(tiny_gpt2):
    m = tiny_gpt2
    s = prepare(m, CLEAN, corrupt=CORRUPT, answer=3, wrong=4)
    res = path_patching(m, s, receivers="logits", progress=False)
    for ls in range(2):
        for hs in range(m.dims.n_heads):
            want = _ld(_sender_run(m, ls, hs, m.dims.n_layers - 1).logits)
            assert abs(float(res.values[ls, hs]) - want) < 1e-4
    # an explicit sender list and bad receivers
    fig = res.plot("paths", k=3)
    assert len(fig.data) >= 2 and "logits" in str(fig.layout)
    one = path_patching(m, s, senders=[(0, 2)], progress=False)
    assert torch.isnan(one.values).sum() == one.values.numel() - 1
    assert [c for c, _ in one.top(3)] == [HeadRef(0, 2)]  # NaN cells are not ranked
    same = path_patching(m, s, senders="L0H2", progress=False)  # heads spelled "L0H2"
    assert torch.equal(same.values.nan_to_num(), one.values.nan_to_num())
    with pytest.raises(BadInputError, match="senders L0H2 are not before the first receiver layer 0"):
        path_patching(m, s, receivers=[(0, 1)], senders=[(0, 2)], progress=False)
    with pytest.raises(BadInputError, match="head L2H0 is out of range"):
        path_patching(m, s, receivers="L2H0", progress=False)
    with pytest.raises(BadInputError, match="bad receiver_input 'z'"):
        path_patching(m, s, receivers="L1H0", receiver_input="z", progress=False)


def test_back_patching_equals_loop(tiny_llama):
    m = tiny_llama
    ids = torch.tensor([[5, 17, 33, 9, 41, 22, 60, 8]])
    res = back_patching(m, ids, answer=3, metric="logprob", progress=False)
    assert res.coords["src_layer"] == (0, 1) and res.meta["positions"] == -1 and res.plot("paths").data
    post = run_with_hooks(m, ids, capture="blocks.*.hook_resid_post").activations
    n = m.dims.n_layers
    assert res.axes == ("src_layer", "dst_layer")
    for src in range(n):
        for dst in range(n):
            if dst >= src:
                assert torch.isnan(res.values[src, dst])
                continue
            lg = run_with_hooks(m, ids, interventions=[Patch(f"blocks.{dst}.hook_resid_post",
                                                             source=post[f"blocks.{src}.hook_resid_post"], positions=[7])]).logits
            assert abs(float(res.values[src, dst]) - float(torch.log_softmax(lg[0, -1], -1)[3])) < 1e-4


def test_back_patching_padded_positions_and_layers(tiny_llama):
    """Prompts of 4 and 6 words: ``positions=-1`` moves each prompt's own last state; several positions move
    together; ``layers`` picks the source and destination layers."""
    m = tiny_llama
    prompts = ["w1 w2 w3 w4", "w5 w6 w7 w8 w9 w10"]
    ids, mask = m.encode(prompts)
    post = run_with_hooks(m, ids, mask, capture="resid_post").activations
    last = mask.sum(1) - 1
    for positions in (-1, [0, -2]):
        res = back_patching(m, prompts, answer="w3", positions=positions,
                            layers=[0, -1], progress=False)
        assert res.coords == {"src_layer": (0, 1), "dst_layer": (0, 1)} and torch.isnan(res.values[0]).all()
        lg = run_with_hooks(m, ids, mask, interventions=[Patch("blocks.0.hook_resid_post",
                                                               source=post["blocks.1.hook_resid_post"],
                                                               positions=positions)]).logits
        want = torch.softmax(lg[[0, 1], last], -1)[:, 7].mean()  # "w3" is token 7
        assert abs(float(res.values[1, 0]) - float(want)) < 1e-5
    with pytest.raises(BadInputError, match="position 5 is outside sequence 0"):
        back_patching(m, prompts, answer="w3", positions=5, progress=False)


def test_v01_path_result_upgrades(tmp_path):
    """interp 0.1 wrote receivers as [[layer, head]], receiver_input "qkv" and undefined baselines as null."""
    import json

    from safetensors.torch import save_file

    from interp.patching import PatchingResult

    save_file({"values": torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])},
              str(tmp_path / "result.safetensors"))
    fields = {"kind": "PatchingResult", "axes": ["layer", "head"], "coords": {"layer": [0, 1], "head": [0, 1]},
              "tokens": ["a"], "component": "z", "method": "path", "direction": "noising", "metric": "logit_diff",
              "clean_value": 2.0, "corrupted_value": None,
              "meta": {"receivers": [[1, 0], [1, 1]], "receiver_input": "qkv", "freeze_mlps": False}}
    (tmp_path / "result.json").write_text(json.dumps(fields))
    res = PatchingResult.load(tmp_path)
    assert res.meta["receivers"] == ["L1H0", "L1H1"] and res.meta["receiver_input"] == ["q", "k", "v"]
    assert res.clean_value == 2.0 and res.corrupted_value != res.corrupted_value  # NaN
    assert res.top(5) == [(HeadRef(0, 0), 1.0)] and res.plot("paths").data
