"""Joint encoding of related categories: do probes for one category read another's representation?

For each layer, a logistic probe is trained per (binary) category on the residual stream at each sequence's last
token; ``transfer[layer, i, j]`` is the held-out accuracy of category ``i``'s probe at predicting category ``j``'s
labels (the diagonal: ordinary probe accuracy), and ``overlap[layer, i, j]`` the Jaccard overlap of the two probes'
``top_k`` largest-magnitude weight dimensions. (The probing tool is not imported: tools do not import each other;
the probe here is a plain L2-regularised logistic regression fitted with L-BFGS.)

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 8, generator=g)
    >>> res = probe_transfer({0: x}, {"a": (x[:, 0] > 0).long(), "b": (x[:, 0] + 0.1 * x[:, 1] > 0).long()})
    >>> bool(res.transfer[0, 0, 1] > 0.9)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interp.errors import BadInputError
from interp.hooks import run_with_hooks
from interp.models import Model
from interp.plot import heatmap
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class JointEncodingResult(Result):
    """Probe transfer between related categories, per layer.

    Views: ``"transfer"`` (default; train category x test category at ``layer=``, default the last),
    ``"overlap"`` (top-dimension Jaccard overlap at ``layer=``).

    Attributes:
        transfer: ``[layer, train, test]`` held-out accuracy of the ``train`` category's probe on ``test``'s labels.
        overlap: ``[layer, train, test]`` Jaccard overlap of the probes' top-``top_k`` weight dimensions.
        categories: names; layers: the layers probed; top_k; n_train / n_test: sequences in each split.

    Example:
        >>> import torch
        >>> r = JointEncodingResult(transfer=torch.ones(1, 2, 2), overlap=torch.ones(1, 2, 2), categories=("a", "b"),
        ...                         layers=(3,))
        >>> r.headline()["mean_off_diagonal_transfer"]
        1.0
    """

    AXES: ClassVar[Mapping[str, tuple[str, ...]]] = {"transfer": ("layer", "train", "test"),
                                                     "overlap": ("layer", "train", "test")}
    VIEWS = ("transfer", "overlap")

    transfer: torch.Tensor
    overlap: torch.Tensor
    categories: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()
    top_k: int = 0
    n_train: int = 0
    n_test: int = 0
    model_id: str = ""

    def __post_init__(self) -> None:
        c = len(self.categories)
        want = (len(self.layers), c, c)
        for name in ("transfer", "overlap"):
            t = getattr(self, name)
            if tuple(t.shape) != want:
                raise BadInputError(f"{name} has shape {tuple(t.shape)}, expected {want} (layer, train, test)")

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(self.layers), "train": list(self.categories), "test": list(self.categories)}

    def _at(self, t: torch.Tensor, layer: int | None) -> tuple[torch.Tensor, int]:
        layer = self.layers[-1] if layer is None else layer
        if layer not in self.layers:
            raise BadInputError(f"layer {layer} was not probed; probed: {list(self.layers)}")
        return t[self.layers.index(layer)], layer

    def _view_transfer(self, layer: int | None = None) -> Figure:
        """Held-out accuracy of each category's probe on each category's labels."""
        t, layer = self._at(self.transfer, layer)
        cats = list(self.categories)
        return heatmap(t, x_labels=cats, y_labels=cats, title=f"probe transfer at layer {layer}",
                       x_title="tested on", y_title="trained on", signed=False, zmin=0.0, zmax=1.0)

    def _view_overlap(self, layer: int | None = None) -> Figure:
        """Jaccard overlap of the probes' top weight dimensions."""
        t, layer = self._at(self.overlap, layer)
        cats = list(self.categories)
        return heatmap(t, x_labels=cats, y_labels=cats, title=f"top-{self.top_k} dimension overlap at layer {layer}",
                       x_title="category", y_title="category", signed=False, zmin=0.0, zmax=1.0)

    def headline(self) -> dict[str, Any]:
        c = len(self.categories)
        off = ~torch.eye(c, dtype=torch.bool)
        last = self.transfer[-1]
        return {"categories": c, "mean_off_diagonal_transfer": float(last[off].mean()) if c > 1 else float("nan")}


def _fit(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def probe_transfer(acts: Mapping[int, torch.Tensor], labels: Mapping[str, Sequence[int] | torch.Tensor], *,
                   test_share: float = 0.3, top_k: int = 16, l2: float = 1e-3, steps: int = 100, seed: int = 0,
                   model_id: str = "") -> JointEncodingResult:
    """The transfer and overlap matrices from activations ``{layer: [n, d]}`` and binary ``labels`` per category.

    Features are standardised on the training split; the split is seeded and shared by all categories.
    """
    if not acts or not labels:
        raise BadInputError("probe_transfer needs activations and at least one labelled category")
    n = next(iter(acts.values())).shape[0]
    ys = {}
    for name, y in labels.items():
        t = torch.as_tensor(y)
        if t.shape != (n,) or not set(t.unique().tolist()) <= {0, 1}:
            raise BadInputError(f"labels of {name!r} must be {n} values in {{0, 1}}, got shape {tuple(t.shape)}")
        ys[name] = t.double()
    if not 0 < test_share < 1:
        raise BadInputError(f"test_share must be in (0, 1), got {test_share}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(n * test_share))
    te, tr = perm[:n_test], perm[n_test:]
    cats = list(ys)
    transfer = torch.zeros(len(acts), len(cats), len(cats))
    overlap = torch.zeros(len(acts), len(cats), len(cats))
    for li, (_, x) in enumerate(sorted(acts.items())):
        x = x.double()
        mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-8)
        z = (x - mu) / sd
        k = min(top_k, z.shape[1])
        tops = []
        probes = []
        for c in cats:
            w, b = _fit(z[tr], ys[c][tr], l2, steps)
            probes.append((w, b))
            tops.append(set(w.abs().argsort(descending=True)[:k].tolist()))
        for i, (w, b) in enumerate(probes):
            pred = ((z[te] @ w + b) > 0).double()
            for j, c in enumerate(cats):
                transfer[li, i, j] = float((pred == ys[c][te]).double().mean())
                overlap[li, i, j] = len(tops[i] & tops[j]) / len(tops[i] | tops[j])
    return JointEncodingResult(transfer=transfer, overlap=overlap, categories=tuple(cats),
                               layers=tuple(sorted(acts)), top_k=top_k, n_train=len(tr), n_test=n_test,
                               model_id=model_id)


def joint_encoding(model: Model, inputs: Sequence[str], *, labels: Mapping[str, Sequence[int]],
                   layers: Sequence[int] | None = None, top_k: int = 16, test_share: float = 0.3, seed: int = 0,
                   batch_size: int = 32) -> JointEncodingResult:
    """Probe each category on ``resid_post`` at each text's last token, for every layer in ``layers`` (default all),
    and measure how well each probe transfers to the other categories (see :func:`probe_transfer`)."""
    if isinstance(inputs, str) or not inputs:
        raise BadInputError("joint_encoding needs a list of texts")
    L = model.dims.n_layers
    chosen = list(range(L)) if layers is None else [int(i) % L for i in layers]
    store: dict[int, list[torch.Tensor]] = {i: [] for i in chosen}
    texts = list(inputs)
    for s in range(0, len(texts), batch_size):
        ids, mask = model.encode(texts[s:s + batch_size])
        with torch.no_grad():
            acts = run_with_hooks(model, ids, mask, capture=[f"resid_post.{i}" for i in chosen], stop_early=True)
        last = mask.sum(-1) - 1
        rows = torch.arange(ids.shape[0])
        for i in chosen:
            store[i].append(acts.activations[f"blocks.{i}.hook_resid_post"][rows, last])
    return probe_transfer({i: torch.cat(v) for i, v in store.items()}, labels, top_k=top_k, test_share=test_share,
                          seed=seed, model_id=model.name)
