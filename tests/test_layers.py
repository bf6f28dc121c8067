"""interp.layers: run plans (skip, reorder, repeat, parallel, head masks) against hand-edited Hugging Face
forwards, task suites, and the studies."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from conftest import randomize
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import interp
from interp.errors import BadInputError
from interp.hooks import LayerPlan
from interp.layers import edits
from interp.models import Model


@pytest.fixture(scope="module")
def gpt5() -> Model:
    cfg = GPT2Config(n_embd=32, n_layer=5, n_head=4, n_inner=48, vocab_size=64, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return interp.from_hf(randomize(GPT2LMHeadModel(cfg), 8).eval(), name="gpt5")


IDS = torch.tensor([[5, 9, 3, 17, 22, 8, 41, 2], [7, 7, 30, 12, 1, 0, 0, 0]])
MASK = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])


def _hf_with_blocks(model: Model, order: Sequence[int]) -> torch.Tensor:
    """Oracle: the plain HF forward of a deep copy whose block list is edited by hand."""
    hf = copy.deepcopy(model.hf)
    inner = hf.model if hasattr(hf, "model") else hf.transformer
    name = "layers" if hasattr(inner, "layers") else "h"
    old = getattr(inner, name)
    setattr(inner, name, nn.ModuleList([old[i] for i in order]))
    hf.config.num_hidden_layers = len(order)
    with torch.no_grad():
        return hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits


def _run(model: Model, ivs: list, ids: torch.Tensor = IDS, mask: torch.Tensor | None = MASK) -> torch.Tensor:
    with torch.no_grad():
        out = model.run((ids, mask), interventions=ivs) if mask is not None else model.run(ids, interventions=ivs)
    assert out.logits is not None
    return out.logits


def _real(t: torch.Tensor) -> torch.Tensor:
    return t[MASK.bool()]


@pytest.mark.parametrize("name", ["llama5", "gpt5"])
@pytest.mark.parametrize("make,order", [
    (lambda m: edits.skip(m, blocks=[1, 3]), [0, 2, 4]),
    (lambda m: edits.reorder(m, order=[0, 2, 1, 3, 4]), [0, 2, 1, 3, 4]),
    (lambda m: edits.reverse(m, start=1, stop=4), [0, 3, 2, 1, 4]),
    (lambda m: edits.swap(m, i=0, j=-1), [4, 1, 2, 3, 0]),
    (lambda m: edits.repeat(m, layers=[2], times=3), [0, 1, 2, 2, 2, 3, 4]),
    (lambda m: [LayerPlan(order=(4, 4, 0, 1, 1, 2, 3, 0))], [4, 4, 0, 1, 1, 2, 3, 0]),
])
def test_block_plans_equal_a_hand_edited_hf_forward(name: str, make: Callable, order: list[int],
                                                    request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    ivs = make(model)
    assert [i for s in ivs[0].steps(5) for i in s] == order  # the helper built the plan the test means
    ref = _hf_with_blocks(model, order)
    got = _run(model, ivs)
    torch.testing.assert_close(_real(got), _real(ref), rtol=1e-5, atol=1e-5)
    # the model is restored afterwards: a plain run equals the plain HF forward
    with torch.no_grad():
        plain = model.hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits
    torch.testing.assert_close(_real(_run(model, [])), _real(plain))


def _llama_by_hand(model: Model, ids: torch.Tensor,
                   step: Callable[[list[nn.Module], torch.Tensor, Callable[[nn.Module, torch.Tensor], torch.Tensor]], torch.Tensor]
                   ) -> torch.Tensor:
    """Oracle: embed, the blocks called by hand (``step(blocks, x, call)``), final norm, LM head; no padding."""
    hf = model.hf
    with torch.no_grad():
        x = hf.model.embed_tokens(ids)
        pos = torch.arange(ids.shape[1])[None]
        pe = hf.model.rotary_emb(x, pos)
        T = ids.shape[1]
        causal = torch.full((T, T), torch.finfo(x.dtype).min).triu(1)[None, None]  # eager attention adds it

        def call(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            out = block(h, attention_mask=causal, position_embeddings=pe, position_ids=pos)
            return out[0] if isinstance(out, tuple) else out

        x = step(list(hf.model.layers), x, call)
        return hf.lm_head(hf.model.norm(x))


@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_parallel_span_equals_blocks_called_by_hand(llama5: Model, combine: str) -> None:
    ids = IDS[:1]

    def step(blocks: list[nn.Module], x: torch.Tensor, call: Callable) -> torch.Tensor:
        x = call(blocks[0], x)
        outs = [call(blocks[i], x) for i in (1, 2, 3)]
        x = sum(outs) / 3 if combine == "mean" else x + sum(o - x for o in outs)
        return call(blocks[4], x)

    ref = _llama_by_hand(llama5, ids, step)
    got = _run(llama5, edits.parallel(llama5, start=1, stop=4, combine=combine), ids=ids, mask=None)  # type: ignore[arg-type]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_sublayer_skips_equal_blocks_without_that_sublayer_by_hand(llama5: Model) -> None:
    ids = IDS[:1]
    pos = torch.arange(ids.shape[1])[None]
    causal = torch.full((8, 8), torch.finfo(torch.float32).min).triu(1)[None, None]

    def step(blocks: list[nn.Module], x: torch.Tensor, call: Callable) -> torch.Tensor:
        pe = llama5.hf.model.rotary_emb(x, pos)
        for i, b in enumerate(blocks):
            if i == 1:  # no attention: x + mlp(ln2(x))
                x = x + b.mlp(b.post_attention_layernorm(x))
            elif i == 3:  # no MLP: x + attn(ln1(x))
                x = x + b.self_attn(b.input_layernorm(x), attention_mask=causal, position_embeddings=pe)[0]
            elif i != 4:  # block 4 skipped
                x = call(b, x)
        return x

    ref = _llama_by_hand(llama5, ids, step)
    got = _run(llama5, edits.skip(llama5, blocks=[4], attn=[1], mlp=[3]), ids=ids, mask=None)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_head_mask_values_and_gradient_equal_a_hand_hook(llama5: Model) -> None:
    """One backward through a HeadMask gives d loss / d mask for every head, as a hand-written o_proj hook does."""
    g = torch.Generator().manual_seed(0)
    scales = torch.rand(5, 4, generator=g)
    targets = IDS[:, 1:]

    def loss(logits: torch.Tensor) -> torch.Tensor:
        lp = logits[:, :-1].log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        return -(lp * MASK[:, 1:]).sum()

    # interp
    ivs = edits.head_mask(llama5, scales=scales, requires_grad=True)
    from interp.hooks import forward, hooks
    with torch.enable_grad(), hooks(llama5, interventions=ivs):
        value = loss(forward(llama5, IDS, MASK))
        value.backward()
    got_grad = ivs[0].scales.grad  # type: ignore[attr-defined]
    # oracle: a plain pre-hook on each o_proj scaling the heads of its input
    hf = copy.deepcopy(llama5.hf)
    leaf = scales.clone().requires_grad_(True)
    handles = []
    for L, layer in enumerate(hf.model.layers):
        def pre(mod: nn.Module, args: tuple, L: int = L) -> tuple:
            z = args[0].unflatten(-1, (4, 8)) * leaf[L][:, None]
            return (z.flatten(-2),)
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(pre))
    ref_value = loss(hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits)
    ref_value.backward()
    for h in handles:
        h.remove()
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    assert leaf.grad is not None and got_grad is not None
    torch.testing.assert_close(got_grad, leaf.grad, rtol=1e-4, atol=1e-5)
    # zeroing named heads equals a zero in the mask
    z = torch.ones(5, 4)
    z[2, 1] = 0
    torch.testing.assert_close(_run(llama5, edits.head_mask(llama5, heads=["L2H1"])),
                               _run(llama5, edits.head_mask(llama5, scales=z)))


def test_plans_combine_with_captures_and_other_edits(llama5: Model) -> None:
    from interp.hooks import run_with_hooks
    ivs = edits.skip(llama5, blocks=[2]) + edits.head_mask(llama5, heads=["L0H0"])
    out = run_with_hooks(llama5, IDS, MASK, capture=["resid_post", "resid_pre.3"], interventions=ivs)
    assert "blocks.2.hook_resid_post" not in out.activations  # block 2 never ran
    torch.testing.assert_close(out.activations["blocks.3.hook_resid_pre"], out.activations["blocks.1.hook_resid_post"])
    # and the head mask still applied: block 0's output differs from the unmasked run's
    plain = run_with_hooks(llama5, IDS, MASK, capture="resid_post.0")
    assert not torch.allclose(plain.activations["blocks.0.hook_resid_post"], out.activations["blocks.0.hook_resid_post"])


def test_bad_plans_raise_clear_errors(llama5: Model) -> None:
    with pytest.raises(BadInputError, match="leaves nothing to run"):
        edits.skip(llama5, blocks=range(5))
    with pytest.raises(BadInputError, match="leaves no block to run"):
        _run(llama5, [LayerPlan(drop=(0, 1, 2, 3, 4))])
    with pytest.raises(BadInputError, match=r"repeats block\(s\) \[1\] and misses block\(s\) \[2\]"):
        edits.reorder(llama5, order=[0, 1, 1, 3, 4])
    with pytest.raises(BadInputError, match=r"misses block\(s\) \[4\]"):
        edits.reorder(llama5, order=[0, 1, 2, 3])
    with pytest.raises(BadInputError, match="out of range"):
        edits.reorder(llama5, order=[0, 1, 2, 3, 5])
    with pytest.raises(BadInputError, match=r"shape \[n_layers, n_heads\] = \[5, 4\]"):
        edits.head_mask(llama5, scales=torch.ones(4, 5))
    from interp.hooks import HeadMask
    with pytest.raises(BadInputError, match="head mask has shape"):
        _run(llama5, [HeadMask(scales=torch.ones(6, 4))])
    with pytest.raises(BadInputError, match="span"):
        edits.parallel(llama5, start=3, stop=3)
    # a failed run leaves the model intact
    with torch.no_grad():
        plain = llama5.hf(input_ids=IDS, attention_mask=MASK, use_cache=False).logits
    torch.testing.assert_close(_real(_run(llama5, [])), _real(plain))


# -- task suites -------------------------------------------------------------------------------------------------

def _task() -> interp.layers.Task:
    from interp.layers import Task
    g = torch.Generator().manual_seed(3)
    items = []
    for k in range(12):
        words = [f"w{int(i)}" for i in torch.randint(0, 100, (5,), generator=g)]
        items.append({"prompt": " ".join(words), "choices": [f" w{k}", f" w{k + 1} w{k + 2}", f" w{k + 3}"],
                      "answer": k % 3})
    return Task.from_items("tiny", items)


def _hf_choice_ll(hf: nn.Module, tok: object, prompt: str, choice: str) -> float:
    """Oracle: the summed log-probability of the choice's tokens after the prompt, one plain HF forward."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    c = tok(choice, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([p + c]), use_cache=False).logits[0]
    lp = logits.log_softmax(-1)
    return float(sum(lp[len(p) - 1 + j, t] for j, t in enumerate(c)))


def test_score_equals_per_item_hf_log_likelihoods(llama5: Model) -> None:
    from interp.layers import score
    task = _task()
    res = score(llama5, task, batch_size=5, progress=False)
    lls = [[_hf_choice_ll(llama5.hf, llama5.tokenizer, it.prompt, c) for c in it.choices] for it in task.items]
    right = [max(range(len(r)), key=r.__getitem__) == it.answer for r, it in zip(lls, task.items, strict=True)]
    assert res.correct.tolist() == right
    assert res.accuracy == pytest.approx(sum(right) / len(right))
    assert res.loglik == pytest.approx(sum(r[it.answer] for r, it in zip(lls, task.items, strict=True)) / 12, abs=1e-4)
    assert res.chance == pytest.approx(1 / 3)


def test_next_token_score_equals_hf_by_hand(llama5: Model) -> None:
    from interp.layers import Task, score
    texts = ["w1 w2 w3 w4 w5 w6", "w9 w8 w7", "w3 w3 w3 w3 w3 w3 w3 w3"]
    res = score(llama5, Task.from_texts("t", texts), batch_size=2, progress=False)
    right, lls = 0, []
    for t in texts:
        ids = llama5.tokenizer(t, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = llama5.hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1].log_softmax(-1)
        right += int((lp.argmax(-1) == torch.tensor(ids[1:])).sum())
        lls += lp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    assert res.accuracy == pytest.approx(right / len(lls))
    assert res.loglik == pytest.approx(sum(lls) / len(lls), abs=1e-5)


def test_shipped_suites_load_and_bad_tasks_raise(tmp_path: object) -> None:
    from interp.errors import UnknownNameError
    from interp.layers import SHIPPED, Task, load_task
    sizes = {n: len(load_task(n)) for n in SHIPPED}
    assert sizes == {"capitals": 40, "arithmetic": 200, "copying": 500, "heldout": 64}
    for it in load_task("arithmetic").items[:20]:  # the right choice is the sum of the question
        a, b = it.prompt.rsplit("\n", 1)[1].rstrip(" =").split(" + ")
        assert it.choices[it.answer] == f" {int(a) + int(b)}"
    with pytest.raises(BadInputError, match="has no answer"):
        Task.from_items("x", [{"prompt": "a", "choices": [" b", " c"]}])
    with pytest.raises(BadInputError, match="not one of its choices"):
        Task.from_items("x", [{"prompt": "a", "choices": [" b", " c"], "answer": " d"}])
    with pytest.raises(BadInputError, match="choice index"):
        Task.from_items("x", [{"prompt": "a", "choices": [" b", " c"], "answer": 2}])
    with pytest.raises(UnknownNameError, match="capitals"):
        load_task("capitals2")


# -- studies -----------------------------------------------------------------------------------------------------

def test_drop_layers_scores_equal_hand_edited_models(llama5: Model) -> None:
    import numpy as np

    from interp.layers import drop_layers, score
    task = _task()
    res = drop_layers(llama5, task, methods=("angular", "random", "skip_loss", "attn"), max_drop=2, progress=False)
    assert res.accuracy.shape == (4, 3) and res.dropped[0][0] == ()
    base = score(llama5, task, progress=False)
    assert (res.accuracy[:, 0] == base.accuracy).all()
    # angular choice by hand: numpy angles between block inputs/outputs at the last token of each prompt
    ids, mask = llama5.encode([it.prompt for it in task.items])
    hf = llama5.hf
    states: list[np.ndarray] = []
    hs = [hf.model.layers[i].register_forward_pre_hook(lambda m, a: states.append(a[0].numpy().copy()))
          for i in range(5)]
    hs.append(hf.model.layers[4].register_forward_hook(lambda m, a, o: states.append(o[0].numpy().copy()
                                                                                    if isinstance(o, tuple) else o.numpy().copy())))
    with torch.no_grad():
        hf(input_ids=ids, attention_mask=mask, use_cache=False)
    for h in hs:
        h.remove()
    last = mask.sum(-1).numpy() - 1
    x = [s[np.arange(len(last)), last].astype(np.float64) for s in states]
    for n in (1, 2):
        d = []
        for i in range(6 - n):
            a, b = x[i], x[i + n]
            cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            d.append(np.mean(np.arccos(np.clip(cos, -1, 1)) / np.pi))
        start = int(np.argmin(d))
        assert res.dropped[0][n] == tuple(str(i) for i in range(start, start + n))
    # each cell's accuracy equals the score of a deep copy whose block list is edited by hand
    for row in (0, 1):
        blocks = [int(b) for b in res.dropped[row][2]]
        hf2 = copy.deepcopy(hf)
        hf2.model.layers = nn.ModuleList([hf2.model.layers[i] for i in range(5) if i not in blocks])
        hf2.config.num_hidden_layers = 3
        oracle = score(interp.from_hf(hf2, tokenizer=llama5.tokenizer, name="edited"), task, progress=False)
        assert float(res.accuracy[row, 2]) == pytest.approx(oracle.accuracy)
        assert float(res.loglik[row, 2]) == pytest.approx(oracle.loglik, abs=1e-4)
    assert all(n.startswith("attn.") for n in res.dropped[3][2])
    with pytest.raises(BadInputError, match="max_drop"):
        drop_layers(llama5, task, max_drop=5)


def test_painters_rows_and_widths(llama5: Model) -> None:
    from interp.layers import painters, painters_plan
    task = _task()
    res = painters(llama5, task, widths=[0, 1, 3], progress=False)
    assert res.spans == ((2, 2), (2, 3), (1, 4))
    assert (res.accuracy[:, 0] == res.accuracy[0, 0]).all()  # width 0: the unmodified model for every variant
    assert painters_plan(llama5, variant="repeat", start=1, stop=4)[0].steps(5) == [(0,), (2,), (2,), (2,), (4,)]
    assert painters_plan(llama5, variant="parallel", start=1, stop=4)[0].steps(5) == [(0,), (1, 2, 3), (4,)]
    assert painters_plan(llama5, variant="reverse", start=1, stop=4)[0].steps(5) == [(0,), (3,), (2,), (1,), (4,)]
    res.plot()
    assert "skip_at_widest" in res.headline()


def test_head_importance_equals_per_sequence_hand_gradients(llama5: Model) -> None:
    """One backward per batch with a per-sequence mask equals a separate backward per sequence (plain hooks)."""
    from interp.layers import head_importance
    texts = ["w1 w2 w3 w4 w5", "w7 w7 w8", "w20 w30 w40 w50 w60 w70", "w5 w4"]
    res = head_importance(llama5, texts, batch_size=3, progress=False)
    hf = copy.deepcopy(llama5.hf)
    total = torch.zeros(5, 4)
    for t in texts:
        ids = torch.tensor([llama5.tokenizer(t, add_special_tokens=False)["input_ids"]])
        leaf = torch.ones(5, 4, requires_grad=True)
        hs = [layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, L=L, leaf=leaf: ((a[0].unflatten(-1, (4, 8)) * leaf[L][:, None]).flatten(-2),))
            for L, layer in enumerate(hf.model.layers)]
        lp = hf(input_ids=ids, use_cache=False).logits[0, :-1].log_softmax(-1)
        loss = -lp.gather(-1, ids[0, 1:, None]).mean()
        loss.backward()
        for h in hs:
            h.remove()
        assert leaf.grad is not None
        total += leaf.grad.abs()
    torch.testing.assert_close(res.importance, total / 4, rtol=1e-4, atol=1e-6)
    assert res.n_sequences == 4 and len(res.ranking()) == 20
    torch.testing.assert_close(res.normalized.norm(dim=1), torch.ones(5))  # type: ignore[union-attr]


def test_attention_entropy_and_pruning(llama5: Model) -> None:
    from interp.layers import attention_entropy, head_mask, prune_heads, score
    texts = ["w1 w2 w3 w4 w5", "w7 w7 w8 w9"]
    ent = attention_entropy(llama5, texts)
    ids, mask = llama5.encode(texts)
    with torch.no_grad():
        att = llama5.hf(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False).attentions
    m = mask.bool()
    for L in range(5):
        p = att[L].double()
        e = -(p * p.clamp_min(1e-30).log()).sum(-1)
        torch.testing.assert_close(ent[L], ((e * m[:, None]).sum((0, 2)) / m.sum()).float(), rtol=1e-4, atol=1e-5)
    task = _task()
    res = prune_heads(llama5, task, shares=[0.0, 0.25, 0.5], calibration=texts, progress=False)
    assert res.accuracy.shape == (3, 3) and len(res.pruned[1][2]) == 10
    # the entropy order prunes the most diffuse heads first
    top = ent.flatten().argsort(descending=True)[:5]
    assert set(res.pruned[2][1]) == {f"L{int(i) // 4}H{int(i) % 4}" for i in top}
    again = score(llama5, task, interventions=head_mask(llama5, heads=list(res.pruned[1][2])), progress=False)
    assert float(res.accuracy[1, 2]) == pytest.approx(again.accuracy)
    with pytest.raises(BadInputError, match="shares"):
        prune_heads(llama5, task, shares=[0.0, 1.0])


# -- CLI ---------------------------------------------------------------------------------------------------------

def test_cli_layers_in_process(llama5: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from interp.cli import main
    from interp.layers import drop_layers
    saved = tmp_path / "m"
    llama5.hf.save_pretrained(saved)
    llama5.tokenizer.save_pretrained(saved)
    items = [{"prompt": it.prompt, "choices": list(it.choices), "answer": it.answer} for it in _task().items]
    (tmp_path / "t.json").write_text(json.dumps({"name": "tiny", "kind": "choice", "items": items}))
    rc = main(["layers", "drop", "--quiet", "--model", str(saved), "--task", str(tmp_path / "t.json"),
               "--methods", "angular,random", "--max-drop", "2", "--json", str(tmp_path / "d.json")])
    assert rc == 0
    data = json.loads((tmp_path / "d.json").read_text())["sections"]["LayerDropResult"]["LayerDropResult"]
    want = drop_layers(llama5, _task(), methods=("angular", "random"), max_drop=2, progress=False)
    torch.testing.assert_close(torch.tensor(data["arrays"]["accuracy"]["values"]), want.accuracy)
    items[3].pop("answer")
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "kind": "choice", "items": items}))
    capsys.readouterr()
    rc = main(["layers", "score", "--quiet", "--model", str(saved), "--task", str(tmp_path / "bad.json")])
    assert rc == 2 and "item 3" in capsys.readouterr().err


def test_report_section_ranks_heads_like_head_importance(llama5: Model) -> None:
    from interp.layers import head_importance
    from interp.report import build_report
    rep = build_report(llama5, "w1 w2 w3 w4 w5 w6", sections=["layers"], fast=True)
    data = rep.to_dict()["sections"]["Which heads matter"]
    got = torch.tensor(data["HeadImportanceResult"]["arrays"]["importance"]["values"])
    torch.testing.assert_close(got, head_importance(llama5, "w1 w2 w3 w4 w5 w6", progress=False).importance)


def test_plans_on_every_decoder_family_equal_the_hand_edited_list(any_decoder: Model,
                                                                  batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Swap the two blocks, and repeat block 0 then skip block 1, on each tiny decoder family (the oracle edits the
    block list of a deep copy at the adapter's path and runs the plain HF forward)."""
    ids, mask = batch
    for plan, order in ((LayerPlan(order=(1, 0)), [1, 0]), (LayerPlan(order=(0, 0)), [0, 0])):
        hf = copy.deepcopy(any_decoder.hf)
        parent_path, _, attr = any_decoder.adapter.layers.rpartition(".")
        parent = hf.get_submodule(parent_path)
        old = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList([old[i] for i in order]))
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
            got = any_decoder.run((ids, mask), interventions=[plan]).logits
        assert got is not None
        m = mask.bool()
        torch.testing.assert_close(got[m], ref[m], rtol=1e-5, atol=1e-5)
