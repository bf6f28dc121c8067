"""What a circuit is found for: clean prompts, a source of ablated values, answers and a metric.

Example:
    >>> import interp
    >>> from interp.circuits import make_task
    >>> m = interp.load_model("smollm2-135m")
    >>> t = make_task(m, "When Mary and John went to the store, John gave a drink to",
    ...               corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
    >>> t.input_ids.shape, t.metric, t.ablation
    (torch.Size([1, 14]), 'logit_diff', 'corrupted')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from interp.errors import BadInputError, bad_value
from interp.models import Inputs, Model

Ablation = Literal["corrupted", "mean", "zero"]
ABLATIONS = ("corrupted", "mean", "zero")
METRICS = ("logit_diff", "prob", "kl")
MetricFn = Callable[[torch.Tensor], torch.Tensor]
"""A custom metric: last-position logits ``[batch, vocab]`` → ``[batch]`` values."""


@dataclass(frozen=True)
class CircuitTask:
    """Clean inputs, the corrupted inputs (or none, for mean / zero ablation), answers and the metric.

    Shapes: ``input_ids``, ``attention_mask``, ``corrupt_ids`` ``[batch, pos]`` (right-padded; corrupted
    prompts have the clean prompts' lengths); ``answer`` / ``wrong`` ``[batch]`` token ids (or ``None``).
    The metric is read at each sequence's last real token: ``logit_diff`` (answer minus wrong logit, or the
    answer logit alone), ``prob`` (the answer's probability), ``kl`` (KL divergence of the run's next-token
    distribution from the clean run's; what ACDC minimises) or a function ``[batch, vocab] -> [batch]``.
    ``ablation`` says where ablated edges take their values from: ``corrupted`` (the corrupted prompts' run),
    ``mean`` (the clean runs' mean over the batch, per position) or ``zero``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    corrupt_ids: torch.Tensor | None
    answer: torch.Tensor | None
    wrong: torch.Tensor | None
    metric: str | MetricFn = "logit_diff"
    ablation: Ablation = "corrupted"
    name: str = "task"

    @property
    def batch(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def last(self) -> torch.Tensor:
        """``[batch]`` index of each sequence's last real token."""
        return self.attention_mask.sum(-1).long() - 1

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom")

    def values(self, last_logits: torch.Tensor, clean_last: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example metric ``[..., batch]`` from last-position logits ``[..., batch, vocab]``."""
        if callable(self.metric):
            shape = last_logits.shape[:-1]
            return self.metric(last_logits.reshape(-1, last_logits.shape[-1])).reshape(shape)
        if self.metric == "kl":
            if clean_last is None:
                raise BadInputError("the kl metric needs the clean run's logits")
            lp = torch.log_softmax(last_logits.float(), -1)
            lq = torch.log_softmax(clean_last.float(), -1)
            return (lq.exp() * (lq - lp)).sum(-1)
        if self.answer is None:
            raise BadInputError(f"metric {self.metric!r} needs answer= (the correct next token)")
        ans = self.answer.to(last_logits.device)
        idx = ans.expand(last_logits.shape[:-1]).unsqueeze(-1)
        if self.metric == "prob":
            return torch.softmax(last_logits.float(), -1).gather(-1, idx).squeeze(-1)
        val = last_logits.float().gather(-1, idx).squeeze(-1)
        if self.wrong is not None:
            w = self.wrong.to(last_logits.device).expand(last_logits.shape[:-1]).unsqueeze(-1)
            val = val - last_logits.float().gather(-1, w).squeeze(-1)
        return val


def _token_ids(model: Model, x: str | int | Sequence[str | int] | torch.Tensor | None, n: int, what: str
               ) -> torch.Tensor | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        t = x.long().flatten()
    else:
        items = [x] if isinstance(x, (str, int)) else list(x)
        ids = []
        for it in items:
            if isinstance(it, int):
                ids.append(it)
                continue
            if model.tokenizer is None:
                raise BadInputError(f"{what}: model {model.name!r} has no tokenizer; give token ids")
            tok = model.tokenizer(it, add_special_tokens=False)["input_ids"]
            if not tok:
                raise bad_value(what, it, "a text of at least one token")
            ids.append(int(tok[0]))
        t = torch.tensor(ids, dtype=torch.long)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise BadInputError(f"{what} has {t.numel()} tokens for {n} prompts")
    return t


def make_task(
    model: Model,
    inputs: Inputs,
    *,
    corrupt: Inputs | None = None,
    answer: str | int | Sequence[str | int] | torch.Tensor | None = None,
    wrong: str | int | Sequence[str | int] | torch.Tensor | None = None,
    metric: str | MetricFn | None = None,
    ablation: Ablation | None = None,
    name: str = "task",
) -> CircuitTask:
    """A :class:`CircuitTask` from prompts or token ids.

    Args:
        model: the model.
        inputs: the clean prompt(s) or ids ``[batch, pos]``.
        corrupt: the corrupted prompt(s) (same token lengths as the clean ones); needed for the default
            ``ablation="corrupted"``.
        answer / wrong: the correct / contrasting next token per prompt (text: its first token; or ids).
        metric: ``"logit_diff"`` (default with an answer), ``"prob"``, ``"kl"`` (default without) or a function.
        ablation: ``"corrupted"`` (default with ``corrupt``), ``"mean"`` (default without) or ``"zero"``.
        name: a label.
    """
    ids, mask = model.encode(inputs)
    ids, mask = ids.cpu(), mask.cpu()
    cids = None
    if corrupt is not None:
        cids, cmask = model.encode(corrupt)
        cids, cmask = cids.cpu(), cmask.cpu()
        if cids.shape != ids.shape or not torch.equal(cmask, mask):
            raise BadInputError(f"corrupted prompts must have the clean prompts' token lengths: got {tuple(cids.shape)} "
                                f"for {tuple(ids.shape)} (or a different padding)")
    if ablation is None:
        ablation = "corrupted" if cids is not None else "mean"
    if ablation not in ABLATIONS:
        raise bad_value("ablation", ablation, ", ".join(ABLATIONS))
    if ablation == "corrupted" and cids is None:
        raise BadInputError("ablation='corrupted' needs corrupt= (the corrupted prompts)")
    n = int(ids.shape[0])
    ans = _token_ids(model, answer, n, "answer")
    wr = _token_ids(model, wrong, n, "wrong")
    if metric is None:
        metric = "logit_diff" if ans is not None else "kl"
    if isinstance(metric, str) and metric not in METRICS:
        raise bad_value("metric", metric, ", ".join(METRICS) + " or a function [batch, vocab] -> [batch]")
    if metric in ("logit_diff", "prob") and ans is None:
        raise BadInputError(f"metric {metric!r} needs answer=")
    return CircuitTask(ids, mask, cids, ans, wr, metric, ablation, name)


__all__ = ["ABLATIONS", "METRICS", "Ablation", "CircuitTask", "MetricFn", "make_task"]
