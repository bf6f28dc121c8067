"""Healing after dropping layers (Gromov et al. 2024): a short seeded fine-tune of the final norm only, or of
rank-``r`` LoRA adapters on the blocks that still run, on the shipped English corpus (``data/corpus``).

The model's own weights are never changed. The trained values live in a :class:`ParamEdit`, an
:mod:`interp.hooks` intervention: while a run lasts it puts the trained final-norm parameters in place of the
model's (and puts the originals back afterwards) and adds ``scale * (x A^T) B^T`` to the output of every adapted
linear layer (a forward hook, ahead of interp's own hooks). So a healed model is "the drop plan + the edit",
accepted wherever ``interventions=`` is (:func:`~interp.layers.score`, every tool); :meth:`ParamEdit.merged`
gives a deep copy of the Hugging Face model with the edit written into its weights.

Example:
    >>> import interp
    >>> from interp.layers import heal, skip
    >>> m = interp.load_model("smollm2-135m")
    >>> h = heal(m, corpus_texts(8, words=16), interventions=skip(m, blocks=[14, 15]), steps=4, progress=False)
    >>> h.trained, h.loss_after < h.loss_before
    (('model.norm.weight',), True)
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from interp.errors import BadInputError, bad_value
from interp.hooks import HookedRun, Intervention, forward, make_plans
from interp.hooks.plans import LayerPlan, original_blocks
from interp.models import Model
from interp.models.model import Inputs
from interp.plot import layer_curves
from interp.progress import progress as progress_bar
from interp.sites import Component, Site, SiteSpec
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "english.txt"
TRAIN = ("norm", "lora")
HELDOUT_LINES = 256  # the last lines of the corpus are the "heldout" task's source; healing never reads them


def corpus_texts(n: int = 64, *, words: int = 48, seed: int = 0) -> list[str]:
    """``n`` paragraphs of the shipped English corpus (seeded choice among those of at least 20 words, cut to
    ``words`` words), never from the corpus's last 256 lines (the ``heldout`` task's source).

    Example:
        >>> len(corpus_texts(3, words=10)[0].split())
        10
    """
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[:-HELDOUT_LINES]
    pool = [ln for ln in lines if len(ln.split()) >= 20]
    if not 0 < n <= len(pool):
        raise BadInputError(f"n must be in 1..{len(pool)}, got {n}")
    return [" ".join(ln.split()[:words]) for ln in random.Random(seed).sample(pool, n)]


def final_norm_path(model: Model) -> str:
    """The module path of ``model``'s final norm (``model.norm`` for Llama, ``transformer.ln_f`` for GPT-2).

    Example:
        >>> import interp
        >>> final_norm_path(interp.load_model("smollm2-135m"))
        'model.norm'
    """
    tap = model.adapter.taps.get(Component.LN_FINAL)
    if tap is None:
        raise BadInputError(f"{model.name} has no final norm to heal")
    return tap.module_path(None)


def _resolve(model: Model, path: str) -> nn.Module:
    """A module by path, reading block ``i`` from the model's own block list even while a plan swapped it."""
    prefix = model.adapter.layers + "."
    if path.startswith(prefix):
        idx, _, rest = path[len(prefix):].partition(".")
        block = original_blocks(model)[int(idx)]
        return block.get_submodule(rest) if rest else block
    return model.module(path)


def _in_out(mod: nn.Module) -> tuple[int, int, bool]:
    """``(in_features, out_features, transposed)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (weight ``[in, out]``)."""
    if isinstance(mod, nn.Linear):
        return mod.in_features, mod.out_features, False
    w = getattr(mod, "weight", None)
    if type(mod).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2:
        return int(w.shape[0]), int(w.shape[1]), True
    raise BadInputError(f"LoRA adapts nn.Linear and Conv1D modules, not {type(mod).__name__}")


def _linear_paths(model: Model, blocks: Sequence[int]) -> list[str]:
    out = []
    for i in blocks:
        block = original_blocks(model)[i]
        for name, mod in block.named_modules():
            if isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D":
                out.append(f"{model.adapter.layers}.{i}.{name}")
    return out


@dataclass(frozen=True, eq=False)
class ParamEdit(Intervention):
    """Trained values used in place of (``replace``) or added to (``lora``) a model's weights during a run.

    Args:
        replace: parameter path (``"model.norm.weight"``) → the tensor used in its place while the run lasts.
        lora: module path of an ``nn.Linear`` / GPT-2 ``Conv1D`` → ``(A [rank, in], B [out, rank])``; the module's
            output gains ``scale * (x A^T) B^T``.
        scale: the LoRA scale (``alpha / rank``).

    The model's parameters are put back after the run (also when it fails); the adapters are forward hooks
    that run before interp's own hooks on the same module, so captures and edits there see the adapted output.

    Example:
        >>> import torch
        >>> ParamEdit(replace={"model.norm.weight": torch.ones(4)})
        ParamEdit(replace=['model.norm.weight'], lora=0 modules)
    """

    site: SiteSpec = "embed"
    replace: Mapping[str, torch.Tensor] = field(default_factory=dict)
    lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    scale: float = 1.0

    __eq__ = object.__eq__  # two edits are the same only when they are the same object
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"ParamEdit(replace={sorted(self.replace)}, lora={len(self.lora)} modules)"

    def apply(self, act: torch.Tensor, site: Site | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return act  # the edit acts on weights, not on an activation

    def parameters(self) -> list[torch.Tensor]:
        """The trained tensors (replaced parameters, then each adapter's ``A`` and ``B``)."""
        return [*self.replace.values(), *(t for ab in self.lora.values() for t in ab)]

    def install(self, model: Any) -> Callable[[], None]:
        """Put the edit in place on ``model``; return the function that undoes it (called by the hook engine)."""
        undo: list[Callable[[], None]] = []
        try:
            for path, value in self.replace.items():
                mod_path, _, name = path.rpartition(".")
                mod = _resolve(model, mod_path)
                old = mod._parameters.get(name)
                if old is None or old.shape != value.shape:
                    raise BadInputError(f"{path} is not a parameter of shape {tuple(value.shape)} in {model.name}")
                mod._parameters[name] = value  # type: ignore[assignment]

                def put_back(mod: nn.Module = mod, name: str = name, old: nn.Parameter = old) -> None:
                    mod._parameters[name] = old

                undo.append(put_back)
            for path, (a, b) in self.lora.items():
                mod = _resolve(model, path)
                _in_out(mod)

                def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor, a: torch.Tensor = a,
                         b: torch.Tensor = b) -> torch.Tensor:
                    x = args[0]
                    return out + self.scale * (x @ a.to(x).T) @ b.to(x).T

                undo.append(mod.register_forward_hook(hook, prepend=True).remove)
        except BaseException:
            for u in reversed(undo):
                u()
            raise

        def restore() -> None:
            for u in reversed(undo):
                u()

        return restore

    def merged(self, model: Model) -> nn.Module:
        """A deep copy of ``model.hf`` with this edit written into its weights (replaced parameters copied in,
        ``W + scale * B A`` for each adapter): the same function as running ``model`` with the edit."""
        hf = copy.deepcopy(model.hf)
        with torch.no_grad():
            for path, value in self.replace.items():
                hf.get_parameter(path).copy_(value)
            for path, (a, b) in self.lora.items():
                mod = hf.get_submodule(path)
                _, _, transposed = _in_out(mod)
                delta = self.scale * (b.double() @ a.double())
                w = mod.weight
                assert isinstance(w, torch.Tensor)
                w.copy_(w + (delta.T if transposed else delta).to(w.dtype))
        return hf


@dataclass(frozen=True, repr=False)
class Healing(Result):
    """What :func:`heal` trained and what it did to the loss.

    Views: ``"loss"`` (the training loss per step).

    Attributes:
        edit: the :class:`ParamEdit` holding the trained values.
        interventions: the edits healing started from, then ``edit``: score or run with these.
        trained: names of what was trained (parameter paths; ``"<module>.lora_A/B"`` for adapters).
        n_params: trained values; loss_before / loss_after: mean next-token loss on the fine-tune texts (with
            the edits) before and after; losses: ``[step]`` the training loss at each step; description: one line.
        started_from: the edits healing started from, as text (what to pass again with ``edit`` after
            :meth:`load`: a saved healing keeps the trained values, not the edits it started from, so a loaded one
            has ``interventions == ()``).

    Example:
        >>> import tempfile, torch
        >>> h = Healing(edit=ParamEdit(replace={"model.norm.weight": torch.ones(4)}), interventions=(),
        ...             trained=("model.norm.weight",), n_params=4, loss_before=3.0, loss_after=2.5,
        ...             losses=torch.tensor([3.0, 2.7, 2.5]), description="final norm (4 values)")
        >>> h
        Healing(losses[step=3], loss_before=3, loss_after=2.5)
        >>> Healing.load(h.save(tempfile.mkdtemp())).edit.replace["model.norm.weight"].tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    AXES = {"losses": ("step",)}
    VIEWS = ("loss",)

    edit: ParamEdit
    interventions: tuple[Intervention, ...]
    trained: tuple[str, ...]
    n_params: int
    loss_before: float
    loss_after: float
    losses: torch.Tensor
    description: str
    started_from: tuple[str, ...] = ()

    def headline(self) -> dict[str, Any]:
        return {"loss_before": self.loss_before, "loss_after": self.loss_after}

    def _view_loss(self) -> Figure:
        """The fine-tune loss at each step."""
        return layer_curves({"training loss": self.losses}, x_title="step", y_title="loss",
                            title=f"healing: {self.description}")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["attributes"].pop("edit", None)
        d["attributes"].pop("interventions", None)
        d["attributes"]["started_from"] = list(self.started_from)
        return d

    def _to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {"losses": self.losses.detach().cpu().contiguous()}
        for k, v in self.edit.replace.items():
            tensors[f"replace.{k}"] = v.detach().cpu().contiguous()
        for k, (a, b) in self.edit.lora.items():
            tensors[f"lora_A.{k}"] = a.detach().cpu().contiguous()
            tensors[f"lora_B.{k}"] = b.detach().cpu().contiguous()
        fields = {"trained": list(self.trained), "n_params": self.n_params, "loss_before": self.loss_before,
                  "loss_after": self.loss_after, "description": self.description, "scale": self.edit.scale,
                  "started_from": list(self.started_from)}
        return tensors, fields

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], fields: dict[str, Any]) -> Healing:
        replace = {k[len("replace."):]: v for k, v in tensors.items() if k.startswith("replace.")}
        lora = {k[len("lora_A."):]: (v, tensors[f"lora_B.{k[len('lora_A.'):]}"]) for k, v in tensors.items()
                if k.startswith("lora_A.")}
        edit = ParamEdit(replace=replace, lora=lora, scale=float(fields.get("scale", 1.0)))
        return cls(edit=edit, interventions=(), trained=tuple(fields.get("trained", ())),
                   n_params=int(fields.get("n_params", 0)), loss_before=float(fields.get("loss_before", math.nan)),
                   loss_after=float(fields.get("loss_after", math.nan)), losses=tensors["losses"],
                   description=str(fields.get("description", "")), started_from=tuple(fields.get("started_from", ())))


def _loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].to(lp.dtype)
    return -(lp * m).sum() / m.sum().clamp_min(1)


def _remaining(model: Model, interventions: Sequence[Intervention]) -> list[int]:
    L = model.dims.n_layers
    kept = set(range(L))
    for iv in interventions:
        if isinstance(iv, LayerPlan):
            kept &= {i for s in iv.steps(L) for i in s}
    return sorted(kept)


def heal(model: Model, inputs: Inputs | None = None, *, interventions: Sequence[Intervention] = (),
         train: str = "norm", rank: int = 4, alpha: float | None = None, steps: int = 30, lr: float | None = None,
         seed: int = 0, batch_size: int = 8, max_tokens: int = 64, progress: bool | None = None) -> Healing:
    """Fine-tune the final norm (``train="norm"``) or LoRA adapters on the blocks that still run
    (``train="lora"``) of ``model`` run with ``interventions`` (e.g. a drop plan), on next-token loss.

    Args:
        model: the model (its weights are not changed).
        inputs: the fine-tune texts (default: 64 paragraphs of the shipped corpus, :func:`corpus_texts`).
        interventions: the edits to heal (e.g. :func:`~interp.layers.skip`); blocks a :class:`LayerPlan` leaves out
            get no adapters.
        train: ``"norm"`` (the final norm's parameters) or ``"lora"`` (rank-``rank`` adapters on every linear
            layer of the remaining blocks; ``B`` starts at zero, so step 0 is the unhealed model).
        rank, alpha: the adapters' rank and scale ``alpha / rank`` (default ``alpha = 2 * rank``).
        steps: optimiser steps (Adam), one batch of ``batch_size`` texts each, batches drawn by ``seed``.
        lr: learning rate (default 1e-2 for the norm, 1e-3 for LoRA).
        seed: seeds the adapters' initial ``A`` and the batch order.
        max_tokens: texts are cut to this many tokens.

    Raises:
        BadInputError: an unknown ``train``, ``steps < 1``, ``rank < 1``, or a model without a final norm.
    """
    if train not in TRAIN:
        raise bad_value("train", train, ", ".join(TRAIN))
    if not isinstance(steps, int) or steps < 1 or not isinstance(rank, int) or rank < 1:
        raise BadInputError(f"steps and rank must be positive integers, got steps={steps!r}, rank={rank!r}")
    texts = corpus_texts() if inputs is None else inputs
    ids, mask = model.encode(texts, max_tokens=max_tokens)
    ids, mask = ids[:, :max_tokens], mask[:, :max_tokens]
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.hf.parameters()).dtype
    replace: dict[str, torch.Tensor] = {}
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if train == "norm":
        path = final_norm_path(model)
        for name, p in _resolve(model, path).named_parameters(recurse=False):
            replace[f"{path}.{name}"] = nn.Parameter(p.detach().clone())
        trained = tuple(replace)
    else:
        for path in _linear_paths(model, _remaining(model, interventions)):
            n_in, n_out, _ = _in_out(_resolve(model, path))
            a = torch.empty(rank, n_in).uniform_(-1, 1, generator=gen) / math.sqrt(n_in)
            lora[path] = (nn.Parameter(a.to(device=model.device, dtype=dtype)),
                          nn.Parameter(torch.zeros(n_out, rank, dtype=dtype, device=model.device)))
        trained = tuple(f"{p}.lora_{w}" for p in lora for w in "AB")
    scale = (2.0 * rank if alpha is None else alpha) / rank
    edit = ParamEdit(replace=replace, lora=lora, scale=scale)
    ivs = (*interventions, edit)
    params = edit.parameters()
    if not params:
        raise BadInputError("nothing to train (no linear layers in the remaining blocks)")
    plans = make_plans(model, interventions=list(ivs))

    def mean_loss() -> float:
        tot, n = 0.0, 0.0
        with torch.no_grad(), HookedRun(model, plans):
            for s in range(0, ids.shape[0], batch_size):
                b, bm = ids[s:s + batch_size], mask[s:s + batch_size]
                k = float(bm[:, 1:].sum())
                tot += float(_loss(forward(model, b, bm), b, bm)) * k
                n += k
        return tot / max(n, 1.0)

    before = mean_loss()
    opt = torch.optim.Adam(params, lr=lr if lr is not None else (1e-2 if train == "norm" else 1e-3))
    losses = []
    for _ in progress_bar(range(steps), desc=f"heal ({train})", enabled=progress):
        pick = torch.randperm(ids.shape[0], generator=gen)[:batch_size]
        b, bm = ids[pick], mask[pick]
        with torch.enable_grad(), HookedRun(model, plans):
            loss = _loss(forward(model, b, bm), b, bm)
            grads = torch.autograd.grad(loss, params)
        for t, g in zip(params, grads, strict=True):
            t.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    for t in params:
        t.requires_grad_(False)
    after = mean_loss()
    n_params = sum(p.numel() for p in params)
    what = ("final norm" if train == "norm" else f"LoRA rank {rank} on {len(lora)} linear layers of "
            f"{len(_remaining(model, interventions))} blocks")
    desc = f"{what} ({n_params} values), {steps} Adam steps of {batch_size} texts, seed {seed}"
    return Healing(edit=edit, interventions=ivs, trained=trained, n_params=n_params, loss_before=before,
                   loss_after=after, losses=torch.tensor(losses), description=desc,
                   started_from=tuple(repr(iv) for iv in interventions))
