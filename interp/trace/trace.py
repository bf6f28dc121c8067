"""``Trace``: captured activations of a batch of sequences, with everything needed to read them.

A trace holds no model: token ids and strings, the attention mask, per-sequence metadata, the
activations by hook name, and a manifest saying which model (id and weight fingerprint) made them.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from interp.errors import BadInputError, ModelMismatchError
from interp.models import Model
from interp.sites import Component, Positions, Site, SiteSpec, UnknownHookError, resolve_positions, split_stack

SCHEMA_VERSION = 1


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise BadInputError(f"unknown dtype {name!r}; use e.g. 'float32', 'bfloat16', 'float16'")
    return dt


def command_line() -> str:
    return " ".join(sys.argv) if sys.argv and sys.argv[0] else "python"


@dataclass(frozen=True)
class Manifest:
    """Provenance of a trace: schema version, model id + weight fingerprint, dtype, hooks and shapes."""

    model_id: str
    model_fingerprint: str
    dtype: str
    hooks: dict[str, list[int]] = field(default_factory=dict)
    command: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def for_model(cls, model: Model, dtype: torch.dtype, hooks: dict[str, list[int]]) -> Manifest:
        return cls(model_id=model.name, model_fingerprint=model.fingerprint, dtype=dtype_name(dtype),
                   hooks=hooks, command=command_line(),
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "model_id": self.model_id,
                "model_fingerprint": self.model_fingerprint, "dtype": self.dtype, "hooks": self.hooks,
                "command": self.command, "created": self.created}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise BadInputError(f"unsupported trace schema_version {d.get('schema_version')!r} (this interp reads {SCHEMA_VERSION})")
        return cls(model_id=d["model_id"], model_fingerprint=d["model_fingerprint"], dtype=d["dtype"],
                   hooks={k: list(v) for k, v in d["hooks"].items()}, command=d.get("command", ""),
                   created=d.get("created", ""))

    def check_model(self, model: Model) -> None:
        """Raise :class:`ModelMismatchError` if ``model`` is not the model that made this trace."""
        if model.fingerprint != self.model_fingerprint:
            raise ModelMismatchError(
                f"this trace was captured from {self.model_id!r} (weights fingerprint {self.model_fingerprint}) "
                f"but is used with {model.name!r} (fingerprint {model.fingerprint})"
            )


def _batch_pos_axes(name: str) -> tuple[int, int]:
    """Axis indices of (batch, pos) for a hook name (pos: the query position for patterns)."""
    axes = Site.parse(name).component.axes
    return 0, (axes.index("pos") if "pos" in axes else axes.index("q_pos"))


@dataclass(frozen=True)
class Trace:
    """Captured activations of ``batch`` sequences.

    Attributes:
        input_ids: ``[batch, pos]`` token ids (right-padded).
        attention_mask: ``[batch, pos]``, 1 for real tokens.
        tokens: token strings per sequence.
        activations: tensors by hook name; layouts in :class:`~interp.sites.Component` (e.g.
            ``hook_resid_post [batch, pos, d_model]``, ``attn.hook_pattern [batch, head, q_pos, k_pos]``).
        manifest: provenance (model id and fingerprint, dtype, hook shapes, command).
        metadata: one dict per sequence (text, labels...).
        grads: gradients of a metric at hook points, by hook name (same layouts).

    Example:
        >>> import interp
        >>> m = interp.load_model("smollm2-135m")
        >>> tr = m.run("The capital of France is", capture="resid_post").trace
        >>> tr.stack("resid_post").shape
        torch.Size([30, 1, 5, 576])
        >>> tr.get("resid_post", layer=3, positions=-1).shape
        torch.Size([1, 576])
        >>> tr["resid_post.3"] is tr["blocks.3.hook_resid_post"]
        True
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: tuple[tuple[str, ...], ...]
    activations: Mapping[str, torch.Tensor]
    manifest: Manifest
    metadata: tuple[dict[str, Any], ...] = ()
    grads: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2 or self.attention_mask.shape != self.input_ids.shape:
            raise BadInputError(f"input_ids {tuple(self.input_ids.shape)} and attention_mask "
                             f"{tuple(self.attention_mask.shape)} must both be [batch, pos]")
        batch, pos = self.input_ids.shape
        if len(self.tokens) != batch:
            raise BadInputError(f"{len(self.tokens)} token lists for a batch of {batch}")
        if self.metadata and len(self.metadata) != batch:
            raise BadInputError(f"{len(self.metadata)} metadata rows for a batch of {batch}")
        for kind, tensors in (("activation", self.activations), ("gradient", self.grads)):
            for name, t in tensors.items():
                site = Site.parse(name)
                if site.component is Component.HF:  # any module: batch first, then (usually) positions
                    if t.dim() == 0 or t.shape[0] != batch or (t.dim() >= 2 and t.shape[1] != pos):
                        raise BadInputError(f"{kind} {name!r} has shape {tuple(t.shape)}, inconsistent with "
                                            f"{batch} sequences of {pos} tokens")
                    continue
                axes = site.component.axes
                if t.dim() != len(axes):
                    raise BadInputError(f"{kind} {name!r} has shape {tuple(t.shape)}; expected {len(axes)} axes "
                                     f"({', '.join(axes)})")
                b_ax, p_ax = _batch_pos_axes(name)
                if site.component.over_source:  # cross-attention keys/values: over the encoder's positions
                    p_ax = k_ax = b_ax
                    pos_here = batch
                else:
                    pos_here = pos
                    k_ax = axes.index("k_pos") if "k_pos" in axes and site.component is not Component.CROSS_PATTERN else p_ax
                if t.shape[b_ax] != batch or t.shape[p_ax] != pos_here or t.shape[k_ax] != pos_here:
                    raise BadInputError(f"{kind} {name!r} has shape {tuple(t.shape)}, inconsistent with "
                                     f"{batch} sequences of {pos} tokens")

    # -- access --------------------------------------------------------------------------------
    def _key(self, name: SiteSpec) -> str:
        if isinstance(name, str) and name in self.activations:
            return name
        try:
            return Site.parse(name).name
        except UnknownHookError:
            if isinstance(name, str):
                return name
            raise

    def __getitem__(self, name: SiteSpec) -> torch.Tensor:
        """One activation by any single-site spelling: ``"blocks.3.hook_z"``, ``"z.3"``, ``("z", 3)``, a Site."""
        key = self._key(name)
        try:
            return self.activations[key]
        except KeyError:
            close = difflib.get_close_matches(key, list(self.activations), n=3, cutoff=0.5)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise UnknownHookError(
                f"this trace has no activation {key!r}.{hint} It holds {len(self.activations)} hooks: "
                f"{', '.join(list(self.activations)[:8])}{'...' if len(self.activations) > 8 else ''}") from None

    def __contains__(self, name: object) -> bool:
        try:
            return self._key(name) in self.activations  # type: ignore[arg-type]
        except (UnknownHookError, TypeError):
            return False

    @property
    def names(self) -> list[str]:
        """Hook names held, in capture order."""
        return list(self.activations)

    @property
    def n_seqs(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """``[batch]`` number of real tokens of each sequence."""
        return self.attention_mask.sum(-1).long()

    def get(self, hook: SiteSpec | Component, layer: int | None = None, positions: Positions = None,
            heads: int | Sequence[int] | slice | None = None) -> torch.Tensor:
        """An activation by component and layer, optionally indexed by position and head.

        ``hook`` is a component (``"z"``, ``"resid_post"``, a :class:`Component`) with ``layer=``, or one site in
        any spelling (``"blocks.3.hook_z"``, ``"z.3"``). ``positions`` follow the rule of
        :mod:`interp.sites.positions` (each sequence's real tokens; ``-1`` is each sequence's last token): an int
        drops the position axis, a list or slice keeps it (a slice must select as many tokens in every sequence).

        Example:
            >>> import interp
            >>> m = interp.load_model("smollm2-135m")
            >>> tr = m.run(["The capital of France is", "Hi"], capture="resid_post").trace
            >>> tr.get("resid_post", layer=3, positions=-1).shape  # each sequence's last real token
            torch.Size([2, 576])
        """
        if layer is not None:
            st, base = split_stack(hook) if isinstance(hook, str) else (None, hook)
            if isinstance(base, Site):
                comp, st = base.component, st or base.stack
            else:
                comp = Component.parse(base)  # type: ignore[arg-type]
            name = Site(comp, layer, stack=st or self._one_stack()).name
        else:
            name = self._key(hook)  # type: ignore[arg-type]
        t = self[name]
        site = Site.parse(name)
        axes = site.component.axes
        if heads is not None:
            if site.component.head_axis is None:
                raise BadInputError(f"{name} has no head axis (axes: {', '.join(axes)})")
            h_ax = site.component.head_axis
            t = t[(slice(None),) * h_ax + (heads if isinstance(heads, (int, slice)) else torch.as_tensor(list(heads)),)]
            if isinstance(heads, int):
                axes = axes[:h_ax] + axes[h_ax + 1:]
        if positions is not None:
            if site.component.over_source:
                raise BadInputError(f"{name} runs over the source (encoder) tokens, which this trace's lengths do not "
                                    "count; index its position axis directly, or read the encoder trace")
            p_ax = axes.index("q_pos") if "q_pos" in axes else axes.index("pos")
            rows = [resolve_positions(positions, int(n), sequence=i) for i, n in enumerate(self.lengths.tolist())]
            if len({len(r) for r in rows}) != 1:
                raise BadInputError(f"positions {positions!r} select different numbers of tokens in sequences of "
                                    "different lengths; select ints or a list instead")
            idx = torch.tensor(rows, dtype=torch.long, device=t.device)  # [batch, n]
            moved = t.movedim(p_ax, 1)  # [batch, pos, ...]
            gathered = moved[torch.arange(t.shape[0], device=t.device)[:, None], idx]  # [batch, n, ...]
            if isinstance(positions, int):
                return gathered[:, 0]
            return gathered.movedim(1, p_ax)
        return t

    def stack(self, component: str | Component) -> torch.Tensor:
        """All layers of one component stacked: ``[layer, ...]``, e.g. ``stack("resid_post")``."""
        st, base = split_stack(component) if isinstance(component, str) else (None, component)
        comp = Component.parse(base)
        sites = sorted((s for s in map(Site.parse, (n for n in self.activations if not n.startswith("hf:")))
                        if s.component is comp and s.layer is not None and (st is None or s.stack == st)),
                       key=lambda s: s.layer)  # type: ignore[arg-type,return-value]
        if not sites:
            raise UnknownHookError(f"this trace holds no {comp.short} activations; captured: {', '.join(self.names)}")
        if len({s.stack for s in sites}) > 1:
            raise BadInputError(f"this trace holds {comp.short} of both stacks; name one: 'encoder.{comp.short}' or "
                                f"'decoder.{comp.short}'")
        return torch.stack([self.activations[s.name] for s in sites])

    def _one_stack(self) -> str | None:
        """The encoder–decoder stack this trace's hooks belong to, when they all belong to one (else ``None``)."""
        stacks = {split_stack(n)[0] for n in self.activations} - {None}
        return stacks.pop() if len(stacks) == 1 else None

    # -- the residual stream taken apart (interp.trace.decompose) -----------------------------------
    def accumulated_resid(self, layer: int | None = None, *, incl_mid: bool = False) -> tuple[torch.Tensor, list[str]]:
        """The stream before each block (and after the last): see :func:`interp.trace.decompose.accumulated_resid`."""
        from interp.trace.decompose import accumulated_resid

        return accumulated_resid(self, layer, incl_mid=incl_mid)

    def decompose_resid(self, layer: int | None = None, *, mode: str = "all") -> tuple[torch.Tensor, list[str]]:
        """The stream as embed + each attention and MLP output: see :func:`interp.trace.decompose.decompose_resid`."""
        from interp.trace.decompose import decompose_resid

        return decompose_resid(self, layer, mode=mode)

    def stack_head_results(self, model: Model, layer: int | None = None) -> tuple[torch.Tensor, list[str]]:
        """Each head's output in the residual stream: see :func:`interp.trace.decompose.stack_head_results`."""
        from interp.trace.decompose import stack_head_results

        return stack_head_results(self, model, layer)

    # -- conversion ----------------------------------------------------------------------------
    def to(self, dtype_or_device: torch.dtype | str | torch.device) -> Trace:
        """A copy with floating activations (and grads) moved to a dtype or a device.

        A string names a dtype when ``torch`` has a dtype of that name (``"bfloat16"``), else a device.
        """
        if isinstance(dtype_or_device, str) and isinstance(getattr(torch, dtype_or_device, None), torch.dtype):
            dtype_or_device = parse_dtype(dtype_or_device)

        def conv(t: torch.Tensor) -> torch.Tensor:
            if isinstance(dtype_or_device, torch.dtype):
                return t.to(dtype_or_device) if t.is_floating_point() else t
            return t.to(dtype_or_device)

        man = self.manifest
        if isinstance(dtype_or_device, torch.dtype):
            man = replace(man, dtype=dtype_name(dtype_or_device))
        ids = self.input_ids if isinstance(dtype_or_device, torch.dtype) else self.input_ids.to(dtype_or_device)
        mask = self.attention_mask if isinstance(dtype_or_device, torch.dtype) else self.attention_mask.to(dtype_or_device)
        return replace(self, input_ids=ids, attention_mask=mask, manifest=man,
                       activations={k: conv(v) for k, v in self.activations.items()},
                       grads={k: conv(v) for k, v in self.grads.items()})

    def cpu(self) -> Trace:
        return self.to("cpu")

    def select(self, index: int | Sequence[int] | slice) -> Trace:
        """A trace of a subset of the sequences."""
        if isinstance(index, bool) or (not isinstance(index, (int, slice))
                                       and any(isinstance(i, bool) for i in index)):
            raise TypeError(f"select takes sequence indices (int, list of int or slice), not booleans: {index!r}")
        idx = _as_index(index)
        if isinstance(idx, int):
            idx = [idx]
        try:
            keep = torch.arange(self.n_seqs)[idx]
        except IndexError:
            raise IndexError(f"sequence index {index!r} out of range for a trace of {self.n_seqs} sequences") from None

        def sub(name: str, t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, keep.to(t.device))

        acts = {k: sub(k, v) for k, v in self.activations.items()}
        man = replace(self.manifest, hooks={k: list(v.shape) for k, v in acts.items()})
        return replace(
            self, input_ids=self.input_ids[keep], attention_mask=self.attention_mask[keep], manifest=man,
            tokens=tuple(self.tokens[i] for i in keep.tolist()),
            metadata=tuple(self.metadata[i] for i in keep.tolist()) if self.metadata else (),
            activations=acts,
            grads={k: sub(k, v) for k, v in self.grads.items()},
        )

    def check_model(self, model: Model) -> None:
        """Raise :class:`ModelMismatchError` if ``model`` did not make this trace."""
        self.manifest.check_model(model)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this trace as a (one-shard) :class:`~interp.trace.TraceStore` directory."""
        from interp.trace.store import save_trace

        save_trace(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], hooks: Sequence[str] | None = None) -> Trace:
        """Read a trace store (all sequences, or only some ``hooks``) into memory."""
        from interp.trace.store import TraceStore

        return TraceStore(path).trace(hooks=hooks)

    def __repr__(self) -> str:
        return (f"Trace({self.n_seqs} seqs x {self.input_ids.shape[1]} tokens, {len(self.activations)} hooks, "
                f"model={self.manifest.model_id!r}, dtype={self.manifest.dtype})")


def _as_index(x: int | Sequence[int] | slice) -> Any:
    if isinstance(x, (int, slice)):
        return x
    return torch.as_tensor(list(x), dtype=torch.long)
