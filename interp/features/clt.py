"""``CrossLayerTranscoder``: one dictionary for all the MLPs, each layer's features writing to its own and every later
MLP output (Ameisen et al. 2025, circuit-tracer's CLT).

For layers ``l_0 < l_1 < ...`` (the MLPs it replaces), layer ``i``'s features read that block's MLP input ``x_i``
and the prediction of MLP output ``j`` sums the writes of every layer at or below it::

    z_i = TopK(ReLU((x_i * s_in[i]) @ W_enc[i] + b_enc[i]))
    y_hat_j = (sum_{i <= j} z_i @ W_dec[i -> j] + b_dec[j] + (x_j * s_in[j]) @ W_skip[j]) / s_out[j]

so a feature that an MLP computes once and later MLPs copy forward is one feature, not one per layer. It trains
with the fast TopK step of :class:`~interp.features.SparseAutoencoder` (sparse decode, SDDMM, CSR weight gradients,
fused Adam; see :func:`interp.features.topk.sparse_back`): layer ``i``'s decoders to all later outputs are one
``[d_sae, n_out * d_out]`` matrix whose rows are kept at unit norm. The loss is the mean over output layers of each
one's fraction of variance unexplained. :func:`interp.features.attribution_graph` takes it in place of per-layer
transcoders. No AuxK term (dead features are counted, not revived).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from interp.errors import BadInputError, CorruptStoreError
from interp.features.sae import SAEConfig, activate
from interp.progress import progress as progress_bar
from interp.trace.layout import atomic_save_tensors, atomic_write_bytes
from interp.version import __version__

if TYPE_CHECKING:
    from interp.models import Model


@dataclass(repr=False)
class CrossLayerTranscoder:
    """A cross-layer transcoder over the MLPs of ``layers`` (see the module docstring).

    Attributes:
        config: ``d_sae`` and ``k`` per layer, training settings (``apply_b_dec_to_input`` is unused).
        layers: the blocks whose MLPs it replaces, ascending.
        hooks, out_hooks: per layer, the MLP input and output hooks (for training from a model and for records).
        skip: learn a linear skip connection per output layer.

    Example:
        >>> import torch
        >>> from interp.features import CrossLayerTranscoder, SAEConfig
        >>> xs = [torch.randn(2048, 8) for _ in range(2)]
        >>> ys = [torch.relu(xs[0] @ torch.randn(8, 6)), torch.relu(xs[1] @ torch.randn(8, 6))]
        >>> clt = CrossLayerTranscoder(SAEConfig(d_sae=32, k=4, batch_size=256, n_tokens=4096), layers=(0, 1),
        ...                            progress=False).fit_pairs(xs, ys)
        >>> [y.shape for y in clt.forward(x[:3] for x in xs)]
        [torch.Size([3, 6]), torch.Size([3, 6])]
        >>> clt.decoder(0, 1).shape  # layer 0's features writing to layer 1's MLP output
        torch.Size([32, 6])
    """

    config: SAEConfig = field(default_factory=SAEConfig)
    layers: tuple[int, ...] = ()
    hooks: tuple[str, ...] = ()
    out_hooks: tuple[str, ...] = ()
    model_id: str = ""
    skip: bool = False
    progress: bool | None = None
    W_enc_: list[torch.Tensor] | None = field(default=None, repr=False)  # per layer [d_in, d_sae]
    b_enc_: list[torch.Tensor] | None = field(default=None, repr=False)  # per layer [d_sae]
    W_dec_: list[torch.Tensor] | None = field(default=None, repr=False)  # per layer i: [d_sae, (n - i) * d_out]
    b_dec_: torch.Tensor | None = field(default=None, repr=False)  # [n, d_out]
    W_skip_: torch.Tensor | None = field(default=None, repr=False)  # [n, d_in, d_out]
    input_scale_: torch.Tensor = field(default_factory=lambda: torch.ones(0))
    output_scale_: torch.Tensor = field(default_factory=lambda: torch.ones(0))
    history_: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(int(L) for L in self.layers)
        if not self.layers or list(self.layers) != sorted(set(self.layers)) or min(self.layers) < 0:
            raise BadInputError(f"layers must be distinct ascending block indices, got {self.layers!r}")
        if self.config.activation != "topk":
            raise BadInputError("a CrossLayerTranscoder is TopK only (config.activation='topk')")
        for name in ("hooks", "out_hooks"):
            v = tuple(getattr(self, name))
            if v and len(v) != len(self.layers):
                raise BadInputError(f"{name} must name one hook per layer ({len(self.layers)}), got {len(v)}")
            setattr(self, name, v)

    # -- shape -------------------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.W_enc_ is not None

    def _fitted(self) -> None:
        if self.W_enc_ is None:
            raise BadInputError("this CrossLayerTranscoder is not fitted yet: call fit_pairs(), fit_model() or load()")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    def _index(self, layer: int) -> int:
        if layer not in self.layers:
            raise BadInputError(f"layer {layer} is not one of this transcoder's layers {self.layers}")
        return self.layers.index(layer)

    # -- the map -----------------------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor, *, layer: int) -> torch.Tensor:
        """``[..., d_in]`` MLP input of ``layer`` → ``[..., d_sae]`` pre-activations."""
        self._fitted()
        assert self.W_enc_ is not None and self.b_enc_ is not None
        i = self._index(layer)
        W = self.W_enc_[i].to(x.device)
        return (x.to(W.dtype) * float(self.input_scale_[i])) @ W + self.b_enc_[i].to(x.device)

    def encode(self, x: torch.Tensor, *, layer: int) -> torch.Tensor:
        """``[..., d_in]`` MLP input of ``layer`` → ``[..., d_sae]`` sparse activations of that layer's features."""
        return activate(self.pre_activations(x, layer=layer), self.config)

    def decoder(self, layer: int, out_layer: int) -> torch.Tensor:
        """``[d_sae, d_out]``: what one unit of each of ``layer``'s features adds to ``out_layer``'s MLP output
        (model units; zeros-free: ``out_layer`` must be ``>= layer``)."""
        self._fitted()
        assert self.W_dec_ is not None
        i, j = self._index(layer), self._index(out_layer)
        if j < i:
            raise BadInputError(f"features of layer {layer} do not write to the earlier layer {out_layer}")
        d = self.W_dec_[i].shape[1] // (self.n_layers - i)
        return self.W_dec_[i][:, (j - i) * d:(j - i + 1) * d] / float(self.output_scale_[j])

    def bias_skip(self, x: torch.Tensor, *, layer: int) -> torch.Tensor:
        """``out_layer``'s output bias plus its skip connection from its MLP input ``x`` (model units)."""
        self._fitted()
        assert self.b_dec_ is not None
        j = self._index(layer)
        out = self.b_dec_[j].to(x) + torch.zeros(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
        if self.W_skip_ is not None:
            out = out + (x * float(self.input_scale_[j])) @ self.W_skip_[j].to(x)
        return out / float(self.output_scale_[j])

    def decode(self, zs: Sequence[torch.Tensor | None], *, layer: int, x: torch.Tensor | None = None
               ) -> torch.Tensor:
        """MLP output of ``layer`` from the activations ``zs`` (one per layer, in order; ``None`` for none) of
        every layer up to it, plus bias and, given its MLP input ``x``, the skip connection."""
        j = self._index(layer)
        out: torch.Tensor | None = None
        for i in range(j + 1):
            z = zs[i]
            if z is None:
                continue
            W = self.decoder(self.layers[i], layer)
            part = z.to(W.dtype) @ W.to(z.device)
            out = part if out is None else out + part
        if x is not None:
            c = self.bias_skip(x, layer=layer)
        else:
            assert self.b_dec_ is not None
            c = self.b_dec_[j] / float(self.output_scale_[j])
        return c if out is None else out + c

    def forward(self, xs: Any) -> list[torch.Tensor]:
        """Every layer's MLP input (an iterable of ``[..., d_in]``) → every layer's predicted MLP output."""
        xs = list(xs)
        if len(xs) != self.n_layers:
            raise BadInputError(f"pass one input per layer ({self.n_layers}), got {len(xs)}")
        zs: list[torch.Tensor | None] = [self.encode(x, layer=L) for x, L in zip(xs, self.layers, strict=True)]
        return [self.decode(zs, layer=L, x=x).to(x.dtype) for x, L in zip(xs, self.layers, strict=True)]

    def explained_variance(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> list[float]:
        """Per output layer, the explained variance of ``ys`` (MLP outputs) predicted from ``xs`` (MLP inputs)."""
        pred = self.forward(xs)
        return [1.0 - float((y - p).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12))
                for y, p in zip(ys, pred, strict=True)]

    # -- training ----------------------------------------------------------------------------------------------
    def fit_pairs(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> CrossLayerTranscoder:
        """Train on paired rows: ``xs[i] [n, d_in]`` the MLP inputs and ``ys[i] [n, d_out]`` the MLP outputs of
        ``layers[i]`` (the same ``n`` tokens in every list); returns ``self``."""
        xs, ys = list(xs), list(ys)
        if len(xs) != self.n_layers or len(ys) != self.n_layers:
            raise BadInputError(f"pass one input and one output row block per layer ({self.n_layers})")
        n = xs[0].shape[0]
        if any(t.dim() != 2 or t.shape[0] != n for t in (*xs, *ys)):
            raise BadInputError("every xs[i] and ys[i] must be [n, d] with the same n")
        cfg = self.config
        if n < cfg.batch_size:
            raise BadInputError(f"fewer rows ({n}) than batch_size={cfg.batch_size}")
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(n, generator=g)[:cfg.batch_size]
        fit = CLTFitter(self, [x[perm] for x in xs], [y[perm] for y in ys])
        bar = progress_bar(total=fit.total, desc="CLT", enabled=self.progress, unit="step")
        try:
            while not fit.done:
                perm = torch.randperm(n, generator=g)
                for s in range(0, n - cfg.batch_size + 1, cfg.batch_size):
                    if fit.done:
                        break
                    sel = perm[s:s + cfg.batch_size]
                    fit.step([x[sel] for x in xs], [y[sel] for y in ys])
                    bar.update(1)
        finally:
            bar.close()
        return fit.finish()

    def fit_model(self, model: Model, inputs: Sequence[str] | torch.Tensor, *, context: int = 128,
                  seqs_per_forward: int = 16, buffer_batches: int = 32) -> CrossLayerTranscoder:
        """Train on the fly from ``model`` over ``inputs`` (texts, packed into ``context``-token windows, or
        ``[n, context]`` token ids): rows of every layer's MLP input and output, shuffled together across a buffer
        (:func:`~interp.features.activation_stream`; no disk cache). Fills ``hooks`` / ``out_hooks`` when empty."""
        from interp.features.stream import activation_stream, pack_tokens
        from interp.features.transcoder import mlp_in_hook

        if not self.hooks:
            self.hooks = tuple(mlp_in_hook(model, layer=L) for L in self.layers)
        if not self.out_hooks:
            self.out_hooks = tuple(f"blocks.{L}.hook_mlp_out" for L in self.layers)
        self.model_id = self.model_id or model.name
        ids = inputs if isinstance(inputs, torch.Tensor) else pack_tokens(model, list(inputs), context=context)
        cfg = self.config
        stream = activation_stream(model, ids, hooks=[*self.hooks, *self.out_hooks], batch_size=cfg.batch_size,
                                   seqs_per_forward=seqs_per_forward, buffer_batches=buffer_batches, seed=cfg.seed)
        first = next(stream)
        fit = CLTFitter(self, [first[h] for h in self.hooks], [first[h] for h in self.out_hooks])
        bar = progress_bar(total=fit.total, desc="CLT", enabled=self.progress, unit="step")
        try:
            rows = first
            while not fit.done:
                fit.step([rows[h] for h in self.hooks], [rows[h] for h in self.out_hooks])
                bar.update(1)
                if not fit.done:
                    rows = next(stream)
        finally:
            bar.close()
        return fit.finish()

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Path:
        """Write ``path/clt.safetensors`` and ``path/clt.json``; returns ``path``."""
        self._fitted()
        assert self.W_enc_ is not None and self.b_enc_ is not None and self.W_dec_ is not None
        assert self.b_dec_ is not None
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
        w: dict[str, torch.Tensor] = {"b_dec": cast(self.b_dec_).contiguous()}
        for i in range(self.n_layers):
            w[f"W_enc.{i}"] = cast(self.W_enc_[i]).contiguous()
            w[f"b_enc.{i}"] = cast(self.b_enc_[i]).contiguous()
            w[f"W_dec.{i}"] = cast(self.W_dec_[i]).contiguous()
        if self.W_skip_ is not None:
            w["W_skip"] = cast(self.W_skip_).contiguous()
        atomic_save_tensors(out / "clt.safetensors", w)
        meta = {"class": "CrossLayerTranscoder", "config": asdict(self.config), "layers": list(self.layers),
                "hooks": list(self.hooks), "out_hooks": list(self.out_hooks), "model_id": self.model_id,
                "skip": self.W_skip_ is not None, "input_scale": self.input_scale_.tolist(),
                "output_scale": self.output_scale_.tolist(), "history": self.history_, "interp_version": __version__}
        atomic_write_bytes(out / "clt.json", json.dumps(meta, indent=1).encode("utf-8"))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CrossLayerTranscoder:
        """Read a cross-layer transcoder written by :meth:`save`."""
        src = Path(path)
        try:
            meta = json.loads((src / "clt.json").read_text(encoding="utf-8"))
            w = load_file(str(src / "clt.safetensors"))
        except FileNotFoundError:
            raise BadInputError(f"no cross-layer transcoder in {str(src)!r}: expected clt.json + clt.safetensors") \
                from None
        except Exception as e:
            raise CorruptStoreError(f"{src} cannot be read as a cross-layer transcoder ({e})") from None
        if meta.get("class") != "CrossLayerTranscoder":
            raise BadInputError(f"{src} holds a {meta.get('class')}, not a CrossLayerTranscoder")
        from dataclasses import fields as dc_fields

        known = {f.name for f in dc_fields(SAEConfig)}
        clt = cls(SAEConfig(**{k: v for k, v in meta["config"].items() if k in known}), layers=tuple(meta["layers"]),
                  hooks=tuple(meta.get("hooks", ())), out_hooks=tuple(meta.get("out_hooks", ())),
                  model_id=meta.get("model_id", ""), skip=bool(meta.get("skip")),
                  input_scale_=torch.tensor(meta["input_scale"], dtype=torch.float64),
                  output_scale_=torch.tensor(meta["output_scale"], dtype=torch.float64),
                  history_=meta.get("history", {}))
        n = clt.n_layers
        clt.W_enc_ = [w[f"W_enc.{i}"].float() for i in range(n)]
        clt.b_enc_ = [w[f"b_enc.{i}"].float() for i in range(n)]
        clt.W_dec_ = [w[f"W_dec.{i}"].float() for i in range(n)]
        clt.b_dec_ = w["b_dec"].float()
        clt.W_skip_ = w["W_skip"].float() if "W_skip" in w else None
        return clt

    def __repr__(self) -> str:
        return (f"CrossLayerTranscoder(layers={list(self.layers)}, d_sae={self.config.d_sae} per layer, "
                f"topk k={self.config.k}{', skip' if self.skip else ''}{'' if self.fitted else ', unfitted'})")


class CLTFitter:
    """The training state of one :class:`CrossLayerTranscoder`: :meth:`step` takes a batch of every layer's MLP input
    and output rows (model units). Parameters are kept in the training layout (encoders ``[d_sae, d_in]``)."""

    def __init__(self, clt: CrossLayerTranscoder, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> None:
        cfg = clt.config
        self.clt, self.cfg = clt, cfg
        n = clt.n_layers
        d_in, d_out = xs[0].shape[1], ys[0].shape[1]

        def scale_of(rows: torch.Tensor) -> float:
            return math.sqrt(rows.shape[1]) / float(rows.float().norm(dim=-1).mean().clamp_min(1e-12)) \
                if cfg.normalize_input else 1.0

        clt.input_scale_ = torch.tensor([scale_of(x) for x in xs], dtype=torch.float64)
        clt.output_scale_ = torch.tensor([scale_of(y) for y in ys], dtype=torch.float64)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + zlib.crc32(",".join(clt.hooks).encode()))
        p: dict[str, torch.Tensor] = {}
        for i in range(n):
            W_dec = torch.randn(cfg.d_sae, (n - i) * d_out, generator=g)
            p[f"W_dec.{i}"] = W_dec / W_dec.norm(dim=-1, keepdim=True)
            p[f"W_enc.{i}"] = torch.randn(cfg.d_sae, d_in, generator=g) / math.sqrt(d_in)
            p[f"b_enc.{i}"] = torch.zeros(cfg.d_sae)
        for j in range(n):
            p[f"b_dec.{j}"] = (ys[j].float() * float(clt.output_scale_[j])).mean(0)
            if clt.skip:
                p[f"W_skip.{j}"] = torch.zeros(d_in, d_out)
        self.p = p
        self.d_out = d_out
        for t in p.values():
            t.requires_grad_(True)
        self.opt = torch.optim.Adam(list(p.values()), lr=cfg.lr, fused=True)
        self.steps = 0
        self.total = max(1, cfg.n_tokens // cfg.batch_size)
        self.since_fired = torch.zeros(n, cfg.d_sae, dtype=torch.long)
        self.history: dict[str, list[float]] = {k: [] for k in ("loss", "ev", "l0", "dead_fraction")}
        self.bufs: dict[str, torch.Tensor] = {}  # pre-activation and gradient storage reused from step to step

    @property
    def done(self) -> bool:
        return self.steps >= self.total

    @torch.no_grad()
    def step(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> dict[str, float]:
        """One Adam step on a batch of every layer's MLP input and output rows."""
        from interp.features.topk import _buffer, _sorted_topk, sparse_back, sparse_decode

        cfg, clt, p = self.cfg, self.clt, self.p
        n, d = clt.n_layers, self.d_out
        lr = cfg.lr * min(1.0, (self.steps + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = [xs[i].float() * float(clt.input_scale_[i]) for i in range(n)]
        y = [ys[j].float() * float(clt.output_scale_[j]) for j in range(n)]
        B = x[0].shape[0]
        out = [p[f"b_dec.{j}"].detach().expand(B, -1).clone() for j in range(n)]
        acts = []
        for i in range(n):
            pre = torch.addmm(p[f"b_enc.{i}"], x[i], p[f"W_enc.{i}"].T, out=_buffer(self.bufs, f"pre.{i}", (B, cfg.d_sae)))
            vals, idx = _sorted_topk(pre, cfg.k)
            a = vals.clamp_min(0)
            acts.append((idx, vals, a))
            cat = sparse_decode(idx, a, p[f"W_dec.{i}"])  # [B, (n - i) * d]
            for j in range(i, n):
                out[j] += cat[:, (j - i) * d:(j - i + 1) * d]
            if clt.skip:
                out[i].addmm_(x[i], p[f"W_skip.{i}"])
        g_out, fvus = [], []
        for j in range(n):
            err = out[j] - y[j]
            var = float((y[j] - y[j].mean(0)).pow(2).sum()) / B
            fvus.append(float(err.pow(2).sum()) / B / max(var, 1e-12))
            g_out.append(err * (2.0 / (B * max(var, 1e-12) * n)))
        grads: dict[str, torch.Tensor] = {}
        for i in range(n):
            idx, vals, a = acts[i]
            sparse_back(grads, (f"W_dec.{i}", f"W_enc.{i}", f"b_enc.{i}"), idx, vals, a,
                        torch.cat(g_out[i:], dim=1), p[f"W_dec.{i}"], x[i], self.bufs)
        for j in range(n):
            grads[f"b_dec.{j}"] = g_out[j].sum(0)
            if clt.skip:
                grads[f"W_skip.{j}"] = x[j].T @ g_out[j]
        for name, t in p.items():
            t.grad = grads[name]
        for i in range(n):  # decoder rows stay on the unit sphere: the gradient's radial part removed
            W, gW = p[f"W_dec.{i}"], grads[f"W_dec.{i}"]
            gW.addcmul_(torch.linalg.vecdot(gW, W).unsqueeze(-1), W, value=-1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for i in range(n):
            W = p[f"W_dec.{i}"]
            W.div_(torch.linalg.vector_norm(W, dim=-1, keepdim=True).clamp_min_(1e-12))
        self.since_fired += B
        for i in range(n):
            idx, _, a = acts[i]
            self.since_fired[i, idx[a > 0]] = 0
        self.steps += 1
        fvu = sum(fvus) / n
        stats = {"loss": fvu, "ev": 1.0 - fvu, "l0": float(sum(float((ac[2] > 0).sum()) for ac in acts)) / (B * n),
                 "dead_fraction": float((self.since_fired >= cfg.dead_after).float().mean())}
        for k, v in stats.items():
            self.history[k].append(v)
        return stats

    def finish(self) -> CrossLayerTranscoder:
        clt, p, n = self.clt, self.p, self.clt.n_layers
        clt.W_enc_ = [p[f"W_enc.{i}"].detach().T.contiguous() for i in range(n)]
        clt.b_enc_ = [p[f"b_enc.{i}"].detach().clone() for i in range(n)]
        clt.W_dec_ = [p[f"W_dec.{i}"].detach().clone() for i in range(n)]
        clt.b_dec_ = torch.stack([p[f"b_dec.{j}"].detach() for j in range(n)])
        clt.W_skip_ = torch.stack([p[f"W_skip.{j}"].detach() for j in range(n)]) if clt.skip else None
        clt.history_ = self.history
        return clt


__all__ = ["CLTFitter", "CrossLayerTranscoder"]
