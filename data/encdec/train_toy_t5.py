"""Train the toy T5 of interp.models.encdec_toy on its synthetic task and save it to data/encdec/toy-t5.

Run from the repository root: ``nice -n 10 python data/encdec/train_toy_t5.py`` (a few CPU minutes; seeded).
Prints the training loss and the greedy exact-match accuracy on 500 held-out examples, and writes metrics.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from interp.models.encdec_toy import TOY_DIR, toy_examples, toy_tokenizer

STEPS, BATCH, LR = 1200, 32, 3e-3
MAX_SECONDS = float(os.environ.get("TOY_T5_MAX_SECONDS", "inf"))  # stop early on a busy machine (recorded)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: one thread (two spin on a busy machine)
    tok = toy_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=48, d_kv=12, d_ff=96, num_layers=4, num_decoder_layers=2, num_heads=4,
                   relative_attention_num_buckets=16, relative_attention_max_distance=16, dropout_rate=0.0,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, feed_forward_proj="relu",
                   tie_word_embeddings=False)
    model = T5ForConditionalGeneration(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    train = toy_examples(STEPS * BATCH, seed=1)
    test = toy_examples(500, seed=2)
    test_src = {s for s, _ in test}
    train = [ex for ex in train if ex[0] not in test_src]
    t0 = time.time()
    model.train()
    history = []
    steps_done = 0
    for step in range(STEPS):
        if time.time() - t0 > MAX_SECONDS:
            print(f"stopped at step {step}: the {MAX_SECONDS:.0f} s budget is spent", flush=True)
            break
        steps_done = step + 1
        batch = train[step * BATCH % len(train):][:BATCH]
        enc = tok([s for s, _ in batch], padding=True, return_tensors="pt")
        lab = tok([t for _, t in batch], padding=True, return_tensors="pt").input_ids
        lab[lab == 0] = -100
        loss = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == STEPS - 1:
            history.append([step, round(loss.item(), 4)])
            print(f"step {step:5d} loss {float(loss):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    enc = tok([s for s, _ in test], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, num_beams=1)
    pred = tok.batch_decode(out, skip_special_tokens=True)
    acc = sum(p.strip() == t for p, (_, t) in zip(pred, test, strict=True)) / len(test)
    print(f"held-out exact-match accuracy {acc:.3f} on {len(test)} examples; trained in {time.time() - t0:.0f} s")
    TOY_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(TOY_DIR), safe_serialization=True)
    tok.save_pretrained(str(TOY_DIR))
    (TOY_DIR / "metrics.json").write_text(json.dumps({
        "task": "op d1..dn -> digits copied / reversed / incremented mod 10 / both; 3-6 digits",
        "steps": steps_done, "batch": BATCH, "lr": LR, "seconds": round(time.time() - t0), "history": history,
        "heldout_examples": len(test), "heldout_exact_match": acc}, indent=1))


if __name__ == "__main__":
    main()
