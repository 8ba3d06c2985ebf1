"""ops/bench/lifecycle in its quick mode: a whole private stack (redis-server, a PostgreSQL database, the API
over HTTP, a tiny worker) is started, measured and removed. Nothing here asserts on speed: every metric row only
has to be there with a finite number, and the run has to leave no database behind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from ops.harness.databases import databases_named
from ops.harness.services import PG_ADMIN_URL, require_postgres, require_redis_server

ROOT = Path(__file__).resolve().parent.parent

# (start of the metric cell, whether the row has a target)
EXPECTED = [
    ("submit / healthz throughput (ratio)", True),
    ("GET /healthz throughput", False),
    ("POST /v1/jobs throughput", False),
    ("API CPU per healthz", False),
    ("API CPU per submit", False),
    ("submit / healthz ratio from API CPU", False),
    ("status poll p50", False),
    ("status poll p99", True),
    ("status poll rate served", False),
    ("API CPU per status GET", False),
    ("bench event-loop lag p99", False),
    ("status poll throughput", False),
    ("status poll p99", False),
    ("API CPU per status GET (ms, 16 clients back-to-back", False),
    ("API CPU per status GET / per healthz", True),
    ("e2e overhead p50", True),
    ("e2e overhead p90", False),
    ("e2e pickup p50", False),
    ("e2e in-worker overhead p50", False),
    ("e2e render_s p50", False),
    ("submit p50, empty queue", False),
    ("submit p50, 2,000 queued", False),
    ("submit p50 ratio, 2,000 queued / empty", True),
    ("GET queued job p50, empty queue", False),
    ("GET queued job p50, 2,000 queued", False),
    ("GET queued job p50 ratio, 2,000 queued / empty", True),
    ("failed requests", True),
]


def test_quick_run_prints_every_metric_with_a_finite_number_and_cleans_up(tmp_path: Path) -> None:
    require_redis_server()
    require_postgres()
    out = tmp_path / "lifecycle.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_BENCH_PG_ADMIN_URL": PG_ADMIN_URL}
    proc = subprocess.run([sys.executable, "-m", "ops.bench.lifecycle", "--quick", "--cache-dir",
                           str(tmp_path / "models"), "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]

    lines = proc.stdout.splitlines()
    assert lines[0].startswith("svdq lifecycle benchmark, ") and "quick mode" in lines[0]
    assert lines[1].startswith("machine: ") and " cores" in lines[1]
    assert lines[2].startswith("versions: ") and "postgresql " in lines[2] and "redis-server " in lines[2]
    table = [line for line in lines if line.startswith("|")]
    assert [c.strip() for c in table[0].strip("|").split("|")] == ["metric", "value", "target", "met"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert len(rows) == len(EXPECTED), "\n".join(table)
    for (metric, value, target, met), (start, has_target) in zip(rows, EXPECTED, strict=True):
        assert metric.startswith(start), (metric, start)
        assert math.isfinite(float(value)) and float(value) >= 0, (metric, value)
        if has_target:
            assert target != "—" and met in ("yes", "no"), (metric, target, met)
        else:
            assert (target, met) == ("—", "—"), metric

    record = json.loads(out.read_text())
    assert [r["metric"] for r in record["rows"]] == [r[0] for r in rows]
    assert record["options"]["quick"] is True and record["options"]["queued"] == 2000
    assert record["details"]["row4"]["deep"]["queue_position"] >= 2000
    assert record["details"]["row3"]["overhead_ms"]["n"] == 5
    assert record["database"].startswith("svdq_bench_")
    assert record["database"] not in databases_named("svdq_bench_")  # dropped at the end
