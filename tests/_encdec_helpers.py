"""Shared pieces of the encoder–decoder tests: tiny random T5 / BART / Marian models from the real config classes,
and the oracle: a plain Hugging Face forward with raw PyTorch hooks placed by hand on the modules (their names written
out here), reading what each hook point holds and applying hand edits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MBartConfig,
    MBartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)

V, H, DH = 40, 4, 8
BUILD: dict[str, Callable[[], torch.nn.Module]] = {
    "t5": lambda: T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=32, d_kv=DH, d_ff=48, num_layers=2,
                                                      num_heads=H, decoder_start_token_id=0, pad_token_id=0,
                                                      eos_token_id=1)),
    "bart": lambda: BartForConditionalGeneration(BartConfig(
        vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)),
    "mbart": lambda: MBartForConditionalGeneration(MBartConfig(
        vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)),
    "marian": lambda: MarianMTModel(MarianConfig(
        vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
        pad_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
}
# where the raw oracle hooks go, written out by hand (tests may know HF module names)
LAYOUT: dict[str, dict[str, Any]] = {
    "t5": dict(blocks={"encoder": "encoder.block", "decoder": "decoder.block"}, attn="layer.0.SelfAttention",
               cross="layer.1.EncDecAttention", mlp={"encoder": "layer.1.DenseReluDense",
                                                    "decoder": "layer.2.DenseReluDense"},
               qkvo=("q", "k", "v", "o"), stacks={"encoder": "encoder", "decoder": "decoder"}),
    "bart": dict(blocks={"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"}, attn="self_attn",
                 cross="encoder_attn", mlp={"encoder": "fc2", "decoder": "fc2"},
                 qkvo=("q_proj", "k_proj", "v_proj", "out_proj"),
                 stacks={"encoder": "model.encoder", "decoder": "model.decoder"}),
}


LAYOUT["marian"] = LAYOUT["mbart"] = LAYOUT["bart"]  # Marian and mBART name their modules as BART does


def build(family: str, seed: int = 7) -> torch.nn.Module:
    """A tiny random model of ``family`` with weights larger than the default init (every sublayer matters)."""
    torch.manual_seed(seed)
    hf = BUILD[family]()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return hf.eval()


@contextmanager
def eager(hf: torch.nn.Module) -> Iterator[None]:
    """Every config the modules hold switched to transformers' own eager attention."""
    cfgs = {id(c): c for m in hf.modules() if (c := getattr(m, "config", None)) is not None}
    saved = {k: c._attn_implementation for k, c in cfgs.items()}
    for c in cfgs.values():
        c._attn_implementation = "eager"
    try:
        yield
    finally:
        for k, c in cfgs.items():
            c._attn_implementation = saved[k]


def raw(family: str, hf: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor,
        edits: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] | None = None
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A plain forward with raw PyTorch hooks on the modules: what each named hook point holds, and ``edits``
    ({(module path, "out"|"in"): fn}) applied to a module's (first) output or first input."""
    lay, acts, handles = LAYOUT[family], {}, []
    edits = edits or {}

    def out_hook(name: str | None, path: str) -> Any:
        def f(m: Any, a: Any, o: Any) -> Any:
            t = o["last_hidden_state"] if isinstance(o, dict) else o[0] if isinstance(o, tuple) else o
            if (path, "out") in edits:
                t = edits[(path, "out")](t)
            if name:
                acts[name] = t.detach().clone()
            if (path, "out") not in edits:
                return None
            if isinstance(o, dict):
                o["last_hidden_state"] = t
                return o
            return (t, *o[1:]) if isinstance(o, tuple) else t
        return f

    def in_hook(name: str | None, path: str) -> Any:
        def f(m: Any, a: Any, k: Any) -> Any:
            t = a[0] if a else k["hidden_states"]
            if (path, "in") in edits:
                t = edits[(path, "in")](t)
            if name:
                acts[name] = t.detach().clone()
            if (path, "in") not in edits:
                return None
            return ((t, *a[1:]), k) if a else (a, {**k, "hidden_states": t})
        return f

    places: list[tuple[str | None, str, str]] = []
    for s in ("encoder", "decoder"):
        for L in range(len(hf.get_submodule(lay["blocks"][s]))):
            b = f"{lay['blocks'][s]}.{L}"
            places += [(f"{s}.resid_pre.{L}", b, "in"), (f"{s}.resid_post.{L}", b, "out"),
                       (f"{s}.attn_out.{L}", f"{b}.{lay['attn']}", "out"), (f"{s}.mlp_out.{L}", f"{b}.{lay['mlp'][s]}", "out")]
            attns = [("", f"{b}.{lay['attn']}")] + ([("cross_", f"{b}.{lay['cross']}")] if s == "decoder" else [])
            for pre, a in attns:
                if pre:
                    places.append((f"{s}.cross_attn_out.{L}", a, "out"))
                q, k, v, o = lay["qkvo"]
                places += [(f"{s}.{pre}q.{L}", f"{a}.{q}", "out"), (f"{s}.{pre}k.{L}", f"{a}.{k}", "out"),
                           (f"{s}.{pre}v.{L}", f"{a}.{v}", "out"), (f"{s}.{pre}z.{L}", f"{a}.{o}", "in")]
        places.append((f"{s}.ln_final", lay["stacks"][s], "out"))
    seen = {(p, io) for _, p, io in places}
    places += [(None, p, io) for (p, io) in edits if (p, io) not in seen]
    for name, path, io in places:
        mod = hf.get_submodule(path)
        handles.append(mod.register_forward_hook(out_hook(name, path)) if io == "out"
                       else mod.register_forward_pre_hook(in_hook(name, path), with_kwargs=True))
    try:
        with torch.no_grad():
            logits = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    for n in list(acts):  # q/k/v/z from the projections: [batch, pos, head * d_head] -> [batch, pos, head, d_head]
        if n.rsplit(".", 2)[-2].removeprefix("cross_") in ("q", "k", "v", "z"):
            acts[n] = acts[n].unflatten(-1, (H, DH))
    return logits, acts
