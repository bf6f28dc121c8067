"""Induction heads: scores on repeated random tokens, OV copying, logit attribution, ablation and detection.

Following Olsson et al. (2022), Singh et al. (2024) and Reddy (2023). Every tool takes the model first, then
``inputs`` (optional: by default, repeated random tokens), then keyword options; heads are ``HeadRef`` /
``"L1H0"`` / ``(1, 0)``. The toy model that grows induction heads lives in :mod:`interp.models.toy`
(``interp.load_model("toy-induction")``). The guide is ``docs/induction.md``.

Example:
    >>> import interp
    >>> from interp.induction import ablate_heads, classify_heads, induction_scores
    >>> toy = interp.load_model("toy-induction")
    >>> scores = induction_scores(toy, n_seq=8, half=26)
    >>> roles = classify_heads(toy, scores=scores)
    >>> str(roles.induction_heads[0][0]), str(roles.prev_token_heads[0][0])
    ('L1H2', 'L0H3')
    >>> r = ablate_heads(toy, heads=[h for h, _ in roles.induction_heads], n_seq=8, half=26)
    >>> r.repeat_loss_clean < 1 < 3 < r.repeat_loss_ablated
    True
"""

from interp.induction.ablation import AblationResult, ablate_heads
from interp.induction.data import repeated_tokens
from interp.induction.detect import HeadRoles, classify_heads
from interp.induction.dynamics import TrainingCurves
from interp.induction.ov import ov_copying_scores
from interp.induction.patterns import detection_patterns, pattern_scores
from interp.induction.result import InductionScores
from interp.induction.scores import induction_scores, per_token_loss

__all__ = ["AblationResult", "HeadRoles", "InductionScores", "TrainingCurves", "ablate_heads", "classify_heads",
           "detection_patterns", "induction_scores", "ov_copying_scores", "pattern_scores", "per_token_loss",
           "repeated_tokens"]
