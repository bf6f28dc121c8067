"""Induction heads: scores on repeated random tokens, OV copying, logit attribution, ablation and detection.

Following Olsson et al. (2022), Singh et al. (2024) and Reddy (2023). The toy model that grows induction
heads lives in :mod:`interp.models.toy` (``interp.load_model("toy-induction")``).

Example:
    >>> import interp
    >>> from interp.induction import classify_heads, induction_scores
    >>> m = interp.load_model("toy-induction")  # doctest: +SKIP
    >>> roles = classify_heads(m, induction_scores(m, half=26))  # doctest: +SKIP
    >>> roles.induction_heads[0][0][0], roles.prev_token_heads[0][0][0]  # doctest: +SKIP
    (1, 0)
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
