"""Runs with chosen edges fed from the source run, many edge sets stacked in one forward.

A run is described by a mask ``[sender, receiver]`` (1 = the edge takes the source value). ``R`` runs go
through one forward of batch ``R * batch``: each receiver's input is the stream plus
``sum_u mask[r, u, v] * (src_u - cur_u)`` (see :mod:`interp.circuits.graph`), which the hooks compute from
what the senders wrote earlier in the same forward. The same hooks take zero-valued leaves at every
receiver input, whose gradients are ``d metric / d input_v`` (EAP-IG over activations). EAP and EAP-IG over
the inputs take those gradients from one plain forward and backward instead (:meth:`EdgeRunner.eap_scores`:
each head's projection gradient pulled back through its weights and its norm), and for EAP that forward is
the clean run itself: the corrupted run without gradients plus the clean forward and backward is all it runs.
The clean and source runs are made when first needed. Mask entries may be fractions: ``w`` feeds the receiver
``x + w (src_u - cur_u)`` (EAP-IG over activations interpolates a sender's output that way).

Example:
    >>> import torch
    >>> from interp.circuits import EdgeRunner, build_graph, induction_task, load_toy
    >>> m = load_toy()
    >>> r = EdgeRunner(m, induction_task(m), graph=build_graph(m))
    >>> none, every = torch.zeros(1, 9, 25), r.graph.adjacency().float()[None]
    >>> [round(float(v), 3) for v in r.metric(torch.cat([none, every]))] == [round(r.clean_value, 3),
    ...                                                                      round(r.corrupted_value, 3)]
    True
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

from interp.circuits.graph import LAYOUTS, Graph, build_graph, check_supported
from interp.circuits.task import CircuitTask
from interp.hooks import HookedRun, Lambda, make_plans
from interp.models import Model
from interp.sites import Component, Site

DEFAULT_BUDGET = 1 << 29  # bytes of stacked activations per forward (a rough bound)
_Fn = Callable[[torch.Tensor, Site], "torch.Tensor | None"]
# per model: hook plans resolved once per tuple of site names, with the slots their functions are read from
_PLANS: weakref.WeakKeyDictionary[Model, dict[tuple[str, ...], tuple[Any, list[_Fn]]]] = weakref.WeakKeyDictionary()


def _call_slot(slots: list[_Fn], i: int, act: torch.Tensor, site: Site) -> torch.Tensor | None:
    return slots[i](act, site)


class EdgeRunner:
    """Clean and source sender outputs of one task, and patched runs over the graph.

    Attributes:
        clean_out / src_out: ``[batch, pos, sender, d_model]`` what each sender writes in the clean / source run.
        clean_value / corrupted_value: the metric of the clean run and of the run with every edge patched.
    """

    def __init__(self, model: Model, inputs: CircuitTask, *, graph: Graph | None = None,
                 memory_budget: int = DEFAULT_BUDGET) -> None:
        check_supported(model)
        task = inputs
        if graph is None:
            graph = build_graph(model)
        self.model, self.graph, self.task = model, graph, task
        self.memory_budget = memory_budget
        d = model.dims
        self.layout = {k: v for k, v in LAYOUTS[model.adapter.family].items()}
        taps = model.adapter.taps
        self.layout["mlp"] = taps[Component.MLP_OUT].path
        self.layout["ln2"] = taps[Component.RESID_MID].path
        self.layout["ln_final"] = taps[Component.LN_FINAL].path
        w = model.weights
        dev = model.device
        self.W_O = w.W_O.to(dev).contiguous()  # [layer, head, d_head, d_model]
        n_rep = d.n_rep
        self.W = {"q": w.W_Q.to(dev), "k": w.W_K[:, ::n_rep].to(dev), "v": w.W_V[:, ::n_rep].to(dev)}
        self.W_T = {k: v.transpose(-1, -2).contiguous() for k, v in self.W.items()}  # [layer, head, d_head, d_model]
        s_idx = {n: i for i, n in enumerate(graph.senders)}
        self.head_senders = [[s_idx[f"L{L}H{h}"] for h in range(d.n_heads)] for L in range(d.n_layers)]
        self.mlp_sender = [s_idx.get(f"MLP{L}") for L in range(d.n_layers)]
        self.has_mlps = self.mlp_sender[0] is not None
        # receiver index groups per layer: q, k, v, mlp; and the logits
        self.groups: dict[tuple[str, int], list[int]] = {}
        for r, name in enumerate(graph.receivers):
            L = graph.receiver_layer[r]
            kind = "logits" if name == "logits" else ("mlp" if name.startswith("MLP") else name.rsplit(".", 1)[1])
            self.groups.setdefault((kind, L), []).append(r)
        # senders a receiver group can read: those before it in the stream
        self.adj = graph.adjacency()
        # per receiver: how many senders (a prefix, in forward order) it can read
        self.reads: list[int] = self.adj.flip(0).cummax(0).values.sum(0).tolist()
        self.n_before = {key: max(self.reads[r] for r in rs) for key, rs in self.groups.items()}
        # one layer's heads are consecutive senders, its q, k, v inputs consecutive receivers (the graph's order)
        for L, ss in enumerate(self.head_senders):
            rs = self.groups[("q", L)] + self.groups[("k", L)] + self.groups[("v", L)]
            assert ss == list(range(ss[0], ss[0] + len(ss))) and rs == list(range(rs[0], rs[0] + len(rs)))
        self.device = dev
        self.ids, self.mask = task.input_ids.to(dev), task.attention_mask.to(dev)
        # the plain runs are made when first read: EAP makes them itself, inside its own forwards
        self._clean_out: torch.Tensor | None = None
        self._src_out: torch.Tensor | None = None
        self._clean_last: torch.Tensor | None = None
        self._corrupt_last: torch.Tensor | None = None
        self._corrupted_value: float | None = None

    # -- the clean and source runs, made on first use --------------------------------------------
    @property
    def clean_out(self) -> torch.Tensor:
        if self._clean_out is None:
            self._plain_runs()
        assert self._clean_out is not None
        return self._clean_out

    @property
    def src_out(self) -> torch.Tensor:
        if self._src_out is None:
            self._plain_runs()
        assert self._src_out is not None
        return self._src_out

    @property
    def clean_last(self) -> torch.Tensor:
        """``[batch, vocab]`` the clean run's logits at each sequence's last real token."""
        if self._clean_last is None:
            self._plain_runs()
        assert self._clean_last is not None
        return self._clean_last

    @property
    def clean_value(self) -> float:
        return float(self.task.values(self.clean_last, self.clean_last).mean())

    @property
    def corrupted_value(self) -> float:
        if self._corrupted_value is None:
            if self.task.ablation == "corrupted":  # every edge patched from the corrupted run is the corrupted run
                if self._corrupt_last is None:
                    self._plain_runs()
                assert self._corrupt_last is not None
                self._corrupted_value = float(self.task.values(self._corrupt_last, self.clean_last).mean())
            else:
                with torch.no_grad():
                    self._corrupted_value = float(self.metric(self.adj.float()[None])[0])
        return self._corrupted_value

    def _plain_runs(self) -> None:
        """The clean run and the source run (one forward of both for corrupted prompts), without gradients."""
        task, ids = self.task, self.ids
        with torch.no_grad():
            if task.ablation == "corrupted" and self._src_out is None:
                assert task.corrupt_ids is not None
                both_logits, both_out = self._plain(torch.cat([ids, task.corrupt_ids.to(self.device)]),
                                                    self.mask.repeat(2, 1))
                b = ids.shape[0]
                self._clean_out, self._src_out = _bpsd(both_out[:, :b].contiguous()), _bpsd(both_out[:, b:].contiguous())
                self._clean_last, self._corrupt_last = self._last(both_logits[:b])[0], self._last(both_logits[b:])[0]
                return
            if self._clean_out is None:
                clean_logits, out = self._plain(ids)
                self._clean_out = _bpsd(out)
                self._clean_last = self._last(clean_logits)[0]
            self._set_src()

    def _set_src(self) -> None:
        """The source run's sender outputs for mean / zero ablation (from the clean run's)."""
        assert self._clean_out is not None
        if self.task.ablation == "mean":
            self._src_out = self._masked_mean(self._clean_out)
        elif self.task.ablation == "zero":
            self._src_out = torch.zeros_like(self._clean_out)

    def _corrupted_run(self) -> None:
        """The corrupted prompts' run alone (no gradients): the source sender outputs and the corrupted logits."""
        assert self.task.corrupt_ids is not None
        with torch.no_grad():
            logits, out = self._plain(self.task.corrupt_ids.to(self.device))
        self._src_out = _bpsd(out)
        self._corrupt_last = self._last(logits)[0]

    # -- hooks ----------------------------------------------------------------------------------
    def _hooked(self, pairs: list[tuple[str, Callable[[torch.Tensor, Site], torch.Tensor | None]]]) -> HookedRun:
        """Hooks calling ``fn(act, site)`` at each named site. The sites are resolved once per model and set of
        names (resolving them costs as much as a tiny model's forward); the functions are this run's."""
        names = tuple(n for n, _ in pairs)
        cache = _PLANS.setdefault(self.model, {})
        if names not in cache:
            slots: list[Callable[[torch.Tensor, Site], torch.Tensor | None]] = []
            ivs = [Lambda(n, fn=functools.partial(_call_slot, slots, i)) for i, n in enumerate(names)]
            cache[names] = (make_plans(self.model, interventions=ivs), slots)
        plans, slots = cache[names]
        slots[:] = [fn for _, fn in pairs]
        return HookedRun(self.model, plans)

    # -- plain runs ---------------------------------------------------------------------------
    def _masked_mean(self, out: torch.Tensor) -> torch.Tensor:
        """The mean over the batch (real tokens only) of ``[batch, pos, sender, d]``, per position, kept in the
        sender-major storage of :meth:`_senders_buffer`."""
        cs = out.permute(2, 0, 1, 3)
        m = self.mask[None, :, :, None].to(out.dtype)
        mean = (cs * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
        return _bpsd(mean.expand_as(cs).contiguous())

    def _last(self, logits: torch.Tensor) -> torch.Tensor:
        """``[R*batch, pos, vocab]`` → ``[R, batch, vocab]`` at each sequence's last real token."""
        b = self.task.batch
        last = self.task.last.to(logits.device).repeat(logits.shape[0] // b)
        out = logits[torch.arange(logits.shape[0], device=logits.device), last]
        return out.view(-1, b, logits.shape[-1])

    def _senders_buffer(self, batch: int) -> torch.Tensor:
        """``[sender, batch, pos, d_model]`` storage for sender outputs (one sender's output is contiguous, so
        EAP's products over batch, positions and d_model need no copies)."""
        return torch.empty(len(self.graph.senders), batch, self.ids.shape[1], self.model.dims.d_model,
                           device=self.device, dtype=self.W_O.dtype)

    def _sender_hooks(self, out: torch.Tensor) -> list[tuple[str, Callable[[torch.Tensor, Site], None]]]:
        """Hooks writing each sender's output into ``out [sender, batch, pos, d_model]`` (detached)."""
        def put(s: int) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                out[s] = act.detach()
            return fn

        def heads(L: int) -> Callable[[torch.Tensor, Site], None]:
            ss = self.head_senders[L]
            w = self.W_O[L]  # [head, d_head, d_model]

            def fn(act: torch.Tensor, site: Site) -> None:  # z [batch, pos, head, d_head]
                z = act.detach().reshape(-1, w.shape[0], w.shape[1]).transpose(0, 1)
                torch.bmm(z.to(w.dtype), w, out=out[ss[0]:ss[-1] + 1].view(w.shape[0], -1, w.shape[2]))
            return fn

        pairs: list[tuple[str, Callable[[torch.Tensor, Site], None]]] = [("embed", put(0))]
        for L in range(self.model.dims.n_layers):
            pairs.append((f"z.{L}", heads(L)))
            s = self.mlp_sender[L]
            if s is not None:
                pairs.append((f"mlp_out.{L}", put(s)))
        return pairs

    def _plain(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and sender outputs ``[sender, batch, pos, d_model]`` of an unpatched run."""
        out = self._senders_buffer(ids.shape[0])
        with self._hooked(self._sender_hooks(out)):  # type: ignore[arg-type]
            logits = self.model.hf(input_ids=ids, attention_mask=self.mask if mask is None else mask,
                                   use_cache=False).logits
        return logits, out

    # -- patched runs -------------------------------------------------------------------------
    def run(self, masks: torch.Tensor, *, leaves: dict[tuple[str, int], torch.Tensor] | None = None,
            input_override: torch.Tensor | None = None, grad: bool = False) -> torch.Tensor:
        """Last-position logits ``[R, batch, vocab]`` of ``R`` runs with ``masks [R, sender, receiver]`` patched.

        ``leaves``: per receiver group ``(kind, layer)``, a ``[R*batch, pos, n, d_model]`` tensor added to
        those receivers' inputs (zeros with ``requires_grad`` for gradients). ``input_override``:
        ``[R*batch, pos, d_model]`` input embeddings to use instead of the tokens' (EAP-IG).
        """
        model, d, b = self.model, self.model.dims, self.task.batch
        R = masks.shape[0]
        masks = masks.to(self.device, self.clean_out.dtype)
        cur: list[torch.Tensor | None] = [None] * len(self.graph.senders)
        stream: dict[str, torch.Tensor] = {}
        src = self.src_out  # [b, pos, S, d]

        def delta(key: tuple[str, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
            """``(delta [Ra*b, pos, va, d], runs [Ra], receivers [va])`` for the runs and receivers (indices within
            the group) that any mask or leaf touches, or ``None``: the others get nothing added."""
            rs = self.groups[key]
            n = self.n_before[key]
            m = masks[:, :n][:, :, rs]  # [R, n, v]
            leaf = leaves.get(key) if leaves is not None else None
            if leaf is not None:
                ra = torch.arange(R, device=m.device)
                va = torch.arange(len(rs), device=m.device)
            elif bool(m.any()):
                ra = m.any(2).any(1).nonzero().flatten()
                va = m.any(0).any(0).nonzero().flatten()
            else:
                return None
            sub = m[ra][:, :, va]  # [Ra, n, va]
            sa = sub.any(0).any(1).nonzero().flatten().tolist()
            p = self.ids.shape[1]
            out = None
            if sa:
                cur_t = torch.stack([cur[i].view(R, b, p, -1)[ra] for i in sa], dim=3)  # type: ignore[union-attr]
                diff = src[:, :, sa][None] - cur_t  # [Ra, b, pos, ns, d]
                out = torch.einsum("rbpnd,rnv->rbpvd", diff, sub[:, sa]).reshape(len(ra) * b, p, len(va), -1)
            if leaf is not None:
                out = leaf if out is None else out + leaf
            if out is None:
                return None
            return out, ra, va

        def on_embed(act: torch.Tensor, site: Site) -> torch.Tensor:
            if input_override is not None:
                act = input_override.to(act.dtype)
            cur[0] = act
            return act

        def keep(name: str) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                stream[name] = act
            return fn

        def on_z(L: int) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                head_out = torch.einsum("bphe,hed->bphd", act, self.W_O[L])
                for h, s in enumerate(self.head_senders[L]):
                    cur[s] = head_out[:, :, h]
            return fn

        def proj_delta(kind: str, L: int) -> torch.Tensor | None:
            got = delta((kind, L))
            if got is None:
                return None
            dl, ra, va = got
            ln1 = model.module(self.layout["ln1"].format(L=L))
            p = self.ids.shape[1]
            x = stream[f"resid_pre{L}"].view(R, b, p, -1)[ra].reshape(len(ra) * b, p, -1)
            dln = ln1(x[:, :, None, :] + dl) - ln1(x)[:, :, None, :]  # [Ra*b, pos, va, d]
            add = torch.einsum("bphd,hde->bphe", dln, self.W[kind][L][va])  # [Ra*b, pos, va, d_head]
            W = self.W[kind][L]
            full = torch.zeros(R, b, p, W.shape[0], W.shape[2], dtype=add.dtype, device=add.device)
            part = torch.zeros(len(ra), b, p, W.shape[0], W.shape[2], dtype=add.dtype, device=add.device)
            part[:, :, :, va] = add.view(len(ra), b, p, len(va), -1)
            full[ra] = part
            return full.view(R * b, p, -1)

        def on_proj(kind: str, L: int) -> Callable[[torch.Tensor, Site], torch.Tensor]:
            def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
                add = proj_delta(kind, L)
                return act if add is None else act + add.to(act.dtype)
            return fn

        def on_fused(L: int) -> Callable[[torch.Tensor, Site], torch.Tensor]:
            def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
                parts = [proj_delta(kind, L) for kind in ("q", "k", "v")]
                if all(p is None for p in parts):
                    return act
                width = act.shape[-1] // 3
                full = [torch.zeros_like(act[..., :width]) if p is None else p.to(act.dtype) for p in parts]
                return act + torch.cat(full, -1)
            return fn

        def on_mlp_in(L: int) -> Callable[[torch.Tensor, Site], torch.Tensor]:
            ln2 = model.module(self.layout["ln2"].format(L=L))

            def fn(act: torch.Tensor, site: Site) -> torch.Tensor:
                got = delta(("mlp", L))
                if got is None:
                    return act
                dl, ra, _ = got
                p = act.shape[1]
                x = stream[f"resid_mid{L}"].view(R, b, p, -1)[ra].reshape(len(ra) * b, p, -1)
                out = act.view(R, b, p, -1).clone()
                out[ra] = ln2(x + dl[:, :, 0]).to(act.dtype).view(len(ra), b, p, -1)
                return out.view_as(act)
            return fn

        def on_mlp_out(L: int, s: int) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                cur[s] = act
            return fn

        def on_final(act: torch.Tensor, site: Site) -> torch.Tensor:
            got = delta(("logits", d.n_layers))
            if got is None:
                return act
            dl, ra, _ = got
            p = act.shape[1]
            out = act.view(R, b, p, -1).clone()
            out[ra] = out[ra] + dl[:, :, 0].to(act.dtype).view(len(ra), b, p, -1)
            return out.view_as(act)

        hk: list[tuple[str, Callable[[torch.Tensor, Site], torch.Tensor | None]]] = [("embed", on_embed)]
        for L in range(d.n_layers):
            hk.append((f"resid_pre.{L}", keep(f"resid_pre{L}")))
            if "qkv" in self.layout:
                hk.append((f"hf:{self.layout['qkv'].format(L=L)}", on_fused(L)))
            else:
                for kind in ("q", "k", "v"):
                    hk.append((f"hf:{self.layout[kind].format(L=L)}", on_proj(kind, L)))
            hk.append((f"z.{L}", on_z(L)))
            s = self.mlp_sender[L]
            if s is not None:
                hk.append((f"hf:{self.layout['ln2'].format(L=L)}:input", keep(f"resid_mid{L}")))
                hk.append((f"hf:{self.layout['mlp'].format(L=L)}:input", on_mlp_in(L)))
                hk.append((f"mlp_out.{L}", on_mlp_out(L, s)))
        hk.append((f"hf:{self.layout['ln_final']}:input", on_final))
        ids = self.ids.repeat(R, 1)
        mask = self.mask.repeat(R, 1)
        with torch.set_grad_enabled(grad), self._hooked(hk):
            logits = model.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return self._last(logits)

    def metric(self, masks: torch.Tensor, **kw: Any) -> torch.Tensor:
        """Mean metric over the batch per run: ``[R]``."""
        last = self.run(masks, **kw)
        return self.task.values(last, self.clean_last.expand_as(last)).mean(-1)

    def chunk_size(self) -> int:
        """Runs per stacked forward under the memory budget."""
        d = self.model.dims
        b, p = self.ids.shape
        per_run = 4 * b * p * (len(self.graph.senders) * d.d_model * 3 + 16 * d.d_model + 4 * d.d_mlp + 2 * d.d_vocab
                               + 3 * d.n_heads * p)
        return max(1, self.memory_budget // per_run)

    def metrics(self, masks: torch.Tensor, progress: Callable[[Any], Any] | None = None) -> torch.Tensor:
        """:meth:`metric` of many runs ``[R, sender, receiver]``, in chunks: ``[R]``."""
        n = self.chunk_size()
        out = torch.empty(masks.shape[0])
        starts = range(0, masks.shape[0], n)
        for c0 in (progress(starts) if progress is not None else starts):
            with torch.no_grad():
                out[c0:c0 + n] = self.metric(masks[c0:c0 + n]).float().cpu()
        return out

    def receiver_grads(self, *, steps: int = 1) -> torch.Tensor:
        """``d metric / d input_v`` at every receiver, ``[batch, pos, receiver, d_model]``; with ``steps > 1``,
        summed over inputs interpolated from the source run's embeddings to the clean ones (EAP-IG; divided by
        ``steps`` already). See :meth:`_grad_blocks`."""
        b, p = self.ids.shape
        out = torch.empty(len(self.graph.receivers), b, p, self.model.dims.d_model, device=self.device,
                          dtype=torch.promote_types(self.W_O.dtype, torch.float32))
        for r0, g in self._grad_blocks(steps):
            out[r0:r0 + g.shape[0]] = g
        return _bpsd(out)  # receiver-major storage

    def eap_scores(self, *, steps: int = 1) -> torch.Tensor:
        """``[sender, receiver]`` EAP (``steps=1``) or EAP-IG scores: ``(src_u - clean_u) · d m / d input_v``
        summed over batch, positions and ``d_model``, one matrix product per block of receivers as its
        gradients come (the full gradient tensor is never held)."""
        S, R = len(self.graph.senders), len(self.graph.receivers)
        dense: torch.Tensor | None = None
        A = torch.empty(0)
        for r0, g in self._grad_blocks(steps):
            if dense is None:  # after the forwards: the clean run may be the gradient run itself
                A = (self.src_out - self.clean_out).permute(2, 0, 1, 3).reshape(S, -1).to(g.dtype)
                dense = torch.zeros(S, R, dtype=g.dtype, device=self.device)
            n = self.reads[r0]
            dense[:n, r0:r0 + g.shape[0]] = A[:n] @ g.reshape(g.shape[0], -1).T
        assert dense is not None
        return dense

    def _grad_blocks(self, steps: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first receiver, gradients [receivers, batch, pos, d_model])`` per block of receivers that read the
        same senders (one layer's q/k/v inputs, an MLP, the logits), summed over the ``steps`` runs / ``steps``.

        One forward (of ``steps * batch``) and one backward to the receivers' projections: the gradient at a
        head's q/k/v input is its norm's vector-Jacobian product at the stream with that head's projection
        gradient pulled back through its weights (the MLP's: through its norm; the logits': the final
        norm's input). With ``steps=1`` and no plain run yet, this forward is the clean run (its sender outputs
        are kept) and the corrupted prompts' run is one more forward without gradients: the fewest runs EAP needs.
        """
        b, p = self.ids.shape
        d, model = self.model.dims, self.model
        fresh = steps == 1 and self._clean_out is None  # this forward is the clean run: keep what it writes
        if fresh and self.task.ablation == "corrupted" and self._src_out is None:
            self._corrupted_run()
        override = None
        if steps > 1:
            alphas = torch.arange(1, steps + 1, device=self.device, dtype=self.clean_out.dtype) / steps
            clean_e, src_e = self.clean_out[:, :, 0], self.src_out[:, :, 0]
            override = (src_e[None] + alphas[:, None, None, None] * (clean_e - src_e)[None]).reshape(steps * b, p, -1)
        x_in: dict[tuple[str, int], torch.Tensor] = {}  # the stream each norm reads
        y: dict[tuple[str, int], torch.Tensor] = {}  # what the receivers' gradients are pulled back from
        outs = self._senders_buffer(b)

        def keep(into: dict[tuple[str, int], torch.Tensor], key: tuple[str, int]
                 ) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                into[key] = act
            return fn

        def on_embed(act: torch.Tensor, site: Site) -> torch.Tensor | None:
            return None if override is None else override.to(act.dtype)

        hk: list[tuple[str, Callable[[torch.Tensor, Site], torch.Tensor | None]]]
        hk = list(self._sender_hooks(outs)) if fresh else [("embed", on_embed)]
        lay = self.layout
        for L in range(d.n_layers):
            hk.append((f"hf:{lay['ln1'].format(L=L)}:input", keep(x_in, ("ln1", L))))
            if "qkv" in lay:
                hk.append((f"hf:{lay['qkv'].format(L=L)}", keep(y, ("qkv", L))))
            else:
                hk += [(f"hf:{lay[k].format(L=L)}", keep(y, (k, L))) for k in ("q", "k", "v")]
            if self.mlp_sender[L] is not None:
                hk.append((f"hf:{lay['ln2'].format(L=L)}:input", keep(x_in, ("ln2", L))))
                hk.append((f"hf:{lay['mlp'].format(L=L)}:input", keep(y, ("mlp", L))))
        hk.append((f"hf:{lay['ln_final']}:input", keep(y, ("logits", d.n_layers))))
        with torch.enable_grad(), self._hooked(hk):
            logits = model.hf(input_ids=self.ids.repeat(steps, 1), attention_mask=self.mask.repeat(steps, 1),
                              use_cache=False).logits
        last = self._last(logits)
        if fresh:
            self._clean_out, self._clean_last = _bpsd(outs), last[0].detach()
            if self.task.ablation != "corrupted":
                self._set_src()
        with torch.enable_grad():
            value = self.task.values(last, self.clean_last.expand_as(last)).mean(-1).sum() / steps
            keys = list(y)
            gs = torch.autograd.grad(value, [y[k] for k in keys], allow_unused=True)
        del logits, last, value
        grad = {k: (torch.zeros_like(y[k]) if g is None else g) for k, g in zip(keys, gs, strict=True)}
        dt = torch.promote_types(self.W_O.dtype, torch.float32)
        n = steps * b * p
        n_qkv = len(self.groups[("q", 0)]) + len(self.groups[("k", 0)]) + len(self.groups[("v", 0)])
        ubuf = torch.empty(n_qkv, n, d.d_model, device=self.device, dtype=dt)  # reused by every layer
        scratch = torch.empty_like(ubuf)
        for L in range(d.n_layers):
            if "qkv" in lay:
                g_qkv = grad.pop(("qkv", L))
                parts = dict(zip(("q", "k", "v"), g_qkv.split(g_qkv.shape[-1] // 3, -1), strict=True))
            else:
                parts = {k: grad.pop((k, L)) for k in ("q", "k", "v")}
            rs = self.groups[("q", L)] + self.groups[("k", L)] + self.groups[("v", L)]
            # each head's projection gradient pulled back through its weights: [head, n, d_model]
            u = ubuf[:len(rs)]  # the block yielded before is used up by now
            h0 = 0
            for k in ("q", "k", "v"):
                wt = self.W_T[k][L]  # [head, d_head, d_model]
                gk = parts[k].reshape(n, wt.shape[0], wt.shape[1]).transpose(0, 1)
                torch.bmm(gk.to(dt), wt.to(dt), out=u[h0:h0 + wt.shape[0]])
                h0 += wt.shape[0]
            del parts
            g = _norm_vjp(model.module(lay["ln1"].format(L=L)), x_in.pop(("ln1", L)).reshape(n, -1), u, scratch)
            yield rs[0], (g.view(len(rs), steps, b, p, -1).sum(1) if steps > 1 else g.view(len(rs), b, p, -1))
            del g, u
            if self.mlp_sender[L] is not None:
                g = _norm_vjp(model.module(lay["ln2"].format(L=L)), x_in.pop(("ln2", L)).reshape(n, -1),
                              grad.pop(("mlp", L)).reshape(1, n, -1).to(dt), scratch)
                yield self.groups[("mlp", L)][0], g.view(1, steps, b, p, -1).sum(1)
        g = grad.pop(("logits", d.n_layers)).to(dt)
        yield self.groups[("logits", d.n_layers)][0], g.view(1, steps, b, p, -1).sum(1)

    def sender_groups(self) -> list[list[int]]:
        """Senders interpolated together by EAP-IG over activations (MIB's nodes): the input, each layer's
        heads together, each MLP."""
        groups = [[0]]
        for L in range(self.model.dims.n_layers):
            groups.append(list(self.head_senders[L]))
            s = self.mlp_sender[L]
            if s is not None:
                groups.append([s])
        return groups

    def activation_ig(self, *, steps: int) -> torch.Tensor:
        """EAP-IG over activations: ``[sender, receiver]`` scores ``(src_u - clean_u) · mean_k d m / d input_v``,
        the gradient taken in the runs where ``u``'s group (:meth:`sender_groups`) writes
        ``src + (k / steps) (clean - src)`` (``k = 1..steps``) and everything else is clean. One run per group
        and step, many stacked per forward; ``steps=1`` is EAP (the one run is the clean run)."""
        graph, d = self.graph, self.model.dims
        adj = graph.adjacency().float()
        groups = self.sender_groups()
        runs = [(gi, k) for gi in range(len(groups)) for k in range(1, steps + 1)]
        b, p = self.ids.shape
        n_recv = len(graph.receivers)
        grad_bytes = 4 * b * p * n_recv * d.d_model
        n = max(1, min(self.chunk_size(), self.memory_budget // max(1, 2 * grad_bytes)))
        diff = (self.src_out - self.clean_out).float()
        dense = torch.zeros(len(graph.senders), n_recv)
        for c0 in range(0, len(runs), n):
            part = runs[c0:c0 + n]
            masks = torch.zeros(len(part), *adj.shape)
            for i, (gi, k) in enumerate(part):
                masks[i, groups[gi]] = adj[groups[gi]] * (1.0 - k / steps)
            leaves = {key: torch.zeros(len(part) * b, p, len(rs), d.d_model, device=self.device,
                                       dtype=self.clean_out.dtype, requires_grad=True)
                      for key, rs in self.groups.items()}
            with torch.enable_grad():
                last = self.run(masks, leaves=leaves, grad=True)
                value = self.task.values(last, self.clean_last.expand_as(last)).mean(-1).sum()
                keys = list(leaves)
                gs = torch.autograd.grad(value, [leaves[k] for k in keys], allow_unused=True)
            grads = torch.zeros(len(part), b, p, n_recv, d.d_model, device=self.device)
            for key, g in zip(keys, gs, strict=True):
                if g is not None:
                    grads[:, :, :, self.groups[key]] = g.view(len(part), b, p, -1, g.shape[-1]).float()
            for i, (gi, _) in enumerate(part):
                ss = groups[gi]
                dense[ss] += torch.einsum("bpsd,bprd->sr", diff[:, :, ss], grads[i]).cpu()
        return dense / steps


def _bpsd(senders_major: torch.Tensor) -> torch.Tensor:
    """``[sender, batch, pos, d]`` storage seen as ``[batch, pos, sender, d]`` (the attributes' layout)."""
    return senders_major.permute(1, 2, 0, 3)


def _norm_kind(norm: torch.nn.Module) -> str:
    """``"layer"`` / ``"rms"`` when ``norm`` computes LayerNorm / Llama's RMSNorm (checked once per module against
    its own forward on random rows), else ``"other"`` (its vector-Jacobian products then go through autograd)."""
    kind = _NORM_KINDS.get(norm)
    if kind is None:
        kind = "other"
        w = getattr(norm, "weight", None)
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if isinstance(w, torch.Tensor) and w.dim() == 1 and isinstance(eps, float):
            x = torch.randn(4, w.shape[0], generator=torch.Generator().manual_seed(0)).to(w.device, w.dtype)
            with torch.no_grad():
                got = norm(x)
                xf = x.double()
                for k in ("layer", "rms"):
                    c = xf - xf.mean(-1, keepdim=True) if k == "layer" else xf
                    want = c / (c.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w.double()
                    bias = getattr(norm, "bias", None)
                    if k == "layer" and isinstance(bias, torch.Tensor):
                        want = want + bias.double()
                    if torch.allclose(got.double(), want, rtol=1e-3, atol=1e-4):
                        kind = k
                        break
        _NORM_KINDS[norm] = kind
    return kind


_NORM_KINDS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def _norm_vjp(norm: torch.nn.Module, x: torch.Tensor, u: torch.Tensor, scratch: torch.Tensor | None = None
              ) -> torch.Tensor:
    """``J_norm(x)^T u`` for ``h`` cotangents at once: ``x [n, d]``, ``u [h, n, d]`` → ``[h, n, d]`` (``u`` is
    overwritten; ``scratch``, at least ``u``'s size, saves a temporary). LayerNorm ``y = w (x - μ) / σ + b``: ``(g - mean(g) - x̂ mean(g x̂)) / σ`` with ``g = w u``;
    RMSNorm ``y = w x / r``: ``(g - x̂ mean(g x̂)) / r``; any other norm through autograd."""
    kind = _norm_kind(norm)
    if kind == "other":
        xr = x.detach()[None].expand(u.shape[0], -1, -1).contiguous().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(norm(xr), xr, u.to(xr.dtype))
        return g
    dt = u.dtype
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)))
    with torch.no_grad():
        xf = x.detach().to(dt)
        if kind == "layer":
            xf = xf - xf.mean(-1, keepdim=True)
        inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # [n, 1]
        xhat = xf * inv
        w = norm.weight
        assert isinstance(w, torch.Tensor)
        g = u.mul_(w.to(dt))
        prod = torch.mul(g, xhat, out=scratch[:g.shape[0]]) if scratch is not None else g * xhat
        m = prod.mean(-1, keepdim=True)  # [h, n, 1]: mean(g x̂)
        if kind == "layer":
            g.sub_(g.mean(-1, keepdim=True))
        g.addcmul_(xhat, m, value=-1.0)
        return g.mul_(inv)


__all__ = ["DEFAULT_BUDGET", "EdgeRunner"]
