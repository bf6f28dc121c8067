"""Which language the latent space speaks (Wendler et al. 2024, "Do Llamas Work in English?"; "Beyond
English-Centric LLMs"): the logit (or tuned) lens reading of every layer at a prompt's last token, summed over
each language's tokens.

A prompt asks for a word in a *target* language (translation ``Français: "fleur" - Deutsch: "``, repetition
``Deutsch: "Blume" - Deutsch: "``, cloze ``A "___" grows in a garden... Answer: "``). Each language's token set
is the first token of the answer word's spellings in that language (``w``, ``" w"``, capitalised, lower case:
the tokens that can start it), taken from the tokenizer; a token two languages share is dropped from both,
so the sets are disjoint and the masses of one reading sum to at most 1. ``mode="vocab"`` uses one set per
language instead: the first tokens of every word of that language in the word list.

The prompt sets ship in ``data/lens/latent_language.jsonl`` (built offline by
``data/lens/build_latent_language.py`` from ``data/lens/words.tsv``: 100 concepts in English, French, German,
Spanish and Italian, and cloze sentences): 240 translations (12 per ordered pair), 100 repetitions and 149 clozes
asked in the target language (50 English, 24 French, 30 German, 24 Spanish, 21 Italian).

Example:
    >>> import interp
    >>> from interp.lens import latent_language, load_language_prompts
    >>> m = interp.load_model("smollm2-135m")
    >>> items = load_language_prompts("repetition", languages=["en", "fr"])[:4]
    >>> res = latent_language(m, items, progress=False)
    >>> tuple(res.mass.shape[1:]), bool((res.mass.sum(-1) <= 1 + 1e-5).all())
    ((30, 4, 2), True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.errors import BadInputError, ModelMismatchError, bad_value
from interp.hooks import Intervention
from interp.lens.latent_language_result import LatentLanguageResult
from interp.lens.tuned_lens import TunedLens, as_tuned_lens
from interp.models import Model
from interp.progress import progress as progress_bar

DATA = Path(__file__).resolve().parents[2] / "data" / "lens"
TASKS = ("translation", "repetition", "cloze")
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano"}


@dataclass(frozen=True)
class LanguageItem:
    """One prompt: its text, task, the language of its word (``source``), the language the answer is expected in
    (``target``), the concept, and the concept's word in each language (``{"en": "flower", "fr": "fleur"}``)."""

    prompt: str
    target: str
    words: Mapping[str, str] = field(default_factory=dict)
    task: str = "translation"
    source: str = ""
    concept: str = ""


def load_language_prompts(task: str = "all", *, languages: Sequence[str] | None = None,
                          path: str | os.PathLike[str] | None = None) -> list[LanguageItem]:
    """The shipped prompt set (or one in the same JSON-lines format at ``path``).

    Args:
        task: ``"translation"``, ``"repetition"``, ``"cloze"`` or ``"all"``.
        languages: keep only items whose source and target are among these (and their words in these only).
        path: a ``.jsonl`` file of ``{"prompt", "task", "source", "target", "concept", "words"}`` objects.

    Example:
        >>> from interp.lens import load_language_prompts
        >>> items = load_language_prompts("translation", languages=["fr", "de"])
        >>> len(items), items[0].source, items[0].target, items[0].words
        (24, 'fr', 'de', {'fr': 'chien', 'de': 'Hund'})
    """
    if task not in (*TASKS, "all"):
        raise bad_value("task", task, " or ".join(repr(t) for t in (*TASKS, "all")))
    src = Path(path) if path is not None else DATA / "latent_language.jsonl"
    if not src.is_file():
        raise BadInputError(f"no prompt set at {str(src)!r} (build it with data/lens/build_latent_language.py)")
    items = []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            item = LanguageItem(prompt=d["prompt"], target=d["target"], words=dict(d.get("words", {})),
                                task=d.get("task", "translation"), source=d.get("source", ""),
                                concept=d.get("concept", ""))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInputError(f"{src}:{n} is not a prompt item ({e})") from None
        if task != "all" and item.task != task:
            continue
        if languages is not None:
            if item.target not in languages or (item.source and item.source not in languages):
                continue
            item = LanguageItem(item.prompt, item.target, {k: v for k, v in item.words.items() if k in languages},
                                item.task, item.source, item.concept)
        items.append(item)
    return items


def word_token_ids(model: Model, word: str) -> set[int]:
    """The tokens that can start ``word`` as the model writes it: the first token of ``word``, ``" " + word``, and
    their capitalised and lower-case forms (unknown and special tokens left out)."""
    tok = model.tokenizer
    if tok is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer: pass token_sets as token ids")
    special = set(tok.all_special_ids)
    out = set()
    for w in {word, word.lower(), word[:1].upper() + word[1:]}:
        for s in (w, " " + w):
            ids = tok.encode(s, add_special_tokens=False)
            if ids and ids[0] not in special:
                out.add(int(ids[0]))
    return out


def disjoint(sets: Mapping[str, set[int]]) -> dict[str, set[int]]:
    """Each set less the tokens that any other set also holds (so the sets are disjoint)."""
    return {k: {t for t in v if not any(t in w for j, w in sets.items() if j != k)} for k, v in sets.items()}


def language_token_sets(model: Model, *, words: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """One disjoint token set per language: the tokens that can start any of its words (:func:`word_token_ids`).

    Example:
        >>> import interp
        >>> from interp.lens import language_token_sets
        >>> m = interp.load_model("smollm2-135m")
        >>> sets = language_token_sets(m, words={"en": ["flower", "house"], "fr": ["fleur", "maison"]})
        >>> sorted(m.tokenizer.decode([t]) for t in sets["fr"])
        [' Fle', ' Ma', ' fle', ' ma', 'Ma', 'f', 'ma']
    """
    raw = {lang: set().union(*(word_token_ids(model, w) for w in ws)) if ws else set() for lang, ws in words.items()}
    return {k: sorted(v) for k, v in disjoint(raw).items()}


def latent_language(
    model: Model,
    inputs: str | Sequence[LanguageItem] = "all",
    *,
    languages: Sequence[str] | None = None,
    lens: str | TunedLens | Sequence[str | TunedLens] = "logit",
    mode: str = "word",
    token_sets: Mapping[str, Sequence[int | str]] | None = None,
    batch_size: int = 8,
    interventions: Sequence[Intervention] = (),
    progress: bool | None = None,
) -> LatentLanguageResult:
    """Probability mass per language of every layer's lens reading at each prompt's last token.

    Args:
        model: a decoder with an unembedding and a tokenizer (or pass ``token_sets`` as ids).
        inputs: a shipped prompt set (``"translation"``, ``"repetition"``, ``"cloze"``, ``"all"``) or
            :class:`LanguageItem` s (:func:`load_language_prompts`).
        languages: the languages measured (default: the keys of ``token_sets``, else those of the items' words,
            English first).
        lens: ``"logit"``, ``"tuned"`` (the tuned lens saved for this model, :func:`~interp.lens.find_tuned_lens`),
            a :class:`~interp.lens.TunedLens` or its directory, or a list of these (one reading each).
        mode: ``"word"`` (per item: the answer word's tokens in each language) or ``"vocab"`` (per language: the
            tokens of all its words among the items).
        token_sets: ``{language: tokens}`` (ids or one-token strings) used for every item instead (``mode`` is
            then ``"vocab"``); made disjoint like the others.
        batch_size: prompts per forward.
        interventions: :mod:`interp.hooks` edits applied during the forwards.
        progress: a progress bar over batches (``None``: follow :func:`interp.quiet`).

    Returns:
        :class:`LatentLanguageResult` with ``mass[lens, layer, item, language]``.

    Raises:
        BadInputError: no items, an unknown mode, a model without an unembedding, a token that is not one token.
    """
    items = load_language_prompts(inputs) if isinstance(inputs, str) else list(inputs)
    if not items or not all(isinstance(it, LanguageItem) for it in items):
        raise bad_value("inputs", inputs, "a shipped prompt set name or a non-empty list of LanguageItem")
    if mode not in ("word", "vocab"):
        raise bad_value("mode", mode, "'word' or 'vocab'")
    W_U = model.weights.W_U
    if W_U is None:
        raise BadInputError(f"model {model.name!r} has no unembedding: no lens reading")
    if languages is None and token_sets is not None:
        languages = list(token_sets)
    if languages is None:
        seen = dict.fromkeys(["en"] if any("en" in it.words for it in items) else [])
        for it in items:
            seen.update(dict.fromkeys([*it.words, it.target]))
        languages = list(seen)
    langs = tuple(languages)
    if not langs:
        raise bad_value("languages", languages, "at least one language code")
    lenses = _lenses(model, lens)
    vocab = W_U.shape[1]

    # token sets: index [item, language, K] into the vocabulary with a validity mask
    if token_sets is not None:
        mode = "vocab"
        given = {k: {_one_id(model, t, vocab) for t in v} for k, v in token_sets.items()}
        fixed = disjoint({lang: given.get(lang, set()) for lang in langs})
        per_item = [fixed] * len(items)
    elif mode == "vocab":
        fixed = disjoint({lang: set().union(*(word_token_ids(model, it.words[lang]) for it in items
                                              if lang in it.words)) for lang in langs})
        per_item = [fixed] * len(items)
    else:
        per_item = [disjoint({lang: word_token_ids(model, it.words[lang]) if lang in it.words else set()
                              for lang in langs}) for it in items]
    k_max = max(1, max(len(s) for sets in per_item for s in sets.values()))
    idx = torch.zeros(len(items), len(langs), k_max, dtype=torch.long)
    valid = torch.zeros(len(items), len(langs), k_max, dtype=torch.bool)
    for i, sets in enumerate(per_item):
        for j, lang in enumerate(langs):
            ids = sorted(sets[lang])
            idx[i, j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            valid[i, j, :len(ids)] = True
    target_col = torch.tensor([langs.index(it.target) if it.target in langs else -1 for it in items])

    n_layers = model.dims.n_layers
    dev = model.device
    W = W_U.to(dev).float()
    b = model.weights.b_U.to(dev).float() if model.weights.b_U is not None else None
    cap = model.weights.logit_softcap
    mass = torch.zeros(len(lenses), n_layers, len(items), len(langs))
    top = torch.zeros(len(lenses), n_layers, len(items), dtype=torch.long)
    hit = torch.zeros(len(lenses), n_layers, len(items), dtype=torch.bool)
    starts = range(0, len(items), batch_size)
    for s in progress_bar(starts, enabled=progress, desc="latent language", total=len(starts)):
        chunk = items[s:s + batch_size]
        with torch.no_grad():
            trace = model.run([it.prompt for it in chunk], capture="resid_post", interventions=interventions).trace
            last = trace.lengths.long() - 1
            rows = torch.arange(len(chunk))
            x = torch.stack([trace[f"resid_post.{L}"][rows, last] for L in range(n_layers)]).to(dev)  # [layer, b, d]
            ci, cv = idx[s:s + len(chunk)].to(dev), valid[s:s + len(chunk)].to(dev)
            for li, (_, tl) in enumerate(lenses):
                h = torch.stack([tl.translate(x[L], L) for L in range(n_layers)]) if tl is not None else x
                z = model.apply_final_norm(h).float() @ W
                if b is not None:
                    z = z + b
                if cap:
                    z = cap * torch.tanh(z / cap)
                p = z.softmax(-1)  # [layer, b, vocab]
                g = p.gather(2, ci.reshape(1, len(chunk), -1).expand(n_layers, -1, -1))
                m = (g.view(n_layers, len(chunk), len(langs), k_max) * cv).sum(-1)
                mass[li, :, s:s + len(chunk)] = m.cpu()
                t = p.argmax(-1)  # [layer, b]
                top[li, :, s:s + len(chunk)] = t.cpu()
                tc = target_col[s:s + len(chunk)].to(dev)
                in_set = ((ci == t[..., None, None]) & cv)  # [layer, b, language, K]
                own = in_set.any(-1).gather(2, tc.clamp(min=0).view(1, -1, 1).expand(n_layers, -1, 1))[..., 0]
                hit[li, :, s:s + len(chunk)] = (own & (tc >= 0)).cpu()
    uniq = sorted(set(top.unique().tolist()))
    strs = model.to_str_tokens(torch.tensor([uniq], dtype=torch.long))[0] if model.tokenizer is not None else \
        [str(u) for u in uniq]
    return LatentLanguageResult(
        mass=mass, n_tokens=valid.sum(-1), top_ids=top, target_hit=hit, languages=langs,
        lenses=tuple(name for name, _ in lenses), layer_labels=tuple(str(L) for L in range(n_layers)),
        tasks=tuple(it.task for it in items), sources=tuple(it.source for it in items),
        targets=tuple(it.target for it in items), concepts=tuple(it.concept for it in items),
        prompts=tuple(it.prompt for it in items), id_to_str=dict(zip(uniq, strs, strict=True)), mode=mode,
        model_id=model.name)


def _lenses(model: Model, lens: str | TunedLens | Sequence[str | TunedLens]) -> list[tuple[str, TunedLens | None]]:
    """``[(name, translator or None)]`` for each lens asked for."""
    asked = [lens] if isinstance(lens, (str, TunedLens, os.PathLike)) else list(lens)
    if not asked:
        raise bad_value("lens", lens, "'logit', 'tuned', a TunedLens or a list of them")
    out: list[tuple[str, TunedLens | None]] = []
    for one in asked:
        if isinstance(one, str) and one == "logit":
            out.append(("logit", None))
        else:
            tl = as_tuned_lens(model, "auto" if isinstance(one, str) and one == "tuned" else one)
            if tl.fingerprint_ != model.fingerprint:
                raise ModelMismatchError(f"this tuned lens was trained for {tl.model_id_!r}, not {model.name!r}")
            out.append(("tuned" if "tuned" not in [n for n, _ in out] else f"tuned{len(out)}", tl))
    return out


def _one_id(model: Model, token: int | str, vocab: int) -> int:
    if isinstance(token, bool) or not isinstance(token, (int, str)):
        raise bad_value("token", token, "a token id or a one-token string")
    if isinstance(token, int):
        if not 0 <= token < vocab:
            raise bad_value("token id", token, f"0..{vocab - 1}")
        return token
    if model.tokenizer is None:
        raise BadInputError(f"model {model.name!r} has no tokenizer: give token ids")
    ids = model.tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise bad_value("token", token, "exactly one token (mind the leading space)")
    return int(ids[0])


__all__ = ["LANGUAGE_NAMES", "TASKS", "LanguageItem", "language_token_sets", "latent_language",
           "load_language_prompts", "word_token_ids"]
