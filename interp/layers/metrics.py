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

import dataclasses
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

    from interp.trace import TraceStore

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
    keeps the values), ``"metric"`` (one metric, ``name=``), ``"lens"`` (the scaled metrics beside the logit- or
    tuned-lens ``KL(final || layer)`` per layer, set by :meth:`with_lens`).

    Attributes:
        values: ``[metric, layer]`` (layer ``i``: the output of block ``i``).
        metrics: row names; alpha: the Renyi order; n_prompts; n_views (augmentations per prompt); model_id.
        lens_kl: ``[layer]`` the lens's mean ``KL(final || layer)`` (``None`` until :meth:`with_lens`); lens: its
            name (``"logit"``, ``"tuned"``).

    Example:
        >>> import torch
        >>> r = RepresentationResult(values=torch.tensor([[1.0, 2.0]]), metrics=("curvature",))
        >>> r.metric("curvature").tolist()
        [1.0, 2.0]
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"values": ("metric", "layer"), "lens_kl": ("layer",)}
    VIEWS = ("curves", "metric", "lens")

    values: torch.Tensor
    metrics: tuple[str, ...] = ()
    alpha: float = 1.0
    n_prompts: int = 0
    n_views: int = 0
    model_id: str = ""
    lens_kl: torch.Tensor | None = None
    lens: str = ""

    def __post_init__(self) -> None:
        if self.values.dim() != 2 or self.values.shape[0] != len(self.metrics):
            raise BadInputError(f"values must be [{len(self.metrics)} metrics, layer], got {tuple(self.values.shape)}")
        if self.lens_kl is not None and tuple(self.lens_kl.shape) != (self.values.shape[1],):
            raise BadInputError(f"lens_kl must be [{self.values.shape[1]} layers], got {tuple(self.lens_kl.shape)}")

    def with_lens(self, lens: Any, name: str | None = None) -> RepresentationResult:
        """This result with a lens's ``KL(final || layer)`` per layer beside it (the ``"lens"`` view).

        Args:
            lens: a ``[layer]`` tensor, or a lens result (:class:`~interp.lens.LogitLensResult`, from the logit or
                a tuned lens): its ``kl_to_final`` averaged over the tokens it read, rows matched to blocks by
                their layer labels (rows not labelled by a block number, e.g. ``embed``, are left out).
            name: the lens's name (default: the result's ``lens`` attribute, or ``"logit"``).

        Example:
            >>> import torch
            >>> r = RepresentationResult(values=torch.tensor([[1.0, 2.0]]), metrics=("curvature",))
            >>> r.with_lens(torch.tensor([3.0, 0.5])).lens_kl.tolist()
            [3.0, 0.5]
        """
        L = self.values.shape[1]
        if isinstance(lens, torch.Tensor):
            kl = lens.detach().float().flatten()
            label = name or "logit"
        elif hasattr(lens, "kl_to_final") and hasattr(lens, "read_mask"):
            read = lens.read_mask().bool()
            per_row = [float(r[read].double().mean()) for r in lens.kl_to_final]
            labels = list(getattr(lens, "layer_labels", ())) or [str(i) for i in range(len(per_row))]
            kl = torch.full((L,), float("nan"))
            for lab, val in zip(labels, per_row, strict=True):
                word = str(lab).split()[0]
                if word.lstrip("-").isdigit() and -L <= int(word) < L:
                    kl[int(word) % L] = val
            label = name or str(getattr(lens, "lens", "logit"))
        else:
            raise BadInputError(f"lens must be a [layer] tensor or a lens result, got {type(lens).__name__}")
        if kl.shape != (L,):
            raise BadInputError(f"the lens KL has {kl.numel()} values for {L} layers")
        return dataclasses.replace(self, lens_kl=kl, lens=label)

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

    def _view_lens(self) -> Figure:
        """The metrics and the lens's ``KL(final || layer)`` per layer, each min-max scaled to share one axis
        (the legend gives the KL's range in nats); without :meth:`with_lens`, the metrics alone."""
        fig_series = {}
        for i, m in enumerate(self.metrics):
            v = self.values[i]
            fig_series[m] = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)
        if self.lens_kl is not None:
            k = self.lens_kl
            ok = k[~k.isnan()]
            lo, hi = (float(ok.min()), float(ok.max())) if ok.numel() else (0.0, 0.0)
            fig_series[f"{self.lens} lens KL ({lo:.3g}..{hi:.3g} nats)"] = (k - lo) / max(hi - lo, 1e-12)
        return layer_curves(fig_series, y_title="min-max scaled",
                            title="representation quality and the lens's distance to the output, per layer")

    def _view_metric(self, name: str = "prompt_entropy") -> Figure:
        """One metric over layers."""
        return layer_curves({name: self.metric(name)}, y_title=name, title=f"{name} per layer")

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_prompts": self.n_prompts}
        for i, m in enumerate(self.metrics):
            out[f"{m}_argmax_layer"] = int(self.values[i].argmax())
        return out


def quality_views(inputs: Sequence[str], *, n_views: int = 4, seed: int = 0) -> list[str]:
    """The texts :func:`representation_quality` reads: each prompt followed by ``n_views - 1`` augmented copies
    (15% of words dropped, seeded). Capture these into a :class:`~interp.trace.TraceStore` (``resid_post``) to
    compute the quality from the store.

    Example:
        >>> quality_views(["a b c d e f", "g h i j k l"], n_views=2)[::2]
        ['a b c d e f', 'g h i j k l']
    """
    if isinstance(inputs, str) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise BadInputError("quality views need a list of prompt texts")
    rng = random.Random(seed)
    return [v for t in inputs for v in [t] + [_augment(t, rng) for _ in range(n_views - 1)]]


class _Stream:
    """Per-layer running statistics of sequences seen one at a time: each prompt's entropy and curvature (view 0)
    as numbers, and every sequence's mean-pooled state; no token states are kept."""

    def __init__(self, n_layers: int, n_views: int, metrics: Sequence[str], alpha: float) -> None:
        self.v, self.alpha = n_views, alpha
        self.want_entropy, self.want_curv = "prompt_entropy" in metrics, "curvature" in metrics
        self.entropy: list[list[float]] = [[] for _ in range(n_layers)]
        self.curv: list[list[float]] = [[] for _ in range(n_layers)]
        self.pooled: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]

    def add(self, seq: int, layer: int, z: torch.Tensor) -> None:
        z = z.double()
        self.pooled[layer].append(z.mean(0))
        if seq % self.v == 0:
            if self.want_entropy:
                self.entropy[layer].append(float(matrix_entropy(z, self.alpha)))
            if self.want_curv and z.shape[0] >= 3:
                self.curv[layer].append(float(curvature(z)))


def _from_model(model: Model, texts: Sequence[str], acc: _Stream, batch_size: int, progress: bool | None) -> None:
    L = model.dims.n_layers
    for s in progress_bar(range(0, len(texts), batch_size), desc="representations", enabled=progress):
        ids, mask = model.encode(list(texts[s:s + batch_size]))
        with torch.no_grad():
            acts = run_with_hooks(model, ids, mask, capture="resid_post", stop_early=True).activations
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            for layer in range(L):
                acc.add(s + r, layer, acts[f"blocks.{layer}.hook_resid_post"][r, :n])


def _from_store(model: Model, store: TraceStore, acc: _Stream, progress: bool | None) -> int:
    """Stream a store shard by shard (one shard's ``resid_post`` rows in memory at a time)."""
    store.check_model(model)
    L = model.dims.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(L)]
    missing = [n for n in names if n not in store.hooks]
    if missing:
        raise BadInputError(f"the store lacks {len(missing)} of the {L} resid_post hooks (e.g. {missing[0]}); "
                            "capture hooks='resid_post' of quality_views(texts)")
    _, mask_all = store.tokens()
    for info in progress_bar(store.shards(), desc="representations", enabled=progress):
        shard = store.read_shard(info, names)
        lens = mask_all[info.start:info.stop].sum(1).tolist()
        off = 0
        for j, n in enumerate(lens):
            for layer in range(L):
                acc.add(info.start + j, layer, shard[names[layer]][off:off + int(n)])
            off += int(n)
    return store.n_seqs


def representation_quality(model: Model, inputs: Sequence[str] | TraceStore, *, metrics: Sequence[str] = METRICS,
                           alpha: float = 1.0, n_views: int = 4, tau: float = 0.1, seed: int = 0,
                           batch_size: int = 16, progress: bool | None = None) -> RepresentationResult:
    """Every metric at every block's output (``resid_post``), streamed one sequence at a time: per prompt only
    its entropy and curvature (numbers) and each sequence's mean-pooled state are kept.

    Args:
        model: the model.
        inputs: the prompts (texts; the view-based metrics need at least two), or a
            :class:`~interp.trace.TraceStore` holding ``resid_post`` of every layer for the texts of
            :func:`quality_views` (sequence ``k * n_views + v`` is view ``v`` of prompt ``k``; without a view-based
            metric every sequence is a prompt), read shard by shard.
        metrics: any of ``prompt_entropy``, ``dataset_entropy``, ``curvature``, ``infonce``, ``lidar``, ``dime``.
        alpha: the Renyi order of the entropies and DiME.
        n_views: augmented views per prompt for ``infonce``/``lidar``/``dime`` (words dropped at random, seeded;
            view 0 is the prompt itself).
        tau: the InfoNCE temperature.
        seed: the augmentation's seed.
        batch_size, progress: sequences per forward; progress bar.

    Raises:
        BadInputError: no prompts, an unknown metric, view-based metrics with one prompt or ``n_views < 2``, or
            a store without every layer's ``resid_post`` or whose sequences do not split into ``n_views``.
    """
    from interp.trace import TraceStore

    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise bad_value("metrics", bad[0] if bad else metrics, ", ".join(METRICS))
    viewed = {"infonce", "lidar", "dime"} & set(metrics)
    v = n_views if viewed else 1
    L = model.dims.n_layers
    acc = _Stream(L, v, metrics, alpha)
    if isinstance(inputs, TraceStore):
        n_seq = inputs.n_seqs
        if n_seq % v or (viewed and (n_seq // v < 2 or v < 2)):
            raise BadInputError(f"the store holds {n_seq} sequences: {', '.join(sorted(viewed)) or 'this'} needs "
                                f"whole groups of n_views={v} views of at least two prompts (capture "
                                "quality_views(texts, n_views=...))")
        _from_store(model, inputs, acc, progress)
        n_prompts = n_seq // v
    else:
        if isinstance(inputs, str) or not inputs or not all(isinstance(t, str) for t in inputs):
            raise BadInputError("representation_quality needs a list of prompt texts or a TraceStore")
        if viewed and (len(inputs) < 2 or n_views < 2):
            raise BadInputError(f"{', '.join(sorted(viewed))} need at least two prompts and n_views >= 2")
        flat = quality_views(inputs, n_views=v, seed=seed) if viewed else list(inputs)
        _from_model(model, flat, acc, batch_size, progress)
        n_prompts = len(inputs)
    rows: list[list[float]] = []
    nan = float("nan")
    for m in metrics:
        row = []
        for layer in range(L):
            P = torch.stack(acc.pooled[layer]).view(n_prompts, v, -1)
            if m == "prompt_entropy":
                val = sum(acc.entropy[layer]) / len(acc.entropy[layer])
            elif m == "dataset_entropy":
                val = float(matrix_entropy(P[:, 0], alpha))
            elif m == "curvature":
                cs = acc.curv[layer]
                val = sum(cs) / len(cs) if cs else nan
            elif m == "infonce":
                val = float(infonce(P[:, 0], P[:, 1], tau))
            elif m == "lidar":
                val = float(lidar(P))
            else:
                val = float(dime(P[:, 0], P[:, 1], alpha, seed=seed))
            row.append(val)
        rows.append(row)
    return RepresentationResult(values=torch.tensor(rows, dtype=torch.float32), metrics=tuple(metrics), alpha=alpha,
                                n_prompts=n_prompts, n_views=v, model_id=model.name)
