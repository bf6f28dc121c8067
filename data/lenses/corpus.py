"""The shipped English corpus (``data/corpus/english.txt``) split and packed into model-sized chunks.

Paragraphs are split deterministically: every 20th paragraph is held out (``split="test"``), the rest
train (``split="train"``). Consecutive paragraphs are packed, separated by newlines, into chunks of at
most ``max_tokens`` tokens, so captures waste no padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "english.txt"
HOLD_OUT_EVERY = 20


def corpus_chunks(tokenizer: Any, split: str = "train", max_tokens: int = 128) -> list[str]:
    """Texts of at most ``max_tokens`` tokens each, in corpus order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paras = CORPUS.read_text(encoding="utf-8").splitlines()
    paras = [p for i, p in enumerate(paras) if (i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1) == (split == "test")]
    lengths = [len(ids) for ids in tokenizer(paras, add_special_tokens=False)["input_ids"]]
    chunks, cur, n = [], [], 0
    for p, k in zip(paras, lengths, strict=True):
        if k > max_tokens:  # a long paragraph is left whole and truncated by the capture
            chunks.append(p)
            continue
        if n + k + 1 > max_tokens and cur:
            chunks.append("\n".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += k + 1
    if cur:
        chunks.append("\n".join(cur))
    return chunks
