"""Build the task suites of ``interp.layers`` (offline, seeded): ``python data/layers/build.py``.

- ``capitals.json``: cloze multiple choice, "The capital of France is" -> " Paris" among four capitals.
- ``arithmetic.json``: few-shot single-digit addition, three solved examples then a question; four choices.
- ``copying.json``: few-shot copying of a list of five common words; the answer is the word that comes next
  (four choices from the list) -- the 500-item task of the drop-n-blocks benchmark.
- ``heldout.json``: next-token accuracy on 64 held-out paragraphs of ``data/corpus/english.txt`` (its last
  lines, which the tuned lens's training slice does not reach).

Each file: ``{"name", "kind": "choice" | "next_token", "description", "items": [...]}``; a choice item is
``{"prompt", "choices", "answer"}`` (the index of the right choice), a next-token item ``{"text"}``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
    ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("China", "Beijing"),
    ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"),
    ("Cuba", "Havana"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"), ("England", "London"),
    ("Scotland", "Edinburgh"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("South Korea", "Seoul"), ("Vietnam", "Hanoi"), ("the Philippines", "Manila"), ("Indonesia", "Jakarta"),
    ("Mexico", "Mexico City"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("India", "New Delhi"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"),
]
WORDS = ["apple", "river", "stone", "green", "house", "music", "paper", "window", "garden", "silver", "orange", "table", "summer", "winter", "bread", "horse", "cloud", "light", "water", "dream", "chair", "phone", "train", "beach", "night", "story", "money", "field", "glass", "tiger"]


def capitals(rng: random.Random) -> list[dict]:
    items = []
    for country, city in CAPITALS:
        others = rng.sample([c for _, c in CAPITALS if c != city], 3)
        choices = [f" {c}" for c in [city, *others]]
        rng.shuffle(choices)
        items.append({"prompt": f"The capital of {country} is", "choices": choices, "answer": choices.index(f" {city}")})
    return items


def arithmetic(rng: random.Random, n: int = 200) -> list[dict]:
    items = []
    for _ in range(n):
        shots = [(rng.randint(1, 9), rng.randint(1, 9)) for _ in range(3)]
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        prompt = "".join(f"{x} + {y} = {x + y}\n" for x, y in shots) + f"{a} + {b} ="
        wrong = rng.sample([v for v in range(2, 19) if v != a + b], 3)
        choices = [f" {v}" for v in [a + b, *wrong]]
        rng.shuffle(choices)
        items.append({"prompt": prompt, "choices": choices, "answer": choices.index(f" {a + b}")})
    return items


def copying(rng: random.Random, n: int = 500) -> list[dict]:
    items = []
    for _ in range(n):
        words = rng.sample(WORDS, 5)
        k = rng.randint(1, 4)  # how many words of the copy are given
        prompt = ", ".join(words) + ".\n" + ", ".join(words[:k]) + ","
        target = words[k]
        others = rng.sample([w for w in words if w != target], 3)
        choices = [f" {w}" for w in [target, *others]]
        rng.shuffle(choices)
        items.append({"prompt": prompt, "choices": choices, "answer": choices.index(f" {target}")})
    return items


def heldout(n: int = 64) -> list[dict]:
    lines = (HERE.parent / "corpus" / "english.txt").read_text().splitlines()
    tail = [ln for ln in lines[-4 * n:] if len(ln.split()) >= 20]
    return [{"text": " ".join(ln.split()[:48])} for ln in tail[-n:]]


def main() -> None:
    rng = random.Random(23)
    suites = [
        ("capitals", "choice", "cloze: the capital of a country among four capitals", capitals(rng)),
        ("arithmetic", "choice", "few-shot single-digit addition (3 examples), four choices", arithmetic(rng)),
        ("copying", "choice", "few-shot copying of a 5-word list: the next word, four choices from the list",
         copying(rng)),
        ("heldout", "next_token", "next-token accuracy on 64 held-out English paragraphs (48 words each)",
         heldout()),
    ]
    for name, kind, desc, items in suites:
        (HERE / f"{name}.json").write_text(json.dumps(
            {"name": name, "kind": kind, "description": desc, "builder": "data/layers/build.py", "items": items},
            indent=0) + "\n")


if __name__ == "__main__":
    main()
