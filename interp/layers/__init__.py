"""Which layers and heads matter: run plans, task suites and the layer/head studies.

- Run plans (:mod:`interp.layers.edits`): :func:`skip`, :func:`reorder`, :func:`reverse`, :func:`shuffle`,
  :func:`swap`, :func:`repeat`, :func:`parallel`, :func:`head_mask` return :mod:`interp.hooks` interventions.
- Task suites (:mod:`interp.layers.tasks`): :func:`load_task`, :class:`Task`, :func:`score`.
- Healing after dropping (:mod:`interp.layers.heal`): :func:`heal` (final norm or LoRA, as a :class:`ParamEdit`).
- Studies: :func:`drop_layers`, :func:`painters` (:mod:`interp.layers.studies`); :func:`head_importance`,
  :func:`prune_heads`, :func:`attention_entropy` (:mod:`interp.layers.importance`);
  :func:`representation_quality` (:mod:`interp.layers.metrics`: prompt and dataset entropy, curvature,
  InfoNCE, LiDAR, DiME per layer); :func:`joint_encoding` (:mod:`interp.layers.joint`: probe transfer between
  related categories).
"""

from interp.layers.edits import head_mask, parallel, reorder, repeat, reverse, shuffle, skip, swap
from interp.layers.heal import Healing, ParamEdit, corpus_texts, heal
from interp.layers.importance import attention_entropy, head_importance, prune_heads
from interp.layers.joint import JointEncodingResult, joint_encoding, probe_transfer
from interp.layers.metrics import (
    METRICS,
    RepresentationResult,
    curvature,
    dime,
    infonce,
    lidar,
    matrix_entropy,
    quality_views,
    representation_quality,
)
from interp.layers.results import HeadImportanceResult, LayerDropResult, PaintersResult, PruningResult
from interp.layers.studies import (
    angular_choice,
    drop_layers,
    painters,
    painters_plan,
    skip_losses,
    sublayer_similarity,
)
from interp.layers.tasks import SHIPPED, ChoiceItem, Task, TaskScore, load_task, score

__all__ = [
    "METRICS", "SHIPPED", "ChoiceItem", "Healing", "ParamEdit", "corpus_texts", "heal", "HeadImportanceResult", "RepresentationResult", "curvature", "dime",
    "infonce", "lidar", "matrix_entropy", "quality_views", "representation_quality", "JointEncodingResult", "joint_encoding",
    "probe_transfer", "LayerDropResult", "PaintersResult", "PruningResult", "Task",
    "TaskScore", "angular_choice", "attention_entropy", "drop_layers", "head_importance", "head_mask", "load_task",
    "painters", "painters_plan", "parallel", "prune_heads", "reorder", "repeat", "reverse", "score", "shuffle",
    "skip", "skip_losses", "sublayer_similarity", "swap",
]
