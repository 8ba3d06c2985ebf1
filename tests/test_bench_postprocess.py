from __future__ import annotations

import re
import subprocess
import sys

from ops.harness import ROOT


def test_the_postprocess_benchmark_prints_a_row_per_stage() -> None:
    r = subprocess.run([sys.executable, "ops/bench/postprocess.py", "--quick"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\| (interpolate blend|interpolate motion|upscale lanczos 2x|encode mp4)[^|]* \| ([\d.]+) \| "
                      r"([\dx]+) \|$", r.stdout, re.M)
    assert [name for name, _, _ in rows] == ["interpolate blend", "interpolate motion", "upscale lanczos 2x",
                                             "encode mp4"]
    shapes = {name: shape for name, _, shape in rows}
    assert shapes["interpolate blend"] == shapes["interpolate motion"] == "21x64x128x3"  # 6 frames 7->24 fps
    assert shapes["upscale lanczos 2x"] == "6x128x256x3"
    assert all(float(secs) >= 0 for _, secs, _ in rows)
