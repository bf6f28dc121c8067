"""The one language, checked across the whole package: public names import, every result type has the
shared surface, every saved file of an earlier release loads, and the API table is current."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import re
import runpy
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import interp
from interp.errors import BadInputError, SchemaVersionError, UnknownNameError
from interp.trace.results import Result, load_result, read_header

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Saved formats that are not Result files (a model, a store, a fitted estimator's own layout).
NOT_RESULTS = {"TunedLens", "TunedLens_float16", "SparseAutoencoder", "SparseAutoencoder_saelens", "ToyRun", "Trace",
               "TraceStore_capture"}


def _all_modules() -> list[str]:
    out = []
    for info in pkgutil.walk_packages(interp.__path__, "interp."):
        if info.name.endswith("__main__"):
            continue
        out.append(info.name)
    return out


@pytest.mark.parametrize("name", _all_modules())
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def _public() -> list[tuple[str, str]]:
    out = []
    for mod_name in [m for m in _all_modules() if m.count(".") <= 1]:
        mod = importlib.import_module(mod_name)
        out += [(mod_name, n) for n in getattr(mod, "__all__", [])]
    return out


@pytest.mark.parametrize(("module", "name"), _public())
def test_every_public_name_exists_and_is_documented(module: str, name: str) -> None:
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert (inspect.getdoc(obj) or "").strip(), f"{module}.{name} has no docstring"


def _result_classes() -> list[type[Result]]:
    for m in _all_modules():
        importlib.import_module(m)
    seen: list[type[Result]] = []
    todo = list(Result.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("interp.") and cls not in seen:
            seen.append(cls)
        todo += cls.__subclasses__()
    return sorted(seen, key=lambda c: c.__name__)


def _fixture_dirs() -> dict[str, Path]:
    """Every saved result fixture: ``{"v0.1/LogitLensResult": path}`` (a release folder per interp version)."""
    return {f"{d.parent.name}/{d.name}": d for d in sorted(FIXTURES.glob("v*/*"))
            if d.is_dir() and d.name not in NOT_RESULTS and (d / "result.json").is_file()}


def test_every_result_class_has_a_saved_fixture() -> None:
    """A result type ships with a file saved by the release that introduced it, so that later releases keep
    loading it (and so that the surface test below has an instance of it)."""
    saved = {read_header(p)["class"] for p in _fixture_dirs().values()}
    missing = [c.__name__ for c in _result_classes() if c.__name__ not in saved
               and not any(n in saved for n in c.SAVED_AS)]
    assert not missing, (f"result classes without a fixture in tests/fixtures/v<version>/: {missing}; save one "
                         "(small, from a tiny model) with the release that adds the class")


@pytest.mark.parametrize("key", list(_fixture_dirs()))
def test_result_surface(key: str, tmp_path: Path) -> None:
    res = load_result(_fixture_dirs()[key])
    cls = type(res)
    assert isinstance(res, Result)
    # plot: every view gives a Figure; an unknown view names the valid ones
    assert cls.VIEWS, f"{cls.__name__} declares no plot views"
    for view in (None, *cls.VIEWS):
        assert isinstance(res.plot(view), go.Figure), (cls.__name__, view)
    with pytest.raises(UnknownNameError, match=cls.VIEWS[0]):
        res.plot("no-such-view")
    # tables and JSON
    frame = res.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame.columns) > 0
    d = res.to_dict()
    assert d["class"] == cls.__name__ and d["schema_version"] == cls.SCHEMA_VERSION
    json.dumps(d, allow_nan=False)  # labelled arrays carry no NaN (null instead)
    for name, arr in d["arrays"].items():
        assert set(arr) == {"axes", "labels", "values"}, name
    # text: a short repr without tensor dumps, and a summary of a few lines
    r = repr(res)
    assert r.startswith(cls.__name__ + "(") and len(r) <= 300 and "tensor(" not in r, r
    summary = res.summary()
    assert summary.startswith(cls.__name__) and 2 <= len(summary.splitlines()) <= 30
    # save / load round trip (in the current format)
    again = cls.load(res.save(tmp_path / "r"))
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    assert read_header(tmp_path / "r")["interp_version"] == interp.__version__


def test_loading_refuses_a_newer_schema_and_another_class(tmp_path: Path) -> None:
    key = next(iter(_fixture_dirs()))
    res = load_result(_fixture_dirs()[key])
    path = res.save(tmp_path / "r")
    meta = json.loads((path / "result.json").read_text())
    meta["schema_version"] = type(res).SCHEMA_VERSION + 1
    meta["interp_version"] = "9.9.9"
    (path / "result.json").write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError, match="upgrade interp"):
        type(res).load(path)
    other = next(c for c in _result_classes() if c is not type(res))
    with pytest.raises(BadInputError, match=f"not a {other.__name__}"):
        other.load(res.save(tmp_path / "s"))


def test_loading_ignores_unknown_keys(tmp_path: Path) -> None:
    for d in _fixture_dirs().values():
        res = load_result(d)
        path = res.save(tmp_path / d.name)
        meta = json.loads((path / "result.json").read_text())
        meta["fields"]["a_field_from_the_future"] = [1, 2, 3]
        (path / "result.json").write_text(json.dumps(meta))
        assert json.dumps(load_result(path).to_dict(), sort_keys=True) == json.dumps(res.to_dict(), sort_keys=True)


def test_v01_fixtures_match_what_v01_recorded() -> None:
    """Every v0.1 result file loads into the current class with the tensors v0.1 recorded (expected.json)."""
    expected = json.loads((FIXTURES / "v0.1" / "expected.json").read_text())["fixtures"]
    checked = 0
    for key, entry in expected.items():
        if key in NOT_RESULTS or not (FIXTURES / "v0.1" / key).is_dir():
            continue
        res = load_result(FIXTURES / "v0.1" / key)
        assert f"{type(res).__module__.split('.')[1]}" in entry["class"], (key, type(res))
        arrays = res.to_dict()["arrays"]
        for tname, want in entry["tensors"].items():
            field = tname.removeprefix("obj.")
            t = getattr(res, field, None)
            if not isinstance(t, torch.Tensor):
                continue
            assert list(t.shape) == want["shape"], (key, field)
            got = float(torch.nan_to_num(t.double(), nan=0.0).sum())
            assert math.isclose(got, want["sum"], rel_tol=1e-4, abs_tol=1e-4), (key, field, got, want["sum"])
        assert arrays is not None
        checked += 1
    assert checked >= 15


def test_api_table_is_current() -> None:
    mod = runpy.run_path(str(ROOT / "docs" / "api_table.py"), run_name="api_table")
    want = mod["table"]()
    have = (ROOT / "docs" / "api.md").read_text(encoding="utf-8") if (ROOT / "docs" / "api.md").exists() else ""
    assert have == want, "docs/api.md is out of date: run `python docs/api_table.py`"


def test_tools_take_the_model_first_and_inputs_second() -> None:
    """The one call shape: ``tool(model, inputs, *, options)`` (weight-only tools: ``tool(model, *, options)``)."""

    bad = []
    for pkg in ("lens", "patching", "probing", "heads", "features", "induction", "causal", "layers", "circuits"):
        mod = importlib.import_module(f"interp.{pkg}")
        for name in mod.__all__:
            fn = getattr(mod, name)
            if not inspect.isfunction(fn):
                continue
            params = list(inspect.signature(fn).parameters.values())
            if not params or params[0].name != "model":
                continue  # array-level utilities (no model) are not tools
            hints = getattr(fn, "__annotations__", {})
            if "Any" in str(hints.get("model", "")):
                bad.append(f"{pkg}.{name}: model is typed Any")
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if len(positional) > 2 or (len(positional) == 2 and positional[1].name != "inputs"):
                bad.append(f"{pkg}.{name}{inspect.signature(fn)}: after model, only `inputs` is positional")
    assert not bad, "\n".join(bad)


def test_no_print_outside_the_cli() -> None:
    for p in (ROOT / "interp").rglob("*.py"):
        if "cli" in p.parts:
            continue
        text = p.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            assert not re.search(r"(?<![\w.])print\(", code) or ">>>" in line or "..." in line.strip()[:4], \
                f"{p}:{i}: {line.strip()}"
            assert "tqdm.write(" not in code, f"{p}:{i}: use logging"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
