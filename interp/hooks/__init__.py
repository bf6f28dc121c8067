"""Hook points, interventions and hooked runs.

Example:
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from interp.models import from_hf
    >>> from interp.hooks import Ablate, run_with_hooks
    >>> m = from_hf(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100)))
    >>> out = run_with_hooks(m, torch.tensor([[1, 2, 3]]), capture=["blocks.1.attn.hook_z"],
    ...                      interventions=[Ablate("blocks.1.attn.hook_z", heads=[0])])
    >>> float(out.activations["blocks.1.attn.hook_z"][..., 0, :].abs().sum())
    0.0
"""

from interp.hooks.attention import interp_attention
from interp.hooks.engine import HookedRun, RunOutput, forward, hooks, make_plans, run_with_hooks
from interp.hooks.experts import AblateExperts
from interp.hooks.interventions import (
    Ablate,
    Add,
    Clamp,
    Dictionary,
    FeatureEdit,
    Intervention,
    Lambda,
    Patch,
    Project,
    Scale,
    Splice,
    SubspacePatch,
    Transform,
)
from interp.hooks.plans import HeadMask, LayerPlan

__all__ = [
    "Ablate", "AblateExperts", "Add", "Clamp", "Dictionary", "FeatureEdit", "HeadMask", "HookedRun", "Intervention", "Lambda",
    "LayerPlan",
    "Patch", "Project", "RunOutput", "Scale", "Splice", "SubspacePatch", "Transform", "forward", "hooks",
    "interp_attention", "make_plans", "run_with_hooks",
]
