"""A small attention-only transformer that grows induction heads, and its training loop.

The model is a ``transformers`` Llama (rotary positions, RMSNorm) whose MLPs are zeroed and frozen,
so every hook point and weight view of interp works on it unchanged. It trains on sequences in which
most tokens are predictable by induction: after a BOS token, a random span of ``span_min``..``span_max``
tokens (fresh for every sequence) is tiled to fill the context, starting at a random phase, so neither
the position nor a fixed period solves the task (Olsson et al. 2022; Reddy 2023). BOS is also the
padding id, so its embedding stays zero: the BOS position is a null attention sink.

Every ``eval_every`` steps the loop measures, on repeated random tokens of a length never seen in
training, the best layer-1 induction score, the best layer-0 previous-token score and the loss on the
first and on the second repeat; the phase change shows as a sudden drop of the second-repeat loss
together with a jump of the induction score. ``clamp_heads`` fixes chosen heads' outputs to zero
during training (Singh et al. 2024), to test which sub-circuits must form.

A trained copy ships in ``data/toy_induction`` (``interp.load_model("toy-induction")``).

Example:
    >>> from interp.models.toy import ToyConfig, train_toy
    >>> run = train_toy(ToyConfig(steps=2, eval_every=1, batch_size=4), progress=False)
    >>> run.history["step"]
    [1, 2]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.errors import BadInputError

BOS = 0  # the toy vocabulary's BOS token; random tokens are drawn from 1..vocab-1


@dataclass(frozen=True)
class ToyConfig:
    """Model shape, data and optimisation settings of the toy run.

    Attributes:
        vocab: tokens, including BOS (id 0).
        d_model, n_heads, n_layers: the transformer's shape (attention only).
        n_ctx: sequence length including BOS.
        span_min, span_max: lengths of the repeated random span in training.
        eval_span: half length of the repeated-random-token test (outside the training range).
        steps, batch_size, lr, weight_decay, warmup: AdamW with linear warm-up, constant after.
        eval_every: steps between measurements; ``checkpoint_every`` steps between saved checkpoints.
        stop_after_phase_change: stop once the induction score has stayed above ``phase_threshold``
            for ``patience`` measurements (``None`` trains every step).
        clamp_heads: ``(layer, head)`` pairs whose output is clamped to zero throughout training.
        seed: seeds the initialisation and the data.
    """

    vocab: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    n_ctx: int = 65
    span_min: int = 6
    span_max: int = 20
    eval_span: int = 26
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    eval_every: int = 50
    checkpoint_every: int = 250
    stop_after_phase_change: bool = True
    phase_threshold: float = 0.5
    patience: int = 6
    clamp_heads: tuple[tuple[int, int], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.span_min <= self.span_max:
            raise BadInputError(f"need 2 <= span_min <= span_max, got span_min={self.span_min}, span_max={self.span_max}")
        if self.span_max >= self.n_ctx - 1:
            raise BadInputError(f"span_max={self.span_max} must be < n_ctx - 1 = {self.n_ctx - 1} so that spans repeat")
        if 2 * self.eval_span + 1 > self.n_ctx:
            raise BadInputError(f"eval_span={self.eval_span}: 2*eval_span+1 must fit in n_ctx={self.n_ctx}")
        if self.d_model % self.n_heads:
            raise BadInputError(f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        if self.vocab < 4:
            raise BadInputError(f"vocab must be at least 4, got {self.vocab}")
        for lh in self.clamp_heads:
            if len(lh) != 2 or not (0 <= lh[0] < self.n_layers and 0 <= lh[1] < self.n_heads):
                raise BadInputError(f"clamp_heads entry {lh!r} is not a (layer, head) pair inside "
                                 f"{self.n_layers} layers x {self.n_heads} heads")


def build_toy_model(cfg: ToyConfig) -> nn.Module:
    """A freshly initialised attention-only Llama (MLPs of width 1, zeroed and frozen).

    Example:
        >>> m = build_toy_model(ToyConfig())
        >>> m.config.num_hidden_layers, float(m.model.layers[0].mlp.down_proj.weight.abs().sum())
        (2, 0.0)
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.d_model, intermediate_size=1, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.n_ctx,
        rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=BOS, pad_token_id=BOS,
        attention_dropout=0.0,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    make_attention_only(model)
    return model


def make_attention_only(model: nn.Module) -> None:
    """Zero and freeze every MLP parameter of a Llama model, so its MLPs output exact zeros."""
    for layer in model.model.layers:  # type: ignore[union-attr]
        for p in layer.mlp.parameters():
            p.data.zero_()
            p.requires_grad_(False)


def repeated_span_batch(gen: torch.Generator, batch: int, cfg: ToyConfig) -> torch.Tensor:
    """Training data: ``[batch, n_ctx]``; BOS, then a fresh random span tiled from a random phase.

    Example:
        >>> x = repeated_span_batch(torch.Generator().manual_seed(0), 3, ToyConfig())
        >>> x.shape, bool((x[:, 0] == BOS).all()), bool((x[:, 1:] > 0).all())
        (torch.Size([3, 65]), True, True)
    """
    n = cfg.n_ctx - 1
    lengths = torch.randint(cfg.span_min, cfg.span_max + 1, (batch,), generator=gen)
    phase = torch.randint(0, cfg.span_max, (batch,), generator=gen) % lengths
    spans = torch.randint(1, cfg.vocab, (batch, cfg.span_max), generator=gen)
    idx = (torch.arange(n)[None, :] + phase[:, None]) % lengths[:, None]
    body = spans.gather(1, idx)
    return torch.cat([torch.full((batch, 1), BOS), body], dim=1)


def repeated_random_tokens(gen: torch.Generator, batch: int, half: int, vocab: int) -> torch.Tensor:
    """``[batch, 1 + 2*half]``: BOS, ``half`` random tokens, the same tokens again."""
    first = torch.randint(1, vocab, (batch, half), generator=gen)
    return torch.cat([torch.full((batch, 1), BOS), first, first], dim=1)


def _clamp_hooks(model: nn.Module, heads: Sequence[tuple[int, int]], d_head: int) -> list[Any]:
    """Forward pre-hooks on ``o_proj`` zeroing the chosen heads' outputs (``hook_z``)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    handles = []
    for layer, hs in by_layer.items():
        def pre(module: nn.Module, args: tuple[Any, ...], hs: list[int] = hs) -> tuple[Any, ...]:
            z = args[0].unflatten(-1, (-1, d_head)).clone()
            z[..., hs, :] = 0.0
            return (z.flatten(-2), *args[1:])

        handles.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre))  # type: ignore[union-attr,index]
    return handles


@torch.no_grad()
def measure(model: nn.Module, cfg: ToyConfig, tokens: torch.Tensor) -> dict[str, Any]:
    """Induction / previous-token scores per head and the loss on each repeat, on repeated random tokens."""
    half = (tokens.shape[1] - 1) // 2
    out = model(input_ids=tokens, output_attentions=True, use_cache=False)
    logp = out.logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0].mean(0)  # [pos-1]; entry t predicts token t+1
    q = torch.arange(1 + half, 1 + 2 * half)
    ind, prev = [], []
    for att in out.attentions:  # [batch, head, q, k]
        ind.append(att[:, :, q, q - half + 1].mean((0, 2)))
        qq = torch.arange(2, tokens.shape[1])
        prev.append(att[:, :, qq, qq - 1].mean((0, 2)))
    ind_t, prev_t = torch.stack(ind), torch.stack(prev)
    return {
        "induction": ind_t.tolist(), "prev_token": prev_t.tolist(),
        "induction_max": float(ind_t[1:].max()) if cfg.n_layers > 1 else float(ind_t.max()),
        "prev_token_max_l0": float(prev_t[0].max()),
        "loss_first": float(nll[1:half].mean()),  # predicting tokens 2..half (token 1 is unpredictable)
        "loss_second": float(nll[half + 1:2 * half].mean()),  # predicting the repeat (its 2nd token on)
    }


@dataclass
class ToyRun:
    """A finished training run: the model, its config and the measured curves.

    Attributes:
        model: the trained ``LlamaForCausalLM`` (eval mode).
        config: the :class:`ToyConfig`.
        history: lists keyed by ``step``, ``train_loss``, ``induction_max``, ``prev_token_max_l0``,
            ``loss_first``, ``loss_second``, ``induction`` ([layer][head] per step), ``prev_token``.
        checkpoints: ``{step: state_dict}`` saved every ``checkpoint_every`` steps.
        seconds: wall time of the training.
    """

    model: nn.Module
    config: ToyConfig
    history: dict[str, list[Any]] = field(default_factory=dict)
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def phase_change_step(self) -> int | None:
        """First measured step whose induction score passed ``config.phase_threshold`` (``None`` if never)."""
        for s, v in zip(self.history.get("step", []), self.history.get("induction_max", []), strict=True):
            if v >= self.config.phase_threshold:
                return int(s)
        return None

    def save(self, path: str | os.PathLike[str], with_checkpoints: bool = True) -> Path:
        """Save as a Hugging Face directory (``model.safetensors``, ``config.json``) plus
        ``toy_config.json``, ``training_curves.json`` and ``checkpoints/step_XXXXX.safetensors``."""
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        (out / "toy_config.json").write_text(json.dumps(asdict(self.config), indent=1))
        (out / "training_curves.json").write_text(json.dumps(
            {"history": self.history, "phase_change_step": self.phase_change_step, "seconds": self.seconds}))
        if with_checkpoints and self.checkpoints:
            (out / "checkpoints").mkdir(exist_ok=True)
            for step, sd in self.checkpoints.items():
                save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "checkpoints" / f"step_{step:05d}.safetensors"))
        return out


def train_toy(cfg: ToyConfig | None = None, *, progress: bool = True) -> ToyRun:
    """Train the toy model; returns a :class:`ToyRun` (a few minutes on one CPU core).

    Example:
        >>> run = train_toy(ToyConfig(steps=2, eval_every=1, batch_size=4), progress=False)
        >>> sorted(run.history)[:3]
        ['induction', 'induction_max', 'loss_first']
    """
    from tqdm.auto import tqdm

    cfg = cfg or ToyConfig()
    model = build_toy_model(cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    test = repeated_random_tokens(torch.Generator().manual_seed(cfg.seed + 2), 64, cfg.eval_span, cfg.vocab)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    handles = _clamp_hooks(model, cfg.clamp_heads, cfg.d_model // cfg.n_heads)
    history: dict[str, list[Any]] = {k: [] for k in ("step", "train_loss", "induction_max", "prev_token_max_l0",
                                                       "loss_first", "loss_second", "induction", "prev_token")}
    run = ToyRun(model=model, config=cfg, history=history)
    start, above, running = time.perf_counter(), 0, math.nan
    model.config._attn_implementation = "eager"  # output_attentions in measure()
    bar = tqdm(range(1, cfg.steps + 1), desc="toy induction", disable=not progress)
    try:
        for step in bar:
            model.train()
            x = repeated_span_batch(gen, cfg.batch_size, cfg)
            logits = model(input_ids=x, use_cache=False).logits
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            lv = float(loss.detach())
            running = lv if math.isnan(running) else 0.9 * running + 0.1 * lv
            if step % cfg.eval_every == 0 or step == cfg.steps:
                model.eval()
                m = measure(model, cfg, test)
                history["step"].append(step)
                history["train_loss"].append(running)
                for k, v in m.items():
                    history[k].append(v)
                bar.set_postfix(loss=f"{running:.2f}", ind=f"{m['induction_max']:.2f}", rep=f"{m['loss_second']:.2f}")
                above = above + 1 if m["induction_max"] >= cfg.phase_threshold else 0
            if step % cfg.checkpoint_every == 0:
                run.checkpoints[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if cfg.stop_after_phase_change and above >= cfg.patience:
                run.checkpoints[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                break
    finally:
        for h in handles:
            h.remove()
    model.config._attn_implementation = "sdpa" if hasattr(nn.functional, "scaled_dot_product_attention") else "eager"
    model.eval()
    run.seconds = time.perf_counter() - start
    return run


def shipped_path() -> Path:
    """Directory of the trained copy shipped with interp (``data/toy_induction``)."""
    return Path(__file__).resolve().parents[2] / "data" / "toy_induction"


def load_curves(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The training curves saved beside a toy model (default: the shipped copy).

    Example:
        >>> curves = load_curves()  # doctest: +SKIP
        >>> curves["phase_change_step"]  # doctest: +SKIP
        850
    """
    src = Path(path) if path is not None else shipped_path()
    f = src / "training_curves.json"
    if not f.is_file():
        raise FileNotFoundError(f"no training_curves.json in {str(src)!r}; train one with interp.models.toy.train_toy")
    return json.loads(f.read_text())


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m interp.models.toy OUT_DIR [--steps N] [--seed S]``: train and save a toy model."""
    import argparse

    p = argparse.ArgumentParser(description="train the attention-only toy model that grows induction heads")
    p.add_argument("out", help="output directory")
    p.add_argument("--steps", type=int, default=ToyConfig.steps)
    p.add_argument("--seed", type=int, default=ToyConfig.seed)
    p.add_argument("--no-stop", action="store_true", help="train every step even after the phase change")
    p.add_argument("--clamp", default="", help="heads to clamp to zero, e.g. '0.1,0.2'")
    a = p.parse_args(argv)
    clamp = tuple(tuple(int(x) for x in s.split(".")) for s in a.clamp.split(",") if s)
    cfg = ToyConfig(steps=a.steps, seed=a.seed, stop_after_phase_change=not a.no_stop, clamp_heads=clamp)  # type: ignore[arg-type]
    torch.set_num_threads(1)
    run = train_toy(cfg)
    run.save(a.out)
    print(f"phase change at step {run.phase_change_step}; {run.seconds:.0f} s; saved to {a.out}")


if __name__ == "__main__":
    main()
