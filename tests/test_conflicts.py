"""Knowledge conflicts (interp.patching.conflicts): head attributions against finite differences of real
interventions, memory rates against a plain Hugging Face forward, the shipped prompt sets, the result surface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp.errors import BadInputError
from interp.hooks import Scale
from interp.models import Model
from interp.patching.conflicts import (
    DATA,
    ConflictHeads,
    ConflictIntervention,
    conflict_heads,
    conflict_intervention,
    dual_intervention,
    load_conflicts,
)

ITEMS = [{"prompt": f"w{a} w{b} w{c} w{a} w{b}", "memory": f" w{c}", "context": f" w{d}", "split": "train"}
         for a, b, c, d in [(1, 2, 3, 9), (4, 5, 6, 10), (7, 8, 11, 12), (13, 14, 15, 16)]]


def _margins(model: Model, edits: list[Scale]) -> torch.Tensor:
    tok = model.tokenizer
    ids, mask = model.encode([it["prompt"] for it in ITEMS])
    with torch.no_grad():
        logits = model.run((ids, mask), interventions=edits).logits
    last = logits[torch.arange(len(ITEMS)), mask.sum(-1) - 1].double()
    mem = [tok.encode(it["memory"], add_special_tokens=False)[0] for it in ITEMS]
    ctx = [tok.encode(it["context"], add_special_tokens=False)[0] for it in ITEMS]
    return last[torch.arange(len(ITEMS)), mem] - last[torch.arange(len(ITEMS)), ctx]


def test_head_effects_are_derivatives_of_scaling_the_head(tiny_llama: Model) -> None:
    res = conflict_heads(tiny_llama, ITEMS, k=2)
    base = _margins(tiny_llama, []).mean()
    assert res.margin == pytest.approx(float(base), abs=1e-4)
    eps = 1e-3
    for la, h in [(0, 1), (1, 3), (1, 0)]:
        up = _margins(tiny_llama, [Scale(f"z.{la}", 1 + eps, heads=[h])]).mean()
        down = _margins(tiny_llama, [Scale(f"z.{la}", 1 - eps, heads=[h])]).mean()
        fd = float(up - down) / (2 * eps)  # d margin / d scale = ∂m/∂z · z
        assert float(res.effects[la, h]) == pytest.approx(fd, abs=2e-3, rel=2e-2)
    flat = res.effects.flatten()
    assert res.memory_heads[0] == f"L{int(flat.argmax()) // 4}H{int(flat.argmax()) % 4}"
    assert res.context_heads[0] == f"L{int(flat.argmin()) // 4}H{int(flat.argmin()) % 4}"


def test_intervention_rates_match_a_plain_forward(tiny_llama: Model) -> None:
    res = conflict_intervention(tiny_llama, ITEMS, heads="L1H0,L1H2", factor=0.0, n_random=3)
    before = float((_margins(tiny_llama, []) > 0).double().mean())
    after = float((_margins(tiny_llama, [Scale("z.1", 0.0, heads=[0, 2])]) > 0).double().mean())
    assert res.before == before and res.after == after
    assert res.before_ci[0] <= res.before <= res.before_ci[1]
    assert res.random_after.shape == (3,)
    same = conflict_intervention(tiny_llama, ITEMS, heads="L1H0", factor=1.0, n_random=1)
    assert same.after == same.before
    with pytest.raises(BadInputError):
        conflict_intervention(tiny_llama, ITEMS, heads="L1H0", n_random=0)
    with pytest.raises(BadInputError, match="first token"):
        conflict_heads(tiny_llama, [dict(ITEMS[0], context=ITEMS[0]["memory"])])


def test_dual_intervention_is_both_scalings_in_one_run(tiny_llama: Model) -> None:
    """Against the two scalings applied by hand (plain Scale edits on a plain run), for either side."""
    base = _margins(tiny_llama, [])
    mem, ctx = ["L1H0"], ["L0H1", "L1H2"]
    for side, f_mem, f_ctx in (("context", 0.25, 1.5), ("memory", 1.5, 0.25)):
        res = dual_intervention(tiny_llama, ITEMS, heads=(mem, ctx), side=side, up=1.5, down=0.25, n_random=2)
        want = _margins(tiny_llama, [Scale("z.1", f_mem, heads=[0]), Scale("z.0", f_ctx, heads=[1]),
                                     Scale("z.1", f_ctx, heads=[2])])
        assert res.heads == ("L1H0", "L0H1", "L1H2") and res.factors == (f_mem, f_ctx, f_ctx)
        assert res.before == float((base > 0).double().mean()) and res.after == float((want > 0).double().mean())
        assert res.margin_shift == pytest.approx(float((want - base).mean()), abs=1e-5)
        assert res.margin_shift_ci[0] <= res.margin_shift <= res.margin_shift_ci[1]
        assert res.random_margin_shift.shape == (2,)
    found = conflict_heads(tiny_llama, ITEMS, k=1)
    res = dual_intervention(tiny_llama, ITEMS, heads=found, side="memory", n_random=1)
    assert res.heads == (*found.memory_heads, *found.context_heads) and res.factors == (2.0, 0.0)
    with pytest.raises(BadInputError, match="side"):
        dual_intervention(tiny_llama, ITEMS, heads=(mem, ctx), side="both")
    with pytest.raises(BadInputError, match="disjoint"):
        dual_intervention(tiny_llama, ITEMS, heads=(mem, mem))
    with pytest.raises(BadInputError, match="factors"):
        conflict_intervention(tiny_llama, ITEMS, heads="L1H0,L1H1", factors=[1.0])


def test_shipped_prompt_sets() -> None:
    data = json.loads(DATA.read_text())
    assert data["model"] == "smollm2-135m"
    for rel in data["relations"].values():
        assert 0 < rel["known"] <= rel["candidates"] and rel["accuracy"] == rel["known"] / rel["candidates"]
    train, held = load_conflicts("train"), load_conflicts("heldout")
    assert len(train) >= 16 and len(held) >= 16
    assert not {it["prompt"] for it in train} & {it["prompt"] for it in held}
    for it in train + held:
        assert it["prompt"].startswith(it["base_prompt"]) and it["prompt"].endswith(it["base_prompt"])
        assert it["context"].strip() in it["prompt"] and it["memory"] != it["context"]
    with pytest.raises(BadInputError):
        load_conflicts("test")


def test_result_surface(tiny_llama: Model, tmp_path: Path) -> None:
    heads = conflict_heads(tiny_llama, ITEMS, k=2)
    inter = conflict_intervention(tiny_llama, ITEMS, heads=heads.memory_heads, n_random=2)
    for res, cls in ((heads, ConflictHeads), (inter, ConflictIntervention)):
        back = cls.load(res.save(tmp_path / cls.__name__))
        assert repr(back) == repr(res)
        res.plot()
        assert "class" in res.to_dict()


@pytest.mark.slow
def test_found_heads_move_smollm2_more_than_random_heads(smollm2: Model) -> None:
    """Heads found on the train prompts, pruned on the held-out ones: the margin logit(memory) − logit(context) moves
    further than for every random set of as many heads (pruning memory heads lowers it, context heads raise it);
    the random sets are the control the issue asks for, the held-out prompts were not used to find the heads."""
    found = conflict_heads(smollm2, load_conflicts("train"), k=3)
    held = load_conflicts("heldout")
    mem = conflict_intervention(smollm2, held, heads=found.memory_heads, factor=0.0, n_random=4, seed=1)
    assert mem.margin_shift_ci[1] < float(mem.random_margin_shift.min())
    assert mem.after < mem.before and mem.after < float(mem.random_after.min())
    ctx = conflict_intervention(smollm2, held, heads=found.context_heads, factor=0.0, n_random=4, seed=2)
    assert ctx.margin_shift_ci[0] > float(ctx.random_margin_shift.max())
