"""The per-head hook points (``attn.hook_result``, ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``) against
independent oracles: the block equation, edits of the Hugging Face modules written by hand, ``hf:`` edits of the
attention's norm input, and gradients at the existing hook points. TransformerLens' own ``hook_result`` /
``hook_q_input`` are compared in tests/oracles/test_per_head_transformer_lens.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DECODERS, FAMILIES

import interp
from interp.errors import BadInputError
from interp.hooks import Ablate, Add, run_with_hooks
from interp.models import Model

TIGHT = dict(rtol=2e-5, atol=2e-5)


def delta_for(m: Model, seed: int = 0) -> torch.Tensor:
    return torch.randn(m.dims.d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_result_sums_to_the_output_projection_and_inputs_copy_the_stream(
        tiny_models: dict[str, Model], family: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_models[family]
    ids, mask = batch
    plain = run_with_hooks(m, ids, mask).logits
    names = [f"{c}.{L}" for L in range(m.dims.n_layers) for c in ("result", "attn_out", "q_input", "k_input",
                                                                  "v_input", "resid_pre")]
    out = run_with_hooks(m, ids, mask, capture=names)
    assert torch.equal(out.logits, plain)  # reading them changes nothing, bit for bit
    a, d = out.activations, m.dims
    b_O = m.weights.b_O
    for L in range(d.n_layers):
        result = a[f"blocks.{L}.attn.hook_result"]
        assert result.shape == (*ids.shape, d.n_heads, d.d_model)
        torch.testing.assert_close(result.sum(2) + b_O[L], a[f"blocks.{L}.hook_attn_out"], **TIGHT)
        x = a[f"blocks.{L}.hook_resid_pre"]
        assert torch.equal(a[f"blocks.{L}.hook_q_input"], x[:, :, None].expand(-1, -1, d.n_heads, -1))
        for kv in ("k", "v"):
            assert torch.equal(a[f"blocks.{L}.hook_{kv}_input"], x[:, :, None].expand(-1, -1, d.n_kv_heads, -1))


@pytest.mark.parametrize("family", DECODERS)
def test_editing_every_heads_input_equals_editing_the_attention_norms_input(
        tiny_models: dict[str, Model], family: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The attention's norm is read by q, k and v only: the same edit of every head's three inputs is an edit of
    that norm's input (an ``hf:`` edit of the Hugging Face module)."""
    m = tiny_models[family]
    ids, mask = batch
    delta = delta_for(m)
    norm = m.adapter.attn_inputs.norm.format(L=1)  # type: ignore[union-attr]
    got = run_with_hooks(m, ids, mask, interventions=[Add(f"{c}.1", delta) for c in ("q_input", "k_input", "v_input")])
    want = run_with_hooks(m, ids, mask, interventions=[Add(f"hf:{norm}:input", delta)])
    assert (want.logits - run_with_hooks(m, ids, mask).logits).abs().max() > 1e-2  # the edit matters
    torch.testing.assert_close(got.logits, want.logits, **TIGHT)


def test_one_kv_heads_input_edit_equals_a_hand_written_hook(tiny_llama: Model,
                                                             batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Grouped-query Llama: editing key/value head 1's key input recomputes only that head's keys, as a raw hook
    on ``k_proj`` that feeds that head ``k_proj(input_layernorm(x + delta))`` does."""
    m = tiny_llama
    ids, mask = batch
    delta = delta_for(m, 1)
    blk = m.hf.model.layers[1]
    dh = m.dims.d_head
    assert m.dims.n_kv_heads == 2
    seen: dict[str, torch.Tensor] = {}

    def keep(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen["x"] = args[0]

    def edit(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        new = torch.nn.functional.linear(blk.input_layernorm(seen["x"] + delta), mod.weight, mod.bias)
        out = out.clone()
        out[..., dh:2 * dh] = new[..., dh:2 * dh]
        return out

    hs = [blk.input_layernorm.register_forward_pre_hook(keep), blk.self_attn.k_proj.register_forward_hook(edit)]
    try:
        with torch.no_grad():
            want = m.hf(input_ids=ids, attention_mask=mask).logits
    finally:
        for h in hs:
            h.remove()
    got = run_with_hooks(m, ids, mask, interventions=[Add("k_input.1", delta, heads=[1])]).logits
    torch.testing.assert_close(got, want, **TIGHT)
    assert (got - run_with_hooks(m, ids, mask).logits).abs().max() > 1e-3


def test_a_value_input_edit_without_a_norm_equals_a_hand_written_hook(tiny_bert: Model,
                                                                      batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """BERT (post-norm): the projections read the block's input itself."""
    m = tiny_bert
    ids, mask = batch
    delta = delta_for(m, 2)
    dh = m.dims.d_head

    def edit(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        new = torch.nn.functional.linear(args[0] + delta, mod.weight, mod.bias)
        out = out.clone()
        out[..., 2 * dh:3 * dh] = new[..., 2 * dh:3 * dh]
        return out

    h = m.hf.encoder.layer[0].attention.self.value.register_forward_hook(edit)
    try:
        with torch.no_grad():
            want = m.hf(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        h.remove()
    got = run_with_hooks(m, ids, mask, interventions=[Add("v_input.0", delta, heads=[2])]).logits
    torch.testing.assert_close(got, want, **TIGHT)


def test_result_edits_equal_edits_of_the_output_projection_and_of_z(tiny_gpt2: Model,
                                                                    batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_gpt2
    ids, mask = batch
    delta = delta_for(m, 3)
    # adding to one head's result adds to the projection's output: a raw hook on c_proj
    h = m.hf.transformer.h[0].attn.c_proj.register_forward_hook(lambda mod, args, out: out + delta)
    try:
        with torch.no_grad():
            want = m.hf(input_ids=ids, attention_mask=mask).logits
    finally:
        h.remove()
    got = run_with_hooks(m, ids, mask, interventions=[Add("result.0", delta, heads=[2])]).logits
    torch.testing.assert_close(got, want, **TIGHT)
    # zeroing a head's result is zeroing its z
    zr = run_with_hooks(m, ids, mask, interventions=[Ablate("result.1", heads=[0, 3])]).logits
    zz = run_with_hooks(m, ids, mask, interventions=[Ablate("z.1", heads=[0, 3])]).logits
    torch.testing.assert_close(zr, zz, **TIGHT)


def test_gradients_at_the_per_head_points(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """d m / d result_h is d m / d attn_out for every head; the q, k, v input gradients summed over heads are what
    the attention adds to the stream's gradient: d m / d resid_pre - d m / d resid_mid (the residual path)."""
    m = tiny_llama
    ids, mask = batch

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, :5].sum()

    ours = run_with_hooks(m, ids, mask, grads=["result.0", "q_input.0", "k_input.0", "v_input.0"], metric=metric).grads
    ref = run_with_hooks(m, ids, mask, grads=["attn_out.0", "resid_pre.0", "resid_mid.0"], metric=metric).grads
    g = ours["blocks.0.attn.hook_result"]
    for h in range(m.dims.n_heads):
        torch.testing.assert_close(g[:, :, h], ref["blocks.0.hook_attn_out"], **TIGHT)
    total = sum(ours[f"blocks.0.hook_{c}_input"].sum(2) for c in "qkv")
    through_attention = ref["blocks.0.hook_resid_pre"] - ref["blocks.0.hook_resid_mid"]
    assert through_attention.abs().max() > 1e-3
    torch.testing.assert_close(total, through_attention, rtol=1e-4, atol=1e-5)


def test_hooks_are_installed_only_when_asked_for(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_llama
    attn = m.hf.model.layers[0].self_attn
    mods = [attn.o_proj, attn.q_proj, attn.k_proj, attn.v_proj, m.hf.model.layers[0].input_layernorm]
    with m.hooks(capture=["z.0", "resid_pre.0", "attn_out.0"]):
        assert not any(mod._forward_hooks for mod in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
        assert not m.hf.model.layers[0].input_layernorm._forward_pre_hooks
    with m.hooks(capture=["result.0", "k_input.0"]):
        assert attn.o_proj._forward_hooks and attn.k_proj._forward_hooks and not attn.q_proj._forward_hooks
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in mods)


def test_traces_heads_and_errors(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    m = tiny_llama
    tr = m.run(batch, capture=["result.1", "k_input.1"]).trace
    assert tuple(tr["blocks.1.attn.hook_result"].shape) == (3, 8, 4, 64)
    assert tuple(tr.get("k_input", layer=1, heads=[1]).shape) == (3, 8, 1, 64)
    with pytest.raises(BadInputError, match=r"out of range.*2 heads"):
        m.run(batch, interventions=[Ablate("k_input.1", heads=[3])])
    assert interp.sites.Site.parse("q_input.2").name == "blocks.2.hook_q_input"
    assert interp.sites.Site.parse("blocks.0.attn.hook_result").short == "result.0"


def test_stop_early_after_the_per_head_points(tiny_llama: Model, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    names = ["result.0", "q_input.0", "v_input.0"]
    early = run_with_hooks(tiny_llama, *batch, capture=names, stop_early=True)
    full = run_with_hooks(tiny_llama, *batch, capture=names)
    assert early.logits is None and set(early.activations) == set(full.activations)
    for k, v in full.activations.items():
        assert torch.equal(early.activations[k], v), k
