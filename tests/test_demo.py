"""`make demo`'s script on embedded defaults: `svdq dev` starts everything, one job renders, the
video decodes, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ops.harness import ROOT
from ops.harness.services import unavailable


def test_the_demo_writes_a_video_that_decodes_and_stops_the_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    out = ROOT / "out" / "demo.mp4"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVDQ_")}
    before = svdq_processes()
    proc = subprocess.run([sys.executable, "ops/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote out/demo.mp4: 14 frames, 128x64, 7 fps" in proc.stdout
    assert "Flower was at http://127.0.0.1:" in proc.stdout
    assert out.is_file()
    # nothing the demo started is left running
    assert svdq_processes() - before == set()


def svdq_processes() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "client.cli (dev|api|worker|flower)|redis-server"], capture_output=True,
                           text=True)
    return set(found.stdout.split())
