"""Latent language (interp.lens.latent_language): lens probability mass per language, checked against a direct
computation from the Hugging Face forward's hidden states, hand-built token sets, and a planted model whose middle
layer is forced to speak one language."""

from __future__ import annotations

import tempfile

import pytest
import torch
from conftest import make_tokenizer, randomize
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp.errors import BadInputError, ModelMismatchError
from interp.hooks import Add
from interp.lens import (
    LanguageItem,
    LatentLanguageResult,
    TunedLens,
    language_token_sets,
    latent_language,
    load_language_prompts,
    logit_lens,
)
from interp.lens.latent_language import LANGUAGE_NAMES
from interp.models import Model

LANGS = ("en", "fr", "de")


@pytest.fixture(scope="module")
def llama4() -> Model:
    """A 4-layer tiny Llama over the word-level tokenizer w0..w99 (ids 4..103)."""
    cfg = LlamaConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=32, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return interp.from_hf(randomize(LlamaForCausalLM(cfg), 7), tokenizer=make_tokenizer(), name="tiny-llama4")


def items() -> list[LanguageItem]:
    """Three prompts of different lengths; word wK is token id 4 + K."""
    return [
        LanguageItem("w1 w2 w3 w4", "fr", {"en": "w10", "fr": "w20", "de": "w30"}, source="de", concept="a"),
        LanguageItem("w5 w6", "de", {"en": "w11", "fr": "w21", "de": "w31"}, source="fr", concept="b"),
        LanguageItem("w7 w8 w9", "en", {"en": "w12", "fr": "w12", "de": "w32"}, task="repetition", source="en",
                     concept="c"),  # en and fr share their word: both sets empty
    ]


def direct_probs(model: Model, prompt: str, translate: TunedLens | None = None) -> torch.Tensor:
    """``[layer, vocab]`` the lens's next-token distribution at the last token, from HF's hidden states."""
    hf = model.hf
    ids = torch.tensor([model.tokenizer.encode(prompt, add_special_tokens=False)])  # type: ignore[union-attr]
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        n = hf.config.num_hidden_layers
        rows = []
        for layer in range(n):
            if layer == n - 1:  # HF's last hidden state is after the final norm: the output itself
                rows.append(out.logits[0, -1].softmax(-1))
                continue
            h = out.hidden_states[layer + 1][0, -1]
            if translate is not None:
                h = h + h @ translate.weight_[layer] + translate.bias_[layer]
            rows.append(hf.lm_head(hf.model.norm(h)).softmax(-1))
    return torch.stack(rows)


def test_mass_matches_direct_computation(llama4: Model) -> None:
    res = latent_language(llama4, items(), languages=LANGS, progress=False)
    assert res.mass.shape == (1, 4, 3, 3)
    sets = [{"en": [14], "fr": [24], "de": [34]}, {"en": [15], "fr": [25], "de": [35]},
            {"en": [], "fr": [], "de": [36]}]  # by hand: shared tokens dropped
    assert res.n_tokens.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1]]
    for i, it in enumerate(items()):
        p = direct_probs(llama4, it.prompt)
        want = torch.stack([p[:, sets[i][lang]].sum(-1) for lang in LANGS], -1)  # [layer, language]
        torch.testing.assert_close(res.mass[0, :, i], want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(res.top_ids[0, :, i], p.argmax(-1))
    assert (res.mass.sum(-1) <= 1 + 1e-6).all()
    assert res.role_mass("english")[:, 2].isnan().all() and not res.role_mass("english")[:, 0].isnan().any()
    torch.testing.assert_close(res.role_mass("source")[:, 1], res.mass[0, :, 1, 1])  # source fr


def test_tuned_lens_and_vocab_mode(llama4: Model) -> None:
    tl = TunedLens(steps=0, init="least_squares", progress=False).fit(llama4, ["w1 w2 w3 w4 w5 w6 w7", "w9 w8 w7"])
    res = latent_language(llama4, items()[:2], languages=LANGS, lens=["logit", tl], mode="vocab", progress=False)
    assert res.lenses == ("logit", "tuned") and res.mode == "vocab"
    vocab_sets = {"en": [14, 15], "fr": [24, 25], "de": [34, 35]}
    for i, it in enumerate(items()[:2]):
        p = direct_probs(llama4, it.prompt, translate=tl)
        want = torch.stack([p[:, vocab_sets[lang]].sum(-1) for lang in LANGS], -1)
        torch.testing.assert_close(res.mass[1, :, i], want, rtol=1e-4, atol=1e-6)
    fixed = latent_language(llama4, items()[:2], languages=LANGS, token_sets={"en": ["w10", 15], "fr": [24, 25]},
                            progress=False)
    torch.testing.assert_close(fixed.mass[0, :, :, :2], res.mass[0, :, :, :2])
    assert (fixed.mass[..., 2] == 0).all()  # no set given for de
    with pytest.raises(ModelMismatchError):
        latent_language(interp.from_hf(randomize(LlamaForCausalLM(llama4.hf.config), 8), tokenizer=make_tokenizer()),
                        items(), lens=tl, progress=False)


def test_planted_middle_layer_speaks_french(llama4: Model) -> None:
    """Add a direction that the unembedding reads as the French word after block 1 and take it away after block 2:
    only layer 1's reading speaks French."""
    w = llama4.weights
    W_U = w.W_U.detach()  # type: ignore[union-attr]
    ln = w.ln_final_w.detach()  # type: ignore[union-attr]
    fr = 24  # "w20", the French word of the first item
    d = (W_U[:, fr] - W_U.mean(1)) / ln
    v = 500 * d / d.norm()
    planted = [Add("resid_post.1", vector=v), Add("resid_post.2", vector=-v)]
    it = items()[:1]
    base = latent_language(llama4, it, languages=LANGS, progress=False)
    res = latent_language(llama4, it, languages=LANGS, interventions=planted, progress=False)
    m = res.role_mass("target")[:, 0]  # target = fr
    assert float(m[1]) > 0.9
    assert float(base.role_mass("target")[1, 0]) < 0.1
    assert float(m[0]) < 0.1 and float(m[2]) < 0.5
    assert res.curves("role")["target"][0].argmax().item() == 1
    assert bool(res.target_hit[0, 1, 0]) and not bool(base.target_hit[0, 1, 0])


def test_result_surface(llama4: Model) -> None:
    res = latent_language(llama4, items(), languages=LANGS, progress=False)
    for view in res.VIEWS:
        kw = {"task": "translation"} if view == "accuracy" else {}
        assert res.plot(view, **kw).data
    df = res.to_frame()
    assert len(df) == 4 * 3 * 3 and {"task", "source", "target", "concept"} <= set(df.columns)
    acc = res.accuracy()
    assert acc["items"].sum() == 3
    back = LatentLanguageResult.load(res.save(tempfile.mkdtemp()))
    torch.testing.assert_close(back.mass, res.mass)
    assert back.targets == res.targets and back.id_to_str == res.id_to_str
    assert "items=3" in repr(res) and "views" in res.summary()
    assert set(res.to_dict()["arrays"]) == {"mass", "n_tokens"}
    with pytest.raises(BadInputError):
        latent_language(llama4, [], progress=False)
    with pytest.raises(BadInputError):
        latent_language(llama4, items(), mode="sentence", progress=False)
    with pytest.raises(BadInputError):
        latent_language(llama4, items(), token_sets={"en": ["w1 w2"]}, progress=False)


def test_shipped_prompt_sets() -> None:
    every = load_language_prompts()
    assert len(every) == 489
    counts = {t: sum(it.task == t for it in every) for t in ("translation", "repetition", "cloze")}
    assert counts == {"translation": 240, "repetition": 100, "cloze": 149}
    cloze = [it for it in every if it.task == "cloze"]  # asked in the target language (Wendler et al.)
    assert {lang: sum(it.target == lang for it in cloze) for lang in LANGUAGE_NAMES} == {
        "en": 50, "fr": 24, "de": 30, "es": 24, "it": 21}
    label = {"en": "Answer: ", "fr": "Réponse : ", "de": "Antwort: ", "es": "Respuesta: ", "it": "Risposta: "}
    for it in cloze:
        assert it.source == it.target and it.prompt.splitlines()[-1].endswith(label[it.target] + '"')
        assert '"___"' in it.prompt.splitlines()[-1] or it.prompt.splitlines()[-1].startswith("___")
        if it.target != "en":
            assert it.words[it.target].lower() != it.concept  # the answer is not the English word
    for it in every:
        # the prompt ends right before the answer, which is the concept's word in the target language
        assert it.prompt.endswith('"') and it.target in it.words and it.words["en"] == it.concept
        if it.task != "cloze":
            assert it.prompt.splitlines()[-1].startswith(f'{LANGUAGE_NAMES[it.source]}: '
                                                         f'"{it.words[it.source]}"')
    two = load_language_prompts("translation", languages=["fr", "de"])
    assert {(it.source, it.target) for it in two} == {("fr", "de"), ("de", "fr")}
    with pytest.raises(BadInputError):
        load_language_prompts("poetry")


@pytest.mark.slow
def test_smollm2_matches_logit_lens(smollm2: Model) -> None:
    """On the bundled model: a one-token set's mass is the logit lens's probability of that token, and the word
    sets are disjoint per item so masses sum to at most 1 for both lenses."""
    items_ = load_language_prompts("repetition", languages=["en", "fr"])[:3]
    res = latent_language(smollm2, items_, lens=["logit", "tuned"], progress=False)
    assert (res.mass.sum(-1) <= 1 + 1e-5).all()
    ll = logit_lens(smollm2, items_[0].prompt, positions=-1, top_k=1)
    top = ll.top_ids[:, 0, -1, 0]  # [layer] each layer's top token
    probs = ll.top_probs[:, 0, -1, 0]
    one = latent_language(smollm2, items_[:1], token_sets={"x": [int(top[12])]}, progress=False)
    torch.testing.assert_close(one.mass[0, 12, 0, 0], probs[12], rtol=1e-4, atol=1e-6)
    assert one.top_ids[0, :, 0].tolist() == top.tolist()
    sets = language_token_sets(smollm2, words={"en": ["flower"], "fr": ["fleur"]})
    assert not set(sets["en"]) & set(sets["fr"])


def test_report_section_through_the_shared_context(llama4: Model) -> None:
    """``build_report(..., language_prompts=)`` (``interp report --language-prompts``) adds the section through
    ``ReportContext.language_prompts``; without it there is none."""
    from interp.report import build_report

    rep = build_report(llama4, "w1 w2 w3", sections=["latent_language"], language_prompts=items(), fast=True,
                       skip_layers=False)
    titles = [s.title for s in rep.sections]
    assert "Latent language" in titles
    want = latent_language(llama4, items(), progress=False)  # the direct call: the section holds its masses
    got = rep.to_dict()["sections"]["Latent language"]["logit LatentLanguageResult"]["arrays"]["mass"]
    assert got["axes"] == ["lens", "layer", "item", "language"]
    torch.testing.assert_close(torch.tensor(got["values"], dtype=torch.float32), want.mass.float(), rtol=0, atol=1e-6)
    assert "Latent language" not in [s.title for s in build_report(llama4, "w1 w2 w3", sections=["latent_language"],
                                                                   fast=True, skip_layers=False).sections]
