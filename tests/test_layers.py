"""interp.layers: run plans (skip, reorder, repeat, parallel, head masks) against hand-edited Hugging Face
forwards, task suites, and the studies."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytest
import torch
from conftest import randomize
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import interp
from interp.errors import BadInputError
from interp.hooks import LayerPlan
from interp.layers import edits
from interp.models import Model


@pytest.fixture(scope="module")
def llama5() -> Model:
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=32, rms_norm_eps=1e-5,
                      pad_token_id=0, tie_word_embeddings=False)
    return interp.from_hf(randomize(LlamaForCausalLM(cfg), 7).eval(), name="llama5")


@pytest.fixture(scope="module")
def gpt5() -> Model:
    cfg = GPT2Config(n_embd=32, n_layer=5, n_head=4, n_inner=48, vocab_size=64, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return interp.from_hf(randomize(GPT2LMHeadModel(cfg), 8).eval(), name="gpt5")


IDS = torch.tensor([[5, 9, 3, 17, 22, 8, 41, 2], [7, 7, 30, 12, 1, 0, 0, 0]])
MASK = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])


def _hf_with_blocks(model: Model, order: Sequence[int]) -> torch.Tensor:
    """Oracle: the plain HF forward of a deep copy whose block list is edited by hand."""
    hf = copy.deepcopy(model.hf)
    inner = hf.model if hasattr(hf, "model") else hf.transformer
    name = "layers" if hasattr(inner, "layers") else "h"
    old = getattr(inner, name)
    setattr(inner, name, nn.ModuleList([old[i] for i in order]))
    hf.config.num_hidden_layers = len(order)
    with torch.no_grad():
        return hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits


def _run(model: Model, ivs: list, ids: torch.Tensor = IDS, mask: torch.Tensor | None = MASK) -> torch.Tensor:
    with torch.no_grad():
        out = model.run((ids, mask), interventions=ivs) if mask is not None else model.run(ids, interventions=ivs)
    assert out.logits is not None
    return out.logits


def _real(t: torch.Tensor) -> torch.Tensor:
    return t[MASK.bool()]


@pytest.mark.parametrize("name", ["llama5", "gpt5"])
@pytest.mark.parametrize("make,order", [
    (lambda m: edits.skip(m, blocks=[1, 3]), [0, 2, 4]),
    (lambda m: edits.reorder(m, [0, 2, 1, 3, 4]), [0, 2, 1, 3, 4]),
    (lambda m: edits.reverse(m, 1, 4), [0, 3, 2, 1, 4]),
    (lambda m: edits.swap(m, 0, -1), [4, 1, 2, 3, 0]),
    (lambda m: edits.repeat(m, [2], times=3), [0, 1, 2, 2, 2, 3, 4]),
    (lambda m: [LayerPlan(order=(4, 4, 0, 1, 1, 2, 3, 0))], [4, 4, 0, 1, 1, 2, 3, 0]),
])
def test_block_plans_equal_a_hand_edited_hf_forward(name: str, make: Callable, order: list[int],
                                                    request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    ivs = make(model)
    assert [i for s in ivs[0].steps(5) for i in s] == order  # the helper built the plan the test means
    ref = _hf_with_blocks(model, order)
    got = _run(model, ivs)
    torch.testing.assert_close(_real(got), _real(ref), rtol=1e-5, atol=1e-5)
    # the model is restored afterwards: a plain run equals the plain HF forward
    with torch.no_grad():
        plain = model.hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits
    torch.testing.assert_close(_real(_run(model, [])), _real(plain))


def _llama_by_hand(model: Model, ids: torch.Tensor,
                   step: Callable[[list[nn.Module], torch.Tensor, Callable[[nn.Module, torch.Tensor], torch.Tensor]], torch.Tensor]
                   ) -> torch.Tensor:
    """Oracle: embed, the blocks called by hand (``step(blocks, x, call)``), final norm, LM head; no padding."""
    hf = model.hf
    with torch.no_grad():
        x = hf.model.embed_tokens(ids)
        pos = torch.arange(ids.shape[1])[None]
        pe = hf.model.rotary_emb(x, pos)

        def call(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            out = block(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
            return out[0] if isinstance(out, tuple) else out

        x = step(list(hf.model.layers), x, call)
        return hf.lm_head(hf.model.norm(x))


@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_parallel_span_equals_blocks_called_by_hand(llama5: Model, combine: str) -> None:
    ids = IDS[:1]

    def step(blocks: list[nn.Module], x: torch.Tensor, call: Callable) -> torch.Tensor:
        x = call(blocks[0], x)
        outs = [call(blocks[i], x) for i in (1, 2, 3)]
        x = sum(outs) / 3 if combine == "mean" else x + sum(o - x for o in outs)
        return call(blocks[4], x)

    ref = _llama_by_hand(llama5, ids, step)
    got = _run(llama5, edits.parallel(llama5, 1, 4, combine=combine), ids=ids, mask=None)  # type: ignore[arg-type]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_sublayer_skips_equal_blocks_without_that_sublayer_by_hand(llama5: Model) -> None:
    ids = IDS[:1]
    pos = torch.arange(ids.shape[1])[None]

    def step(blocks: list[nn.Module], x: torch.Tensor, call: Callable) -> torch.Tensor:
        pe = llama5.hf.model.rotary_emb(x, pos)
        for i, b in enumerate(blocks):
            if i == 1:  # no attention: x + mlp(ln2(x))
                x = x + b.mlp(b.post_attention_layernorm(x))
            elif i == 3:  # no MLP: x + attn(ln1(x))
                x = x + b.self_attn(b.input_layernorm(x), attention_mask=None, position_embeddings=pe)[0]
            elif i != 4:  # block 4 skipped
                x = call(b, x)
        return x

    ref = _llama_by_hand(llama5, ids, step)
    got = _run(llama5, edits.skip(llama5, blocks=[4], attn=[1], mlp=[3]), ids=ids, mask=None)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_head_mask_values_and_gradient_equal_a_hand_hook(llama5: Model) -> None:
    """One backward through a HeadMask gives d loss / d mask for every head, as a hand-written o_proj hook does."""
    g = torch.Generator().manual_seed(0)
    scales = torch.rand(5, 4, generator=g)
    targets = IDS[:, 1:]

    def loss(logits: torch.Tensor) -> torch.Tensor:
        lp = logits[:, :-1].log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        return -(lp * MASK[:, 1:]).sum()

    # interp
    ivs = edits.head_mask(llama5, scales, requires_grad=True)
    from interp.hooks import forward, hooks
    with torch.enable_grad(), hooks(llama5, interventions=ivs):
        value = loss(forward(llama5, IDS, MASK))
        value.backward()
    got_grad = ivs[0].scales.grad  # type: ignore[attr-defined]
    # oracle: a plain pre-hook on each o_proj scaling the heads of its input
    hf = copy.deepcopy(llama5.hf)
    leaf = scales.clone().requires_grad_(True)
    handles = []
    for L, layer in enumerate(hf.model.layers):
        def pre(mod: nn.Module, args: tuple, L: int = L) -> tuple:
            z = args[0].unflatten(-1, (4, 8)) * leaf[L][:, None]
            return (z.flatten(-2),)
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(pre))
    ref_value = loss(hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits)
    ref_value.backward()
    for h in handles:
        h.remove()
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    assert leaf.grad is not None and got_grad is not None
    torch.testing.assert_close(got_grad, leaf.grad, rtol=1e-4, atol=1e-5)
    # zeroing named heads equals a zero in the mask
    z = torch.ones(5, 4)
    z[2, 1] = 0
    torch.testing.assert_close(_run(llama5, edits.head_mask(llama5, heads=["L2H1"])),
                               _run(llama5, edits.head_mask(llama5, z)))


def test_plans_combine_with_captures_and_other_edits(llama5: Model) -> None:
    from interp.hooks import run_with_hooks
    ivs = edits.skip(llama5, blocks=[2]) + edits.head_mask(llama5, heads=["L0H0"])
    out = run_with_hooks(llama5, IDS, MASK, capture=["resid_post", "resid_pre.3"], interventions=ivs)
    assert "blocks.2.hook_resid_post" not in out.activations  # block 2 never ran
    torch.testing.assert_close(out.activations["blocks.3.hook_resid_pre"], out.activations["blocks.1.hook_resid_post"])
    # and the head mask still applied: block 0's output differs from the unmasked run's
    plain = run_with_hooks(llama5, IDS, MASK, capture="resid_post.0")
    assert not torch.allclose(plain.activations["blocks.0.hook_resid_post"], out.activations["blocks.0.hook_resid_post"])


def test_bad_plans_raise_clear_errors(llama5: Model) -> None:
    with pytest.raises(BadInputError, match="leaves nothing to run"):
        edits.skip(llama5, blocks=range(5))
    with pytest.raises(BadInputError, match="leaves no block to run"):
        _run(llama5, [LayerPlan(drop=(0, 1, 2, 3, 4))])
    with pytest.raises(BadInputError, match=r"repeats block\(s\) \[1\] and misses block\(s\) \[2\]"):
        edits.reorder(llama5, [0, 1, 1, 3, 4])
    with pytest.raises(BadInputError, match=r"misses block\(s\) \[4\]"):
        edits.reorder(llama5, [0, 1, 2, 3])
    with pytest.raises(BadInputError, match="out of range"):
        edits.reorder(llama5, [0, 1, 2, 3, 5])
    with pytest.raises(BadInputError, match=r"shape \[n_layers, n_heads\] = \[5, 4\]"):
        edits.head_mask(llama5, torch.ones(4, 5))
    from interp.hooks import HeadMask
    with pytest.raises(BadInputError, match="head mask has shape"):
        _run(llama5, [HeadMask(scales=torch.ones(6, 4))])
    with pytest.raises(BadInputError, match="span"):
        edits.parallel(llama5, 3, 3)
    # a failed run leaves the model intact
    with torch.no_grad():
        plain = llama5.hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits
    torch.testing.assert_close(_real(_run(llama5, [])), _real(plain))
