"""Build the knowledge-conflict prompt sets of interp.patching.conflicts, offline, from SmolLM2-135M.

1. Candidate facts (country → capital, country → language) are written below by hand.
2. SmolLM2-135M is run on each closed-book prompt ("The capital of France is"); a fact is kept only when its
   greedy next token is the first token of the answer (the model *knows* it). The accuracy is printed and stored.
3. Each known fact gets a counterfactual context that states another known answer of the same relation
   ("The capital of France is Tokyo. The capital of France is"): the memorised answer is " Paris", the context
   answer " Tokyo". Answers are compared by their first token, so first tokens must differ.
4. Items alternate between the "train" split (to find heads) and the "heldout" split (to test interventions).

    .venv/bin/python data/conflicts/build.py      # writes data/conflicts/conflicts.json
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "England": "London", "Greece": "Athens",
    "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw", "Ireland": "Dublin", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest",
    "Turkey": "Ankara", "Canada": "Ottawa", "Australia": "Canberra", "Kenya": "Nairobi", "Peru": "Lima",
    "Argentina": "Buenos", "Thailand": "Bangkok", "Cuba": "Havana", "India": "New", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "Switzerland": "Bern", "South Korea": "Seoul", "Iran": "Tehran",
    "Iraq": "Baghdad", "Chile": "Santiago", "Colombia": "Bog", "Mexico": "Mexico", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "the Philippines": "Manila", "Ukraine": "Kyiv", "Romania": "Bucharest",
}
LANGUAGES = {
    "France": "French", "Germany": "German", "Italy": "Italian", "Spain": "Spanish", "Japan": "Japanese",
    "Russia": "Russian", "China": "Chinese", "Portugal": "Portuguese", "Greece": "Greek", "Poland": "Polish",
    "Sweden": "Swedish", "Finland": "Finnish", "Turkey": "Turkish", "Brazil": "Portuguese", "Mexico": "Spanish",
    "Egypt": "Arabic", "Korea": "Korean", "Vietnam": "Vietnamese", "Thailand": "Thai", "Norway": "Norwegian",
    "Denmark": "Danish", "Hungary": "Hungarian", "the Netherlands": "Dutch", "Iran": "Persian",
}
RELATIONS = {
    "capital": ("The capital of {s} is", CAPITALS),
    "language": ("The official language of {s} is", LANGUAGES),
}


def main() -> None:
    model = interp.load_model("smollm2-135m")
    tok = model.tokenizer
    rng = random.Random(0)
    out: dict[str, object] = {"model": model.name, "relations": {}, "items": []}
    items: list[dict[str, object]] = []
    for rel, (template, facts) in RELATIONS.items():
        prompts = [template.format(s=s) for s in facts]
        first = {s: tok.encode(" " + a, add_special_tokens=False)[0] for s, a in facts.items()}
        ids, mask = model.encode(prompts)
        with torch.no_grad():
            logits = model.run((ids, mask)).logits
        assert logits is not None
        last = mask.sum(-1) - 1
        pred = logits[torch.arange(len(prompts)), last].argmax(-1).tolist()
        known = [s for (s, _), p in zip(facts.items(), pred, strict=True) if p == first[s]]
        acc = len(known) / len(facts)
        print(f"{rel}: SmolLM2-135M answers {len(known)}/{len(facts)} closed-book prompts ({acc:.0%})")
        out["relations"][rel] = {"template": template, "candidates": len(facts), "known": len(known),  # type: ignore[index]
                                 "accuracy": acc}
        for s in known:
            others = [o for o in known if first[o] != first[s] and facts[o] != facts[s]]
            o = rng.choice(others)
            base = template.format(s=s)
            items.append({"relation": rel, "subject": s, "base_prompt": base,
                          "prompt": f"{base} {facts[o]}. {base}", "memory": " " + facts[s],
                          "context": " " + facts[o]})
    rng.shuffle(items)
    for k, it in enumerate(items):
        it["split"] = "train" if k % 2 == 0 else "heldout"
    out["items"] = items
    path = Path(__file__).resolve().parent / "conflicts.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} conflict items to {path}")


if __name__ == "__main__":
    main()
