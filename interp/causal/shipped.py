"""IIT-trained toy models with known circuits, shipped in ``data/causal/<name>/``.

Each directory holds a Hugging Face GPT-2 config, the weights (``model.safetensors``, float16, loaded as
float32) and ``causal.json``: the task (name and arguments), the alignment the model was trained to, the
non-aligned sites strict IIT made irrelevant, the circuit in words, the measured scores and the training
settings, stamped with the class, its schema version and the interp version.

- ``iit-equality``: hierarchical equality (``a b c d`` → ``(a = b) = (c = d)``) with ``WX`` in ``mlp_out.0`` at
  position 1 and ``WY`` in ``mlp_out.0`` at position 3; layer 0 heads 0-1, layer 1 head 0 and the MLPs at
  positions 1 and 3 form the circuit.
- ``iit-ioi``: toy IOI (``n1 n2 n3`` → the name not repeated) with ``S`` (the repeated slot) in ``mlp_out.0`` at
  position 2 and the answer name ``IO`` in head ``L1H0`` at position 2 (a name mover); layer 0 head 0 and
  ``mlp_out.0``/``mlp_out.1`` at position 2 complete the circuit.

``data/causal/train.py`` trains both on a CPU in minutes.

Example:
    >>> from interp.causal import load_iit_model
    >>> shipped = load_iit_model("iit-ioi")
    >>> shipped.alignment
    Alignment(S: mlp_out.0@2; IO: z.1@2[0])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from interp.causal.alignment import AlignedSite, Alignment
from interp.causal.task import CausalTask
from interp.causal.tasks import get_task
from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError, unknown_name
from interp.fileio import atomic_save_file, atomic_write_text
from interp.models import Model, from_hf
from interp.version import __version__

CLASS_NAME = "IITModel"
SCHEMA_VERSION = 1
SHIPPED = ("iit-equality", "iit-ioi")


def shipped_dir() -> Path:
    """``data/causal`` of the interp checkout."""
    return Path(__file__).resolve().parents[2] / "data" / "causal"


@dataclass
class IITModel:
    """A network trained to an alignment, with its task and what was measured on it.

    Attributes:
        model: the network (:class:`~interp.models.Model`, token ids only).
        task: the task it was trained on.
        alignment: where each high-level variable lives.
        non_aligned: the sites strict IIT trained to be irrelevant.
        circuit: the known circuit, in words (``{"nodes": [...], "description": ...}``).
        metrics: scores measured after training (task accuracy, IIA per variable, ablated accuracy).
        training: the training settings.
        task_args: the arguments that rebuild ``task`` (:func:`~interp.causal.get_task`).
    """

    model: Model
    task: CausalTask
    alignment: Alignment
    non_aligned: tuple[AlignedSite, ...] = ()
    circuit: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    task_args: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype = torch.float16) -> Path:
        """Write ``config.json``, ``model.safetensors`` (weights in ``dtype``) and ``causal.json`` to ``path``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", self.model.config.to_json_string())
        state = {k: v.detach().to(dtype).contiguous().clone() for k, v in self.model.hf.state_dict().items()
                 if not k.endswith("attn.bias") and not k.endswith("masked_bias")}
        if getattr(self.model.config, "tie_word_embeddings", True):
            state.pop("lm_head.weight", None)
        atomic_save_file(out / "model.safetensors", state)
        meta = {"class": CLASS_NAME, "schema_version": SCHEMA_VERSION, "interp_version": __version__,
                "task": {"name": self.task.name, "args": self.task_args}, "alignment": self.alignment.to_dict(),
                "non_aligned": Alignment({"_": list(self.non_aligned)}).to_dict()["_"] if self.non_aligned else [],
                "circuit": self.circuit, "metrics": self.metrics, "training": self.training}
        atomic_write_text(out / "causal.json", json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> IITModel:
        """Read a directory written by :meth:`save`.

        Raises:
            BadInputError: no such directory or files; SchemaVersionError: written by a newer interp.
        """
        from transformers import AutoConfig, AutoModelForCausalLM

        src = Path(path)
        for f in ("config.json", "model.safetensors", "causal.json"):
            if not (src / f).is_file():
                raise BadInputError(f"no IIT model in {str(src)!r}: {f} is missing")
        try:
            meta = json.loads((src / "causal.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CorruptStoreError(f"{src / 'causal.json'} is not valid JSON ({e})") from None
        if meta.get("class") != CLASS_NAME:
            raise BadInputError(f"{src} holds a {meta.get('class')!r}, not an {CLASS_NAME}")
        if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
            raise SchemaVersionError(f"{src} was written by interp {meta.get('interp_version')} with schema "
                                     f"{meta.get('schema_version')}; this interp reads up to {SCHEMA_VERSION}: "
                                     "upgrade interp")
        config = AutoConfig.from_pretrained(str(src))
        hf = AutoModelForCausalLM.from_config(config)
        state = {k: v.float() for k, v in load_file(str(src / "model.safetensors")).items()}
        missing, unexpected = hf.load_state_dict(state, strict=False)
        bad = [k for k in missing if not (k.endswith("attn.bias") or k == "lm_head.weight")]
        if bad or unexpected:
            raise CorruptStoreError(f"{src / 'model.safetensors'} does not fit its config (missing {bad[:3]}, "
                                    f"unexpected {list(unexpected)[:3]})")
        hf.tie_weights()
        model = from_hf(hf.float().eval(), name=name or src.name)
        for p in model.hf.parameters():
            p.requires_grad_(False)
        task_meta = meta.get("task") or {}
        task = get_task(task_meta.get("name", ""), **(task_meta.get("args") or {}))
        non = tuple(Alignment.from_dict({"_": meta["non_aligned"]})["_"]) if meta.get("non_aligned") else ()
        return cls(model=model, task=task, alignment=Alignment.from_dict(meta["alignment"]), non_aligned=non,
                   circuit=meta.get("circuit") or {}, metrics=meta.get("metrics") or {},
                   training=meta.get("training") or {}, task_args=task_meta.get("args") or {})

    def __repr__(self) -> str:
        return f"IITModel({self.model.name!r}, task={self.task.name}, {self.alignment!r})"


def load_iit_model(name: str = "iit-equality") -> IITModel:
    """A shipped IIT-trained model (``"iit-equality"``, ``"iit-ioi"``) or one saved in a directory.

    Example:
        >>> load_iit_model("iit-equality").metrics["task_accuracy"] >= 0.98
        True
    """
    if name in SHIPPED:
        return IITModel.load(shipped_dir() / name, name=name)
    if Path(name).is_dir():
        return IITModel.load(name)
    raise unknown_name("IIT model", name, SHIPPED, hint="(or a directory written by IITModel.save)")


__all__ = ["SHIPPED", "IITModel", "load_iit_model", "shipped_dir"]
