"""Oracle: interp.causal against pyvene 0.1.8 (Wu et al.), on the shipped IIT-trained GPT-2s.

- fixed interchange interventions (``VanillaIntervention``): one variable, two variables from two sources at
  once, and one head's output: the same answer on every pair, so the same IIA exactly;
- DAS (``RotatedSpaceIntervention``, the first k rotated dims swapped) with the same seed, data, batches,
  steps, loss and optimiser: the same initial rotation, and a held-out IIA within 0.02 of pyvene's.

pyvene's components for GPT-2: ``mlp_output`` is ``transformer.h[L].mlp``'s output (interp's ``mlp_out.L``),
``block_output`` the block's (``resid_post.L``), ``head_attention_value_output`` the input of ``attn.c_proj``
split into heads (``z.L``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import requires

from interp.causal import AlignedSite, das, iia, load_iit_model
from interp.causal.engine import encode_prompts
from interp.causal.task import answer_ids

pv = requires("pyvene")
pytestmark = pytest.mark.oracle


def _pyvene_predictions(hf: torch.nn.Module, reps: list[tuple[int, str, str]], base: torch.Tensor,
                        sources: list[torch.Tensor], locations: list[list], cand: torch.Tensor | None) -> torch.Tensor:
    cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(L, comp, unit, 1) for L, comp, unit in reps],
                                intervention_types=pv.VanillaIntervention)
    ivm = pv.IntervenableModel(cfg, model=hf)
    with torch.no_grad():
        _, cf = ivm({"input_ids": base}, [{"input_ids": s} for s in sources],
                    {"sources->base": (locations, locations)})
    logits = cf.logits[:, -1]
    return logits.argmax(-1) if cand is None else cand[logits[:, cand].argmax(-1)]


def test_fixed_interchanges_match_pyvene_exactly() -> None:
    eq = load_iit_model("iit-equality")
    m, task = eq.model, eq.task
    cand = answer_ids(m.dims.d_vocab, None, task.candidates)
    hf = copy.deepcopy(m.hf)  # pyvene wraps the model it is given

    # one variable, two sites in one run: mlp_out.0 at position 1, and resid_post.1 at the last position
    data = task.sample(256, variables=["WX"], seed=11)
    base, _ = encode_prompts(m, data.base)
    src, _ = encode_prompts(m, data.sources["WX"])
    cfs = answer_ids(m.dims.d_vocab, None, data.counterfactuals)
    b = len(data)
    ours = iia(m, data, alignment=[{"WX": ("mlp_out.0", 1)}, {"WX": ("resid_post.1", -1)}], progress=False)
    theirs = _pyvene_predictions(hf, [(0, "mlp_output", "pos")], base, [src], [[[1]] * b], cand) == cfs
    assert torch.equal(ours.correct[0], theirs)
    theirs = _pyvene_predictions(hf, [(1, "block_output", "pos")], base, [src], [[[4]] * b], cand) == cfs
    assert torch.equal(ours.correct[1], theirs)

    # two variables, each from its own source (a multi-source interchange)
    data = task.sample(256, variables=["WX", "WY"], seed=12)
    base, _ = encode_prompts(m, data.base)
    sx, _ = encode_prompts(m, data.sources["WX"])
    sy, _ = encode_prompts(m, data.sources["WY"])
    ours = iia(m, data, alignment=eq.alignment, progress=False)
    theirs = _pyvene_predictions(hf, [(0, "mlp_output", "pos"), (0, "mlp_output", "pos")], base, [sx, sy],
                                 [[[1]] * b, [[3]] * b], cand) == answer_ids(m.dims.d_vocab, None, data.counterfactuals)
    assert torch.equal(ours.correct[0], theirs)
    assert float(ours.iia[0]) >= 0.98

    # one head's output (the toy IOI model's name mover, L1H0 at the last position)
    io = load_iit_model("iit-ioi")
    data = io.task.sample(256, variables=["IO"], seed=13)
    base, _ = encode_prompts(io.model, data.base)
    src, _ = encode_prompts(io.model, data.sources["IO"])
    ours = iia(io.model, data, alignment={"IO": AlignedSite("z.1", positions=2, heads="L1H0")}, progress=False)
    loc = [[[0]] * b, [[2]] * b]
    theirs = _pyvene_predictions(copy.deepcopy(io.model.hf), [(1, "head_attention_value_output", "h.pos")], base,
                                 [src], [loc], answer_ids(12, None, io.task.candidates))
    assert torch.equal(ours.correct[0], theirs == answer_ids(12, None, data.counterfactuals))


def pyvene_das(hf: torch.nn.Module, layer: int, component: str, pos: int, k: int, train, held, *, steps: int,
               lr: float, batch_size: int, seed: int, cand: torch.Tensor, tokenizer: object = None
               ) -> tuple[float, torch.Tensor, float]:
    """DAS written with pyvene as its tutorials do, on interp's batches (the same order: a seeded permutation,
    reshuffled when used up). Returns ``(held-out IIA, initial rotation, seconds per step)``."""
    import time

    from interp.models import from_hf

    wrapper = from_hf(hf, tokenizer=tokenizer)
    base, _ = encode_prompts(wrapper, train.base)
    src, _ = encode_prompts(wrapper, train.sources[train.variables[0]])
    vocab = hf.config.vocab_size
    target = (answer_ids(vocab, tokenizer, train.counterfactuals)[:, None] == cand[None, :]).float().argmax(1)
    torch.manual_seed(seed)
    cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(layer, component, "pos", 1,
                                                                         low_rank_dimension=k)],
                                intervention_types=pv.RotatedSpaceIntervention)
    ivm = pv.IntervenableModel(cfg, model=hf)
    ivm.disable_model_gradients()
    (iv,) = ivm.interventions.values()
    iv = iv[0] if isinstance(iv, tuple) else iv
    iv.set_interchange_dim(k)
    init = iv.rotate_layer.weight.detach().clone()
    opt = torch.optim.Adam(ivm.get_trainable_parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(train)
    order, cursor = torch.randperm(n, generator=g), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=g), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        loc = [[[pos]] * len(idx)]
        _, cf = ivm({"input_ids": base[idx]}, [{"input_ids": src[idx]}], {"sources->base": (loc, loc)})
        loss = torch.nn.functional.cross_entropy(cf.logits[:, -1][:, cand].float(), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    hb, _ = encode_prompts(wrapper, held.base)
    hs, _ = encode_prompts(wrapper, held.sources[held.variables[0]])
    loc = [[[pos]] * len(held)]
    with torch.no_grad():
        _, cf = ivm({"input_ids": hb}, [{"input_ids": hs}], {"sources->base": (loc, loc)})
    pred = cand[cf.logits[:, -1][:, cand].argmax(-1)]
    acc = float((pred == answer_ids(vocab, tokenizer, held.counterfactuals)).float().mean())
    return acc, init, per_step


@pytest.mark.parametrize(("layer", "component", "hook", "pos", "k"), [(0, "mlp_output", "mlp_out.0", 1, 2),
                                                                       (0, "block_output", "resid_post.0", 1, 1)])
def test_das_matches_pyvene(layer: int, component: str, hook: str, pos: int, k: int) -> None:
    eq = load_iit_model("iit-equality")
    data = eq.task.sample(640, variables=["WX"], seed=21)
    train, held = data.split(0.25, seed=0)
    cand = answer_ids(eq.model.dims.d_vocab, None, eq.task.candidates)
    steps, lr, batch_size, seed = 60, 1e-2, 32, 5
    ours = das(eq.model, train, site=(hook, pos), k=k, steps=steps, lr=lr, batch_size=batch_size, test=held, seed=seed,
               progress=False)
    acc, init, _ = pyvene_das(copy.deepcopy(eq.model.hf), layer, component, pos, k, train, held, steps=steps, lr=lr,
                              batch_size=batch_size, seed=seed, cand=cand)
    torch.manual_seed(seed)
    from interp.causal.das import Rotation

    mine = torch.nn.utils.parametrizations.orthogonal(Rotation(init.shape[0])).weight.detach()
    torch.testing.assert_close(mine, init, atol=1e-5, rtol=0)  # the same starting rotation
    assert abs(ours.iia - acc) <= 0.02, (ours.iia, acc)
