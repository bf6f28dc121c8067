"""Path patching and back-patching against one full forward per patch (interp.hooks.Patch)."""

from __future__ import annotations

import pytest
import torch

from interp.hooks import Patch, run_with_hooks
from interp.patching import back_patching, path_patching, prepare

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
    s = prepare(m, CLEAN, CORRUPT, answer=3, wrong=4)
    recv = [(1, 0), (1, 3)]
    res = path_patching(s, receivers=recv, receiver_input=kind, progress=False)
    assert res.axes == ("layer", "head") and torch.isnan(res.values[1]).all()
    site = f"blocks.1.attn.hook_{kind}"
    for hs in range(m.dims.n_heads):
        caught = _sender_run(m, 0, hs, 1, capture=[site]).activations[site]
        want = _ld(run_with_hooks(m, CLEAN, interventions=[Patch(site, source=caught, heads=[0, 3])]).logits)
        assert abs(float(res.values[0, hs]) - want) < 1e-4
    assert len(res.plot_paths(k=2).data) >= 2


def test_path_patching_to_logits(tiny_gpt2):
    m = tiny_gpt2
    s = prepare(m, CLEAN, CORRUPT, answer=3, wrong=4)
    res = path_patching(s, "logits", progress=False)
    for ls in range(2):
        for hs in range(m.dims.n_heads):
            want = _ld(_sender_run(m, ls, hs, m.dims.n_layers - 1).logits)
            assert abs(float(res.values[ls, hs]) - want) < 1e-4
    # an explicit sender list and bad receivers
    fig = res.plot_paths(k=3)
    assert len(fig.data) >= 2 and "logits" in str(fig.layout)
    one = path_patching(s, "logits", senders=[(0, 2)], progress=False)
    assert torch.isnan(one.values).sum() == one.values.numel() - 1
    assert [c for c, _ in one.top(3)] == [{"layer": 0, "head": 2}]  # NaN cells are not ranked
    with pytest.raises(ValueError, match="before the first receiver"):
        path_patching(s, [(0, 1)], senders=[(0, 2)], progress=False)


def test_back_patching_equals_loop(tiny_llama):
    m = tiny_llama
    ids = torch.tensor([[5, 17, 33, 9, 41, 22, 60, 8]])
    res = back_patching(m, ids, answer=3, metric="logprob", progress=False)
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
