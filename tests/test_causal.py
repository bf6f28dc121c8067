"""interp.causal: high-level causal models, alignments and batched interchange interventions, checked against
hand-written PyTorch hooks on the Hugging Face modules (an oracle that shares no code with interp's engine)."""

from __future__ import annotations

import random

import pytest
import torch

from interp.causal import (
    AlignedSite,
    Alignment,
    CausalModel,
    CausalTask,
    IIAResult,
    hierarchical_equality,
    iia,
    iia_sweep,
    toy_ioi,
    toy_transformer,
    wilson,
)
from interp.causal.engine import encode_prompts
from interp.causal.task import answer_ids
from interp.errors import BadInputError, UnknownNameError
from interp.hooks import Patch, SubspacePatch
from interp.models import Model
from interp.sites import UnknownHookError


@pytest.fixture(scope="module")
def eq_model() -> Model:
    """A random tiny GPT-2 on hierarchical equality's vocabulary (the interchanges still change its answers)."""
    m = toy_transformer(vocab=9, n_ctx=5, d_model=32, seed=3, name="tiny-eq")
    with torch.no_grad():
        for p in m.hf.parameters():
            p.mul_(8.0) if p.dim() > 1 else None  # larger weights: answers that depend on the inputs
    return m


# -- the high-level model ------------------------------------------------------------------------------------
def _eq_model() -> CausalModel:
    return CausalModel(inputs={"a": range(3), "b": range(3), "c": range(3), "d": range(3)},
                       functions={"WX": (("a", "b"), lambda a, b: a == b), "WY": (("c", "d"), lambda c, d: c == d),
                                  "O": (("WX", "WY"), lambda x, y: x == y)}, output="O")


def test_causal_model_runs_intervenes_and_interchanges() -> None:
    cm = _eq_model()
    assert cm.inputs == ("a", "b", "c", "d") and cm.variables[-1] == "O"
    base = {"a": 0, "b": 0, "c": 1, "d": 2}
    assert cm.run(base) == {**base, "WX": True, "WY": False, "O": False}
    assert cm.run(base, {"WY": True})["O"] is True
    # multi-source: WX from one source, WY from another
    out = cm.interchange(base, {"WX": {"a": 1, "b": 2, "c": 0, "d": 0}, "WY": {"a": 0, "b": 0, "c": 2, "d": 2}})
    assert (out["WX"], out["WY"], out["O"]) == (False, True, False)
    assert cm.descendants("a") == {"WX", "O"}


def test_cyclic_causal_model_is_refused_naming_the_cycle() -> None:
    with pytest.raises(BadInputError, match=r"cycle: (X -> Y -> X|Y -> X -> Y)"):
        CausalModel(inputs={"a": (0, 1)}, functions={"X": (("a", "Y"), lambda a, y: a), "Y": (("X",), lambda x: x)},
                    output="Y")
    with pytest.raises(BadInputError, match="cycle: Z -> Z"):
        CausalModel(inputs={"a": (0, 1)}, functions={"Z": (("Z",), lambda z: z)}, output="Z")


def test_causal_model_bad_names() -> None:
    with pytest.raises(UnknownNameError, match="'q'"):
        CausalModel(inputs={"a": (0, 1)}, functions={"X": (("q",), lambda q: q)}, output="X")
    with pytest.raises(UnknownNameError, match="output variable 'Z'"):
        CausalModel(inputs={"a": (0, 1)}, functions={"X": (("a",), lambda a: a)}, output="Z")
    with pytest.raises(BadInputError, match="input 'b' is missing"):
        CausalModel(inputs={"a": (0, 1), "b": (0, 1)}, functions={"X": (("a",), lambda a: a)}, output="X").run({"a": 1})


def test_sampling_gives_counterfactuals_of_the_causal_model() -> None:
    task = hierarchical_equality(n_symbols=5)
    data = task.sample(40, variables=["WX", "WY"], seed=4)
    cm = task.causal_model
    for i in range(len(data)):
        srcs = {v: data.source_inputs[v][i] for v in ("WX", "WY")}
        assert data.labels[i] == task.answer(cm.run(data.base_inputs[i])["O"])
        assert data.counterfactuals[i] == task.answer(cm.interchange(data.base_inputs[i], srcs)["O"])
        assert data.base[i] == task.prompt(data.base_inputs[i])
    assert data.changed == 0.5
    train, test = data.split(0.25, seed=1)
    assert len(train) == 30 and len(test) == 10 and set(train.base_inputs[0]) == set("abcd")
    with pytest.raises(BadInputError, match="changes the answer"):
        CausalTask("t", CausalModel(inputs={"a": (0, 1)}, functions={"X": (("a",), lambda a: 0)}, output="X"),
                   prompt=lambda x: (x["a"],), answer=int).sample(4, variables=["X"], max_tries=5)


def test_wilson_interval_matches_the_formula() -> None:
    rate, lo, hi = wilson(torch.tensor([[True] * 45 + [False] * 5, [True] * 50]))
    # Wilson (1927): p = 0.9, n = 50, z = 1.95996
    z, n, p = 1.959964, 50, 0.9
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    assert rate.tolist()[0] == pytest.approx(0.9) and lo[0].item() == pytest.approx(c - h, abs=1e-6)
    assert hi[0].item() == pytest.approx(c + h, abs=1e-6) and hi[1].item() == 1.0 and lo[1].item() < 1.0


# -- SubspacePatch --------------------------------------------------------------------------------------------
def test_subspace_patch_swaps_only_the_subspace() -> None:
    g = torch.Generator().manual_seed(0)
    act, src = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    q = torch.linalg.qr(torch.randn(6, 2, generator=g)).Q  # [6, 2] orthonormal columns
    out = SubspacePatch("resid_post.0", source=src, basis=q.T, positions=[-1]).apply(act)
    want = act.clone()
    want[:, -1] = act[:, -1] - act[:, -1] @ q @ q.T + src[:, -1] @ q @ q.T
    torch.testing.assert_close(out, want)
    # the complement is untouched, the subspace is the source's
    torch.testing.assert_close(out[:, -1] @ q, src[:, -1] @ q)
    # a non-orthonormal basis spans the same subspace
    torch.testing.assert_close(SubspacePatch("resid_post.0", source=src, basis=(q @ torch.tensor([[2.0, 1.0], [0.0, 3.0]])).T,
                                             positions=[-1]).apply(act), want)
    full = SubspacePatch("resid_post.0", source=src).apply(act)
    torch.testing.assert_close(full, Patch("resid_post.0", source=src).apply(act))
    with pytest.raises(BadInputError, match="at most 6 dimensions"):
        SubspacePatch("resid_post.0", source=src, basis=torch.randn(7, 6))
    with pytest.raises(BadInputError, match=r"dimension 5 but blocks\.0\.hook_resid_post has last axis 6"):
        SubspacePatch("resid_post.0", source=src, basis=torch.randn(1, 5)).apply(act)


# -- interchange interventions against hand-written hooks -----------------------------------------------------
def _manual_mlp_interchange(model: Model, base: torch.Tensor, src: torch.Tensor, edits: list[tuple[int, int]],
                            srcs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Last-position logits of GPT-2 with ``transformer.h[L].mlp``'s output at position ``p`` taken from the source
    run, for each ``(L, p)`` of ``edits`` (``srcs``: one source batch per edit), with plain PyTorch hooks."""
    hf = model.hf
    srcs = srcs or [src] * len(edits)
    saved = []
    for (L, _), s in zip(edits, srcs, strict=True):
        keep: dict[str, torch.Tensor] = {}
        h = hf.transformer.h[L].mlp.register_forward_hook(lambda mod, i, o, keep=keep: keep.setdefault("o", o.detach()))
        with torch.no_grad():
            hf(input_ids=s)
        h.remove()
        saved.append(keep["o"])
    handles = []
    for (L, p), o_src in zip(edits, saved, strict=True):
        def patch(mod, i, o, p=p, o_src=o_src):
            o = o.clone()
            o[:, p] = o_src[:, p]
            return o
        handles.append(hf.transformer.h[L].mlp.register_forward_hook(patch))
    with torch.no_grad():
        logits = hf(input_ids=base).logits[:, -1]
    for h in handles:
        h.remove()
    return logits


def test_interchange_matches_hand_written_hooks(eq_model: Model) -> None:
    task = hierarchical_equality(n_symbols=6)
    data = task.sample(48, variables=["WX"], seed=5)
    base, _ = encode_prompts(eq_model, data.base)
    src, _ = encode_prompts(eq_model, data.sources["WX"])
    cfs = answer_ids(9, None, data.counterfactuals)
    res = iia(eq_model, data, alignment=[{"WX": ("mlp_out.0", 1)}, {"WX": AlignedSite("mlp_out.1", positions=[1, 3])}],
              batch_size=20, progress=False)
    for row, edits in enumerate(([(0, 1)], [(1, 1), (1, 3)])):
        logits = _manual_mlp_interchange(eq_model, base, src, edits)
        pred = torch.tensor([6, 7])[logits[:, [6, 7]].argmax(-1)]
        assert torch.equal(res.correct[row], pred == cfs), row
    assert isinstance(res, IIAResult) and res.alignments == ("WX: mlp_out.0@1", "WX: mlp_out.1@1,3")
    assert 0 < float(res.iia[0]) < 1  # the random model's answers do change


def test_multi_source_interchange_takes_each_variable_from_its_own_source(eq_model: Model) -> None:
    task = hierarchical_equality(n_symbols=6)
    data = task.sample(32, variables=["WX", "WY"], seed=6)
    base, _ = encode_prompts(eq_model, data.base)
    sx, _ = encode_prompts(eq_model, data.sources["WX"])
    sy, _ = encode_prompts(eq_model, data.sources["WY"])
    res = iia(eq_model, data, alignment={"WX": ("mlp_out.0", 1), "WY": ("mlp_out.0", 3)}, progress=False)
    logits = _manual_mlp_interchange(eq_model, base, sx, [(0, 1), (0, 3)], srcs=[sx, sy])
    pred = torch.tensor([6, 7])[logits[:, [6, 7]].argmax(-1)]
    assert torch.equal(res.correct[0], pred == answer_ids(9, None, data.counterfactuals))
    with pytest.raises(BadInputError, match="only covers WX"):
        iia(eq_model, data, alignment={"WX": ("mlp_out.0", 1)}, progress=False)


def test_heads_and_negative_positions_in_padded_batches(tiny_llama: Model) -> None:
    """Prompts of different lengths: -1 is each row's last real token, in the base and in the source."""
    rng = random.Random(0)

    def sampler(r: random.Random) -> dict[str, int]:
        return {"n": r.randrange(2, 6), "t": r.randrange(10)}

    cm = CausalModel(inputs={"n": range(2, 6), "t": range(10)}, functions={"O": (("t",), lambda t: t)}, output="O",
                     sampler=sampler)
    task = CausalTask("lengths", cm, prompt=lambda x: " ".join(f"w{(x['t'] * 7 + i) % 50}" for i in range(x["n"])),
                      answer=lambda t: f"w{t}")
    data = task.sample(12, variables=["O"], seed=rng.randrange(100), changed=None)
    res = iia(tiny_llama, data, alignment={"O": AlignedSite("z.1", positions=-1, heads="L1H2")}, progress=False)
    # oracle: hooks on o_proj's input, head 2's slice, at each row's last real token
    hf = tiny_llama.hf
    bi, bm = tiny_llama.encode(list(data.base))
    si, sm = tiny_llama.encode(list(data.sources["O"]))
    d_head = 16
    keep: dict[str, torch.Tensor] = {}
    proj = hf.model.layers[1].self_attn.o_proj
    h = proj.register_forward_pre_hook(lambda mod, args: keep.setdefault("z", args[0].detach()))
    with torch.no_grad():
        hf(input_ids=si, attention_mask=sm)
    h.remove()
    z_src, s_last, b_last = keep["z"], sm.sum(1) - 1, bm.sum(1) - 1

    def put(mod, args):
        z = args[0].clone()
        rows = torch.arange(z.shape[0])
        z[rows, b_last, 2 * d_head:3 * d_head] = z_src[rows, s_last, 2 * d_head:3 * d_head]
        return (z,)
    h = proj.register_forward_pre_hook(put)
    with torch.no_grad():
        logits = hf(input_ids=bi, attention_mask=bm).logits[torch.arange(len(data)), b_last]
    h.remove()
    want = logits.argmax(-1) == answer_ids(128, tiny_llama.tokenizer, data.counterfactuals)
    assert torch.equal(res.correct[0], want)
    assert len({len(p.split()) for p in data.base}) > 1  # the batch really is padded


# -- bad input ------------------------------------------------------------------------------------------------
def test_alignment_errors_name_the_problem(eq_model: Model) -> None:
    data = hierarchical_equality(n_symbols=6).sample(8, variables=["WX"], seed=0)
    with pytest.raises(UnknownHookError, match=r"alignment of 'WX': this model has no hook '(blocks\.7\.hook_)?resid_post\.7'"):
        iia(eq_model, data, alignment={"WX": ("resid_post.7", 1)}, progress=False)
    with pytest.raises(BadInputError, match=r"33 dimensions, more than the site's 32"):
        iia(eq_model, data, alignment={"WX": AlignedSite("resid_post.0", positions=1, basis=torch.randn(33, 32))},
            progress=False)
    with pytest.raises(BadInputError, match="vectors of dimension 40, but the site's last axis has 32"):
        iia(eq_model, data, alignment={"WX": AlignedSite("resid_post.0", positions=1, basis=torch.randn(2, 40))},
            progress=False)
    with pytest.raises(BadInputError, match="has no head axis"):
        iia(eq_model, data, alignment={"WX": AlignedSite("mlp_out.0", heads="L0H1")}, progress=False)
    with pytest.raises(BadInputError, match="position 7 is outside sequence 0"):
        iia(eq_model, data, alignment={"WX": ("mlp_out.0", 7)}, progress=False)


def test_different_lengths_need_a_position_mapping(tiny_llama: Model) -> None:
    cm = CausalModel(inputs={"n": (2, 3, 4)}, functions={"O": (("n",), lambda n: n)}, output="O",
                     sampler=lambda r: {"n": r.choice((2, 3, 4))})
    task = CausalTask("lengths", cm, prompt=lambda x: " ".join(["w1"] * x["n"]), answer=lambda n: f"w{n}")
    data = task.sample(8, variables=["O"], seed=1, changed=None)
    with pytest.raises(BadInputError, match=r"has \d tokens but its source for 'O' has \d.*source_positions"):
        iia(tiny_llama, data, alignment={"O": ("resid_post.0", 0)}, progress=False)
    with pytest.raises(BadInputError, match="position mapping"):
        iia(tiny_llama, data, alignment={"O": ("resid_post.0", None)}, progress=False)
    # counted from the end, or with an explicit mapping, it runs
    iia(tiny_llama, data, alignment={"O": ("resid_post.0", -1)}, progress=False)
    iia(tiny_llama, data, alignment={"O": AlignedSite("resid_post.0", positions=0, source_positions=0)},
        progress=False)


def test_alignment_spellings_round_trip() -> None:
    al = Alignment({"WX": ("mlp_out.0", 1), "IO": AlignedSite("z.1", positions=[-1], heads=["L1H0"])})
    again = Alignment.from_dict(al.to_dict())
    assert again.label() == al.label() == "WX: mlp_out.0@1; IO: z.1@-1[L1H0]"
    with pytest.raises(BadInputError, match="no site"):
        Alignment({"WX": []})


def test_sweep_table_shape_and_views(eq_model: Model) -> None:
    data = toy_ioi(n_names=6).sample(24, variables="S", seed=2)
    m = toy_transformer(vocab=6, n_ctx=3, d_model=32, seed=1)
    table = iia_sweep(m, data, component="resid_post", progress=False)
    assert table.iia.shape == (2, 3, 1) and table.sizes == (0,) and table.positions == (0, 1, 2)
    for view in table.VIEWS:
        table.plot(view)
    frame = table.to_frame()
    assert len(frame) == 6 and set(frame.columns) == {"layer", "pos", "size", "value"}
    with pytest.raises(BadInputError, match="layer 5 is out of range"):
        iia_sweep(m, data, layers=[5], progress=False)
    with pytest.raises(UnknownNameError, match="variable 'X'"):
        iia_sweep(m, data, variable="X", progress=False)
