"""Build the small SmolLM2-135M SAEs shipped in data/features/smollm2-135m/ (used by the report and the notebook).

Four TopK SAEs (1,024 features, k = 32) around block 4: the residual stream before it
(blocks.3.hook_resid_post), its attention and MLP outputs, and the residual stream after it
(blocks.4.hook_resid_post), so that feature flow through block 4 can be read without training.
Trained on ~48k tokens of data/corpus/english.txt (the first 400 paragraphs of ~500 characters,
128 tokens each), 150k rows each; stored in float16 (about 2.4 MB per SAE).

Run from the repository root:  .venv/bin/python data/features/build.py   (about 4 minutes on 1 CPU thread)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import interp
from interp.features import SAEConfig, SparseAutoencoder, evaluate_sae
from interp.trace import capture

HOOKS = ["blocks.3.hook_resid_post", "blocks.4.hook_attn_out", "blocks.4.hook_mlp_out", "blocks.4.hook_resid_post"]
OUT = Path(__file__).resolve().parent / "smollm2-135m"


def paragraphs(path: Path, min_chars: int = 500) -> list[str]:
    """Consecutive corpus lines joined into paragraphs of at least ``min_chars`` characters."""
    out, cur = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            cur = (cur + " " + line).strip()
            if len(cur) > min_chars:
                out.append(cur)
                cur = ""
    return out


def main() -> None:
    torch.set_num_threads(1)
    model = interp.load_model("smollm2-135m")
    texts = paragraphs(Path(__file__).resolve().parents[1] / "corpus" / "english.txt")
    with tempfile.TemporaryDirectory() as tmp:
        train = capture(model, texts[:400], out=Path(tmp) / "train", hooks=HOOKS, batch_size=16, max_tokens=128)
        test = capture(model, texts[-40:], out=Path(tmp) / "test", hooks=HOOKS, batch_size=16, max_tokens=128)
        for hook in HOOKS:
            cfg = SAEConfig(d_sae=1024, k=32, n_tokens=150_000, batch_size=1024, dead_after=20_000)
            sae = SparseAutoencoder(cfg).fit(train, hook=hook)
            ev = evaluate_sae(None, test, sae=sae)
            print(f"{hook}: held-out EV {ev.explained_variance:.3f}, L0 {ev.l0:.1f}, dead {ev.dead_fraction:.3f}")
            sae.save(OUT / hook, dtype=torch.float16)


if __name__ == "__main__":
    main()
