"""The fleet simulation's report: one Markdown table (a row per metric, a column per fleet size, the targets and
whether they held), its header (date, machine, versions, load, options, where the job ids came from) and, below
it, what each size saturated and the first size where a target broke."""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import asdict
from typing import Any

from ops.bench.fleet import verdict
from ops.bench.fleet.plan import MODEL, Options

# (key, label, decimals, target); a None decimals is a yes/no row
ROWS: list[tuple[str, str, int | None, str]] = [
    ("jobs_per_s", "jobs finished per s", 2, "—"),
    ("capacity_per_s", "fleet capacity N / render_s (jobs/s, the submit rate asked)", 2, "—"),
    ("busy_fraction", "workers busy (fraction of N)", 2, "—"),
    ("submits_per_s", "POST /v1/jobs accepted per s", 1, "—"),
    ("submit_p50_ms", "POST /v1/jobs p50 (ms)", 1, "—"),
    ("queue_depth_end", "jobs queued at the window's end", 0, "—"),
    ("db_commits_per_s", "database commits per s (xact_commit)", 0, "—"),
    ("db_rows_written_per_s", "database rows written per s (tup_inserted + tup_updated + tup_deleted)", 0, "—"),
    ("claim_p50_ms", "claim p50 (ms, a worker's: the canary's)", 1, "—"),
    ("claim_p99_ms", "claim p99 (ms, a worker's: the canary's)", 1, "<= 50"),
    ("claim_sim_p99_ms", "claim p99 inside the simulator (ms, behind its GIL)", 1, "—"),
    ("progress_writes_per_s", "progress rows written per s (record_progress, throttled)", 0, "—"),
    ("progress_p99_ms", "progress checkpoint p99 (ms: cancel check, publish, throttled write)", 1, "—"),
    ("renewals_per_s", "lease renewals per s", 1, "—"),
    ("finish_p99_ms", "finish_job p99 (ms)", 1, "—"),
    ("job_ended_p99_ms", "job_ended p99 (ms)", 1, "—"),
    ("status_get_p50_ms", "status GET p50 (ms)", 1, "—"),
    ("status_get_p99_ms", "status GET p99 (ms)", 1, "<= 50"),
    ("polls_served_fraction", "status GETs answered / asked (1 Hz per job in flight)", 2, ">= 0.95"),
    ("maintenance_passes_per_s", "maintenance passes run per s", 2, "—"),
    ("maintenance_p50_ms", "maintenance pass p50 (ms)", 1, "—"),
    ("maintenance_max_ms", "maintenance pass max (ms)", 1, "—"),
    ("api_cpu", "API process CPU (cores)", 2, "—"),
    ("pg_cpu", "PostgreSQL CPU (cores)", 2, "—"),
    ("pg_active_mean", "PostgreSQL backends active (mean)", 2, "—"),
    ("pg_lock_waiters_mean", "PostgreSQL backends waiting on a lock (mean)", 2, "—"),
    ("redis_commands_per_s", "Redis commands per s", 0, "—"),
    ("redis_cpu", "Redis CPU (cores)", 2, "—"),
    ("api_cpu_ms_per_worker_s", "API CPU per simulated worker (ms per s)", 2, "—"),
    ("pg_cpu_ms_per_worker_s", "PostgreSQL CPU per simulated worker (ms per s)", 2, "—"),
    ("db_commits_per_worker_s", "database commits per simulated worker per s", 2, "—"),
    ("redis_commands_per_worker_s", "Redis commands per simulated worker per s", 1, "—"),
    ("bench_cpu", "simulator process CPU (cores)", 2, "—"),
    ("bench_lateness_p99_ms", "simulator actions late p99 (ms, due -> started)", 1, "—"),
    ("canary_cpu", "canary process CPU (cores)", 2, "—"),
    ("canary_lateness_p99_ms", "canary actions late p99 (ms)", 1, "—"),
    ("clients_cpu", "clients process CPU (cores)", 2, "—"),
    ("clients_lag_p99_ms", "clients event-loop lag p99 (ms)", 1, "—"),
    ("machine_cpu", "machine CPU busy (cores)", 2, "—"),
    ("other_cpu", "CPU of processes outside this run (cores)", 2, "—"),
    ("claim_ok", "claim p99 <= 50 ms holds", None, "yes"),
    ("get_ok", "status GET p99 <= 50 ms holds (>= 95 % of polls answered)", None, "yes"),
]

HOW_IDS = ("the real broker queue: one kombu consumer on render.{model} (the Celery app's own transport settings), "
           "prefetch N (a worker's 1, times N), each message acknowledged after its job ended; the canary process's "
           "consumer (its share of the fleet) takes from the same queue")


def cell(row: dict[str, Any], key: str, decimals: int | None) -> str:
    if decimals is None:
        ok = verdict.claim_ok(row) if key == "claim_ok" else verdict.get_ok(row)
        return "yes" if ok else "no"
    value = float(row[key])
    return "n/a" if not math.isfinite(value) else f"{value:.{decimals}f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| metric | target | " + " | ".join(f"N={r['n']}" for r in rows) + " |",
             "|---|---|" + "---|" * len(rows)]
    for key, label, decimals, target in ROWS:
        lines.append(f"| {label} | {target} | " + " | ".join(cell(r, key, decimals) for r in rows) + " |")
    return lines


def render(rows: list[dict[str, Any]], *, when: dt.datetime, machine: str, vers: dict[str, str], opt: Options,
           load: dict[str, Any]) -> str:
    options = {k: v for k, v in asdict(opt).items() if k != "quick"}
    lines = [
        f"svdq fleet simulation, {when:%Y-%m-%d %H:%M} UTC, {'quick' if opt.quick else 'full'} mode",
        f"machine: {machine}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"load average (1, 5, 15 min): {load['start']} at the start, {load['end']} at the end",
        "options: " + ", ".join(f"{k}={v}" for k, v in options.items()),
        "job ids: " + HOW_IDS.format(model=MODEL),
        "",
        *table(rows),
        "",
    ]
    for r in rows:
        sat, short = verdict.saturated(r), verdict.shortfalls(r)
        notes = [*(["saturated: " + "; ".join(sat)] if sat else []), *(["short: " + "; ".join(short)] if short else [])]
        extra = f"; {r['request_failures']} failed requests" if r["request_failures"] else ""
        extra += (f"; machine shared: processes outside this run used {r['other_cpu']:.2f} cores"
                  if r["other_cpu"] >= 0.25 else "")
        extra += f"; {r['action_errors']} failed worker calls" if r["action_errors"] else ""
        lines.append(f"- N={r['n']}: " + (". ".join(notes) if notes else "nothing saturated, nothing short")
                     + f" (PostgreSQL waits: {r['pg_top_waits']}; queue {r['queue_depth_start']} -> "
                       f"{r['queue_depth_end']}{extra})")
    lines += ["", verdict.first_break(rows)]
    return "\n".join(lines)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
