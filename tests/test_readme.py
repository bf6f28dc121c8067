"""The README's tour runs as written (on the bundled SmolLM2), and its links point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2: object) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks, "the README has no python tour"
    monkeypatch.chdir(tmp_path)  # the tour saves under out/
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "lens" / "result.json").is_file()
    dla = namespace["dla"]
    assert dla.top_heads(1)[0][0].layer > 10  # type: ignore[attr-defined]


def test_links_point_at_files() -> None:
    missing = [link for link in re.findall(r"\]\(([^)#]+)\)", README)
               if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
