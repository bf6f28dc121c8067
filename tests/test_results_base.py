"""The shared result surface (interp.trace.results.Result) and its versioned files, on a result class written
here (the tools' own classes are covered by tests/test_surface.py over their saved fixtures)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import torch

from interp.errors import BadInputError, CorruptStoreError, SchemaVersionError, UnknownNameError
from interp.plot import heatmap
from interp.sites import HeadRef
from interp.trace.results import Result, read_header


class Kind(Enum):
    A = "a"
    B = "b"


@dataclass(frozen=True)
class Edit:
    hook: str
    scale: float


@dataclass(frozen=True, repr=False)
class Demo(Result):
    """A demo result: scores per layer and head."""

    AXES = {"scores": ("layer", "head")}
    VIEWS = ("map", "row")

    scores: torch.Tensor
    names: tuple[str, ...]
    by_id: dict[int, str]
    heads: tuple[HeadRef, ...]
    kind: Kind
    edits: tuple[Edit, ...] = ()
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    maybe: torch.Tensor | None = None
    note: str = ""

    def labels(self) -> dict[str, list[Any]]:
        return {"layer": list(self.names)}

    def headline(self) -> dict[str, Any]:
        return {"max": float(self.scores.max())}

    def _view_map(self) -> go.Figure:
        return heatmap(self.scores, x_labels=[str(i) for i in range(self.scores.shape[1])], y_labels=list(self.names))

    def _view_row(self, layer: int = 0) -> go.Figure:
        return heatmap(self.scores[layer:layer + 1], y_labels=[self.names[layer]])


def demo(**kw: Any) -> Demo:
    base: dict[str, Any] = dict(scores=torch.arange(6.0).reshape(2, 3), names=("L0", "L1"), by_id={3: "x", 10: "y"},
                                heads=(HeadRef(1, 2),), kind=Kind.B, edits=(Edit("resid_post.1", 0.5),),
                                extra={"a": torch.ones(2), "b": torch.zeros(1, 2)}, maybe=None, note="hi")
    return Demo(**{**base, **kw})


def test_round_trip_keeps_types(tmp_path: Path) -> None:
    r = demo(maybe=torch.tensor([float("nan"), 1.0]))
    back = Demo.load(r.save(tmp_path / "d"))
    assert torch.equal(back.scores, r.scores) and back.names == ("L0", "L1") and back.by_id == {3: "x", 10: "y"}
    assert back.heads == (HeadRef(1, 2),) and isinstance(back.heads[0], HeadRef)
    assert back.kind is Kind.B and back.edits == (Edit("resid_post.1", 0.5),)
    assert set(back.extra) == {"a", "b"} and torch.equal(back.extra["b"], torch.zeros(1, 2))
    assert back.maybe is not None and torch.isnan(back.maybe[0]) and back.note == "hi"
    assert Demo.load(demo().save(tmp_path / "n")).maybe is None
    head = read_header(tmp_path / "d")
    assert head["class"] == "Demo" and head["schema_version"] == 1 and head["module"] == __name__


def test_views_and_errors() -> None:
    r = demo()
    assert isinstance(r.plot(), go.Figure) and isinstance(r.plot("row", layer=1), go.Figure)
    with pytest.raises(UnknownNameError, match="Did you mean map") as e:
        r.plot("mapp")
    assert "Valid: map, row" in str(e.value)


def test_repr_summary_frame_and_dict() -> None:
    r = demo()
    assert repr(r) == "Demo(scores[layer=2, head=3], max=5)"
    assert r.summary().splitlines() == ["Demo: A demo result: scores per layer and head.", "  scores[layer=2, head=3]",
                                        "  max: 5", "  views: map, row"]
    assert r.to_frame().to_dict("records")[-1] == {"layer": "L1", "head": 2, "value": 5.0}
    d = r.to_dict()
    assert d["arrays"]["scores"] == {"axes": ["layer", "head"], "labels": {"layer": ["L0", "L1"]},
                                     "values": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]}
    assert d["attributes"]["by_id"] == {"3": "x", "10": "y"} and "extra" not in d["attributes"]
    json.dumps(demo(maybe=torch.tensor([float("nan")])).to_dict(), allow_nan=False)


def test_old_files_upgrade_newer_refused_unknown_keys_ignored(tmp_path: Path) -> None:
    @dataclass(frozen=True, repr=False)
    class Renamed(Result):
        """Its v0.1 files called `scores` `values` and had no `unit`."""

        AXES = {"scores": ("layer",)}
        VIEWS = ("line",)
        SCHEMA_VERSION = 2
        SAVED_AS = ("OldName",)
        UPGRADES = {0: lambda t, f: t.__setitem__("scores", t.pop("values")),
                    1: lambda t, f: f.setdefault("unit", "nats")}
        scores: torch.Tensor
        unit: str

    d = tmp_path / "old"
    d.mkdir()
    from safetensors.torch import save_file

    save_file({"values": torch.ones(3)}, str(d / "result.safetensors"))
    (d / "result.json").write_text(json.dumps({"kind": "OldName", "a_field_gone_since": 1}))  # an interp 0.1 file
    r = Renamed.load(d)
    assert torch.equal(r.scores, torch.ones(3)) and r.unit == "nats"
    meta = json.loads((Renamed(torch.zeros(2), "x").save(tmp_path / "new") / "result.json").read_text())
    meta["schema_version"] = 3
    (tmp_path / "new" / "result.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError, match="reads up to version 2: upgrade interp"):
        Renamed.load(tmp_path / "new")
    with pytest.raises(BadInputError, match="holds a Renamed, not a Demo"):
        Demo.load(Renamed(torch.zeros(2), "x").save(tmp_path / "other"))


def test_damaged_files(tmp_path: Path) -> None:
    path = demo().save(tmp_path / "d")
    (path / "result.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match="not valid JSON"):
        Demo.load(path)
    path = demo().save(tmp_path / "e")
    meta = json.loads((path / "result.json").read_text())
    del meta["fields"]["names"]
    (path / "result.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="no 'names'"):
        Demo.load(path)
    (path / "result.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptStoreError, match="cannot be read"):
        Demo.load(path)
    with pytest.raises(BadInputError, match="no saved result"):
        Demo.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="it is a file"):
        demo().save(tmp_path / "file")
