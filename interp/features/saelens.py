"""Read and write SAEs in SAELens' on-disk layout, so users can bring (or take away) existing SAEs.

SAELens saves an SAE as a directory with ``cfg.json`` and ``sae_weights.safetensors`` holding
``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``. Its forward is
``z = act(( x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``;
``act`` is ReLU for the ``"standard"`` architecture and ReLU of the top ``k`` for ``"topk"``. The
config names the hook (``metadata.hook_name`` in SAELens 6, ``hook_name`` / ``hook_point`` before)
and ``k`` (``k`` in 6, ``activation_fn_kwargs.k`` before). ``rescale_acts_by_decoder_norm`` (SAELens 6's
TopK default) is folded into the weights on loading. Only ``normalize_activations`` of ``"none"`` is
read: SAELens folds its dataset-wide scaling factor into the weights when it saves.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError
from interp.features.points import canonical_hook
from interp.features.sae import SAEConfig, SparseAutoencoder
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes

log = logging.getLogger(__name__)
SUPPORTED = ("standard", "relu", "topk")


def _get(cfg: dict[str, Any], *keys: str) -> Any:
    meta = cfg.get("metadata") or {}
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
        if meta.get(k) is not None:
            return meta[k]
    return None


def load_saelens(cls: type[SparseAutoencoder], path: str | os.PathLike[str],
                 device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Build a :class:`SparseAutoencoder` from an SAELens directory (``cfg.json`` + ``sae_weights.safetensors``).

    Raises:
        BadInputError: an architecture or normalisation interp does not run (JumpReLU, gated,
            per-token rescaling), or weights whose shapes disagree with the config.
        CorruptStoreError: a damaged ``cfg.json`` or weights file.
    """
    src = Path(path)
    try:
        cfg = json.loads((src / "cfg.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(f"{src / 'cfg.json'} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CorruptStoreError(f"{src / 'cfg.json'} does not hold an SAELens config")
    try:
        w = load_file(str(src / "sae_weights.safetensors"), device=str(device))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CorruptStoreError(f"{src / 'sae_weights.safetensors'} cannot be read ({e})") from None
    arch = str(cfg.get("architecture") or "standard")
    act_fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "")
    if arch == "standard" and act_fn == "topk":
        arch = "topk"
    if arch not in SUPPORTED:
        raise BadInputError(f"SAELens architecture {arch!r} in {src} is not supported; interp runs {list(SUPPORTED)}")
    norm = str(cfg.get("normalize_activations") or "none")
    if norm != "none":
        raise BadInputError(f"SAELens normalize_activations={norm!r} in {src} is not supported (only 'none'; "
                         "SAELens folds 'expected_average_only_in' into the weights when it saves for inference)")
    missing = [n for n in ("W_enc", "W_dec", "b_enc", "b_dec") if n not in w]
    if missing:
        raise BadInputError(f"{src / 'sae_weights.safetensors'} lacks {missing}; it holds {sorted(w)}")
    d_in, d_sae = w["W_enc"].shape
    if tuple(w["W_dec"].shape) != (d_sae, d_in) or w["b_enc"].shape != (d_sae,) or w["b_dec"].shape != (d_in,):
        raise BadInputError(f"SAELens weights in {src} have inconsistent shapes: "
                         f"{ {n: tuple(w[n].shape) for n in ('W_enc', 'W_dec', 'b_enc', 'b_dec')} }")
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        if cfg.get(name) is not None and int(cfg[name]) != want:
            raise BadInputError(f"cfg.json says {name}={cfg[name]} but the weights have {want}")
    k = _get(cfg, "k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "topk" and k is None:
        raise BadInputError(f"SAELens topk SAE in {src} names no k (cfg 'k' or activation_fn_kwargs.k)")
    config = SAEConfig(d_sae=int(d_sae), activation="topk" if arch == "topk" else "relu", k=int(k or 1),
                       apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), normalize_input=False)
    sae = cls(config, model_id=str(_get(cfg, "model_name") or ""), input_scale_=1.0, source_=f"saelens:{src}")
    hook = str(_get(cfg, "hook_name", "hook_point") or "")
    try:
        sae.hook = canonical_hook(hook) if hook else ""
    except BadInputError:  # a hook point of another library's naming: kept as SAELens wrote it
        log.info("SAELens hook %r in %s is no interp hook name; kept as is (key the SAE by an interp name)", hook, src)
        sae.hook = hook
    w = {n: w[n].float() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if cfg.get("rescale_acts_by_decoder_norm"):
        # SAELens: z = act(pre * |W_dec|), x_hat = (z / |W_dec|) @ W_dec + b_dec; fold the norms in
        norms = w["W_dec"].norm(dim=-1).clamp_min(1e-12)
        w = {"W_enc": w["W_enc"] * norms, "b_enc": w["b_enc"] * norms, "W_dec": w["W_dec"] / norms[:, None],
             "b_dec": w["b_dec"]}
    for n, t in w.items():
        setattr(sae, n + "_", t.contiguous())
    return sae


def save_saelens(sae: SparseAutoencoder, path: str | os.PathLike[str]) -> Path:
    """Write ``sae`` in SAELens 6's layout (the input scale folded into the weights).

    Example:
        >>> import torch, tempfile
        >>> from interp.features import SAEConfig, SparseAutoencoder
        >>> sae = SparseAutoencoder(SAEConfig(d_sae=8, k=2, batch_size=64, n_tokens=128), progress=False)
        >>> sae = sae.fit(torch.randn(256, 4))
        >>> back = SparseAutoencoder.load(save_saelens(sae, tempfile.mkdtemp()))
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(back.reconstruct(x), sae.reconstruct(x), atol=1e-5)
        True
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    s = sae.input_scale_
    w = sae.state_tensors()
    b_dec = w["b_dec"] / s
    # z = act((s x - b) W + c) = act((x - b/s) (s W) + c);  x_hat = (z W_dec + b) / s
    tensors = {"W_enc": (w["W_enc"] * s).contiguous(), "b_enc": w["b_enc"], "W_dec": (w["W_dec"] / s).contiguous(),
               "b_dec": b_dec.contiguous()}
    atomic_save_tensors(out / "sae_weights.safetensors", tensors)
    cfg: dict[str, Any] = {"architecture": "topk" if sae.config.activation == "topk" else "standard",
                           "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": sae.config.apply_b_dec_to_input,
                           "normalize_activations": "none", "reshape_activations": "none",
                           "metadata": {"hook_name": sae.hook, "model_name": sae.model_id}}
    if sae.config.activation == "topk":
        cfg["k"] = sae.config.k
    atomic_write_bytes(out / "cfg.json", json.dumps(cfg, indent=1).encode("utf-8"))
    return out


__all__ = ["load_saelens", "save_saelens"]
