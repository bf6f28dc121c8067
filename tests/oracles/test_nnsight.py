"""Oracle: activations saved with nnsight 0.8.1, converted by ``from_nnsight``, against interp's capture.

nnsight wraps its own deep copy of each model (it replaces ``forward`` methods). Every module-level
hook point the adapter taps is saved in one nnsight trace, addressed by the adapter's own module
paths, so the test also checks that interp's taps read the tensors nnsight users would save.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import requires
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

import interp
from interp.hooks.per_head import PER_HEAD
from interp.sites import Component, UnknownHookError
from interp.trace.interop import from_nnsight

TransformersModel = requires("nnsight.modeling.transformers").TransformersModel

pytestmark = pytest.mark.oracle

C = Component
# module-level components of one block, in the order the forward reaches them (nnsight requires it)
EXECUTION_ORDER = [C.RESID_PRE, C.Z, C.ATTN_OUT, C.RESID_MID, C.MLP_PRE, C.MLP_POST, C.MLP_OUT, C.RESID_POST]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Offline character tokenizer: nnsight insists on one, though the tests feed token ids."""
    specials = ["<bos>", "<eos>", "<pad>", "<unk>"]
    vocab = {s: i for i, s in enumerate(specials)} | {chr(c): 4 + c - 32 for c in range(32, 127)}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    t.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", name_or_path="tiny-char")


def envoy_at(root: object, path: str) -> object:
    """nnsight's proxy of the submodule at a dotted path (``model.layers.0.mlp``)."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)  # type: ignore[index]
    return root


def nnsight_keys(model: interp.Model) -> list[str]:
    """``<module path>.output`` / ``.input`` of every module-level tap, in execution order."""
    taps = model.adapter.taps
    plan = [(taps[C.EMBED], None)]
    plan += [(taps[c], L) for L in range(model.dims.n_layers) for c in EXECUTION_ORDER]
    plan += [(taps[C.LN_FINAL], None), (taps[C.LOGITS], None)]
    return [f"{tap.module_path(L)}.{'output' if tap.io == 'out' else 'input'}" for tap, L in plan]


@pytest.fixture(params=["llama", "gpt2"])
def setup(request: pytest.FixtureRequest, batch: tuple[torch.Tensor, torch.Tensor]
          ) -> tuple[interp.Model, torch.Tensor, torch.Tensor]:
    """conftest's tiny Llama (grouped-query) or GPT-2 and its right-padded batch."""
    return request.getfixturevalue(f"tiny_{request.param}"), *batch


def save_with_nnsight(hf: torch.nn.Module, keys: list[str], ids: torch.Tensor, mask: torch.Tensor) -> dict:
    lm = TransformersModel(hf, task="text-generation", tokenizer=char_tokenizer())
    saved: dict = {}  # made outside the trace: nnsight returns what is stored into it
    with torch.no_grad(), lm.trace({"input_ids": ids, "attention_mask": mask}):
        for key in keys:
            path, io = key.rsplit(".", 1)
            envoy = envoy_at(lm, path)
            saved[key] = (envoy.output if io == "output" else envoy.input).save()
    return saved


def test_from_nnsight_equals_capture(setup: tuple[interp.Model, torch.Tensor, torch.Tensor]) -> None:
    model, ids, mask = setup
    keys = nnsight_keys(model)
    saved = save_with_nnsight(copy.deepcopy(model.hf), keys, ids, mask)
    assert any(isinstance(v, tuple) for v in saved.values())  # attention modules return (out, weights)
    tr = from_nnsight(saved, model, ids, mask)
    ref = model.run((ids, mask), capture=tr.names).trace
    # every module-level hook, in interp's order (the per-head views `result` / `q_input`... are computed by interp
    # from other activations, not saved from any module, so an nnsight save has none)
    module_level = [s.name for s in model.sites() if not s.component.inside_attention and s.component not in PER_HEAD]
    assert tr.names == module_level
    assert tr.manifest.model_fingerprint == model.fingerprint and tr.tokens == ref.tokens
    assert tr["blocks.1.attn.hook_z"].shape == (*ids.shape, model.dims.n_heads, model.dims.d_head)
    for name in tr.names:  # same weights, same kernels: bit-identical
        assert torch.equal(tr[name], ref[name]), name


def test_interp_named_keys_pass_through(setup: tuple[interp.Model, torch.Tensor, torch.Tensor]) -> None:
    """Eager attention weights saved by nnsight under interp's name equal interp's pattern."""
    model, ids, mask = setup
    hf = copy.deepcopy(model.hf)
    hf.set_attn_implementation("eager")
    lm = TransformersModel(hf, task="text-generation", tokenizer=char_tokenizer())
    attn = model.adapter.attn.format(L=1)
    with torch.no_grad(), lm.trace({"input_ids": ids, "attention_mask": mask}):
        weights = envoy_at(lm, attn).output[1].save()
        out = envoy_at(lm, model.adapter.taps[C.RESID_POST].module_path(1)).output.save()
    tr = from_nnsight({"blocks.1.attn.hook_pattern": weights, f"{model.adapter.layers}.1.output": out}, model, ids, mask)
    ref = model.run((ids, mask), capture=tr.names).trace
    real = mask.bool()
    torch.testing.assert_close(tr["blocks.1.attn.hook_pattern"].transpose(1, 2)[real],
                               ref["blocks.1.attn.hook_pattern"].transpose(1, 2)[real], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tr["blocks.1.hook_resid_post"][real], ref["blocks.1.hook_resid_post"][real],
                               rtol=1e-5, atol=1e-5)


def test_unmappable_keys_are_named(setup: tuple[interp.Model, torch.Tensor, torch.Tensor]) -> None:
    model, ids, _ = setup
    x = torch.zeros(*ids.shape, model.dims.d_model)
    good = f"{model.adapter.layers}.0.output"
    with pytest.raises(UnknownHookError, match=r"2 saved key\(s\).*'rotary_emb.output'.*'blocks.0.hook_nope'"):
        from_nnsight({good: x, "rotary_emb.output": x, "blocks.0.hook_nope": x}, model, ids)
    with pytest.raises(ValueError, match=r"two saved entries map to .blocks\.0\.hook_resid_post"):
        from_nnsight({good: x, "blocks.0.hook_resid_post": x}, model, ids)


def test_untapped_modules_become_hf_sites(setup: tuple[interp.Model, torch.Tensor, torch.Tensor]) -> None:
    """A module no named hook point taps (the MLP's activation function) comes back as an hf: site, equal to
    interp's own capture of that site."""
    model, ids, mask = setup
    mlp = f"{model.adapter.layers}.1.mlp"
    act = next(f"{mlp}.{n}" for n in ("act_fn", "act") if hasattr(model.hf.get_submodule(mlp), n))
    saved = save_with_nnsight(copy.deepcopy(model.hf), [f"{mlp}.input", f"{act}.output"], ids, mask)  # forward order
    tr = from_nnsight(saved, model, ids, mask)
    assert tr.names == [f"hf:{mlp}:input", f"hf:{act}"]
    ref = model.run((ids, mask), capture=tr.names).trace
    for name in tr.names:
        assert torch.equal(tr[name], ref[name]), name
