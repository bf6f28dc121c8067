"""Runs with chosen edges fed from the source run, many edge sets stacked in one forward.

A run is described by a mask ``[sender, receiver]`` (1 = the edge takes the source value). ``R`` runs go
through one forward of batch ``R * batch``: each receiver's input is the stream plus
``sum_u mask[r, u, v] * (src_u - cur_u)`` (see :mod:`interp.circuits.graph`), which the hooks compute from
what the senders wrote earlier in the same forward. The same hooks take zero-valued leaves at every
receiver input, whose gradients are ``d metric / d input_v`` (EAP), and an input-embedding override
(EAP-IG's interpolated inputs). Mask entries may be fractions: ``w`` feeds the receiver
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

from collections.abc import Callable
from typing import Any

import torch

from interp.circuits.graph import LAYOUTS, Graph, build_graph, check_supported
from interp.circuits.task import CircuitTask
from interp.hooks import Lambda
from interp.models import Model
from interp.sites import Component, Site

DEFAULT_BUDGET = 1 << 29  # bytes of stacked activations per forward (a rough bound)


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
        self.W_O = w.W_O.to(dev)
        n_rep = d.n_rep
        self.W = {"q": w.W_Q.to(dev), "k": w.W_K[:, ::n_rep].to(dev), "v": w.W_V[:, ::n_rep].to(dev)}
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
        self.n_before: dict[tuple[str, int], int] = {}
        for key, rs in self.groups.items():
            self.n_before[key] = int(graph.adjacency()[:, rs].any(1).nonzero().max()) + 1
        self.device = dev
        ids, mask = task.input_ids.to(dev), task.attention_mask.to(dev)
        self.ids, self.mask = ids, mask
        corrupt_last = None
        with torch.no_grad():
            if task.ablation == "corrupted":  # the clean and corrupted runs in one forward
                assert task.corrupt_ids is not None
                both_logits, both_out = self._plain(torch.cat([ids, task.corrupt_ids.to(dev)]), mask.repeat(2, 1))
                b = ids.shape[0]
                clean_logits, self.clean_out, self.src_out = both_logits[:b], both_out[:b], both_out[b:]
                corrupt_last = self._last(both_logits[b:])
            else:
                clean_logits, self.clean_out = self._plain(ids)
            self.clean_last = self._last(clean_logits)
            if task.ablation == "mean":
                self.src_out = self._masked_mean(self.clean_out)
            elif task.ablation == "zero":
                self.src_out = torch.zeros_like(self.clean_out)
        self.clean_value = float(task.values(self.clean_last, self.clean_last).mean())
        if corrupt_last is not None:  # every edge patched from the corrupted run is the corrupted run
            self.corrupted_value = float(task.values(corrupt_last, self.clean_last).mean())
        else:
            with torch.no_grad():
                self.corrupted_value = float(self.metric(graph.adjacency().float()[None])[0])

    # -- plain runs ---------------------------------------------------------------------------
    def _masked_mean(self, out: torch.Tensor) -> torch.Tensor:
        m = self.mask[:, :, None, None].to(out.dtype)
        mean = (out * m).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp_min(1)
        return mean.expand_as(out).clone()

    def _last(self, logits: torch.Tensor) -> torch.Tensor:
        """``[R*batch, pos, vocab]`` → ``[R, batch, vocab]`` at each sequence's last real token."""
        b = self.task.batch
        last = self.task.last.to(logits.device).repeat(logits.shape[0] // b)
        out = logits[torch.arange(logits.shape[0], device=logits.device), last]
        return out.view(-1, b, logits.shape[-1])

    def _plain(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and sender outputs ``[batch, pos, sender, d_model]`` of an unpatched run."""
        d = self.model.dims
        outs: dict[int, torch.Tensor] = {}

        def put(idx: int | list[int]) -> Callable[[torch.Tensor, Site], None]:
            def fn(act: torch.Tensor, site: Site) -> None:
                if isinstance(idx, list):
                    head_out = torch.einsum("bphe,hed->bphd", act, self.W_O[site.layer])
                    for h, s in enumerate(idx):
                        outs[s] = head_out[:, :, h]
                else:
                    outs[idx] = act
            return fn

        ivs = [Lambda("embed", fn=put(0))]
        for L in range(d.n_layers):
            ivs.append(Lambda(f"z.{L}", fn=put(self.head_senders[L])))
            s = self.mlp_sender[L]
            if s is not None:
                ivs.append(Lambda(f"mlp_out.{L}", fn=put(s)))
        with self.model.hooks(interventions=ivs):
            logits = self.model.hf(input_ids=ids, attention_mask=self.mask if mask is None else mask,
                                   use_cache=False).logits
        stacked = torch.stack([outs[i] for i in range(len(self.graph.senders))], dim=2)
        return logits, stacked

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

        ivs: list[Any] = [Lambda("embed", fn=on_embed)]
        for L in range(d.n_layers):
            ivs.append(Lambda(f"resid_pre.{L}", fn=keep(f"resid_pre{L}")))
            if "qkv" in self.layout:
                ivs.append(Lambda(f"hf:{self.layout['qkv'].format(L=L)}", fn=on_fused(L)))
            else:
                for kind in ("q", "k", "v"):
                    ivs.append(Lambda(f"hf:{self.layout[kind].format(L=L)}", fn=on_proj(kind, L)))
            ivs.append(Lambda(f"z.{L}", fn=on_z(L)))
            s = self.mlp_sender[L]
            if s is not None:
                ivs.append(Lambda(f"hf:{self.layout['ln2'].format(L=L)}:input", fn=keep(f"resid_mid{L}")))
                ivs.append(Lambda(f"hf:{self.layout['mlp'].format(L=L)}:input", fn=on_mlp_in(L)))
                ivs.append(Lambda(f"mlp_out.{L}", fn=on_mlp_out(L, s)))
        ivs.append(Lambda(f"hf:{self.layout['ln_final']}:input", fn=on_final))
        ids = self.ids.repeat(R, 1)
        mask = self.mask.repeat(R, 1)
        with torch.set_grad_enabled(grad), model.hooks(interventions=ivs):
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
        averaged over inputs interpolated from the source run's embeddings to the clean ones (EAP-IG)."""
        b, p = self.ids.shape
        leaves = {key: torch.zeros(steps * b, p, len(rs), self.model.dims.d_model, device=self.device,
                                   dtype=self.clean_out.dtype, requires_grad=True)
                  for key, rs in self.groups.items()}
        override = None
        if steps > 1:
            alphas = torch.arange(1, steps + 1, device=self.device, dtype=self.clean_out.dtype) / steps
            clean_e, src_e = self.clean_out[:, :, 0], self.src_out[:, :, 0]
            override = (src_e[None] + alphas[:, None, None, None] * (clean_e - src_e)[None]).reshape(steps * b, p, -1)
        zero = torch.zeros(steps, *self.graph.adjacency().shape, device=self.device)
        with torch.enable_grad():
            last = self.run(zero, leaves=leaves, input_override=override, grad=True)
            value = self.task.values(last, self.clean_last.expand_as(last)).mean(-1).sum() / steps
            keys = list(leaves)
            gs = torch.autograd.grad(value, [leaves[k] for k in keys], allow_unused=True)
        out = torch.zeros(b, p, len(self.graph.receivers), self.model.dims.d_model, device=self.device)
        for key, g in zip(keys, gs, strict=True):
            if g is not None:
                out[:, :, self.groups[key]] = g.view(steps, b, p, -1, g.shape[-1]).sum(0).float()
        return out

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


__all__ = ["DEFAULT_BUDGET", "EdgeRunner"]
