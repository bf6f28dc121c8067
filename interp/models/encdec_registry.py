"""Registered encoder–decoders and their loader: :data:`ENCDEC_MODELS` (short name → Hugging Face hub id) and
:func:`load_encdec` (a registered name, ``"toy-t5"``, a hub id or a local directory → :class:`EncoderDecoder`).

Example:
    >>> from interp.models.encdec_registry import ENCDEC_MODELS
    >>> ENCDEC_MODELS["t5-small"]
    'google-t5/t5-small'
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from interp.errors import unknown_name
from interp.models.encdec import EncoderDecoder, encdec_table

ENCDEC_MODELS: dict[str, str] = {
    "t5-small": "google-t5/t5-small",
    "mt5-small": "google/mt5-small",
    "bart-base": "facebook/bart-base",
    "mbart-large-50": "facebook/mbart-large-50",
    "marian-en-de": "Helsinki-NLP/opus-mt-en-de",
    "marian-en-fr": "Helsinki-NLP/opus-mt-en-fr",
}
"""Registered encoder–decoders: a short name → its Hugging Face hub id (loaded with :func:`load_encdec`, from the
hub or its local cache). ``toy-t5`` (shipped in ``data/encdec``) loads offline."""


def load_encdec(name: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, revision: str | None = None
                ) -> EncoderDecoder:
    """An encoder–decoder by registered name (:data:`ENCDEC_MODELS`, ``"toy-t5"``), hub id or local directory.

    The hub is asked as :func:`interp.load_model` asks it (once; a cached model loads offline): an unreachable hub
    raises :class:`~interp.models.HubUnreachableError`.

    Raises:
        UnknownNameError: not a registered name, hub id or directory; or a checkpoint that is no T5 / mT5 / BART /
            mBART / Marian model.

    Example:
        >>> load_encdec("toy-t5").table.family
        't5'
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    from interp.models.registry import hub_source

    key = str(name)
    if key == "toy-t5":
        from interp.models.encdec_toy import load_toy_encdec

        return load_toy_encdec()
    hub_id = ENCDEC_MODELS.get(key, key)
    if Path(key).is_dir():
        path, kw = key, {}
    elif key in ENCDEC_MODELS or "/" in key:
        path, kw = hub_id, hub_source(hub_id, revision)
    else:
        raise unknown_name("encoder-decoder", key, [*ENCDEC_MODELS, "toy-t5"],
                           hint="or a hub id 'owner/name' or a local directory")
    if revision is not None:
        kw = {**kw, "revision": revision}
    cfg = AutoConfig.from_pretrained(path, **kw)
    encdec_table(str(cfg.model_type))  # an encoder-decoder family, or the error naming them
    hf = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype, **kw)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    return EncoderDecoder(hf, tok, name=key, source=hub_id if path == hub_id else key)


__all__ = ["ENCDEC_MODELS", "load_encdec"]
