"""Build data/lens/latent_language.jsonl: the translation, repetition and cloze prompt sets of
interp.lens.latent_language, from the shipped word list (words.tsv: one concept per row, one column per
language) and English cloze sentences (cloze_en.tsv). Offline and deterministic (seed 0).

Run from the repository root: ``python data/lens/build_latent_language.py``.

Prompts follow Wendler et al. (2024), "Do Llamas Work in English?": few-shot lines ``Français: "livre" - Deutsch:
"Buch"`` (translation), the same with one language on both sides (repetition), and ``A "___" has pages that you
read. Answer: "book".`` (cloze), each ending just before the answer word, so the next token should start it.
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


def read_tsv(name: str) -> list[dict[str, str]]:
    with open(HERE / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def pair_prompt(words: list[dict[str, str]], i: int, src: str, tgt: str, rng: random.Random) -> str:
    shots = rng.sample([j for j in range(len(words)) if j != i], SHOTS)
    lines = [f'{NAMES[src]}: "{words[j][src]}" - {NAMES[tgt]}: "{words[j][tgt]}"' for j in shots]
    return "\n".join([*lines, f'{NAMES[src]}: "{words[i][src]}" - {NAMES[tgt]}: "'])


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
    out = HERE / "latent_language.jsonl"
    out.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
    counts: dict[str, int] = {}
    for it in items:
        counts[it["task"]] = counts.get(it["task"], 0) + 1
    print(f"wrote {out.name}: {len(items)} items {counts}")


if __name__ == "__main__":
    main()
