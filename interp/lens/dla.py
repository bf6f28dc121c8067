"""Direct logit attribution: how much each component, and each head, writes toward a logit difference.

The residual stream at the last layer is a sum of writers (``embed``, every ``attn_out.L`` and ``mlp_out.L``;
:func:`interp.trace.decompose.decompose_resid`). With the final norm's scale frozen at its value for the whole
stream (the divisor of :meth:`interp.models.Model.final_norm_scale`), the logits are linear in the writers, so
the logit difference ``logit(answer) - logit(wrong)`` splits exactly into one term per writer plus a constant
(the final norm's and the unembedding's biases). Each attention layer's term splits further over its heads
(``z[:, :, h] @ W_O[L, h]``) plus its output bias. This is TransformerLens' ``logit_attrs`` on
``decompose_resid`` / ``stack_head_results``. For models with a final logit soft-cap (Gemma 2 and 3) the
attributed difference, ``logit_diff`` included, is the one before the cap (the cap is not linear).

Example:
    >>> import interp
    >>> from interp.lens import logit_attrs
    >>> m = interp.load_model("smollm2-135m")
    >>> res = logit_attrs(m, "When Mary and John went to the store, John gave a drink to", answer=" Mary",
    ...                   wrong=" John")
    >>> round(float(res.components.sum() + res.bias.sum()), 3) == round(float(res.logit_diff.sum()), 3)
    True
    >>> res.top_heads(3)[0][0].layer > 10
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError
from interp.models import Inputs, Model
from interp.plot import bar_top_tokens, heatmap
from interp.sites import HeadRef, resolve_positions
from interp.trace.inputs import ensure_trace
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

Token = str | int


def token_id(model: Model, token: Token, what: str) -> int:
    """One token id from a string that is exactly one token (``" Paris"``) or an id."""
    if isinstance(token, bool):
        raise BadInputError(f"bad {what} {token!r}; give one token as a string (' Paris') or an id")
    if isinstance(token, int):
        if not 0 <= token < model.dims.d_vocab:
            raise BadInputError(f"bad {what} {token}; valid token ids: 0..{model.dims.d_vocab - 1}")
        return token
    if not isinstance(token, str) or model.tokenizer is None:
        raise BadInputError(f"bad {what} {token!r}; give one token as a string (' Paris') or an int id")
    ids = model.tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise BadInputError(f"{what} {token!r} is {len(ids)} tokens {pieces}, not one; pass a single token "
                            "(mind the leading space, e.g. ' Paris') or a token id")
    return int(ids[0])


@dataclass(frozen=True, repr=False)
class LogitAttribution(Result):
    """Direct logit attribution of a batch at one position per sequence.

    Views: ``"components"`` (each writer's contribution, bars), ``"heads"`` (layer × head heatmap).

    Attributes:
        components: ``[batch, component]`` contribution of each writer (``component_labels``: ``embed``,
            ``attn_out.0``, ``mlp_out.0``, ...) to the logit difference, through the frozen final norm.
        heads: ``[batch, layer, head]`` each head's contribution (its layer's ``attn_out`` term is the sum over
            heads plus ``attn_bias[:, layer]``), or ``None`` when heads were not asked for.
        attn_bias: ``[batch, layer]`` the attention output bias's contribution (zeros without biases).
        bias: ``[batch]`` the constant: final-norm bias and unembedding bias terms.
        logit_diff: ``[batch]`` the model's own logit difference (``components`` sum + ``bias`` equals it).
        component_labels: names of the writers.
        positions: the position read in each sequence (non-negative).
        answer / wrong: the tokens compared (``wrong`` empty: the answer's logit alone).
        tokens: the input tokens per sequence.
        model_id: the model that made it.
    """

    AXES = {"components": ("batch", "component"), "heads": ("batch", "layer", "head"),
            "attn_bias": ("batch", "layer"), "bias": ("batch",), "logit_diff": ("batch",)}
    VIEWS = ("components", "heads")

    components: torch.Tensor
    heads: torch.Tensor | None
    attn_bias: torch.Tensor
    bias: torch.Tensor
    logit_diff: torch.Tensor
    component_labels: tuple[str, ...]
    positions: tuple[int, ...]
    answer: tuple[str, ...]
    wrong: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    model_id: str = ""

    def __post_init__(self) -> None:
        b, c = self.components.shape
        if len(self.component_labels) != c:
            raise BadInputError(f"{len(self.component_labels)} component labels for {c} components")
        for name in ("bias", "logit_diff"):
            if getattr(self, name).shape != (b,):
                raise BadInputError(f"{name} must be [batch={b}], got {tuple(getattr(self, name).shape)}")

    def labels(self) -> dict[str, list[Any]]:
        n_layers = self.attn_bias.shape[1]
        out: dict[str, list[Any]] = {"component": list(self.component_labels), "layer": list(range(n_layers)),
                                     "batch": [f"{i}: {' '.join(t[:1])}..." for i, t in enumerate(self.tokens)]}
        if self.heads is not None:
            out["head"] = list(range(self.heads.shape[2]))
        return out

    @property
    def metric(self) -> str:
        """What is attributed, e.g. ``logit(' Mary') - logit(' John')``."""
        a = self.answer[0] if len(set(self.answer)) == 1 else "answer"
        if not self.wrong:
            return f"logit({a!r})"
        w = self.wrong[0] if len(set(self.wrong)) == 1 else "wrong"
        return f"logit({a!r}) - logit({w!r})"

    def top_heads(self, k: int = 10, batch: int | None = None) -> list[tuple[HeadRef, float]]:
        """The ``k`` heads with the largest ``|contribution|`` (mean over the batch, or one sequence)."""
        if self.heads is None:
            raise BadInputError("this attribution has no per-head values; run logit_attrs(..., heads=True)")
        h = self.heads.mean(0) if batch is None else self.heads[batch]
        order = h.flatten().abs().argsort(descending=True)[:k].tolist()
        n_heads = h.shape[1]
        return [(HeadRef(i // n_heads, i % n_heads), float(h.flatten()[i])) for i in order]

    def headline(self) -> dict[str, Any]:
        i = int(self.components.mean(0).abs().argmax())
        out: dict[str, Any] = {"metric": self.metric, "logit_diff": float(self.logit_diff.mean()),
                               "top_component": self.component_labels[i]}
        if self.heads is not None:
            head, v = self.top_heads(1)[0]
            out["top_head"] = f"{head} ({v:+.3f})"
        return out

    def _view_components(self, batch: int | None = None) -> Figure:
        v = self.components.mean(0) if batch is None else self.components[batch]
        which = "mean over the batch" if batch is None and self.components.shape[0] > 1 else ""
        return bar_top_tokens(list(self.component_labels), v, signed=True, x_title=f"contribution to {self.metric}",
                              title=f"direct logit attribution per component {which}".strip())

    def _view_heads(self, batch: int | None = None) -> Figure:
        if self.heads is None:
            raise BadInputError("this attribution has no per-head values; run logit_attrs(..., heads=True)")
        h = self.heads.mean(0) if batch is None else self.heads[batch]
        return heatmap(h, x_labels=[str(i) for i in range(h.shape[1])], y_labels=[str(i) for i in range(h.shape[0])],
                       title=f"direct logit attribution per head: {self.metric}", x_title="head", y_title="layer",
                       signed=True, colorbar_title="logit diff", rows_top_down=False)


def logit_attrs(model: Model, inputs: Inputs, *, answer: Token | Sequence[Token],
                wrong: Token | Sequence[Token] | None = None, positions: int = -1,
                heads: bool = True) -> LogitAttribution:
    """Direct logit attribution of ``logit(answer) - logit(wrong)`` at one position per sequence.

    Args:
        model: a decoder with an unembedding and a final norm.
        inputs: texts, token ids, or a Trace/TraceStore of this model (one that holds ``resid_pre.0``,
            ``attn_out``, ``mlp_out``, ``resid_post`` and, for heads, ``z`` is read as it is).
        answer: the token whose logit is attributed (one token string such as ``" Mary"``, or an id), or one per
            sequence.
        wrong: the competing token (or one per sequence); ``None`` attributes the answer's logit alone.
        positions: the position read in each sequence (negative: from each sequence's last real token).
        heads: also split every attention layer over its heads (needs ``z`` captured: one more hook per layer).

    Returns:
        :class:`LogitAttribution`.

    Raises:
        BadInputError: an answer or wrong token that is not exactly one token, a position outside a sequence,
            or a model without an unembedding.

    Example:
        >>> import interp
        >>> from interp.lens import logit_attrs
        >>> m = interp.load_model("smollm2-135m")
        >>> res = logit_attrs(m, "When Mary and John went to the store, John gave a drink to",
        ...                   answer=" Mary", wrong=" John")
        >>> res.component_labels[:3], tuple(res.heads.shape)  # embed, then each layer's attention and MLP
        (('embed', 'attn_out.0', 'mlp_out.0'), (1, 30, 9))
        >>> bool(((res.components.sum(-1) + res.bias - res.logit_diff).abs() < 1e-4).all())  # sums to the model's
        True
        >>> [(str(h), round(v, 1)) for h, v in res.top_heads(2)]
        [('L23H3', 2.9), ('L29H1', 1.7)]
    """
    w = model.weights
    if w.W_U is None or w.ln_final_w is None or not model.adapter.is_causal:
        raise BadInputError(f"direct logit attribution needs a decoder with an unembedding and a final norm; "
                            f"{model.name!r} ({model.adapter.family}) has none")
    if isinstance(positions, bool) or not isinstance(positions, int):
        raise BadInputError(f"bad positions {positions!r}; logit_attrs reads one position per sequence (an int)")
    hooks = ["resid_pre.0", "attn_out", "mlp_out", f"resid_post.{model.dims.n_layers - 1}"] + (["z"] if heads else [])
    trace = ensure_trace(model, inputs, hooks)
    batch = trace.n_seqs
    pos = [resolve_positions(positions, int(n), sequence=i)[0] for i, n in enumerate(trace.lengths.tolist())]
    rows = torch.arange(batch)

    def per_seq(tok: Token | Sequence[Token], what: str) -> list[int]:
        toks = [tok] * batch if isinstance(tok, (str, int)) else list(tok)
        if len(toks) != batch:
            raise BadInputError(f"{len(toks)} {what} tokens for {batch} sequences")
        return [token_id(model, t, what) for t in toks]

    a_ids = per_seq(answer, "answer")
    w_ids = per_seq(wrong, "wrong") if wrong is not None else []
    dtype = torch.float64
    W_U = w.W_U.detach().to("cpu", dtype)
    direction = W_U[:, a_ids].T - (W_U[:, w_ids].T if w_ids else 0.0)  # [batch, d_model]
    ln_w = w.ln_final_w.detach().to("cpu", dtype)
    last = trace[f"resid_post.{model.dims.n_layers - 1}"][rows, pos].to(dtype)  # [batch, d_model]
    scale = model.final_norm_scale(last)  # [batch, 1]
    layer_norm = w.norm == "layer"

    def attribute(x: torch.Tensor) -> torch.Tensor:  # [..., batch, d_model] -> [..., batch]
        x = x.to(dtype)
        if layer_norm:
            x = x - x.mean(-1, keepdim=True)
        return ((x / scale) * ln_w * direction).sum(-1)

    parts, labels = trace.decompose_resid()
    comp = attribute(parts[:, rows, pos]).T  # [batch, component]
    const = torch.zeros(batch, dtype=dtype)
    if w.ln_final_b is not None:
        const += (w.ln_final_b.detach().to("cpu", dtype) * direction).sum(-1)
    if w.b_U is not None:
        b_U = w.b_U.detach().to("cpu", dtype)
        const += b_U[a_ids] - (b_U[w_ids] if w_ids else 0.0)
    n_layers, n_heads = model.dims.n_layers, model.dims.n_heads
    attn_bias = attribute(w.b_O.detach().to("cpu", dtype)[:, None, :].expand(n_layers, batch, -1)).T  # [batch, layer]
    head_vals = None
    if heads:
        stack, _ = trace.stack_head_results(model)
        head_vals = attribute(stack[:, rows, pos]).T.reshape(batch, n_layers, n_heads)
    with torch.no_grad():
        logits = _logits_at(model, trace, pos)
    diff = logits[rows, a_ids] - (logits[rows, w_ids] if w_ids else 0.0)
    tok_str = model.to_str_tokens(torch.tensor([a_ids, w_ids or a_ids]))
    return LogitAttribution(
        components=comp.float(), heads=None if head_vals is None else head_vals.float(), attn_bias=attn_bias.float(),
        bias=const.float(), logit_diff=diff.float(), component_labels=tuple(labels), positions=tuple(pos),
        answer=tuple(tok_str[0]), wrong=tuple(tok_str[1]) if w_ids else (), tokens=trace.tokens, model_id=model.name)


def _logits_at(model: Model, trace: Any, pos: list[int]) -> torch.Tensor:
    """The model's logits at one position per sequence, from the captured last residual stream."""
    rows = torch.arange(trace.n_seqs)
    last = trace[f"resid_post.{model.dims.n_layers - 1}"][rows, pos]
    normed = model.apply_final_norm(last).double().cpu()
    W_U = model.weights.W_U.detach().to("cpu", torch.float64)  # type: ignore[union-attr]
    out = normed @ W_U
    if model.weights.b_U is not None:
        out = out + model.weights.b_U.detach().to("cpu", torch.float64)
    return out


__all__ = ["LogitAttribution", "logit_attrs"]
