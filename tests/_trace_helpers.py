"""Tiny random models (``char_llama``) with a character-level tokenizer, for the trace / store / capture tests.

Importable from a subprocess too (the crash/resume test rebuilds the same model there): the
weights depend only on ``seed``, so the model fingerprint is the same in every process.
"""

from __future__ import annotations

import torch

TEXTS = [
    "the cat sat on the mat",
    "hello",
    "a b c d e f g",
    "interpretability!",
    "xy",
    "Grace Hopper wrote the first compiler.",
    "0123456789",
    "zz top",
    "q",
    "to be or not to be",
    "end of the list.",
]


def char_tokenizer() -> object:
    """A ``PreTrainedTokenizerFast`` with one token per printable ASCII character."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i in range(32, 127):
        vocab[chr(i)] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def char_llama(seed: int = 0, name: str = "char-llama"):  # -> interp.Model
    """A 2-layer Llama (GQA 4/2 heads, d_model 64) with random weights fixed by ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import interp

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=128, max_position_embeddings=256)
    hf = LlamaForCausalLM(cfg)
    return interp.from_hf(hf, char_tokenizer(), name=name)


def n_real_tokens(model, text: str, max_tokens: int | None = None) -> int:
    _ids, mask = model.tokenize([text], max_tokens=max_tokens)
    return int(mask.sum())
