"""How long the plot builders take on a big input: a 30 layers x 200 tokens heatmap with cell text and hover (the
logit lens of a long prompt), a 200 x 200 attention pattern, and embedding them in a report.

Run: ``python benchmarks/plot.py`` (prints medians of a few rounds; nothing is asserted: the tests check what the
figures hold, this script how fast they are built).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import interp.plot as ip
from interp.report import Report


def _time(fn: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    tokens = [f" tok{i % 37}" for i in range(200)]
    values = rng.normal(size=(30, 200))

    def lens_like() -> object:
        return ip.heatmap(values, tokens, [f"L{i}" for i in range(30)], cell_text=[[" x"] * 200] * 30,
                          hover=[[" y"] * 200] * 30, x_title="position", y_title="layer")

    fig = lens_like()
    pattern = rng.random((200, 200))
    rows = [
        ("heatmap 30 x 200, cell text + hover", _time(lens_like)),
        ("  .to_json()", _time(fig.to_json)),
        ("attention_pattern 200 x 200", _time(lambda: ip.attention_pattern(pattern, tokens))),
        ("report section with the heatmap", _time(lambda: Report("b").section("s", "A benchmark.").figure(fig))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
