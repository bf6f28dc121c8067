"""DecoderLens (Langedijk et al. 2023): let an encoder–decoder's decoder cross-attend to an *intermediate* encoder
layer and read what it generates, layer by layer.

For each encoder layer ``L`` (``embed`` = the embeddings, then each block's output) the encoder's final norm is
applied to that layer's residual stream (as if the remaining blocks were skipped) and the decoder generates from
it greedily (bounded length); with references, the per-token loss of each reference token is also computed with
the decoder teacher-forced on the reference. At the last layer this is the model's own generation, exactly.

Example:
    >>> from interp.lens import decoder_lens
    >>> from interp.models.encdec_toy import load_toy_encdec, toy_examples
    >>> ed = load_toy_encdec()
    >>> ex = toy_examples(8, seed=3)
    >>> res = decoder_lens(ed, [s for s, _ in ex], references=[t for _, t in ex], progress=False)
    >>> res.layer_labels[0], float(res.accuracy[-1]) > float(res.accuracy[0])
    ('embed', True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import BadInputError, bad_value
from interp.models.encdec import EncoderDecoder
from interp.plot import heatmap, layer_curves
from interp.progress import progress as progress_bar
from interp.trace.results import Result

if TYPE_CHECKING:
    from plotly.graph_objects import Figure


@dataclass(frozen=True, repr=False)
class DecoderLensResult(Result):
    """What the decoder generates from each encoder layer.

    Views: ``"table"`` (encoder layer x input: the generated text in each cell, coloured by its mean reference loss,
    or by exact match without references), ``"accuracy"`` (per-layer exact-match accuracy and mean loss).

    Attributes:
        loss: ``[layer, item]`` mean per-token cross-entropy of the reference (NaN without references).
        token_loss: ``[layer, item, ref_pos]`` each reference token's cross-entropy (NaN past its end).
        correct: ``[layer, item]`` the generation equals the reference (False without references).
        accuracy: ``[layer]`` mean of ``correct``.
        outputs: ``[layer][item]`` the generated texts.
        inputs / references: the source texts and the references ("" without).
        layer_labels: ``embed``, then the encoder blocks ``0 .. n-1``.
        model_id: the model.
    """

    AXES = {"loss": ("layer", "item"), "token_loss": ("layer", "item", "ref_pos"), "correct": ("layer", "item"),
            "accuracy": ("layer",)}
    VIEWS = ("table", "accuracy")
    JSON_SKIP = ("token_loss",)

    loss: torch.Tensor
    token_loss: torch.Tensor
    correct: torch.Tensor
    accuracy: torch.Tensor
    outputs: tuple[tuple[str, ...], ...]
    inputs: tuple[str, ...]
    references: tuple[str, ...]
    layer_labels: tuple[str, ...]
    model_id: str = ""

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(self.layer_labels), "item": [f"{i}: {s}" for i, s in enumerate(self.inputs)]}

    def headline(self) -> dict[str, Any]:
        acc = self.accuracy
        out: dict[str, Any] = {"items": len(self.inputs), "acc_first": float(acc[0]), "acc_last": float(acc[-1])}
        if float(acc[-1]) > 0:
            reach = int((acc >= 0.9 * acc[-1]).nonzero()[0])
            out["reaches_90pct_of_last_at"] = self.layer_labels[reach]
        return out

    def _view_table(self, max_items: int = 20) -> Figure:
        n = min(max_items, len(self.inputs))
        has_ref = any(self.references)
        z = self.loss[:, :n] if has_ref else self.correct[:, :n].float()
        cells = [[f"{self.outputs[L][i]!r}" for i in range(n)] for L in range(len(self.layer_labels))]
        return heatmap(z, x_labels=[self.inputs[i] for i in range(n)], y_labels=list(self.layer_labels),
                       x_title="input", y_title="encoder layer", cell_text=cells,
                       colorbar_title="loss" if has_ref else "exact", rows_top_down=False,
                       title="DecoderLens: what the decoder generates from each encoder layer")

    def _view_accuracy(self) -> Figure:
        series = {"exact-match accuracy": self.accuracy}
        if any(self.references):
            loss = self.loss.nanmean(1)
            series["mean loss / max"] = loss / loss.max() if float(loss.max()) > 0 else loss
        return layer_curves(series, x_labels=list(self.layer_labels), x_title="encoder layer",
                            title="DecoderLens: per-layer accuracy (and loss scaled to its maximum)")


def decoder_lens(
    model: EncoderDecoder,
    inputs: str | Sequence[str],
    *,
    references: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    progress: bool | None = None,
) -> DecoderLensResult:
    """Generation and reference loss with the decoder reading each encoder layer.

    Args:
        model: an :class:`~interp.models.encdec.EncoderDecoder` with a tokenizer.
        inputs: a source text or texts.
        references: the expected output of each input (for the loss and exact match), or ``None``.
        layers: encoder layers to read: ``0`` is the embeddings, ``L`` the output of block ``L - 1``; negative from
            the end (``-1`` = the encoder's output). Default: all ``n_layers + 1``.
        max_new_tokens: generation bound.
        batch_size: inputs per forward.
        progress: a progress bar over layers (``None``: follow :func:`interp.quiet`).

    Returns:
        :class:`DecoderLensResult`.

    Raises:
        BadInputError: no inputs, a model without tokenizer, references of another length, a bad layer.
    """
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts:
        raise bad_value("inputs", inputs, "a text or a non-empty list of texts")
    tok = model.tokenizer
    if tok is None:
        raise BadInputError(f"{model.name!r} has no tokenizer: DecoderLens reads texts")
    refs = list(references) if references is not None else None
    if refs is not None and len(refs) != len(texts):
        raise BadInputError(f"{len(refs)} references for {len(texts)} inputs")
    n = model.n_layers["encoder"] + 1
    chosen = list(range(n)) if layers is None else [int(L) for L in layers]
    for L in chosen:
        if not -n <= L < n:
            raise bad_value("layer", L, f"{-n}..{n - 1} (0: embeddings, {n - 1}: the encoder's output)")
    chosen = [L % n for L in chosen]
    loss = torch.full((len(chosen), len(texts)), math.nan)
    outputs: list[list[str]] = [[] for _ in chosen]
    tok_losses: list[list[torch.Tensor]] = [[] for _ in chosen]
    starts = list(range(0, len(texts), batch_size))
    states_by_batch = []
    for s in starts:
        enc = tok(texts[s:s + batch_size], padding=True, return_tensors="pt")
        states_by_batch.append((enc.attention_mask, model.encoder_states(enc.input_ids, enc.attention_mask)))
    for k, L in enumerate(progress_bar(chosen, enabled=progress, desc="decoder lens")):
        for s, (mask, states) in zip(starts, states_by_batch, strict=True):
            gen = model.generate_from(states[L], mask, max_new_tokens=max_new_tokens)
            outputs[k] += [t.strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
            if refs is not None:
                lab = tok(refs[s:s + batch_size], padding=True, return_tensors="pt").input_ids
                lab[lab == tok.pad_token_id] = -100
                tl = model.token_loss_from(states[L], lab, mask)
                tok_losses[k].append(tl)
                loss[k, s:s + len(lab)] = tl.nanmean(1)
    width = max((t.shape[1] for row in tok_losses for t in row), default=0)
    token_loss = torch.full((len(chosen), len(texts), width), math.nan)
    for k, row in enumerate(tok_losses):
        for s, t in zip(starts, row, strict=False):  # no references: no rows
            token_loss[k, s:s + t.shape[0], :t.shape[1]] = t
    correct = torch.tensor([[refs is not None and o == r.strip() for o, r in zip(outs, refs or [""] * len(texts),
                                                                                 strict=True)] for outs in outputs])
    labels = tuple("embed" if L == 0 else str(L - 1) for L in chosen)
    return DecoderLensResult(loss=loss, token_loss=token_loss, correct=correct, accuracy=correct.float().mean(1),
                             outputs=tuple(tuple(o) for o in outputs), inputs=tuple(texts),
                             references=tuple(refs) if refs is not None else ("",) * len(texts), layer_labels=labels,
                             model_id=model.name)


__all__ = ["DecoderLensResult", "decoder_lens"]
