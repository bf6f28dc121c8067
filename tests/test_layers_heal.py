"""interp.layers.heal: healing after dropping blocks (final norm / LoRA fine-tune as a ParamEdit), checked against
hand-edited Hugging Face copies: the block list edited by hand and the trained values written into the weights."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from conftest import make_tokenizer, randomize
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import interp
from interp.errors import BadInputError
from interp.layers import Task, corpus_texts, drop_layers, heal, score, skip
from interp.models import Model


@pytest.fixture(scope="module")
def gpt5() -> Model:
    cfg = GPT2Config(n_embd=32, n_layer=5, n_head=4, n_inner=48, vocab_size=104, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return interp.from_hf(randomize(GPT2LMHeadModel(cfg), 8).eval(), tokenizer=make_tokenizer(), name="gpt5")


# counting sequences of the tiny word vocabulary: a pattern a few steps of fine-tuning can pick up
TEXTS = [" ".join(f"w{(k + 3 * i) % 100}" for i in range(10)) for k in range(12)]


def _hand_dropped(hf: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Oracle: a copy of ``hf`` whose block list holds only ``keep``."""
    hf = copy.deepcopy(hf)
    inner = hf.model if hasattr(hf, "model") else hf.transformer
    name = "layers" if hasattr(inner, "layers") else "h"
    setattr(inner, name, nn.ModuleList([getattr(inner, name)[i] for i in keep]))
    hf.config.num_hidden_layers = len(keep)
    hf.config.n_layer = len(keep)
    return hf


def _hf_loss(hf: nn.Module, model: Model) -> float:
    """Mean next-token loss over every real token of TEXTS, by Hugging Face's own labels loss."""
    ids, mask = model.encode(TEXTS)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        return float(hf(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss)


def _state(hf: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in hf.state_dict().items()}


def test_heal_final_norm(llama5: Model) -> None:
    before = _state(llama5.hf)
    h = heal(llama5, TEXTS, interventions=skip(llama5, blocks=[2]), train="norm", steps=25, lr=0.05, batch_size=4,
             progress=False)
    assert h.trained == ("model.norm.weight",) and h.n_params == 32
    # the model itself is untouched
    assert all(torch.equal(v, before[k]) for k, v in llama5.hf.state_dict().items())
    # the losses equal Hugging Face's on hand-edited copies: block 2 removed, and the trained norm written in
    keep = [0, 1, 3, 4]
    assert h.loss_before == pytest.approx(_hf_loss(_hand_dropped(llama5.hf, keep), llama5), rel=1e-5)
    merged = h.edit.merged(llama5)
    assert h.loss_after == pytest.approx(_hf_loss(_hand_dropped(merged, keep), llama5), rel=1e-5)
    assert h.loss_after < h.loss_before - 0.05
    # only the named parameter differs from the untouched weights
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["model.norm.weight"]
    # running with the healing's interventions is the merged, hand-dropped model
    ids, mask = llama5.encode(TEXTS)
    with torch.no_grad():
        ours = llama5.run((ids, mask), interventions=list(h.interventions)).logits
        ref = _hand_dropped(merged, keep)(input_ids=ids, attention_mask=mask, use_cache=False).logits
    m = mask.bool()
    torch.testing.assert_close(ours[m], ref[m], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama5", "gpt5"])
def test_heal_lora_on_the_remaining_blocks(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model: Model = request.getfixturevalue(name)
    before = _state(model.hf)
    h = heal(model, TEXTS, interventions=skip(model, blocks=[1, 3]), train="lora", rank=2, steps=25, lr=0.02,
             batch_size=4, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.hf.state_dict().items())
    keep = [0, 2, 4]
    assert h.loss_before == pytest.approx(_hf_loss(_hand_dropped(model.hf, keep), model), rel=1e-5)  # B = 0
    merged = h.edit.merged(model)
    assert h.loss_after == pytest.approx(_hf_loss(_hand_dropped(merged, keep), model), rel=1e-4)
    assert h.loss_after < h.loss_before - 0.05
    changed = sorted(k for k, v in merged.state_dict().items() if not torch.equal(v, before[k]))
    prefix = "model.layers" if name == "llama5" else "transformer.h"
    # the linear layers of blocks 0, 2, 4 and nothing else (no norm, no embedding, not the dropped blocks)
    assert changed and all(k.startswith(tuple(f"{prefix}.{i}." for i in keep)) and k.endswith(".weight")
                           and "norm" not in k and ".ln_" not in k for k in changed)
    n_linear = 7 if name == "llama5" else 4  # q k v o gate up down / c_attn c_proj c_fc c_proj
    assert len(changed) == n_linear * len(keep) and len(h.trained) == 2 * len(changed)
    # saved and loaded: the trained adapters come back; run with the starting edits again, the same logits
    back = type(h).load(h.save(tmp_path / name))
    assert back.interventions == () and back.started_from == h.started_from and len(back.started_from) == 1
    ids = torch.tensor([[5, 6, 7, 8]])
    same = [model.run(ids, interventions=ivs).logits for ivs in (h.interventions,
                                                                 [*skip(model, blocks=[1, 3]), back.edit])]
    assert torch.equal(same[0], same[1])
    assert back.to_frame()["value"].tolist() == pytest.approx(h.losses.tolist())


def test_drop_layers_reports_healing(llama5: Model) -> None:
    items = [{"prompt": " ".join(f"w{(k + 3 * i) % 100}" for i in range(4)),
              "choices": [f" w{(k + 12) % 100}", f" w{(k + 50) % 100}"], "answer": 0} for k in range(6)]
    task = Task.from_items("count", items)
    res = drop_layers(llama5, task, methods=("angular", "random"), max_drop=2, heal="norm", heal_texts=TEXTS,
                      heal_steps=10, heal_options={"lr": 0.05, "batch_size": 4}, progress=False)
    assert res.healed_accuracy is not None and res.heal_loss is not None and res.healed_loglik is not None
    assert res.heal_loss.shape == (2, 3, 2) and bool((res.heal_loss[..., 1] < res.heal_loss[..., 0]).all())
    assert "final norm" in res.healed and "seed 0" in res.healed
    # a cell re-healed by hand scores the same (the healing is seeded)
    ivs = skip(llama5, blocks=[int(b) for b in res.dropped[1][2]])
    h = heal(llama5, TEXTS, interventions=ivs, steps=10, lr=0.05, batch_size=4, progress=False)
    s = score(llama5, task, interventions=list(h.interventions))
    assert float(res.healed_loglik[1, 2]) == pytest.approx(s.loglik, rel=1e-5)
    assert float(res.heal_loss[1, 2, 1]) == pytest.approx(h.loss_after, rel=1e-5)
    frame = res.to_frame()
    assert {"healed_accuracy", "healed_loglik", "heal_loss_before", "heal_loss_after"} <= set(frame.columns)
    assert len(frame) == 6
    for view in res.VIEWS:
        assert res.plot(view).data
    import tempfile

    again = type(res).load(res.save(tempfile.mkdtemp() + "/r"))
    assert torch.equal(again.heal_loss, res.heal_loss) and again.healed == res.healed  # type: ignore[arg-type]


def test_heal_bad_input(llama5: Model) -> None:
    with pytest.raises(BadInputError, match="train"):
        heal(llama5, TEXTS, train="everything")
    with pytest.raises(BadInputError, match="steps"):
        heal(llama5, TEXTS, steps=0)
    with pytest.raises(BadInputError, match="heal"):
        drop_layers(llama5, Task.from_texts("t", TEXTS), methods=("random",), max_drop=1, heal="all")
    with pytest.raises(BadInputError, match="heal_steps"):  # drop_layers sets these itself: no duplicate keyword
        drop_layers(llama5, Task.from_texts("t", TEXTS), methods=("random",), max_drop=1, heal="norm",
                    heal_options={"steps": 5})


def test_corpus_texts_skip_the_heldout_paragraphs() -> None:
    from interp.layers import load_task

    held = {t[:60] for t in load_task("heldout").texts}
    texts = corpus_texts(200, words=48)
    assert len(texts) == 200 and len(set(texts)) == 200 and not held & {t[:60] for t in texts}
    assert corpus_texts(5, seed=1) == corpus_texts(5, seed=1) != corpus_texts(5, seed=2)


def test_cli_drop_with_healing(llama5: Model, tmp_path: Path) -> None:
    import json

    from interp.cli import main

    out = tmp_path
    llama5.hf.save_pretrained(out / "m")
    llama5.tokenizer.save_pretrained(out / "m")
    items = [{"prompt": "w1 w2 w3", "choices": [" w4", " w9"], "answer": 0},
             {"prompt": "w5 w6 w7", "choices": [" w1", " w8"], "answer": 1}]
    (out / "t.json").write_text(json.dumps({"name": "tiny", "kind": "choice", "items": items}))
    rc = main(["layers", "drop", "--quiet", "--model", str(out / "m"), "--task", str(out / "t.json"), "--methods",
               "random", "--max-drop", "1", "--heal", "norm", "--heal-steps", "2", "--json", str(out / "d.json")])
    assert rc == 0
    data = json.loads((out / "d.json").read_text())["sections"]["LayerDropResult"]["LayerDropResult"]
    assert set(data["arrays"]) >= {"healed_accuracy", "healed_loglik", "heal_loss"}
    assert "final norm (32 values), 2 Adam steps of 8 texts" in data["attributes"]["healed"]
