"""ops/bench/video_metrics.py --quick prints a row per part of the measuring for each clip, and the cost beside the
encode; the numbers add up (per frame = per clip / frames)."""

from __future__ import annotations

import re
import subprocess
import sys

from ops.harness import ROOT

PARTS = ["whole measure()", "luma", "motion (optical flow)", "frame_difference", "flicker",
         "first_frame_similarity (SSIM)"]


def test_the_video_metrics_benchmark_prints_each_part_for_each_clip() -> None:
    r = subprocess.run([sys.executable, "ops/bench/video_metrics.py", "--quick"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\| (\w+ \d+x\d+x\d+) \| ([^|]+) \| ([\d.]+) \| ([\d.]+) \|$", r.stdout, re.M)
    assert [(c, p) for c, p, _, _ in rows] == [(c, p) for c in ("small 6x256x144", "tiny 4x128x64") for p in PARTS]
    for clip, part, per_clip, per_frame in rows:
        frames = int(clip.split()[1].split("x")[0])
        assert float(per_clip) > 0 if part == "whole measure()" else float(per_clip) >= 0
        assert abs(float(per_clip) / frames - float(per_frame)) < 0.005  # both rounded
    # and what measuring on its own thread beside the encode adds to a job, as the worker runs it
    beside = re.search(r"^small 6x256x144: mp4 encode alone (\d+) ms; measure\(\) alone (\d+) ms; both, measuring "
                       r"on its thread as the worker does: (\d+) ms, so measuring adds (-?\d+) ms to the job",
                       r.stdout, re.M)
    assert beside is not None, r.stdout
    encode_ms, _, both_ms, added_ms = map(int, beside.groups())
    assert both_ms > 0 and encode_ms > 0 and abs(added_ms - (both_ms - encode_ms)) <= 1
    # the flow is the part that costs: more than the rest together
    for clip in ("small 6x256x144", "tiny 4x128x64"):
        ms = {p: float(c) for n, p, c, _ in rows if n == clip}
        assert ms["motion (optical flow)"] > sum(v for p, v in ms.items() if p not in ("whole measure()",
                                                                                     "motion (optical flow)"))
