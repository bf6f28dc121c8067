"""The logit lens (nostalgebraist 2020): decode every layer's residual stream with the model's own head.

Each chosen activation goes through the model's final norm (its own module, so RMSNorm or LayerNorm
with its eps) and the unembedding (``W_U`` and ``b_U`` if any), as if the remaining layers were
skipped. The logits are made in cache-sized tiles and reduced at once (an online log-sum-exp), so the
lens costs little more than the unembedding matmul itself and never holds ``[layer, batch, pos, vocab]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from interp.errors import BadInputError
from interp.lens.result import LogitLensResult
from interp.models import Inputs, Model
from interp.sites import Component
from interp.trace.trace import Trace

LENSABLE = (Component.RESID_PRE, Component.ATTN_OUT, Component.RESID_MID, Component.MLP_OUT, Component.RESID_POST)
TILE_BYTES = 2**24  # logits (and their exponentials) made and reduced at once: a tile that stays in cache
VOCAB_TILE = 4096  # vocabulary columns per tile
NORM_CHUNK_BYTES = 2**26  # normalised activations of a chunk of layers, decoded together


def logit_lens(
    model: Model,
    trace_or_text: Trace | Inputs,
    components: Sequence[str] = ("hook_resid_post",),
    target: str | int | None = None,
    top_k: int = 5,
    include_final_norm: bool = True,
    chunk_bytes: int = TILE_BYTES,
    transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> LogitLensResult:
    """Decode each layer's residual stream (or a block's contribution) into next-token distributions.

    Args:
        model: the model that made the trace (its final norm and unembedding are used).
        trace_or_text: a :class:`~interp.trace.Trace` holding ``blocks.*.<component>`` for each
            component, or inputs for :meth:`Model.run` (text, texts, ids or ``(ids, mask)``),
            which are run here capturing them.
        components: any of ``hook_resid_post`` (default), ``hook_resid_pre``, ``hook_resid_mid``,
            ``hook_attn_out``, ``hook_mlp_out``; rows are ordered by layer, then forward order.
        target: a token (a string that must be exactly one token, or an id) whose rank and
            probability are tracked.
        top_k: top tokens kept per layer and position.
        include_final_norm: apply the final norm before the unembedding (the usual logit lens).
        chunk_bytes: bound on the float32 logits held at once; they are made in tiles of this size and
            reduced while in cache (the full ``[layer, batch, pos, vocab]`` block never exists).
        transform: ``(hook name, activations) -> activations`` applied to each layer before decoding
            (the tuned lens passes its translators here); ``None`` decodes the activations as they are.

    Returns:
        :class:`LogitLensResult` with ``[layer, batch, pos]`` metrics; ``KL(final || layer)`` is to the
        model's output distribution (the trace's ``logits``, or its last ``hook_resid_post`` decoded).

    Raises:
        ValueError: on an unknown component, a target that is not one token, a model without LM head.
        KeyError: if the trace lacks the residual hooks (the message says what to capture).
        ModelMismatchError: if the trace was made by another model.

    Example:
        >>> import interp
        >>> from interp.lens import logit_lens
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> res = logit_lens(m, "The capital of France is", target=" Paris")  # doctest: +SKIP
        >>> res.top_tokens(layer=-1)[0]  # doctest: +SKIP
        ' Paris'
        >>> res.plot().write_html("lens.html")  # doctest: +SKIP
    """
    comps = _components(components)
    if top_k < 1:
        raise BadInputError(f"top_k must be >= 1, got {top_k}")
    W_U, b_U = model.weights.W_U, model.weights.b_U
    if W_U is None:
        raise BadInputError(f"model {model.name!r} has no unembedding (an encoder without LM head): no logit lens")
    target_id = _target_id(model, target)
    final_logits: torch.Tensor | None = None
    if isinstance(trace_or_text, Trace):
        trace = trace_or_text
        trace.check_model(model)
        if "logits" in trace:
            final_logits = trace["logits"]
    else:
        run = model.run(trace_or_text, capture=[f"blocks.*.{c.value}" for c in comps])
        trace, final_logits = run.trace, run.logits
    names, labels = _rows(trace, comps, model.dims.n_layers)
    last = f"blocks.{model.dims.n_layers - 1}.{Component.RESID_POST.value}"
    if final_logits is None:
        if last not in trace:
            raise KeyError(f"the KL to the final distribution needs the model's output: capture 'logits' or {last!r}")
        final_logits = _decode(model, trace[last][None], W_U, b_U, True)[0]
    mask = trace.attention_mask.to(model.device).bool()
    final_z = final_logits.to(model.device).double()
    final_p = final_z.softmax(-1)
    # KL(final || layer) = sum p_f (z_f - z) + lse(z) - lse(z_f) for layer logits z. The layer's sum_v p_f[v] z[v],
    # with z = hn @ W_U + b_U, is hn . (W_U p_f) + b_U . p_f: one small float64 matmul here replaces a pass over
    # the layer's logits (float64 because hn . u cancels heavily).
    final_const = torch.linalg.vecdot(final_p, final_z) - final_z.logsumexp(-1)  # sum p_f z_f - lse(z_f)
    W = W_U.to(model.device).float()
    b = b_U.to(model.device).float() if b_U is not None else None
    u = final_p @ W.T.double()  # [batch, pos, d_model]
    pb = final_p @ b.double() if b is not None else 0.0
    ids = trace.input_ids.to(model.device)
    n_seq, n_pos = ids.shape
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:] & mask[:, :-1]
    next_ids = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)

    per_layer = n_seq * n_pos * W.shape[0] * 4
    step = max(1, NORM_CHUNK_BYTES // max(per_layer, 1))
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("ids", "probs", "ent", "kl", "ce", "rank", "tp")}
    for i in range(0, len(names), step):
        x = torch.stack([trace[n] if transform is None else transform(n, trace[n]) for n in names[i:i + step]])
        hn = (model.apply_final_norm(x) if include_final_norm else x.to(model.device)).float()  # [c, batch, pos, d]
        c = hn.shape[0]
        st = _decode_rows(hn.reshape(-1, hn.shape[-1]), W, b, top_k, target_id,
                          next_ids.expand(c, -1, -1).reshape(-1), chunk_bytes)
        shape = (c, n_seq, n_pos)
        lse = st["lse"].view(shape)
        out["ids"].append(st["top_ids"].view(*shape, -1))
        out["probs"].append((st["top_z"].view(*shape, -1) - lse[..., None]).exp())
        out["ent"].append(st["entropy"].view(shape))
        dot_f = (hn.double() * u).sum(-1) + pb
        out["kl"].append((final_const - dot_f + lse.double()).float())
        out["ce"].append(lse - st["z_next"].view(shape))
        if target_id is not None:
            out["rank"].append(st["rank"].view(shape).long())
            out["tp"].append((st["z_target"].view(shape) - lse).exp())

    def cat(key: str, valid: torch.Tensor, fill: float) -> torch.Tensor:
        t = torch.cat(out[key])
        v = valid.reshape(1, n_seq, n_pos, *([1] * (t.dim() - 3)))
        return t.masked_fill(~v, fill).cpu()

    nan = float("nan")
    top_ids_t = cat("ids", mask, -1)
    uniq = sorted(set(top_ids_t.unique().tolist()) - {-1} | ({target_id} if target_id is not None else set()))
    strs = model.to_str_tokens(torch.tensor([uniq], dtype=torch.long))[0] if uniq else []
    return LogitLensResult(
        top_ids=top_ids_t, top_probs=cat("probs", mask, nan), entropy=cat("ent", mask, nan),
        kl_to_final=cat("kl", mask, nan), next_token_ce=cat("ce", has_next, nan),
        attention_mask=trace.attention_mask.cpu(), layer_labels=tuple(labels), tokens=trace.tokens,
        id_to_str=dict(zip(uniq, strs, strict=True)),
        target_rank=cat("rank", mask, -1) if target_id is not None else None,
        target_prob=cat("tp", mask, nan) if target_id is not None else None,
        target=target, target_id=target_id, model_id=model.name, include_final_norm=include_final_norm,
    )


def _decode(model: Model, x: torch.Tensor, W_U: torch.Tensor, b_U: torch.Tensor | None,
            norm: bool) -> torch.Tensor:
    """``[..., d_model]`` → float32 logits ``[..., vocab]`` through the final norm and unembedding."""
    h = model.apply_final_norm(x) if norm else x.to(model.device)
    logits = h.float() @ W_U.to(model.device).float()
    return logits + b_U.to(model.device).float() if b_U is not None else logits


def _decode_rows(hn: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, k: int, target_id: int | None,
                 next_ids: torch.Tensor, tile_bytes: int) -> dict[str, torch.Tensor]:
    """Per-row statistics of the logits ``hn @ W + b`` without holding more than one cache-sized tile of them.

    The logits are made tile by tile (``rows x VOCAB_TILE`` columns) and reduced at once while the tile is
    in cache, with a running (online) log-sum-exp: per row the top-``k`` logits and ids, the log-partition
    ``lse``, the entropy, the logit of the next token, and with a target its logit and rank (count of
    logits strictly above it). The target's tile goes first so the rank compares values of one matmul.
    """
    n, vocab = hn.shape[0], W.shape[1]
    cols = min(VOCAB_TILE, vocab)
    rows = max(1, min(n, tile_bytes // (cols * 4 * 2)))
    zbuf, pbuf = torch.empty(rows, cols, device=hn.device), torch.empty(rows, cols, device=hn.device)
    starts = list(range(0, vocab, cols))
    if target_id is not None:  # the target's tile first
        first = target_id // cols * cols
        starts.remove(first)
        starts.insert(0, first)
    k = min(k, vocab)
    res = {name: [] for name in ("top_z", "top_ids", "lse", "entropy", "z_next", "z_target", "rank")}
    for r0 in range(0, n, rows):
        h, nxt = hn[r0:r0 + rows], next_ids[r0:r0 + rows]
        r = h.shape[0]
        m = torch.full((r,), -torch.inf, device=hn.device)
        s, e, z_next = (torch.zeros(r, device=hn.device) for _ in range(3))
        rank = torch.zeros(r, dtype=torch.int32, device=hn.device)
        z_t = None
        cand_z, cand_i = [], []
        for j in starts:
            w = min(cols, vocab - j)
            z = torch.matmul(h, W[:, j:j + w], out=zbuf[:r, :w])
            if b is not None:
                z += b[j:j + w]
            tz, ti = z.topk(min(k, w), dim=-1)
            cand_z.append(tz)
            cand_i.append(ti + j)
            if z_t is None and target_id is not None:
                z_t = z[:, target_id - j].clone()
            if z_t is not None:
                rank += (z > z_t[:, None]).sum(-1, dtype=torch.int32)
            inside = (nxt >= j) & (nxt < j + w)
            picked = z.gather(-1, (nxt - j).clamp(0, w - 1)[:, None])[:, 0]
            z_next = torch.where(inside, picked, z_next)
            m_new = torch.maximum(m, tz[:, 0])
            scale = (m - m_new).exp()
            p = torch.sub(z, m_new[:, None], out=pbuf[:r, :w]).exp_()
            s = s * scale + p.sum(-1)
            e = e * scale + torch.linalg.vecdot(p, z)
            m = m_new
        top_z, pos = torch.cat(cand_z, 1).topk(k, dim=-1)
        lse = m + s.log()
        res["top_z"].append(top_z)
        res["top_ids"].append(torch.cat(cand_i, 1).gather(1, pos))
        res["lse"].append(lse)
        res["entropy"].append(lse - e / s)  # H = lse - E_p[z]
        res["z_next"].append(z_next)
        if z_t is not None:
            res["z_target"].append(z_t)
            res["rank"].append(rank)
    return {name: torch.cat(v) for name, v in res.items() if v}


def _components(components: Sequence[str]) -> list[Component]:
    if isinstance(components, str):
        components = [components]
    comps = []
    for c in components:
        try:
            comp = Component(c.removeprefix("blocks.*.") if isinstance(c, str) else c)
        except ValueError:
            comp = None
        if comp not in LENSABLE:
            raise BadInputError(f"the logit lens reads d_model-sized streams; {c!r} is not one of "
                             f"{', '.join(x.value for x in LENSABLE)}")
        comps.append(comp)
    if not comps:
        raise BadInputError("no components to decode")
    return [c for c in LENSABLE if c in comps]


def _rows(trace: Trace, comps: list[Component], n_layers: int) -> tuple[list[str], list[str]]:
    names, labels = [], []
    for comp in comps:
        if not any(f"blocks.{L}.{comp.value}" in trace for L in range(n_layers)):
            raise KeyError(f"this trace holds no {comp.value} activations: capture 'blocks.*.{comp.value}' "
                           f"(e.g. model.run(text, capture='blocks.*.{comp.value}')); it holds: "
                           f"{', '.join(trace.names[:6])}{'...' if len(trace.names) > 6 else ''}")
    for L in range(n_layers):
        for comp in comps:
            name = f"blocks.{L}.{comp.value}"
            if name in trace:
                names.append(name)
                labels.append(str(L) if len(comps) == 1 else f"{L} {comp.value.removeprefix('hook_')}")
    return names, labels


def _target_id(model: Model, target: str | int | None) -> int | None:
    if target is None:
        return None
    vocab = model.weights.W_U.shape[1] if model.weights.W_U is not None else model.dims.d_vocab
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise TypeError(f"target must be a token string or id, got {type(target).__name__}")
    if isinstance(target, int):
        if not 0 <= target < vocab:
            raise BadInputError(f"target id {target} is outside the vocabulary (0..{vocab - 1})")
        return target
    if model.tokenizer is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer: pass the target as a token id")
    ids = model.tokenizer.encode(target, add_special_tokens=False)
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise BadInputError(f"target {target!r} is {len(ids)} tokens {pieces}, not one; pass a single token "
                         f"(mind the leading space, e.g. ' Paris') or a token id")
    return int(ids[0])
