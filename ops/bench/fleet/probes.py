"""What the run measures outside its own samples, at the window's edges and every half second inside it:

- PostgreSQL: pg_stat_database of the run's database (commits, rows inserted, updated and deleted; PostgreSQL
  flushes a backend's counts about once a second, so an edge may be off by that much), and sampled
  pg_stat_activity and pg_locks: backends active, waiting on a lock (and lock requests not granted), wait events;
- CPU from /proc: the API process, PostgreSQL (the backends on the run's database and the cluster's background
  processes: WAL writer, checkpointer, ...), redis-server (INFO cpu), this process, and the whole machine
  (/proc/stat), so what the run's own processes did not use was someone else's;
- Redis: commands processed (INFO stats)."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib
from sqlalchemy import Engine, text

from ops.harness.processes import cpu_seconds

PG_FIELDS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_returned",
             "tup_fetched")
TABLE_FIELDS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_hot_upd",
                "n_tup_del")
# run on the run's own database (pg_stat_user_tables is per database)
STAT_TABLES = text(f"SELECT relname, {', '.join(TABLE_FIELDS)} FROM pg_stat_user_tables")  # noqa: S608 - constants
INDEX_FIELDS = ("idx_scan", "idx_tup_read", "idx_tup_fetch")
STAT_INDEXES = text("SELECT indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes "
                    "WHERE relname = 'jobs'")
STAT_DATABASE = text(f"SELECT {', '.join(PG_FIELDS)} FROM pg_stat_database WHERE datname = :d")  # noqa: S608 - constants


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core), from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def own_cpu_s() -> float:
    """This process's CPU seconds, its threads' together and its children's apart (cpu_seconds would add the API,
    redis-server and the canary: they are this process's children)."""
    t = os.times()
    return t.user + t.system


def threads_cpu_s() -> dict[str, float]:
    """This process's CPU seconds by thread, its pool's threads together (Linux /proc/self/task)."""
    names = {t.native_id: "pool threads" if t.name.startswith("fleet_") else t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "threads not started by Python")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


@dataclass
class Edge:
    at: float
    pg: dict[str, int]
    redis_commands: int
    redis_cpu_s: float
    api_cpu_s: float
    bench_cpu_s: float
    machine_busy_s: float
    tables: dict[str, dict[str, int]]
    bench_sys_s: float
    threads: dict[str, float]


@dataclass
class Activity:
    """pg_stat_activity and pg_locks, sampled: counts summed over the samples, and each PostgreSQL process's CPU
    seconds when first and last seen."""

    samples: int = 0
    active: int = 0
    lock_waiters: int = 0
    lock_waiters_max: int = 0
    not_granted_max: int = 0
    waits: Counter[str] = field(default_factory=Counter)
    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)

    def cpu_s(self) -> float:
        return sum(last - first for first, last in self.cpu.values() if math.isfinite(last - first))


class Probe:
    def __init__(self, admin: Engine, db: Engine, db_name: str, redis_url: str, api_pid: int) -> None:
        self.admin, self.db, self.db_name, self.api_pid = admin, db, db_name, api_pid
        self.redis = redis_lib.Redis.from_url(redis_url, socket_timeout=5)
        self.activity = Activity()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def edge(self) -> Edge:
        with self.admin.connect() as conn:
            row = conn.execute(STAT_DATABASE, {"d": self.db_name}).one()
        with self.db.connect() as conn:
            tables = {r[0]: dict(zip(TABLE_FIELDS, (int(x or 0) for x in r[1:]), strict=True))
                      for r in conn.execute(STAT_TABLES)}
            tables.update({f"index {r[0]}": dict(zip(INDEX_FIELDS, (int(x or 0) for x in r[1:]), strict=True))
                           for r in conn.execute(STAT_INDEXES)})
        cpu = self.redis.info("cpu")
        return Edge(at=time.monotonic(), pg=dict(zip(PG_FIELDS, (int(x) for x in row), strict=True)),
                    redis_commands=int(self.redis.info("stats")["total_commands_processed"]),
                    redis_cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
                    api_cpu_s=cpu_seconds(self.api_pid), bench_cpu_s=own_cpu_s(),
                    machine_busy_s=machine_busy_s(), tables=tables, bench_sys_s=os.times().system,
                    threads=threads_cpu_s())

    def analyze(self) -> None:
        """Statistics for the run's tables, as autovacuum keeps them in a database that has run for a while. A new
        database has none for its first minute (autovacuum's naptime), and without them PostgreSQL serves every
        conditional update of a job (WHERE id = ... AND status = ...) from the (status, model) index, reading every
        running job's row each time: a scratch database's artefact, not the steady state measured here."""
        with self.db.connect() as conn:
            conn.execute(text("ANALYZE"))

    def sample(self) -> None:
        a = self.activity
        with self.admin.connect() as conn:
            rows = conn.execute(text(
                "SELECT pid, datname, backend_type, state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND (datname = :d OR datname IS NULL)"), {"d": self.db_name}).all()
            not_granted = set(conn.scalars(text("SELECT pid FROM pg_locks WHERE NOT granted")))
        ours = {r.pid for r in rows if r.datname == self.db_name}
        active = [r for r in rows if r.pid in ours and r.state == "active"]
        waiting = sum(1 for r in active if r.wait_event_type == "Lock")
        a.samples += 1
        a.active += len(active)
        a.lock_waiters += waiting
        a.lock_waiters_max = max(a.lock_waiters_max, waiting)
        a.not_granted_max = max(a.not_granted_max, len(not_granted & ours))
        a.waits.update(f"{r.wait_event_type}:{r.wait_event}" if r.wait_event_type else "on CPU" for r in active)
        for r in rows:  # this database's backends, and the background processes (datname NULL) every database shares
            now = cpu_seconds(r.pid)
            first = a.cpu.get(r.pid, (now, now))[0]
            a.cpu[r.pid] = (first, now)

    def start_sampling(self, every: float = 0.5) -> None:
        self.activity = Activity()
        self._stop.clear()
        self.sample()

        def run() -> None:
            while not self._stop.wait(every):
                self.sample()

        self._thread = threading.Thread(target=run, name="fleet-probe", daemon=True)
        self._thread.start()

    def stop_sampling(self) -> Activity:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
        return self.activity

    def close(self) -> None:
        self.redis.close()


def summarize(start: Edge, end: Edge, activity: Activity) -> dict[str, Any]:
    """Per second (or cores busy) over the window, from its two edges and the samples in between."""
    s = end.at - start.at
    d = {k: end.pg[k] - start.pg[k] for k in PG_FIELDS}
    a = activity
    pg_cpu = a.cpu_s() / s
    ours = pg_cpu + (end.api_cpu_s - start.api_cpu_s) / s + (end.redis_cpu_s - start.redis_cpu_s) / s \
        + (end.bench_cpu_s - start.bench_cpu_s) / s
    machine = (end.machine_busy_s - start.machine_busy_s) / s
    top = ", ".join(f"{w} {n / max(1, a.active):.0%}" for w, n in a.waits.most_common(3))
    return {
        "db_commits_per_s": d["xact_commit"] / s, "db_rollbacks_per_s": d["xact_rollback"] / s,
        "db_rows_written_per_s": (d["tup_inserted"] + d["tup_updated"] + d["tup_deleted"]) / s,
        "db_rows_updated_per_s": d["tup_updated"] / s, "db_rows_inserted_per_s": d["tup_inserted"] / s,
        "db_rows_read_per_s": (d["tup_returned"] + d["tup_fetched"]) / s,
        "redis_commands_per_s": (end.redis_commands - start.redis_commands) / s,
        "redis_cpu": (end.redis_cpu_s - start.redis_cpu_s) / s, "api_cpu": (end.api_cpu_s - start.api_cpu_s) / s,
        "pg_cpu": pg_cpu, "bench_cpu": (end.bench_cpu_s - start.bench_cpu_s) / s,
        "bench_cpu_sys": (end.bench_sys_s - start.bench_sys_s) / s, "machine_cpu": machine,
        "other_cpu": max(0.0, machine - ours), "cores": os.cpu_count() or 1,
        "pg_active_mean": a.active / max(1, a.samples), "pg_lock_waiters_mean": a.lock_waiters / max(1, a.samples),
        "pg_lock_waiters_max": a.lock_waiters_max, "pg_locks_not_granted_max": a.not_granted_max,
        "pg_top_waits": top or "none active", "window_s": s,
        "bench_cpu_by_thread": {k: round((v - start.threads.get(k, 0.0)) / s, 3) for k, v in end.threads.items()},
        "tables_per_s": {name: {k: round((v - start.tables.get(name, {}).get(k, 0)) / s, 1) for k, v in t.items()}
                         for name, t in end.tables.items()},
    }
