"""Train dictionaries on the fly from the model: no activation cache on disk (as sparsify does).

:func:`pack_tokens` cuts texts into fixed windows (no padding); :func:`activation_stream` runs the model over
them in batches, stops each forward after the last hook it needs, keeps a buffer of many batches' rows and
yields shuffled batches from it (the rows of every hook shuffled with the same permutation, so a transcoder's
input and output rows stay paired); :func:`train_on_model` trains several SAEs and transcoders at once from
one stream, each with the same training step as :meth:`SparseAutoencoder.fit`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

import torch

from interp.errors import BadInputError
from interp.features.sae import SparseAutoencoder
from interp.features.transcoder import Transcoder
from interp.models import Model
from interp.progress import progress as progress_bar


def pack_tokens(model: Model, inputs: Sequence[str], *, context: int = 128, separator: int | None = None
                ) -> torch.Tensor:
    """``[n, context]`` token windows: the texts ``inputs`` tokenized, joined by ``separator`` (default: the EOS token) and
    cut into consecutive windows (the last partial window is dropped).

    Example:
        >>> import interp
        >>> pack_tokens(interp.load_model("smollm2-135m"), ["Hello world. " * 40], context=16).shape[1]
        16
    """
    tok = model.tokenizer
    if tok is None:
        raise BadInputError("the model has no tokenizer; pass token ids instead of texts")
    sep = separator if separator is not None else tok.eos_token_id
    ids: list[int] = []
    for text in inputs:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(int(sep))
    n = len(ids) // context
    if n == 0:
        raise BadInputError(f"the texts hold {len(ids)} tokens, fewer than one window of {context}")
    return torch.tensor(ids[: n * context], dtype=torch.long).view(n, context)


def activation_stream(model: Model, inputs: torch.Tensor, *, hooks: Sequence[str], batch_size: int = 1024,
                      seqs_per_forward: int = 16, buffer_batches: int = 32, seed: int = 0,
                      epochs: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled ``{hook: [batch_size, d]}`` rows from forwards of ``inputs [n, context]`` token windows (visited in a
    seeded random order, again each epoch; ``epochs=None``: forever). Each forward stops after the last hook.
    Rows are buffered until ``buffer_batches * batch_size`` are held; then half the buffer is served in random
    order, and refilled."""
    ids = inputs
    if ids.dim() != 2 or ids.shape[0] == 0:
        raise BadInputError(f"ids must be [n, context] token windows, got {tuple(ids.shape)}")
    g = torch.Generator().manual_seed(seed)
    cap = max(2, buffer_batches) * batch_size
    buf: dict[str, torch.Tensor] = {}
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(ids.shape[0], generator=g)
        for i in range(0, ids.shape[0], seqs_per_forward):
            batch = ids[order[i:i + seqs_per_forward]].to(model.device)
            with torch.no_grad():
                acts = model.run(batch, capture=list(hooks), stop_early=True).trace.activations
            for h in hooks:
                rows = acts[h].reshape(-1, acts[h].shape[-1]).float().cpu()
                buf[h] = rows if h not in buf else torch.cat([buf[h], rows])
            n = buf[hooks[0]].shape[0]
            if n >= cap:
                perm = torch.randperm(n, generator=g)
                serve = (n // 2) // batch_size * batch_size
                for j in range(0, serve, batch_size):
                    sel = perm[j:j + batch_size]
                    yield {h: buf[h][sel] for h in hooks}
                keep = perm[serve:]
                buf = {h: v[keep] for h, v in buf.items()}
        epoch += 1
    if buf:  # what is left at the end
        n = buf[hooks[0]].shape[0]
        perm = torch.randperm(n, generator=g)
        for j in range(0, n - batch_size + 1, batch_size):
            yield {h: buf[h][perm[j:j + batch_size]] for h in hooks}


def train_on_model(model: Model, inputs: Sequence[str] | torch.Tensor, *,
                   dictionaries: Mapping[str, SparseAutoencoder], n_tokens: int | None = None, context: int = 128,
                   seqs_per_forward: int = 16, buffer_batches: int = 32, seed: int = 0,
                   max_seconds: float | None = None, progress: bool | None = None) -> dict[str, SparseAutoencoder]:
    """Train SAEs and transcoders together from forwards of the model (no disk cache); returns them fitted.

    Args:
        model: the model.
        inputs: texts (packed into ``context``-token windows by :func:`pack_tokens`) or ``[n, context]`` ids.
        dictionaries: name → an unfitted :class:`SparseAutoencoder` (its ``hook`` is read) or
            :class:`Transcoder` (reads ``hook``, predicts ``out_hook``). All must share ``batch_size``.
        n_tokens: rows each one trains on (default: each one's ``config.n_tokens``); the windows are revisited
            in a new order when they run out.
        max_seconds: stop early after this long (each keeps what it learned; ``history_["tokens"]`` says how far).
        progress: a bar over the steps.

    Example:
        >>> import interp
        >>> from interp.features import SAEConfig, SparseAutoencoder, train_on_model
        >>> m = interp.load_model("smollm2-135m")
        >>> cfg = SAEConfig(d_sae=64, k=4, batch_size=128, n_tokens=256)
        >>> out = train_on_model(m, ["The cat sat on the mat. " * 30], dictionaries={"r": SparseAutoencoder(cfg, hook="resid_post.1")},
        ...                      context=32, buffer_batches=2, progress=False)
        >>> out["r"].fitted
        True
    """
    from interp.features.points import canonical_hook
    from interp.features.train import Fitter

    if not dictionaries:
        raise BadInputError("dictionaries is empty")
    sizes = {d.config.batch_size for d in dictionaries.values()}
    if len(sizes) != 1:
        raise BadInputError(f"all dictionaries must share batch_size, got {sorted(sizes)}")
    batch_size = sizes.pop()
    for d in dictionaries.values():
        if not d.hook:
            raise BadInputError("every dictionary needs its hook= (and a transcoder its out_hook=)")
        d.hook = canonical_hook(d.hook, model)
        if isinstance(d, Transcoder):
            if not d.out_hook:
                raise BadInputError("a Transcoder needs out_hook= (e.g. 'mlp_out.4')")
            d.out_hook = canonical_hook(d.out_hook, model)
        d.model_id = d.model_id or model.name
    hooks = sorted({h for d in dictionaries.values()
                    for h in ([d.hook, d.out_hook] if isinstance(d, Transcoder) else [d.hook])})
    ids = inputs if isinstance(inputs, torch.Tensor) else pack_tokens(model, list(inputs), context=context)
    stream = activation_stream(model, ids, hooks=hooks, batch_size=batch_size, seqs_per_forward=seqs_per_forward,
                               buffer_batches=buffer_batches, seed=seed)
    steps = {name: max(1, (n_tokens or d.config.n_tokens) // batch_size) for name, d in dictionaries.items()}
    fitters: dict[str, Fitter] = {}
    bar = progress_bar(total=max(steps.values()), desc="dictionaries", enabled=progress, unit="step")
    start = time.perf_counter()
    try:
        for step, rows in enumerate(stream):
            for name, d in dictionaries.items():
                if step >= steps[name]:
                    continue
                y = rows[d.out_hook] if isinstance(d, Transcoder) else None
                if name not in fitters:
                    fitters[name] = Fitter(d, rows[d.hook], y)
                stats = fitters[name].step(rows[d.hook], y, batch=step + 1)
                if name == next(iter(dictionaries)) and step % 10 == 0:
                    bar.set_postfix(EV=f"{stats['ev']:.3f}", L0=f"{stats['l0']:.1f}",
                                    dead=f"{stats['dead_fraction']:.2f}")
            bar.update(1)
            if step + 1 >= max(steps.values()):
                break
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    finally:
        bar.close()
    if not fitters:
        raise BadInputError(f"fewer token rows than batch_size={batch_size}: add text or lower batch_size")
    return {name: fitters[name].finish() for name in dictionaries if name in fitters}


__all__ = ["activation_stream", "pack_tokens", "train_on_model"]
