"""ops/bench/fleet in its quick mode: a private stack (redis-server, a PostgreSQL database, the API over HTTP) with
two tiny simulated fleets, each with its canary and clients processes, started, measured and removed. Nothing here
asserts on speed: every metric row has to be there with a finite number for every size, the target rows say yes or
no, and the run has to leave no database behind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from ops.bench.fleet.report import ROWS
from ops.harness.databases import databases_named
from ops.harness.services import PG_ADMIN_URL, require_postgres, require_redis_server

ROOT = Path(__file__).resolve().parent.parent
QUICK_SIZES = ["3", "12"]


def test_quick_run_prints_every_metric_for_every_size_and_leaves_no_database(tmp_path: Path) -> None:
    # Given PostgreSQL and a redis-server binary
    require_redis_server()
    require_postgres()
    out = tmp_path / "fleet.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_BENCH_PG_ADMIN_URL": PG_ADMIN_URL}

    # When the quick sweep runs
    proc = subprocess.run([sys.executable, "-m", "ops.bench.fleet", "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    # Then it succeeds and prints its header lines and one table
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("svdq fleet simulation, ") and "quick mode" in lines[0]
    assert lines[1].startswith("machine: ") and " cores" in lines[1]
    assert lines[2].startswith("versions: ") and "postgresql " in lines[2] and "redis-server " in lines[2]
    assert lines[3].startswith("load average ")
    assert lines[4].startswith("options: ") and "sizes=(3, 12)" in lines[4]
    assert lines[5].startswith("job ids: the real broker queue")
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["metric", "target", *(f"N={n}" for n in QUICK_SIZES)]

    # with every metric row, in order, a finite number for each size (or yes/no for a target)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [r[0] for r in rows] == [label for _, label, _, _ in ROWS], "\n".join(table)
    for (metric, target, *values), (_, _, decimals, expected_target) in zip(rows, ROWS, strict=True):
        assert target == expected_target and len(values) == len(QUICK_SIZES), metric
        for value in values:
            if decimals is None:
                assert value in ("yes", "no"), (metric, value)
            else:
                assert math.isfinite(float(value)) and float(value) >= 0, (metric, value)
    assert any(line.startswith("- N=12: ") for line in lines)
    assert lines[-1].startswith(("First N where a target broke", "No target broke"))

    # and the JSON holds the same sizes, every job having come from the broker and ended
    record = json.loads(out.read_text())
    assert record["options"]["quick"] is True
    assert [s["n"] for s in record["sizes"]] == [int(n) for n in QUICK_SIZES]
    for size in record["sizes"]:
        assert size["jobs_per_s"] > 0 and size["claims_per_s"] > 0 and size["polls_per_s"] > 0
        assert size["drained"] is True and size["action_errors"] == 0 and size["request_failures"] == 0
    # and its scratch database was dropped at the end
    assert record["database"].startswith("svdq_bench_")
    assert record["database"] not in databases_named("svdq_bench_")
