"""The toy attention-only model: data, model, training loop, clamping, and the shipped trained copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import interp
from interp.errors import BadInputError, SchemaVersionError, UnknownNameError
from interp.hooks import Ablate, run_with_hooks
from interp.models.toy import (
    BOS,
    SCHEMA_VERSION,
    ToyConfig,
    ToyRun,
    _clamp_hooks,
    build_toy_model,
    load_config,
    load_curves,
    repeated_span_batch,
    shipped_path,
    train_toy,
)
from interp.sites import HeadRef

V01 = Path(__file__).resolve().parent / "fixtures" / "v0.1" / "ToyRun"


def test_training_data_is_bos_then_a_tiled_span() -> None:
    cfg = ToyConfig()
    x = repeated_span_batch(torch.Generator().manual_seed(0), 32, cfg)
    assert x.shape == (32, cfg.n_ctx) and bool((x[:, 0] == BOS).all())
    periods = []
    for row in x[:, 1:]:
        # the smallest period p with row[t] == row[t - p] everywhere
        p = next(p for p in range(1, len(row)) if bool((row[p:] == row[:-p]).all()))
        periods.append(p)
        assert bool((row > 0).all()) and bool((row < cfg.vocab).all())
    assert min(periods) >= 2 and max(periods) <= cfg.span_max
    assert len(set(periods)) > 5  # lengths vary, so position alone cannot solve the task


@pytest.mark.parametrize("bad", [dict(span_min=1), dict(span_min=9, span_max=8), dict(span_max=70),
                                 dict(eval_span=40), dict(d_model=30), dict(clamp_heads=((2, 0),)),
                                 dict(clamp_heads="L0H9"), dict(clamp_heads=("0.1",))])
def test_bad_config_raises(bad: dict) -> None:
    with pytest.raises(BadInputError):
        ToyConfig(**bad)


def test_clamp_heads_take_every_head_spelling() -> None:
    want = (HeadRef(0, 1), HeadRef(0, 2))
    for spec in ("L0H1,L0H2", ("L0H1", "L0H2"), ((0, 1), (0, 2)), [HeadRef(0, 1), (0, 2), "L0H1"]):
        assert ToyConfig(clamp_heads=spec).clamp_heads == want  # type: ignore[arg-type]
    assert ToyConfig(clamp_heads="L0H3").clamp_heads == (HeadRef(0, 3),)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="L2H0"):
        ToyConfig(clamp_heads="L2H0")  # type: ignore[arg-type]


def test_model_is_attention_only_and_hookable() -> None:
    model = interp.from_hf(build_toy_model(ToyConfig()))
    out = run_with_hooks(model, torch.tensor([[0, 5, 6, 7, 5, 6]]), capture="blocks.*.hook_mlp_out")
    for t in out.activations.values():
        assert float(t.abs().max()) == 0.0
    assert model.weights.W_Q.shape == (2, 4, 64, 16)


def test_clamp_matches_interp_zero_ablation() -> None:
    """The training-time clamp (a pre-hook on o_proj) equals interp's zero ablation of hook_z."""
    m = build_toy_model(ToyConfig(seed=3))
    model = interp.from_hf(m)
    ids = torch.tensor([[0, 3, 9, 4, 3, 9, 4, 3]])
    want = run_with_hooks(model, ids, interventions=[Ablate("blocks.0.attn.hook_z", heads=[1, 3])]).logits
    handles = _clamp_hooks(m, ["L0H1", (0, 3)], 16)
    try:
        with torch.no_grad():
            got = m(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(m(input_ids=ids).logits, want, atol=1e-4)  # hooks removed


def test_short_training_run_saves_and_reloads(tmp_path) -> None:
    cfg = ToyConfig(steps=6, eval_every=3, checkpoint_every=3, batch_size=8, clamp_heads=((0, 0),))
    run = train_toy(cfg, progress=False)
    assert run.history["step"] == [3, 6] and len(run.history["induction"][0]) == cfg.n_layers
    assert sorted(run.checkpoints) == [3, 6]
    run.save(tmp_path / "toy")
    loaded = interp.load_model(str(tmp_path / "toy"))
    ids = torch.tensor([[0, 1, 2, 3, 1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.hf(input_ids=ids).logits, run.model(input_ids=ids).logits, atol=1e-5)
    assert load_curves(tmp_path / "toy")["history"]["step"] == [3, 6]
    assert isinstance(run, ToyRun)
    # the JSON files record the class, the schema version and the interp version
    for f in ("toy_config.json", "training_curves.json"):
        head = json.loads((tmp_path / "toy" / f).read_text())
        assert head["class"] == "ToyRun" and head["schema_version"] == SCHEMA_VERSION
        assert head["interp_version"] == interp.__version__
    back = ToyRun.load(tmp_path / "toy", checkpoints=True)
    assert back.config == cfg and back.config.clamp_heads == (HeadRef(0, 0),)
    assert back.history == run.history and back.phase_change_step == run.phase_change_step
    assert sorted(back.checkpoints) == [3, 6]
    assert all(torch.equal(back.checkpoints[6][k], v) for k, v in run.checkpoints[6].items())
    with torch.no_grad():
        assert torch.equal(back.model(input_ids=ids).logits, loaded.hf(input_ids=ids).logits)
    assert torch.equal(run.to_model().run(ids).logits, loaded.run(ids).logits)  # type: ignore[arg-type]


def test_v01_toy_run_loads_and_a_newer_schema_is_refused(tmp_path) -> None:
    """interp 0.1 saved toy runs without stamps: ToyRun.load, load_config and load_curves read them."""
    run = ToyRun.load(V01, checkpoints=True)
    assert run.config == ToyConfig(vocab=16, d_model=16, n_heads=2, n_layers=2, n_ctx=17, span_min=3, span_max=6,
                                   eval_span=8, steps=6, batch_size=8, eval_every=2, checkpoint_every=3,
                                   stop_after_phase_change=False, clamp_heads=((0, 1),), seed=0)
    assert run.history["step"] == [2, 4, 6] and run.phase_change_step is None and run.seconds == 0.0
    assert sorted(run.checkpoints) == [3, 6]
    assert load_config(V01) == run.config and load_curves(V01)["history"] == run.history
    with torch.no_grad():
        ids = torch.tensor([[0, 3, 5, 7, 9, 11, 3, 5, 7, 9, 11]])
        assert torch.equal(run.model(input_ids=ids).logits, interp.load_model(str(V01)).hf(input_ids=ids).logits)
    # a run saved by a newer interp is refused with a message saying to upgrade
    newer = tmp_path / "newer"
    run.save(newer)
    data = json.loads((newer / "toy_config.json").read_text())
    (newer / "toy_config.json").write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(SchemaVersionError, match="upgrade interp"):
        ToyRun.load(newer)
    with pytest.raises(BadInputError, match=r"no toy_config\.json"):
        ToyRun.load(tmp_path)


def test_shipped_model_shows_the_phase_change() -> None:
    """The shipped curves: the induction score jumps and the repeat loss collapses within a few hundred steps."""
    curves = load_curves()
    h = curves["history"]
    ind, rep = h["induction_max"], h["loss_second"]
    assert ind[0] < 0.1 and ind[-1] > 0.6
    assert rep[0] > 3.5 and rep[-1] < 1.0
    step = curves["phase_change_step"]
    assert step is not None and h["step"][0] < step < h["step"][-1]
    # abrupt: the induction score rises from 0.1 to 0.5 within 300 steps
    s10 = next(s for s, v in zip(h["step"], ind, strict=True) if v >= 0.1)
    s50 = next(s for s, v in zip(h["step"], ind, strict=True) if v >= 0.5)
    assert s50 - s10 <= 300


def test_shipped_model_loads_by_name() -> None:
    m = interp.load_model("toy-induction")
    assert (shipped_path() / "model.safetensors").is_file()
    assert m.dims.n_layers == 2 and m.dims.n_heads == 4 and m.tokenizer is None
    # bit-identical to the shipped weights
    saved = load_file(str(shipped_path() / "model.safetensors"))
    state = m.hf.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    run = ToyRun.load()
    assert run.config == load_config() and run.phase_change_step == load_curves()["phase_change_step"] == 500


def test_training_curves_result(tmp_path) -> None:
    from interp.induction import TrainingCurves

    c = TrainingCurves.from_toy()
    assert c.phase_change_step == load_curves()["phase_change_step"]
    assert c.induction.shape[1:] == (2, 4) and len(c.to_frame()) == 5 * len(c.steps)
    for view in (None, "scores", "loss", "heads"):
        assert c.plot(view).data
    back = TrainingCurves.load(c.save(tmp_path / "c"))
    assert torch.equal(back.induction, c.induction) and back.phase_change_step == c.phase_change_step
    assert torch.equal(back.steps, c.steps) and back.steps.dtype == torch.int64
    with pytest.raises(UnknownNameError, match="unknown view 'nope'"):
        c.plot("nope")
    assert torch.equal(TrainingCurves.from_run(ToyRun.load()).induction, c.induction)
    d = c.to_dict()
    assert d["arrays"]["induction_max"]["labels"]["step"] == c.steps.tolist()
    assert d["attributes"]["phase_change_step"] == 500 and "phase_change_step=500" in repr(c)
