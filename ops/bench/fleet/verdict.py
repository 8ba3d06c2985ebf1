"""What the numbers of each size say: whether each target held, what was saturated (the machine's CPU, the API
process, PostgreSQL's CPU or its locks, Redis, or this benchmark process itself), and the first size where a target
broke. A component counts as saturated near the whole of what it can use: about one core for a Python process
or redis-server, the machine's cores for the machine."""

from __future__ import annotations

import math
from typing import Any

TARGET_MS = 50.0
SERVED = 0.95  # a GET p99 only counts while the API answered (nearly) every poll asked of it


def held(value: float, limit: float = TARGET_MS) -> bool:
    return math.isfinite(value) and value <= limit


def claim_ok(r: dict[str, Any]) -> bool:
    return held(r["claim_p99_ms"])


def get_ok(r: dict[str, Any]) -> bool:
    served = r["polls_served_fraction"]
    return held(r["status_get_p99_ms"]) and math.isfinite(served) and bool(served >= SERVED)


def bench_saturated(r: dict[str, Any]) -> bool:
    """The simulator fell behind: its own CPU near a core, or its actions starting late."""
    return bool(r["bench_cpu"] >= 0.85 or r["bench_lateness_p99_ms"] >= TARGET_MS)


def clients_saturated(r: dict[str, Any]) -> bool:
    return bool(r["clients_cpu"] >= 0.85 or r["clients_lag_p99_ms"] >= TARGET_MS)


def canary_saturated(r: dict[str, Any]) -> bool:
    return bool(r["canary_cpu"] >= 0.85 or r["canary_lateness_p99_ms"] >= TARGET_MS)


def saturated(r: dict[str, Any]) -> list[str]:
    out = []
    cores = r["cores"]
    if r["machine_cpu"] >= 0.9 * cores:
        out.append(f"the machine's CPU ({r['machine_cpu']:.2f} of {cores} cores busy: API {r['api_cpu']:.2f}, "
                   f"PostgreSQL {r['pg_cpu']:.2f}, Redis {r['redis_cpu']:.2f}, the simulator {r['bench_cpu']:.2f}, "
                   f"the canary {r['canary_cpu']:.2f}, the clients {r['clients_cpu']:.2f}, processes outside this run "
                   f"{r['other_cpu']:.2f})")
    if r["api_cpu"] >= 0.85:
        out.append(f"the API process ({r['api_cpu']:.2f} cores: one Python process uses about one at most)")
    if r["pg_cpu"] >= 0.85 * cores / 2:
        out.append(f"PostgreSQL's CPU ({r['pg_cpu']:.2f} cores)")
    if r["pg_lock_waiters_mean"] >= 1:
        out.append(f"PostgreSQL row locks ({r['pg_lock_waiters_mean']:.1f} backends waiting on a lock on average)")
    if r["redis_cpu"] >= 0.85:
        out.append(f"Redis ({r['redis_cpu']:.2f} cores, {r['redis_commands_per_s']:.0f} commands/s)")
    if bench_saturated(r):
        out.append(f"the simulator process itself (CPU {r['bench_cpu']:.2f} cores, its actions late by "
                   f"{r['bench_lateness_p99_ms']:.0f} ms at p99)")
    if clients_saturated(r):
        out.append(f"the clients process (CPU {r['clients_cpu']:.2f} cores, event-loop lag p99 "
                   f"{r['clients_lag_p99_ms']:.0f} ms: its GET latencies include its own delays)")
    if canary_saturated(r):
        out.append(f"the canary process (CPU {r['canary_cpu']:.2f} cores, actions late by "
                   f"{r['canary_lateness_p99_ms']:.0f} ms at p99: its claim latencies include its own delays)")
    return out


def shortfalls(r: dict[str, Any]) -> list[str]:
    """What did not keep up with what was asked."""
    out = []
    if r["submits_per_s"] < 0.9 * r["capacity_per_s"]:
        out.append(f"submits: {r['submits_per_s']:.1f}/s accepted of {r['capacity_per_s']:.1f}/s asked "
                   f"(POST p50 {r['submit_p50_ms']:.0f} ms)")
    if r["jobs_per_s"] < 0.9 * r["capacity_per_s"]:
        out.append(f"jobs: {r['jobs_per_s']:.1f}/s finished of the fleet's {r['capacity_per_s']:.1f}/s "
                   f"({r['busy_fraction']:.0%} of workers busy)")
    if math.isfinite(r["polls_served_fraction"]) and r["polls_served_fraction"] < SERVED:
        out.append(f"status polls: {r['polls_per_s']:.0f}/s answered of {r['polls_demanded_per_s']:.0f}/s asked")
    return out


def first_break(rows: list[dict[str, Any]]) -> str:
    held_all = [r["n"] for r in rows if claim_ok(r) and get_ok(r)]
    for r in rows:
        broke = [name for name, ok in (("claim p99", claim_ok(r)), ("status GET p99", get_ok(r))) if not ok]
        if not broke:
            continue
        sat = saturated(r)
        text = (f"First N where a target broke: N={r['n']} ({' and '.join(broke)}: claim p99 "
                f"{r['claim_p99_ms']:.1f} ms, status GET p99 {r['status_get_p99_ms']:.1f} ms with "
                f"{r['polls_served_fraction']:.0%} of polls answered). Saturated there: "
                + ("; ".join(sat) if sat else "nothing measured here") + ".")
        if bench_saturated(r) or clients_saturated(r) or canary_saturated(r):
            text += (" This benchmark's own processes were saturated there too (above): they drove less than the "
                     "fleet would, and their latencies hold some of their own delays.")
        if r["other_cpu"] >= 0.25:
            text += (f" The machine was shared meanwhile: processes outside this run used {r['other_cpu']:.2f} "
                     "cores.")
        if held_all:
            text += f" Both targets held up to N={max(held_all)}."
        return text
    return f"No target broke up to N={rows[-1]['n']}." if rows else "No size was measured."
