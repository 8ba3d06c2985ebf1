"""ops/chaos, shortened: a whole private stack (redis-server, a PostgreSQL database, the API over HTTP,
two tiny workers) renders 20 jobs while two workers are SIGKILLed, Redis restarts empty once and a worker is
SIGTERMed once; every job must succeed exactly once, with its two result objects, and nothing is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ops.harness.databases import databases_named
from ops.harness.services import PG_ADMIN_URL, require_postgres, require_redis_server

ROOT = Path(__file__).resolve().parent.parent
JOBS = 20


def table(stdout: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines() if line.startswith("|")]
    assert rows[0] == ["metric", "value", "target", "met"], rows[0]
    return {r[0]: r[1:] for r in rows[2:]}


def test_a_short_chaos_run_ends_every_job_exactly_once(tmp_path: Path, tiny_cache: Path) -> None:
    require_redis_server()
    require_postgres()
    out = tmp_path / "chaos.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SVDQ_CHAOS_PG_ADMIN_URL": PG_ADMIN_URL}
    proc = subprocess.run(
        [sys.executable, "-m", "ops.chaos", "--jobs", str(JOBS), "--kills", "2", "--wipes", "1", "--sigterms", "1",
         "--workers", "2", "--deadline", "240", "--seed", "7", "--cache-dir", str(tiny_cache), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "PASS", proc.stdout

    rows = table(proc.stdout)
    assert rows["jobs submitted"][0] == str(JOBS)
    assert rows["succeeded"][:3] == [str(JOBS), str(JOBS), "yes"]
    assert rows["failed (by error code)"][0] == "0"
    assert rows["lost (never ended: still queued at the end)"][0] == "0"
    assert rows["stuck (running, lease expired at the end)"][0] == "0"
    assert rows["jobs rendered to completion more than once"][0] == "0"
    assert rows["result objects per job"][0] == "max 2, min 2"
    assert rows["webhook event ids per job"][:3] == ["max 1, min 1", "exactly 1", "yes"]
    assert rows["workers SIGKILLed"][0].startswith("2 ")
    assert rows["Redis restarted with its data wiped"][0] == "1"
    assert rows["workers SIGTERMed"][0].startswith("1 ")

    report = json.loads(out.read_text())
    assert report["passed"] is True and report["reasons"] == []
    assert (report["succeeded"], report["lost"], report["stuck"], report["duplicates"]) == (JOBS, [], [], {})
    assert (report["kills"], report["wipes"], report["sigterms"]) == (2, 1, 1)
    wipe = next(e for e in report["events"] if e["kind"] == "wipe")
    assert wipe["run_id_before"] != wipe["run_id_after"]  # a new, empty redis-server
    assert report["database"].startswith("svdq_chaos_")
    assert report["database"] not in databases_named("svdq_chaos_")  # dropped at the end
    # every process it started (restarted workers and Redis included) is gone
    started = report["processes"]
    assert sum(p["name"].startswith("worker-") for p in started) >= 2 + 2 + 1  # the first ones + replacements
    assert sum(p["name"] == "redis" for p in started) == 2
    for p in started:
        cmdline = Path(f"/proc/{p['pid']}/cmdline")
        if cmdline.exists():  # the pid may have been reused since, but not by one of this run's processes
            assert b"client.cli" not in cmdline.read_bytes() and b"redis-server" not in cmdline.read_bytes(), p
