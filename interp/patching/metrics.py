"""Patching metrics: logit difference, probability, log-probability and KL at the answer position.

A metric maps a run's logits to one number. Built-in metrics read only the logits at each
sequence's answer position (its last real token) and are computed for many patched runs at
once: ``[runs, seqs, vocab] -> [runs]`` (the mean over the sequences of a run). A user function
receives one run's full logits ``[seqs, pos, vocab]`` and returns a scalar tensor.

Example:
    >>> import torch
    >>> m = Metric.build("logit_diff", answer=torch.tensor([1]), wrong=torch.tensor([0]))
    >>> m(torch.tensor([[[0.0, 2.0, 5.0]]]))
    tensor([2.])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.errors import BadInputError, unknown_name

BUILTIN = ("logit_diff", "prob", "logprob", "kl")


@dataclass(frozen=True)
class Metric:
    """A patching metric.

    Attributes:
        name: ``logit_diff``, ``prob``, ``logprob``, ``kl`` or the user function's name.
        answer: ``[seqs]`` correct-answer token ids.
        wrong: ``[seqs]`` wrong-answer token ids (``logit_diff`` only).
        reference: ``[seqs, vocab]`` clean logits at the answer position (``kl`` only: KL(clean || run)).
        fn: the user function ``logits [seqs, pos, vocab] -> scalar`` (``full_logits`` is then True).
    """

    name: str
    answer: torch.Tensor | None = None
    wrong: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def full_logits(self) -> bool:
        """True for user functions (they see every position's logits)."""
        return self.fn is not None

    @classmethod
    def build(cls, metric: str | Callable[[torch.Tensor], torch.Tensor], answer: torch.Tensor | None = None,
              wrong: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> Metric:
        """A metric from its name (one of ``BUILTIN``) or a user function."""
        if callable(metric):
            return cls(getattr(metric, "__name__", "metric"), fn=metric)
        if metric not in BUILTIN:
            raise unknown_name("metric", metric, BUILTIN, hint="(or a function logits [seqs, pos, vocab] -> scalar tensor)")
        if metric in ("logit_diff", "prob", "logprob") and answer is None:
            raise BadInputError(f"metric {metric!r} needs answer= (the correct next token)")
        if metric == "logit_diff" and wrong is None:
            raise BadInputError("metric 'logit_diff' needs wrong= (the competing token), e.g. answer=' Mary', wrong=' John'")
        if metric == "kl" and reference is None:
            raise BadInputError("metric 'kl' needs the clean run's logits as reference")
        return cls(metric, answer=answer, wrong=wrong, reference=reference)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``[runs, seqs, vocab]`` answer-position logits (built-ins) or ``[runs, seqs, pos, vocab]``
        full logits (user functions) → ``[runs]``."""
        if self.fn is not None:
            vals = []
            for run in logits:
                v = self.fn(run)
                if not isinstance(v, torch.Tensor) or v.numel() != 1:
                    what = f"a tensor of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else repr(v)
                    raise BadInputError(f"metric {self.name} must return a scalar tensor, got {what}")
                vals.append(v.reshape(()).float())
            return torch.stack(vals)
        lp = logits.float()
        if self.name == "logit_diff":
            assert self.answer is not None and self.wrong is not None
            a = lp.gather(-1, self.answer.to(lp.device).expand(lp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
            w = lp.gather(-1, self.wrong.to(lp.device).expand(lp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
            return (a - w).mean(-1)
        if self.name in ("prob", "logprob"):
            assert self.answer is not None
            logp = torch.log_softmax(lp, -1).gather(-1, self.answer.to(lp.device).expand(lp.shape[:-1]).unsqueeze(-1))
            logp = logp.squeeze(-1)
            return (logp.exp() if self.name == "prob" else logp).mean(-1)
        assert self.reference is not None
        ref = torch.log_softmax(self.reference.float().to(lp.device), -1)
        return (ref.exp() * (ref - torch.log_softmax(lp, -1))).sum(-1).mean(-1)

    def differentiable(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The metric of one run from its full logits ``[seqs, pos, vocab]``, keeping autograd (for gradients)."""
        if self.fn is not None:
            return self.fn(logits)
        at = logits[torch.arange(logits.shape[0], device=logits.device), positions.to(logits.device)]
        return self(at.unsqueeze(0))[0]


def normalize(values: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    """``(values - corrupted) / (clean - corrupted)``: 0 = the corrupted run, 1 = the clean run.

    Example:
        >>> normalize(torch.tensor([1.0, 3.0]), clean=3.0, corrupted=1.0)
        tensor([0., 1.])
    """
    span = clean - corrupted
    if span != span or abs(span) < 1e-12:
        raise BadInputError(f"cannot normalise: clean ({clean}) and corrupted ({corrupted}) metric values are "
                         "equal or undefined (mean/resample ablation has no corrupted run)")
    return (values - corrupted) / span


__all__ = ["BUILTIN", "Metric", "normalize"]
