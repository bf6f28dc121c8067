"""Representation quality per layer (Skean et al. 2025, "Layer by Layer"): matrix-based entropies, curvature,
InfoNCE, LiDAR and DiME.

The formulas (``Z``: rows are representations; ``K = Z Z^T / tr(Z Z^T)``, eigenvalues ``lambda_i``):

- alpha-Renyi matrix entropy ``S_a(Z) = log(sum_i lambda_i^a) / (1 - a)`` (the von Neumann entropy at ``a = 1``);
  *prompt entropy*: ``S_a`` of one prompt's token representations, averaged over prompts; *dataset entropy*:
  ``S_a`` of the prompts' mean-pooled representations.
- *curvature*: the mean angle between consecutive steps ``v_k = z_{k+1} - z_k`` of a prompt's token trajectory,
  ``mean_k arccos(cos(v_k, v_{k+1}))``, averaged over prompts.
- *InfoNCE* between two views ``a_i``, ``b_i`` of each prompt (unit-normalised mean-pooled representations,
  temperature ``tau``): ``-mean_i log softmax_j(a_i . b_j / tau)[i]`` (lower: views more identifiable).
- *LiDAR*: the effective rank ``exp(-sum p_i log p_i)`` of ``S_w^{-1/2} S_b S_w^{-1/2}`` (``S_b``: between-prompt
  covariance of the view means, ``S_w``: within-prompt covariance + ``delta * I``; ``p = lambda / sum lambda``).
- *DiME*: ``E_pi[S_a(K_A o K_B^pi)] - S_a(K_A o K_B)``, Hadamard products of the two views' normalised Gram
  matrices, ``pi`` a random permutation of the second view's rows (averaged over ``n_perm`` seeded draws).

Example:
    >>> import torch
    >>> round(float(matrix_entropy(torch.eye(4), alpha=1.0)), 4)  # four orthogonal rows: log 4
    1.3863
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError, bad_value
from interp.hooks import run_with_hooks
from interp.models import Model
from interp.plot import layer_curves
from interp.progress import progress as progress_bar
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

METRICS = ("prompt_entropy", "dataset_entropy", "curvature", "infonce", "lidar", "dime")


def _gram(z: torch.Tensor) -> torch.Tensor:
    k = z.double() @ z.double().T
    return k / k.trace().clamp_min(1e-300)


def _renyi(k: torch.Tensor, alpha: float) -> torch.Tensor:
    lam = torch.linalg.eigvalsh(k).clamp_min(0)
    lam = lam / lam.sum().clamp_min(1e-300)
    if abs(alpha - 1.0) < 1e-9:
        nz = lam[lam > 0]
        return -(nz * nz.log()).sum()
    return torch.log((lam ** alpha).sum()) / (1 - alpha)


def matrix_entropy(z: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """The alpha-Renyi entropy of the trace-normalised Gram matrix of the rows of ``z`` ``[n, d]``."""
    return _renyi(_gram(z), alpha)


def curvature(z: torch.Tensor) -> torch.Tensor:
    """The mean angle (radians) between consecutive steps of the trajectory ``z`` ``[T, d]`` (``T >= 3``)."""
    v = z.double().diff(dim=0)
    cos = torch.nn.functional.cosine_similarity(v[:-1], v[1:], dim=-1).clamp(-1, 1)
    return torch.arccos(cos).mean()


def infonce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """InfoNCE loss of paired rows ``a``, ``b`` ``[n, d]`` (unit-normalised, temperature ``tau``)."""
    a = torch.nn.functional.normalize(a.double(), dim=-1)
    b = torch.nn.functional.normalize(b.double(), dim=-1)
    logits = a @ b.T / tau
    return -logits.log_softmax(-1).diagonal().mean()


def lidar(views: torch.Tensor, delta: float = 1e-4, eps: float = 1e-12) -> torch.Tensor:
    """LiDAR of ``views`` ``[n_prompts, n_views, d]``: the effective rank of the LDA matrix."""
    x = views.double()
    means = x.mean(1)  # [n, d]
    mu = means.mean(0)
    sb = (means - mu).T @ (means - mu) / max(x.shape[0] - 1, 1)
    c = x - means[:, None]
    sw = torch.einsum("nvd,nve->de", c, c) / max(x.shape[0] * (x.shape[1] - 1), 1)
    sw = sw + delta * torch.eye(x.shape[-1], dtype=x.dtype)
    w_lam, w_vec = torch.linalg.eigh(sw)
    inv_sqrt = w_vec @ torch.diag(w_lam.clamp_min(1e-300).rsqrt()) @ w_vec.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ sb @ inv_sqrt).clamp_min(0)
    p = lam / lam.sum().clamp_min(1e-300) + eps
    return torch.exp(-(p * p.log()).sum())


def dime(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0, n_perm: int = 8, seed: int = 0) -> torch.Tensor:
    """DiME of paired rows ``a``, ``b``: mean entropy of ``K_A o K_B`` with ``b``'s rows permuted, minus the
    entropy of the aligned product (each Hadamard product trace-normalised)."""
    ka, kb = _gram(a), _gram(b)

    def joint(kb_: torch.Tensor) -> torch.Tensor:
        k = ka * kb_
        return _renyi(k / k.trace().clamp_min(1e-300), alpha)

    g = random.Random(seed)
    n = a.shape[0]
    perms = []
    for _ in range(n_perm):
        p = list(range(n))
        g.shuffle(p)
        perms.append(joint(kb[p][:, p]))
    return torch.stack(perms).mean() - joint(kb)


def _augment(text: str, rng: random.Random, drop: float = 0.15) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= drop] or words[:1]
    return " ".join(kept)


@dataclass(frozen=True, repr=False)
class RepresentationResult(Result):
    """Representation quality per layer (Skean et al. 2025): one row per metric, one column per block output.

    Views: ``"curves"`` (default; each metric over layers, min-max scaled so they share an axis; ``raw=True``
    keeps the values), ``"metric"`` (one metric, ``name=``).

    Attributes:
        values: ``[metric, layer]`` (layer ``i``: the output of block ``i``).
        metrics: row names; alpha: the Renyi order; n_prompts; n_views (augmentations per prompt); model_id.

    Example:
        >>> import torch
        >>> r = RepresentationResult(values=torch.tensor([[1.0, 2.0]]), metrics=("curvature",))
        >>> r.metric("curvature").tolist()
        [1.0, 2.0]
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"values": ("metric", "layer")}
    VIEWS = ("curves", "metric")

    values: torch.Tensor
    metrics: tuple[str, ...] = ()
    alpha: float = 1.0
    n_prompts: int = 0
    n_views: int = 0
    model_id: str = ""

    def __post_init__(self) -> None:
        if self.values.dim() != 2 or self.values.shape[0] != len(self.metrics):
            raise BadInputError(f"values must be [{len(self.metrics)} metrics, layer], got {tuple(self.values.shape)}")

    def labels(self) -> dict[str, list[Any]]:
        return {"metric": list(self.metrics), "layer": list(range(self.values.shape[1]))}

    def metric(self, name: str) -> torch.Tensor:
        """``[layer]`` values of one metric."""
        if name not in self.metrics:
            raise bad_value("name", name, ", ".join(self.metrics))
        return self.values[self.metrics.index(name)]

    def _view_curves(self, raw: bool = False) -> Figure:
        """Every metric over layers (min-max scaled unless ``raw``)."""
        series = {}
        for i, m in enumerate(self.metrics):
            v = self.values[i]
            if not raw:
                span = (v.max() - v.min()).clamp_min(1e-12)
                v = (v - v.min()) / span
            series[m] = v
        return layer_curves(series, y_title="value" if raw else "min-max scaled",
                            title="representation quality per layer")

    def _view_metric(self, name: str = "prompt_entropy") -> Figure:
        """One metric over layers."""
        return layer_curves({name: self.metric(name)}, y_title=name, title=f"{name} per layer")

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_prompts": self.n_prompts}
        for i, m in enumerate(self.metrics):
            out[f"{m}_argmax_layer"] = int(self.values[i].argmax())
        return out


def representation_quality(model: Model, inputs: Sequence[str], *, metrics: Sequence[str] = METRICS,
                           alpha: float = 1.0, n_views: int = 4, tau: float = 0.1, seed: int = 0,
                           batch_size: int = 16, progress: bool | None = None) -> RepresentationResult:
    """Every metric at every block's output (``resid_post``), streamed batch by batch.

    Args:
        model: the model.
        inputs: the prompts (texts; the view-based metrics need at least two).
        metrics: any of ``prompt_entropy``, ``dataset_entropy``, ``curvature``, ``infonce``, ``lidar``, ``dime``.
        alpha: the Renyi order of the entropies and DiME.
        n_views: augmented views per prompt for ``infonce``/``lidar``/``dime`` (words dropped at random, seeded;
            view 0 is the prompt itself).
        tau: the InfoNCE temperature.
        seed: the augmentation's seed.
        batch_size, progress: sequences per forward; progress bar.
    """
    if isinstance(inputs, str) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise BadInputError("representation_quality needs a list of prompt texts")
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise bad_value("metrics", bad[0] if bad else metrics, ", ".join(METRICS))
    viewed = {"infonce", "lidar", "dime"} & set(metrics)
    if viewed and (len(inputs) < 2 or n_views < 2):
        raise BadInputError(f"{', '.join(sorted(viewed))} need at least two prompts and n_views >= 2")
    rng = random.Random(seed)
    texts = list(inputs)
    views = [[t] + [_augment(t, rng) for _ in range(n_views - 1)] for t in texts] if viewed else [[t] for t in texts]
    flat = [v for vs in views for v in vs]
    L = model.dims.n_layers
    tokens: list[list[torch.Tensor]] = [[] for _ in range(L)]  # per layer, per prompt (view 0): [T, d]
    pooled: list[list[torch.Tensor]] = [[] for _ in range(L)]  # per layer, per sequence: [d]
    for s in progress_bar(range(0, len(flat), batch_size), desc="representations", enabled=progress):
        ids, mask = model.encode(flat[s:s + batch_size])
        with torch.no_grad():
            acts = run_with_hooks(model, ids, mask, capture="resid_post", stop_early=True).activations
        for layer in range(L):
            a = acts[f"blocks.{layer}.hook_resid_post"].double()
            for r in range(ids.shape[0]):
                n = int(mask[r].sum())
                pooled[layer].append(a[r, :n].mean(0))
                if (s + r) % len(views[0]) == 0:
                    tokens[layer].append(a[r, :n])
    v = len(views[0])
    rows: list[list[float]] = []
    for m in metrics:
        row = []
        for layer in range(L):
            P = torch.stack(pooled[layer]).view(len(texts), v, -1)
            if m == "prompt_entropy":
                val = torch.stack([matrix_entropy(z, alpha) for z in tokens[layer]]).mean()
            elif m == "dataset_entropy":
                val = matrix_entropy(P[:, 0], alpha)
            elif m == "curvature":
                cs = [curvature(z) for z in tokens[layer] if z.shape[0] >= 3]
                val = torch.stack(cs).mean() if cs else torch.tensor(float("nan"))
            elif m == "infonce":
                val = infonce(P[:, 0], P[:, 1], tau)
            elif m == "lidar":
                val = lidar(P)
            else:
                val = dime(P[:, 0], P[:, 1], alpha, seed=seed)
            row.append(float(val))
        rows.append(row)
    return RepresentationResult(values=torch.tensor(rows, dtype=torch.float32), metrics=tuple(metrics), alpha=alpha,
                                n_prompts=len(texts), n_views=v if viewed else 1, model_id=model.name)
