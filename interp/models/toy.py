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

A trained copy ships in ``data/toy_induction`` (``interp.load_model("toy-induction")``). A saved run
(:meth:`ToyRun.save`) is a Hugging Face model directory plus ``toy_config.json`` and ``training_curves.json``,
which record the class, their schema version and the interp version; :meth:`ToyRun.load` reads it back
(runs saved by interp 0.1, without those stamps, load too).

Example:
    >>> import tempfile
    >>> from interp.models.toy import ToyConfig, ToyRun, train_toy
    >>> run = train_toy(ToyConfig(steps=2, eval_every=1, batch_size=4), progress=False)
    >>> run.history["step"]
    [1, 2]
    >>> ToyRun.load(run.save(tempfile.mkdtemp())).config == run.config
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError
from interp.progress import progress as progress_bar
from interp.sites import HeadSpec, parse_heads
from interp.version import __version__

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

    from interp.models.model import Model

log = logging.getLogger(__name__)

BOS = 0  # the toy vocabulary's BOS token; random tokens are drawn from 1..vocab-1
SCHEMA_VERSION = 1  # of toy_config.json / training_curves.json; interp 0.1 wrote them unstamped (version 0)
CLASS_NAME = "ToyRun"


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
        clamp_heads: heads whose output is clamped to zero throughout training, in any head spelling
            (``("L0H1", "L0H2")``, ``((0, 1), (0, 2))`` or ``"L0H1,L0H2"``); stored as ``HeadRef``.
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
    clamp_heads: Sequence[HeadSpec] | str = ()  # stored as tuple[HeadRef, ...]
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
        heads = parse_heads(self.clamp_heads, n_layers=self.n_layers, n_heads=self.n_heads) if self.clamp_heads else []
        object.__setattr__(self, "clamp_heads", tuple(dict.fromkeys(heads)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToyConfig:
        """A config from its JSON form; unknown keys (from another interp version) are ignored.

        Example:
            >>> ToyConfig.from_dict({"steps": 5, "clamp_heads": [[0, 1]], "gone": 1}).clamp_heads
            (HeadRef(0, 1),)
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.debug("ignoring unknown toy config keys: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})


def build_toy_model(cfg: ToyConfig) -> LlamaForCausalLM:
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
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"}, tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=BOS, pad_token_id=BOS,
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


def _clamp_hooks(model: nn.Module, heads: Sequence[HeadSpec], d_head: int) -> list[Any]:
    """Forward pre-hooks on ``o_proj`` zeroing the chosen heads' outputs (``hook_z``) during training.

    The same edit as ``interp.hooks.Ablate("z", heads=heads)`` (a test checks it), on the bare Hugging Face
    model: ``interp.models`` sits below the hook engine.
    """
    by_layer: dict[int, list[int]] = {}
    for ref in parse_heads(heads) if heads else []:
        by_layer.setdefault(ref.layer, []).append(ref.head)
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


def _stamp() -> dict[str, Any]:
    return {"class": CLASS_NAME, "module": "interp.models.toy", "schema_version": SCHEMA_VERSION, "interp_version": __version__}


def _read_json(f: Path) -> dict[str, Any]:
    """A toy run's JSON file, checked: ``{}``-like data of this class and a schema this interp reads
    (interp 0.1's unstamped files are schema 0)."""
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptStoreError(f"{f} is not valid JSON ({e}); save the toy run again") from None
    if not isinstance(data, dict):
        raise CorruptStoreError(f"{f} does not hold a toy run's JSON object")
    if "schema_version" not in data:  # interp 0.1
        return data
    if data.get("class") != CLASS_NAME:
        raise BadInputError(f"{f} holds a {data.get('class')!r}, not a {CLASS_NAME}")
    version = data["schema_version"]
    if not isinstance(version, int) or version < 0:
        raise CorruptStoreError(f"{f} has a bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{f} holds a {CLASS_NAME} of schema version {version}, written by interp "
                                 f"{data.get('interp_version')}; this interp ({__version__}) reads up to version "
                                 f"{SCHEMA_VERSION}: upgrade interp to load it")
    return data


@dataclass
class ToyRun:
    """A finished training run: the model, its config and the measured curves.

    Attributes:
        model: the trained ``LlamaForCausalLM`` (eval mode); :meth:`to_model` wraps it as an interp ``Model``.
        config: the :class:`ToyConfig`.
        history: lists keyed by ``step``, ``train_loss``, ``induction_max``, ``prev_token_max_l0``,
            ``loss_first``, ``loss_second``, ``induction`` ([layer][head] per step), ``prev_token``.
        checkpoints: ``{step: state_dict}`` saved every ``checkpoint_every`` steps.
        seconds: wall time of the training.
    """

    model: LlamaForCausalLM
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

    def to_model(self, name: str = "toy-run") -> Model:
        """The trained model as an interp :class:`~interp.models.Model` (not copied), for every tool.

        Example:
            >>> run = train_toy(ToyConfig(steps=1, eval_every=1, batch_size=2), progress=False)
            >>> run.to_model().dims.n_heads
            4
        """
        from interp.models.registry import from_hf

        return from_hf(self.model, name=name)

    def save(self, path: str | os.PathLike[str], *, with_checkpoints: bool = True) -> Path:
        """Save as a Hugging Face directory (``model.safetensors``, ``config.json``) plus ``toy_config.json``,
        ``training_curves.json`` (both stamped with the class, the schema version and the interp version) and
        ``checkpoints/step_XXXXX.safetensors``; returns the directory (``interp.load_model(path)`` loads the model)."""
        from interp.fileio import atomic_save_file, atomic_write_text

        out = Path(path)
        if out.exists() and not out.is_dir():
            raise BadInputError(f"bad path {str(out)!r}: it is a file; valid: a directory for the toy run")
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        atomic_write_text(out / "toy_config.json", json.dumps({**_stamp(), "config": asdict(self.config)}, indent=1))
        atomic_write_text(out / "training_curves.json", json.dumps(
            {**_stamp(), "history": self.history, "phase_change_step": self.phase_change_step,
             "seconds": self.seconds}))
        if with_checkpoints and self.checkpoints:
            (out / "checkpoints").mkdir(exist_ok=True)
            for step, sd in self.checkpoints.items():
                atomic_save_file(out / "checkpoints" / f"step_{step:05d}.safetensors", sd)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, checkpoints: bool = False) -> ToyRun:
        """Read a run saved by :meth:`save`, by this interp or by interp 0.1 (default: the shipped copy).

        Args:
            path: the run's directory (default: ``data/toy_induction``).
            checkpoints: also read ``checkpoints/*.safetensors`` into :attr:`checkpoints`.

        Raises:
            BadInputError: no toy run in ``path``. SchemaVersionError: a run saved by a newer interp.

        Example:
            >>> run = ToyRun.load()  # the shipped model
            >>> run.config.n_layers, run.phase_change_step
            (2, 500)
        """
        from safetensors.torch import load_file
        from transformers import LlamaForCausalLM

        src = Path(path) if path is not None else shipped_path()
        cfg = load_config(src)
        curves = load_curves(src) if (src / "training_curves.json").is_file() else {}
        model = LlamaForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        make_attention_only(model)
        model.eval()
        ckpts: dict[int, dict[str, torch.Tensor]] = {}
        if checkpoints and (src / "checkpoints").is_dir():
            for f in sorted((src / "checkpoints").glob("step_*.safetensors")):
                ckpts[int(f.stem.removeprefix("step_"))] = load_file(str(f))
        return cls(model=model, config=cfg, history=dict(curves.get("history") or {}), checkpoints=ckpts,
                   seconds=float(curves.get("seconds") or 0.0))


def train_toy(cfg: ToyConfig | None = None, *, progress: bool | None = None) -> ToyRun:
    """Train the toy model; returns a :class:`ToyRun` (a few minutes on one CPU core).

    Args:
        cfg: the settings (default: :class:`ToyConfig`'s, what the shipped model used but 3,000 steps at most).
        progress: a progress bar over steps (``None``: the library switch, see :mod:`interp.progress`).

    Example:
        >>> run = train_toy(ToyConfig(steps=2, eval_every=1, batch_size=4), progress=False)
        >>> sorted(run.history)[:3]
        ['induction', 'induction_max', 'loss_first']
    """
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
    bar = progress_bar(range(1, cfg.steps + 1), enabled=progress, desc="toy induction")
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


def load_config(path: str | os.PathLike[str] | None = None) -> ToyConfig:
    """The :class:`ToyConfig` saved beside a toy model (default: the shipped copy; interp 0.1's files too).

    Example:
        >>> load_config().eval_span
        26
    """
    src = Path(path) if path is not None else shipped_path()
    f = src / "toy_config.json"
    if not f.is_file():
        raise BadInputError(f"bad toy run directory {str(src)!r}: no toy_config.json; valid: a directory written "
                            "by ToyRun.save (train one with interp.models.toy.train_toy)")
    data = _read_json(f)
    return ToyConfig.from_dict(data["config"] if "schema_version" in data else data)


def load_curves(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The training curves saved beside a toy model (default: the shipped copy; interp 0.1's files too):
    ``{"history", "phase_change_step", "seconds"}``.

    Example:
        >>> curves = load_curves()
        >>> curves["phase_change_step"], curves["history"]["step"][:3]
        (500, [50, 100, 150])
    """
    src = Path(path) if path is not None else shipped_path()
    f = src / "training_curves.json"
    if not f.is_file():
        raise BadInputError(f"bad toy run directory {str(src)!r}: no training_curves.json; valid: a directory "
                            "written by ToyRun.save (train one with interp.models.toy.train_toy)")
    data = _read_json(f)
    return {"history": data.get("history", {}), "phase_change_step": data.get("phase_change_step"),
            "seconds": data.get("seconds", 0.0)}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m interp.models.toy OUT_DIR [--steps N] [--seed S] [--no-stop] [--clamp-heads L0H1,L0H2]``:
    train and save a toy model."""
    import argparse

    p = argparse.ArgumentParser(description="train the attention-only toy model that grows induction heads")
    p.add_argument("out", help="output directory")
    p.add_argument("--steps", type=int, default=ToyConfig.steps)
    p.add_argument("--seed", type=int, default=ToyConfig.seed)
    p.add_argument("--no-stop", action="store_true", help="train every step even after the phase change")
    p.add_argument("--clamp-heads", default="", metavar="L0H1,...", help="heads to clamp to zero, e.g. L0H1,L0H2")
    a = p.parse_args(argv)
    logging.basicConfig(format="interp: %(message)s", level=logging.INFO)
    cfg = ToyConfig(steps=a.steps, seed=a.seed, stop_after_phase_change=not a.no_stop,
                    clamp_heads=tuple(parse_heads(a.clamp_heads)) if a.clamp_heads.strip() else ())
    torch.set_num_threads(1)
    run = train_toy(cfg)
    run.save(a.out)
    log.info("phase change at step %s; %.0f s; saved to %s", run.phase_change_step, run.seconds, a.out)


if __name__ == "__main__":
    main()
