"""ops/bench/preview.py runs (quick) and prints its table: one preview of full-size latents, and the tiny
render without, with every-step and with throttled previews."""

from __future__ import annotations

import re

import pytest

from ops.bench import preview


def test_the_preview_benchmark_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    names = [row.split(" | ")[0] for row in rows]
    assert names == ["| one preview, SVD-XT 1024x576 latents (float32)", "| one preview, SVD-XT 1024x576 latents "
                     "(float16)", *[f"| tiny render, 3 steps, 4 frames 256x128, previews: {m}"
                                    for m in ("none", "every step", "throttled (0.5 s)")]]
    for row in rows[:2]:  # a time, and its share at 2 previews a second: 2 x ms / 1000 s
        ms, share = re.search(r"\| ([\d.]+) ms \| ([\d.]+)% at 2 a second", row).groups()  # type: ignore[union-attr]
        assert float(ms) > 0 and abs(float(share) - 2 * float(ms) / 10) < 0.01
