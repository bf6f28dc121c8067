"""Oracle: interp's captures against TransformerLens 4.3's TransformerBridge, and the cache converters.

The bridge gets its own deep copy of each Hugging Face model (booting it swaps submodules and forces
eager attention). Inputs are right-padded batches; values are compared at real tokens only.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
from conftest import requires
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

import interp
from interp.sites import Site
from interp.trace.interop import from_transformer_lens, to_transformer_lens

TransformerBridge = requires("transformer_lens.model_bridge").TransformerBridge

pytestmark = pytest.mark.oracle

COMPARED = ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
            "attn.hook_pattern", "attn.hook_z",
            # the per-head points, against the bridge's use_attn_result / use_split_qkv_input hooks
            "attn.hook_result", "hook_q_input", "hook_k_input", "hook_v_input"]
PROMPTS = ["The capital of France is", "Hello"]  # padded to the longer one
# Per-token relative error bounds. Measured: tiny models <= 1.2e-6; SmolLM2 <= 1e-5 (mlp_out; the
# model's sdpa kernel against the bridge's eager one, over 30 layers). q/k/v/pattern are bit-equal
# where interp's attention and the bridge both run eager Llama attention.
TINY_TOL = 1e-5
SMOLLM2_TOL = 1e-4


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Offline character tokenizer for booting the bridge (TL needs add_bos_token + name_or_path, or it
    reloads the tokenizer from the hub). Tests feed token ids, so its vocabulary does not matter."""
    specials = ["<bos>", "<eos>", "<pad>", "<unk>"]
    vocab = {s: i for i, s in enumerate(specials)} | {chr(c): 4 + c - 32 for c in range(32, 127)}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    t.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True, name_or_path="tiny-char")


def at_real_tokens(name: str, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entries at real (non-padding) positions: the pos axis (query axis for patterns) moved next to batch."""
    axes = Site.parse(name).component.axes
    pos = axes.index("pos") if "pos" in axes else axes.index("q_pos")
    return t.movedim(pos, 1)[mask.bool()]


def token_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest ``|got - want| / |want|`` over rows (norms over all but the first axis)."""
    g, w = got.flatten(1).double(), want.flatten(1).double()
    return float(((g - w).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)).max())


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor, tol: float) -> float:
    """Assert ``got ~ want`` at real tokens: per-token relative error (a token's vector, or a query's
    attention row) at most ``tol``. Returns that error."""
    assert got.shape == want.shape, f"{name}: {tuple(got.shape)} vs {tuple(want.shape)}"
    err = token_rel_err(at_real_tokens(name, got, mask), at_real_tokens(name, want, mask))
    assert err <= tol, f"{name}: per-token relative error {err:.2e} > {tol:.0e}"
    return err


class Setup:
    """An interp model, a bridge on a copy of it, a padded batch, interp's trace and the bridge's cache."""

    def __init__(self, model: interp.Model, tl_tokenizer: object, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.model, self.ids, self.mask = model, ids, mask
        self.bridge = TransformerBridge.boot_transformers(f"{model.name}-local", hf_model=copy.deepcopy(model.hf),
                                                          tokenizer=tl_tokenizer, device="cpu")
        self.bridge.set_use_attn_result(True)  # TransformerLens' hook_result and hook_q/k/v_input
        self.bridge.set_use_split_qkv_input(True)
        # module-level hooks with the model's own attention kernel; attention internals in a second run
        names = model.hook_names()
        inside = [n for n in names if Site.parse(n).component.inside_attention]
        outer = model.run((ids, mask), capture=[n for n in names if n not in inside]).trace
        attn = model.run((ids, mask), capture=inside).trace
        self.trace = dataclasses.replace(outer, activations={**outer.activations, **attn.activations})
        with torch.no_grad():
            _, self.cache = self.bridge.run_with_cache(ids, attention_mask=mask)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest, batch: tuple[torch.Tensor, torch.Tensor]) -> Setup:
    """conftest's tiny Llama (grouped-query) or GPT-2 on its right-padded batch."""
    model = request.getfixturevalue(f"tiny_{request.param}")
    return Setup(model, char_tokenizer(), *batch)


@pytest.fixture(scope="module")
def smollm2_setup(_smollm2_session: interp.Model) -> Setup:
    model = _smollm2_session
    ids, mask = model.tokenize(PROMPTS, prepend_bos=True)  # SmolLM2's tokenizer adds no BOS itself
    return Setup(model, copy.deepcopy(model.tokenizer), ids, mask)


def check_against_bridge(s: Setup, tol: float) -> dict[str, float]:
    errs: dict[str, float] = {}
    for L in range(s.model.dims.n_layers):
        for hook in COMPARED:
            name = f"blocks.{L}.{hook}"
            errs[name] = assert_close(name, s.trace[name], s.cache[name], s.mask, tol)
    return errs


def test_tiny_hooks_match_bridge(tiny: Setup) -> None:
    errs = check_against_bridge(tiny, tol=TINY_TOL)
    assert len(errs) == 2 * len(COMPARED)


@pytest.mark.slow
def test_smollm2_hooks_match_bridge(smollm2_setup: Setup) -> None:
    errs = check_against_bridge(smollm2_setup, tol=SMOLLM2_TOL)
    assert len(errs) == 30 * len(COMPARED)


def check_from_cache(s: Setup, tol: float) -> None:
    with pytest.warns(UserWarning, match="skipped"):
        tr = from_transformer_lens(s.cache, s.ids, s.mask, model=s.model)
    assert sorted(tr.names) == sorted(s.model.hook_names())  # every hook interp offers
    assert tr.tokens == s.trace.tokens
    assert (tr.manifest.model_id, tr.manifest.model_fingerprint) == (s.model.name, s.model.fingerprint)
    for name in tr.names:
        assert_close(name, tr[name], s.trace[name], s.mask, tol)


def test_tiny_from_transformer_lens_equals_capture(tiny: Setup) -> None:
    check_from_cache(tiny, tol=TINY_TOL)


@pytest.mark.slow
def test_smollm2_from_transformer_lens_equals_capture(smollm2_setup: Setup) -> None:
    check_from_cache(smollm2_setup, tol=SMOLLM2_TOL)


def test_from_plain_dict_without_model(tiny: Setup) -> None:
    plain = dict(tiny.cache.items())  # no bridge config: rotary-ness read from the cached names
    rotary = tiny.bridge.cfg.positional_embedding_type == "rotary"
    with pytest.warns(UserWarning, match="skipped") as rec:
        tr = from_transformer_lens(plain, attention_mask=tiny.mask)  # token ids from embed.hook_in
    assert torch.equal(tr.input_ids, tiny.ids)
    assert (tr.manifest.model_id, tr.manifest.model_fingerprint) == ("transformer-lens", "")
    assert ("blocks.0.attn.hook_q" in tr) == rotary  # GPT-2's hook_q is ambiguous without a model
    if not rotary:
        assert "pass model=" in str(rec[0].message)
    assert_close("blocks.1.attn.hook_v", tr["blocks.1.attn.hook_v"], tiny.trace["blocks.1.attn.hook_v"], tiny.mask, TINY_TOL)


def check_to_cache(s: Setup, tol: float) -> None:
    ours = to_transformer_lens(s.trace, s.bridge)
    theirs = s.cache
    m = s.mask.bool()
    with torch.no_grad():  # apply_ln runs the bridge's ln_final
        for kwargs in ({"incl_mid": True, "apply_ln": True}, {"incl_mid": True}):
            a, la = ours.accumulated_resid(layer=-1, return_labels=True, **kwargs)
            b, lb = theirs.accumulated_resid(layer=-1, return_labels=True, **kwargs)
            assert la == lb
            assert token_rel_err(a[:, m].flatten(0, 1), b[:, m].flatten(0, 1)) <= tol
        a, la = ours.decompose_resid(layer=-1, apply_ln=True, return_labels=True)  # needs ln_final.hook_scale
        b, lb = theirs.decompose_resid(layer=-1, apply_ln=True, return_labels=True)
    assert la == lb and a.shape == b.shape
    assert token_rel_err(a[:, m].flatten(0, 1), b[:, m].flatten(0, 1)) <= tol
    rot = "rot_" if s.bridge.cfg.positional_embedding_type == "rotary" else ""
    for name in (f"blocks.0.attn.hook_{rot}k", "blocks.0.attn.hook_v", "blocks.0.ln2.hook_scale", "ln_final.hook_scale"):
        assert ours[name].shape == theirs[name].shape, name
        assert token_rel_err(ours[name][m], theirs[name][m]) <= tol, name


def test_tiny_to_transformer_lens_helpers(tiny: Setup) -> None:
    check_to_cache(tiny, tol=TINY_TOL)


@pytest.mark.slow
def test_smollm2_to_transformer_lens_helpers(smollm2_setup: Setup) -> None:
    check_to_cache(smollm2_setup, tol=SMOLLM2_TOL)


def test_round_trip_is_exact(tiny: Setup) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the derived hook_scale / hook_pos_embed entries are skipped
        back = from_transformer_lens(to_transformer_lens(tiny.trace, tiny.bridge), tiny.ids, tiny.mask, model=tiny.model)
    assert sorted(back.names) == sorted(tiny.trace.names)
    for name in back.names:
        assert torch.equal(back[name], tiny.trace[name]), name


def test_errors(tiny: Setup) -> None:
    with pytest.raises(ValueError, match="input_ids"):
        from_transformer_lens({"blocks.0.hook_out": torch.zeros(1, 3, 8)})
    deep = dataclasses.replace(tiny.trace, activations={"blocks.7.hook_resid_post": tiny.trace["blocks.1.hook_resid_post"]})
    with pytest.raises(ValueError, match="beyond"):
        to_transformer_lens(deep, tiny.bridge)


@pytest.mark.parametrize(("ours", "theirs", "head"), [("k_input.1", "blocks.1.hook_k_input", 1),
                                                      ("q_input.0", "blocks.0.hook_q_input", 2),
                                                      ("v_input.1", "blocks.1.hook_v_input", 0),
                                                      ("result.0", "blocks.0.attn.hook_result", 3)])
def test_per_head_edits_match_bridge(tiny: Setup, ours: str, theirs: str, head: int) -> None:
    """Adding a vector to one head's q / k / v input or result: interp's intervention against the same edit in a
    TransformerLens hook on the bridge (use_split_qkv_input, use_attn_result)."""
    from interp.hooks import Add, run_with_hooks

    delta = torch.randn(tiny.model.dims.d_model, generator=torch.Generator().manual_seed(head))

    def add(t: torch.Tensor, hook: object) -> torch.Tensor:
        t = t.clone()
        t[:, :, head] += delta
        return t

    with torch.no_grad():
        want = tiny.bridge.run_with_hooks(tiny.ids, attention_mask=tiny.mask, fwd_hooks=[(theirs, add)])
        plain = tiny.bridge(tiny.ids, attention_mask=tiny.mask)
    got = run_with_hooks(tiny.model, tiny.ids, tiny.mask, interventions=[Add(ours, delta, heads=[head])]).logits
    assert token_rel_err(want[tiny.mask.bool()], plain[tiny.mask.bool()]) > 1e-3  # the edit matters
    assert token_rel_err(got[tiny.mask.bool()], want[tiny.mask.bool()]) <= TINY_TOL
