"""The logit lens (nostalgebraist 2020): decode every layer's residual stream with the model's own head.

Each chosen activation goes through the model's final norm (its own module, so RMSNorm or LayerNorm
with its eps) and the unembedding (``W_U`` and ``b_U`` if any), as if the remaining layers were
skipped. Only the real tokens asked for are decoded (``positions=``; padding never is). The logits are
made in cache-sized tiles and reduced at once (an online log-sum-exp), so the lens costs little more than
the unembedding matmul itself and never holds ``[layer, batch, pos, vocab]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from interp.errors import BadInputError, bad_value
from interp.lens.result import LogitLensResult
from interp.models import EncoderDecoder, Inputs, Model
from interp.models.encdec_view import DecoderView
from interp.sites import Component, Positions, Site, SiteSpec, position_mask, resolve
from interp.trace.inputs import ensure_trace
from interp.trace.store import TraceStore
from interp.trace.trace import Trace

LENSABLE = (Component.RESID_PRE, Component.ATTN_OUT, Component.RESID_MID, Component.MLP_OUT, Component.RESID_POST)
TILE_BYTES = 2**24  # logits (and their exponentials) made and reduced at once: a tile that stays in cache
VOCAB_TILE = 4096  # vocabulary columns per tile
NORM_CHUNK_BYTES = 2**26  # normalised activations of a chunk of layers, decoded together
Translate = Callable[[int, torch.Tensor], torch.Tensor]
"""``(layer, [rows, d_model] activations) -> activations``: what a learned lens does before decoding."""


def logit_lens(
    model: Model | EncoderDecoder | DecoderView,
    inputs: Inputs,
    *,
    decoder_inputs: Any = None,
    hooks: SiteSpec | Sequence[SiteSpec] = "resid_post",
    target: str | int | None = None,
    top_k: int = 5,
    positions: Positions = None,
    include_final_norm: bool = True,
    chunk_bytes: int = TILE_BYTES,
) -> LogitLensResult:
    """Decode each layer's residual stream (or a sublayer's output) into next-token distributions.

    Args:
        model: the model (its final norm and unembedding are used).
        inputs: a text, texts, token ids (or ``(ids, mask)``), or a :class:`~interp.trace.Trace` /
            :class:`~interp.trace.TraceStore` of this model; one that lacks the hooks is re-run on its tokens.
            For an :class:`~interp.models.EncoderDecoder`, the source(s), or a decoder trace holding the hooks;
            the lens then reads the *decoder's* layers through its final norm and LM head
            (:class:`~interp.models.encdec_view.DecoderView`; ``hooks`` with or without the ``decoder.`` prefix).
        decoder_inputs: encoder–decoders only: the decoder's input (target texts, teacher-forced; ids as the
            decoder reads them; ``(ids, mask)``; ``None``: the start token alone).
        hooks: the d_model-sized streams to decode, in any :mod:`interp.sites` spelling: a component for every
            layer (``"resid_post"``, the default; also ``resid_pre``, ``resid_mid``, ``attn_out``, ``mlp_out``),
            a list of them, or some layers only (``"resid_post.-1"``, ``"blocks.*.hook_resid_mid"``). Rows are
            ordered by layer, then forward order.
        target: a token (a string that must be exactly one token, e.g. ``" Paris"``, or an id) whose rank and
            probability are tracked.
        top_k: top tokens kept per layer and position.
        positions: the real tokens to decode (an int, a list, a slice; ``-1`` is each sequence's last real token;
            ``None``: all). The others read as padding does (``NaN``, ids ``-1``).
        include_final_norm: apply the final norm before the unembedding (the usual logit lens).
        chunk_bytes: bound on the float32 logits held at once; they are made in tiles of this size and
            reduced while in cache (the full ``[layer, batch, pos, vocab]`` block never exists).

    Returns:
        :class:`LogitLensResult` with ``[layer, batch, pos]`` metrics; ``KL(final || layer)`` is to the
        model's output distribution (its ``logits``, or the last ``resid_post`` decoded when a trace holds
        no logits).

    Raises:
        BadInputError: a hook that is not a d_model-sized stream, a target that is not one token, a bad
            ``top_k`` or position, a model without an unembedding.
        UnknownHookError: a hook name the model does not have.
        ModelMismatchError: a trace or store made by another model.

    Example:
        >>> import interp
        >>> from interp.lens import logit_lens
        >>> m = interp.load_model("smollm2-135m")
        >>> res = logit_lens(m, ["The capital of France is", "Hello"], target=" Paris", positions=-1)
        >>> res.top_tokens(layer=-1, batch=0)[0], int(res.target_rank[-1, 0, -1])
        (' Paris', 0)
        >>> res.read_mask().int().tolist()  # the last real token of each prompt
        [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]]
        >>> logit_lens(m, "The capital of France is", hooks=["resid_mid.-1", "resid_post.-1"]).layer_labels
        ('29 resid_mid', '29 resid_post')
    """
    model, inputs, hooks = for_decoder(model, inputs, decoder_inputs, hooks)
    return lens_reading(model, inputs, hooks=hooks, target=target, top_k=top_k, positions=positions,
                        include_final_norm=include_final_norm, chunk_bytes=chunk_bytes)


def for_decoder(model: Model | EncoderDecoder | DecoderView, inputs: Inputs, decoder_inputs: Any,
                hooks: SiteSpec | Sequence[SiteSpec]) -> tuple[Model, Inputs, list[str] | SiteSpec | Sequence[SiteSpec]]:
    """What a one-stack lens reads of an encoder–decoder: its decoder as a one-stack model
    (:class:`~interp.models.encdec_view.DecoderView`), the decoder's trace holding ``hooks`` and ``logits`` under
    the view's names, and the hooks' names there; a one-stack model's arguments are returned as they are.

    Raises:
        BadInputError: ``decoder_inputs`` for a one-stack model; an ``encoder.*`` hook.
    """
    if not isinstance(model, (EncoderDecoder, DecoderView)):
        if decoder_inputs is not None:
            raise BadInputError(f"decoder_inputs= is for encoder-decoders; {model.name!r} is a one-stack model")
        return model, inputs, hooks
    view = model.decoder_view() if isinstance(model, EncoderDecoder) else model
    names = [s.name for s in view.local(hooks)]
    if isinstance(inputs, Trace):
        trace = view.from_decoder(inputs)  # read as it is (a trace lacking the hooks is refused by the view's run)
    elif isinstance(inputs, TraceStore):
        trace = view.from_decoder(inputs.trace())
    else:
        trace = view.trace(inputs, decoder_inputs, capture=[*names, "logits"])
    return cast(Model, view), trace, names  # the view has what the lenses read of a Model (DecoderView's docstring)


def lens_reading(
    model: Model,
    inputs: Inputs,
    *,
    hooks: SiteSpec | Sequence[SiteSpec],
    target: str | int | None,
    top_k: int,
    positions: Positions,
    include_final_norm: bool = True,
    chunk_bytes: int = TILE_BYTES,
    translate: Translate | None = None,
    lens: str = "logit",
) -> LogitLensResult:
    """:func:`logit_lens` with an optional per-layer ``translate`` applied before decoding (the tuned lens)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise bad_value("top_k", top_k, "an int >= 1")
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise bad_value("chunk_bytes", chunk_bytes, "an int >= 1")
    W_U, b_U = model.weights.W_U, model.weights.b_U
    if W_U is None:
        raise BadInputError(f"model {model.name!r} has no unembedding (an encoder without LM head): no logit lens")
    sites = _sites(model, hooks)
    target_id = _target_id(model, target)
    n_layers = model.dims.n_layers
    last = Site(Component.RESID_POST, n_layers - 1).name
    if isinstance(inputs, Trace):
        has_logits = "logits" in inputs
    elif isinstance(inputs, TraceStore):
        has_logits = "logits" in inputs.hooks
    else:
        has_logits = True  # a new run: capture the model's own output
    names = [s.name for s in sites]
    trace = ensure_trace(model, inputs, [*names, "logits" if has_logits else last])
    mask = trace.attention_mask.bool().cpu()
    n_seq, n_pos = mask.shape
    sel = position_mask(positions, trace.lengths, n_pos) & mask  # [batch, pos] the cells decoded
    dev = model.device
    sel_d = sel.to(dev)
    ids = trace.input_ids.to(dev)
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:] & mask[:, :-1]
    next_ids = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)[sel_d]  # [rows]
    has_next_rows = has_next.to(dev)[sel_d]

    # KL(final || layer) = sum p_f (z_f - z) + lse(z) - lse(z_f) for layer logits z. The layer's sum_v p_f[v] z[v],
    # with z = hn @ W_U + b_U, is hn . (W_U p_f) + b_U . p_f: one small float64 matmul here replaces a pass over
    # the layer's logits (float64 because hn . u cancels heavily).
    if "logits" in trace:
        final_z = trace["logits"].to(dev)[sel_d].double()  # [rows, vocab]
    else:
        final_z = _decode(model, trace[last].to(dev)[sel_d], W_U, b_U, True).double()
    final_p = final_z.softmax(-1)
    final_const = torch.linalg.vecdot(final_p, final_z) - final_z.logsumexp(-1)  # sum p_f z_f - lse(z_f)
    W = W_U.to(dev).float()
    b = b_U.to(dev).float() if b_U is not None else None
    softcap = model.weights.logit_softcap
    u = final_p @ W.T.double() if not softcap else None  # [rows, d_model]
    pb = final_p @ b.double() if b is not None and not softcap else 0.0
    capped_p = final_p if softcap else None  # soft-capped logits are not linear in hn: sum p_f z in the tiles
    del final_p
    del final_z
    n_rows = int(sel.sum())

    per_layer = max(n_rows, 1) * W.shape[0] * 4
    step = max(1, NORM_CHUNK_BYTES // per_layer)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("ids", "probs", "ent", "kl", "ce", "rank", "tp")}
    for i in range(0, len(sites), step):
        chunk = sites[i:i + step]
        rows = []
        for s in chunk:
            x = trace[s.name].to(dev)[sel_d]  # [rows, d_model]
            rows.append(translate(int(s.layer or 0), x) if translate is not None else x)
        x = torch.stack(rows)
        hn = (model.apply_final_norm(x) if include_final_norm else x.to(dev)).float()  # [c, rows, d]
        c = hn.shape[0]
        st = _decode_rows(hn.reshape(-1, hn.shape[-1]), W, b, top_k, target_id, next_ids.repeat(c), chunk_bytes,
                          softcap=softcap, final_p=capped_p)
        lse = st["lse"].view(c, n_rows)
        out["ids"].append(st["top_ids"].view(c, n_rows, -1))
        out["probs"].append((st["top_z"].view(c, n_rows, -1) - lse[..., None]).exp())
        out["ent"].append(st["entropy"].view(c, n_rows))
        dot_f = st["pf_z"].view(c, n_rows) if u is None else (hn.double() * u).sum(-1) + pb
        out["kl"].append((final_const - dot_f + lse.double()).float())
        out["ce"].append((lse - st["z_next"].view(c, n_rows)).masked_fill(~has_next_rows, float("nan")))
        if target_id is not None:
            out["rank"].append(st["rank"].view(c, n_rows).long())
            out["tp"].append((st["z_target"].view(c, n_rows) - lse).exp())

    def grid(key: str, fill: float) -> torch.Tensor:  # [layer, rows, ...] -> [layer, batch, pos, ...]
        t = torch.cat(out[key]).cpu()
        full = torch.full((t.shape[0], n_seq, n_pos, *t.shape[2:]), fill, dtype=t.dtype)
        full[:, sel] = t
        return full

    nan = float("nan")
    top_ids = grid("ids", -1)
    uniq = sorted(set(top_ids.unique().tolist()) - {-1} | ({target_id} if target_id is not None else set()))
    strs = model.to_str_tokens(torch.tensor([uniq], dtype=torch.long))[0] if uniq else []
    return LogitLensResult(
        top_ids=top_ids, top_probs=grid("probs", nan), entropy=grid("ent", nan), kl_to_final=grid("kl", nan),
        next_token_ce=grid("ce", nan), attention_mask=trace.attention_mask.cpu(), layer_labels=_labels(sites),
        tokens=trace.tokens, id_to_str=dict(zip(uniq, strs, strict=True)),
        target_rank=grid("rank", -1) if target_id is not None else None,
        target_prob=grid("tp", nan) if target_id is not None else None,
        target=target, target_id=target_id, model_id=model.name, include_final_norm=include_final_norm, lens=lens,
    )


def _decode(model: Model, x: torch.Tensor, W_U: torch.Tensor, b_U: torch.Tensor | None,
            norm: bool) -> torch.Tensor:
    """``[..., d_model]`` → float32 logits ``[..., vocab]`` through the final norm and unembedding."""
    h = model.apply_final_norm(x) if norm else x.to(model.device)
    logits = h.float() @ W_U.to(model.device).float()
    logits = logits + b_U.to(model.device).float() if b_U is not None else logits
    cap = model.weights.logit_softcap
    return cap * torch.tanh(logits / cap) if cap else logits


def _decode_rows(hn: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, k: int, target_id: int | None,
                 next_ids: torch.Tensor, tile_bytes: int, softcap: float | None = None,
                 final_p: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-row statistics of the logits ``hn @ W + b`` without holding more than one cache-sized tile of them.

    The logits are made tile by tile (``rows x VOCAB_TILE`` columns) and reduced at once while the tile is
    in cache, with a running (online) log-sum-exp: per row the top-``k`` logits and ids, the log-partition
    ``lse``, the entropy, the logit of the next token, and with a target its logit and rank (count of
    logits strictly above it). The target's tile goes first so the rank compares values of one matmul.

    With ``softcap`` the logits are ``c * tanh(z / c)`` (Gemma 2's final soft-cap); then the logits are no longer
    linear in ``hn`` and, given ``final_p`` (``[n_rows, vocab]``, row ``i`` of ``hn`` reading row ``i % n_rows``),
    the tiles also sum ``E_{p_final}[z]`` per row (``pf_z``) for the KL.
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
    res: dict[str, list[torch.Tensor]] = {name: [] for name in ("top_z", "top_ids", "lse", "entropy", "z_next", "z_target",
                                                                 "rank", "pf_z")}
    for r0 in range(0, n, rows):
        h, nxt = hn[r0:r0 + rows], next_ids[r0:r0 + rows]
        r = h.shape[0]
        m = torch.full((r,), -torch.inf, device=hn.device)
        s, e, z_next = (torch.zeros(r, device=hn.device) for _ in range(3))
        rank = torch.zeros(r, device=hn.device)  # float counts (exact below 2**24): a float sum is ~5x a bool one
        z_t = None
        pf_z = torch.zeros(r, dtype=torch.float64, device=hn.device) if final_p is not None else None
        pf_rows = (torch.arange(r0, r0 + r, device=hn.device) % final_p.shape[0]) if final_p is not None else None
        cand_z, cand_i = [], []
        for j in starts:
            w = min(cols, vocab - j)
            z = torch.matmul(h, W[:, j:j + w], out=zbuf[:r, :w])
            if b is not None:
                z += b[j:j + w]
            if softcap:
                z.div_(softcap).tanh_().mul_(softcap)
            if pf_z is not None and final_p is not None:
                pf_z += torch.linalg.vecdot(final_p[pf_rows, j:j + w], z.double())
            tz, ti = z.topk(min(k, w), dim=-1)
            cand_z.append(tz)
            cand_i.append(ti + j)
            if z_t is None and target_id is not None:
                z_t = z[:, target_id - j].clone()
            if z_t is not None:
                rank += torch.gt(z, z_t[:, None], out=pbuf[:r, :w]).sum(-1)  # pbuf is free until p below
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
        if pf_z is not None:
            res["pf_z"].append(pf_z)
        if z_t is not None:
            res["z_target"].append(z_t)
            res["rank"].append(rank)
    return {name: torch.cat(v) for name, v in res.items() if v}


def _sites(model: Model, hooks: SiteSpec | Sequence[SiteSpec]) -> list[Site]:
    """The sites to decode, in forward order; each must be a d_model-sized stream."""
    if isinstance(hooks, (list, tuple)) and not hooks:
        raise bad_value("hooks", hooks, "at least one hook, e.g. 'resid_post'")
    sites = resolve(hooks, model.sites())
    for s in sites:
        if s.component not in LENSABLE:
            raise bad_value("hook for the logit lens", s.short,
                            f"a d_model-sized stream: {', '.join(c.short for c in LENSABLE)} (any layers)")
    return sites


def _labels(sites: Sequence[Site]) -> tuple[str, ...]:
    """``"3"`` per row when every row reads one component, ``"3 resid_mid"`` otherwise."""
    one = len({s.component for s in sites}) == 1
    return tuple(str(s.layer) if one else f"{s.layer} {s.component.short}" for s in sites)


def _target_id(model: Model, target: str | int | None) -> int | None:
    """The token id of ``target`` (one token), checked against the vocabulary."""
    if target is None:
        return None
    vocab = model.weights.W_U.shape[1] if model.weights.W_U is not None else model.dims.d_vocab
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise bad_value("target", target, "one token as a string (e.g. ' Paris') or a token id")
    if isinstance(target, int):
        if not 0 <= target < vocab:
            raise bad_value("target id", target, f"0..{vocab - 1} (it is outside the vocabulary)")
        return target
    if model.tokenizer is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer: pass the target as a token id")
    ids = model.tokenizer.encode(target, add_special_tokens=False)
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise BadInputError(f"target {target!r} is {len(ids)} tokens {pieces}, not one; pass a single token "
                            f"(mind the leading space, e.g. ' Paris') or a token id")
    return int(ids[0])
