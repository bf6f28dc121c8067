"""Build data/lens/latent_language.jsonl: the translation, repetition and cloze prompt sets of
interp.lens.latent_language, from the shipped word list (words.tsv: one concept per row, one column per
language), English cloze sentences (cloze_en.tsv) and cloze sentences in French, German, Spanish and Italian
(cloze_multi.tsv; Wendler et al. ask the cloze in the target language). Offline and deterministic (seed 0).

A non-English cloze is kept only where the bundled model (SmolLM2-135M's tokenizer) tells the answer apart: the
tokens that can start the target-language word and those of the English word, each less the tokens any other
language's word for the concept can start with (interp.lens.latent_language's per-item token sets), are both
non-empty, and the word is not the English word itself.

Run from the repository root: ``python data/lens/build_latent_language.py``.

Prompts follow Wendler et al. (2024), "Do Llamas Work in English?": few-shot lines ``Français: "livre" - Deutsch:
"Buch"`` (translation), the same with one language on both sides (repetition), and ``A "___" has pages that you
read. Answer: "book".`` (cloze; ``Un "___" a des pages que l'on lit. Réponse : "livre".`` in French), each ending
just before the answer word, so the next token should start it.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano"}
SHOTS = 4  # few-shot examples per prompt
TRANSLATION_PER_PAIR = 12  # concepts per ordered (source, target) pair: 20 pairs
REPETITION_PER_LANG = 20
CLOZE = 50
ANSWER = {"en": "Answer", "fr": "Réponse", "de": "Antwort", "es": "Respuesta", "it": "Risposta"}


def read_tsv(name: str) -> list[dict[str, str]]:
    with open(HERE / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def pair_prompt(words: list[dict[str, str]], i: int, src: str, tgt: str, rng: random.Random) -> str:
    shots = rng.sample([j for j in range(len(words)) if j != i], SHOTS)
    lines = [f'{NAMES[src]}: "{words[j][src]}" - {NAMES[tgt]}: "{words[j][tgt]}"' for j in shots]
    return "\n".join([*lines, f'{NAMES[src]}: "{words[i][src]}" - {NAMES[tgt]}: "'])


def sensible(words: dict[str, str], lang: str, tok: object) -> bool:
    """Whether the model's tokenizer tells ``lang``'s word apart from the English one (see the module docstring)."""
    from types import SimpleNamespace

    from interp.lens.latent_language import disjoint, word_token_ids

    model = SimpleNamespace(tokenizer=tok, name="smollm2-135m")
    sets = disjoint({k: word_token_ids(model, w) for k, w in words.items()})  # type: ignore[arg-type]
    return words[lang].lower() != words["en"].lower() and bool(sets[lang]) and bool(sets["en"])


def multilingual_cloze(words: list[dict[str, str]], index: dict[str, int], rng: random.Random) -> list[dict]:
    from transformers import AutoTokenizer

    from interp.models.registry import _smollm2_cache

    tok = AutoTokenizer.from_pretrained(str(_smollm2_cache()))
    rows = read_tsv("cloze_multi.tsv")
    items = []
    for lang in ("fr", "de", "es", "it"):
        kept = [r for r in rows if r["lang"] == lang and sensible(words[index[r["concept"]]], lang, tok)]
        for k, row in enumerate(kept):
            shots = rng.sample([j for j in range(len(kept)) if j != k], SHOTS)
            sep = " : " if lang == "fr" else ": "
            lines = [f'{kept[j]["sentence"]} {ANSWER[lang]}{sep}"{words[index[kept[j]["concept"]]][lang]}".'
                     for j in shots]
            prompt = "\n".join([*lines, f'{row["sentence"]} {ANSWER[lang]}{sep}"'])
            items.append({"task": "cloze", "source": lang, "target": lang, "concept": row["concept"],
                          "words": words[index[row["concept"]]], "prompt": prompt})
        print(f"cloze {lang}: kept {len(kept)} of {sum(r['lang'] == lang for r in rows)}: dropped "
              f"{[r['concept'] for r in rows if r['lang'] == lang and r not in kept]}")
    return items


def main() -> None:
    rng = random.Random(0)
    words = read_tsv("words.tsv")
    langs = list(NAMES)
    index = {w["en"]: k for k, w in enumerate(words)}
    items = []
    for src in langs:
        for tgt in langs:
            if src == tgt:
                continue
            for i in rng.sample(range(len(words)), TRANSLATION_PER_PAIR):
                items.append({"task": "translation", "source": src, "target": tgt, "concept": words[i]["en"],
                              "words": words[i], "prompt": pair_prompt(words, i, src, tgt, rng)})
    for lang in langs:
        for i in rng.sample(range(len(words)), REPETITION_PER_LANG):
            items.append({"task": "repetition", "source": lang, "target": lang, "concept": words[i]["en"],
                          "words": words[i], "prompt": pair_prompt(words, i, lang, lang, rng)})
    cloze = read_tsv("cloze_en.tsv")[:CLOZE]
    for k, row in enumerate(cloze):
        shots = rng.sample([j for j in range(len(cloze)) if j != k], SHOTS)
        lines = [f'{cloze[j]["sentence"]} Answer: "{cloze[j]["concept"]}".' for j in shots]
        prompt = "\n".join([*lines, f'{row["sentence"]} Answer: "'])
        items.append({"task": "cloze", "source": "en", "target": "en", "concept": row["concept"],
                      "words": words[index[row["concept"]]], "prompt": prompt})
    items += multilingual_cloze(words, index, rng)
    out = HERE / "latent_language.jsonl"
    out.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
    counts: dict[str, int] = {}
    for it in items:
        counts[it["task"]] = counts.get(it["task"], 0) + 1
    print(f"wrote {out.name}: {len(items)} items {counts}")


if __name__ == "__main__":
    main()
