"""A small trained encoder–decoder to study offline: a T5-style model on a synthetic compositional task.

The task: a source ``"<op> d1 d2 ... dn"`` (``op`` one of ``copy``, ``rev``, ``inc``, ``revinc``; 3-6 digits)
maps to the digits copied, reversed, each incremented mod 10, or both (``"revinc 3 1 9"`` → ``"0 2 4"``). The
answer needs the operation (one token) composed with every digit *and its position*: T5's embeddings carry no
position (its relative position bias lives in the attention layers), so the decoder cannot do the task from
the embeddings alone, which is what DecoderLens' layer 0 reads.

``data/encdec/train_toy_t5.py`` trains it (a few CPU minutes) into ``data/encdec/toy-t5`` (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``metrics.json``); :func:`load_toy_encdec` loads it.

Example:
    >>> from interp.models.encdec_toy import load_toy_encdec, toy_examples
    >>> ed = load_toy_encdec()
    >>> toy_examples(2, seed=1)
    [('rev 4 1 7', '7 1 4'), ('revinc 6 3 1 7 0 6', '7 1 8 2 4 7')]
    >>> ed.metrics["heldout_exact_match"]
    1.0
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from interp.errors import BadInputError
from interp.models.encdec import EncoderDecoder

OPS = ("copy", "rev", "inc", "revinc")
DIGITS = tuple(str(d) for d in range(10))
SPECIAL = ("<pad>", "</s>", "<unk>")
TOY_DIR = Path(__file__).resolve().parents[2] / "data" / "encdec" / "toy-t5"


def answer(op: str, digits: list[str]) -> list[str]:
    """The target digits of ``op`` applied to ``digits``."""
    out = [str((int(d) + 1) % 10) for d in digits] if "inc" in op else list(digits)
    return out[::-1] if op.startswith("rev") else out


def toy_examples(n: int, *, seed: int = 0, min_len: int = 3, max_len: int = 6) -> list[tuple[str, str]]:
    """``n`` (source, target) pairs of the task, drawn with ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        op = rng.choice(OPS)
        digits = [rng.choice(DIGITS) for _ in range(rng.randint(min_len, max_len))]
        out.append((" ".join([op, *digits]), " ".join(answer(op, digits))))
    return out


def toy_tokenizer() -> Any:
    """A word-level tokenizer over the task's words: ``<pad>`` = 0 (T5's decoder start), ``</s>`` = 1 (end)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIAL, *OPS, *DIGITS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def load_toy_encdec(path: str | Path = TOY_DIR) -> EncoderDecoder:
    """The trained toy T5 (see the module docstring) as an :class:`~interp.models.encdec.EncoderDecoder`; its
    ``metrics`` attribute holds the recorded training run and accuracy."""
    from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration

    src = Path(path)
    if not (src / "config.json").is_file():
        raise BadInputError(f"no toy encoder-decoder in {str(src)!r}; train it with data/encdec/train_toy_t5.py")
    hf = T5ForConditionalGeneration.from_pretrained(str(src), use_safetensors=True)
    tok = PreTrainedTokenizerFast.from_pretrained(str(src))
    ed = EncoderDecoder(hf, tok, name="toy-t5")
    metrics = src / "metrics.json"
    ed.metrics = json.loads(metrics.read_text()) if metrics.is_file() else {}  # type: ignore[attr-defined]
    return ed


__all__ = ["OPS", "TOY_DIR", "answer", "load_toy_encdec", "toy_examples", "toy_tokenizer"]
