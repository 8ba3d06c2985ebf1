"""One size's numbers, from what the simulator, the canary and the clients recorded and what the probes measured:
rates over the window, latency percentiles (a worker's from the canary, the simulator's own beside them; the
clients' GETs and submits), and what each process spent. The canary's counts join the simulator's: together they
are the fleet."""

from __future__ import annotations

import math
from typing import Any

from ops.bench.fleet.plan import Options
from ops.bench.fleet.samples import Samples
from ops.bench.lifecycle.load import pct


def size_row(*, n: int, k: int, opt: Options, main: Samples, canary: dict[str, Any], clients: dict[str, Any],
             system: dict[str, Any], depths: tuple[int, int], errors: list[str], drained: bool) -> dict[str, Any]:
    s = system["window_s"]
    sides = (main.counts, canary["counts"], clients["counts"])
    c = {name: sum(counts.get(name, 0) for counts in sides) for name in set().union(*sides)}
    ms: dict[str, list[float]] = canary["ms"]
    http: dict[str, list[float]] = clients["ms"]

    def both(name: str) -> int:
        return main.n(name) + len(ms.get(name, []))

    def worker(name: str, q: float) -> float:
        """A worker's latency: the canary's (the whole fleet's when the canary has none)."""
        values = ms.get(name) or main.ms_by_name.get(name, [])
        return pct(values, q)

    rate = n / opt.render_s
    demanded = clients["in_flight_mean"] * opt.poll_hz
    row: dict[str, Any] = {
        "n": n, "canary_workers": k, "capacity_per_s": rate, "jobs_per_s": c.get("jobs_finished", 0) / s,
        "busy_fraction": ((main.mean_gauge("busy") if n > k else 0.0) + canary["busy_mean"]) / n,
        "submits_per_s": c.get("submits_ok", 0) / s, "submits_due_per_s": c.get("submits_due", 0) / s,
        "submits_dropped": c.get("submits_dropped", 0),
        "submit_p50_ms": pct(http["submit"], 50), "submit_p99_ms": pct(http["submit"], 99),
        "queue_depth_start": depths[0], "queue_depth_end": depths[1],
        "claims_per_s": both("claim") / s, "claims_skipped": c.get("claims_skipped", 0),
        "claim_p50_ms": worker("claim", 50), "claim_p90_ms": worker("claim", 90), "claim_p99_ms": worker("claim", 99),
        "claim_samples": len(ms.get("claim", [])),
        "claim_sim_p50_ms": main.p("claim", 50), "claim_sim_p99_ms": main.p("claim", 99),
        "progress_calls_per_s": both("progress") / s, "progress_writes_per_s": c.get("progress_writes", 0) / s,
        "progress_p99_ms": worker("progress", 99), "renewals_per_s": both("renew") / s,
        "renew_p99_ms": worker("renew", 99), "finish_p99_ms": worker("finish", 99),
        "job_ended_p99_ms": worker("job_ended", 99),
        "status_get_p50_ms": pct(http["status_get"], 50), "status_get_p90_ms": pct(http["status_get"], 90),
        "status_get_p99_ms": pct(http["status_get"], 99),
        "status_get_max_ms": max(http["status_get"], default=math.nan),
        "polls_per_s": c.get("polls_ok", 0) / s, "polls_demanded_per_s": demanded,
        "polls_served_fraction": (c.get("polls_ok", 0) / s) / demanded if demanded else math.nan,
        "poll_late_p99_ms": pct(http["poll_late"], 99),
        "maintenance_passes_per_s": both("maintenance") / s,
        "maintenance_refused_per_s": c.get("maintenance_refused", 0) / s,
        "maintenance_p50_ms": pct(main.ms_by_name.get("maintenance", []) + ms.get("maintenance", []), 50),
        "maintenance_max_ms": max(main.ms_by_name.get("maintenance", []) + ms.get("maintenance", []),
                                  default=math.nan),
        **system,
        "canary_cpu": canary["process_cpu_s"] / s, "canary_lateness_p99_ms": pct(ms.get("lateness", []), 99),
        "clients_cpu": clients["process_cpu_s"] / s, "clients_lag_p99_ms": clients["lag_p99_ms"],
        "bench_lateness_p99_ms": main.p("lateness", 99),
        "bench_lateness_p50_ms": main.p("lateness", 50),
        "bench_cpu_by_part": {k: round(v / s, 3) for k, v in sorted(main.cpu_s.items(), key=lambda kv: -kv[1])},
        "bench_gc": {f"gen{g}": {"n": main.n(f"gc{g}"), "max_ms": main.max(f"gc{g}"),
                                 "total_ms": sum(main.ms_by_name.get(f"gc{g}", []))} for g in range(3)},
        "action_errors": c.get("action_errors", 0), "request_failures": clients["failures"],
        "failure_samples": clients["failure_samples"] + errors, "drained": drained,
        "stopped": {name: v for name, v in c.items() if name.startswith("stopped_") or name == "finish_lost"},
    }
    row["other_cpu"] = max(0.0, system["other_cpu"] - row["canary_cpu"] - row["clients_cpu"])
    # what the machine's CPU went to, per simulated worker: the cost a fleet of N puts on each part
    for part in ("api_cpu", "pg_cpu", "redis_cpu"):
        row[part + "_ms_per_worker_s"] = 1000 * row[part] / n
    row["simulation_cpu_ms_per_worker_s"] = 1000 * (row["bench_cpu"] + row["canary_cpu"]) / n
    row["clients_cpu_ms_per_request"] = 1000 * row["clients_cpu"] * s / max(1, c.get("polls_ok", 0)
                                                                           + c.get("submits_ok", 0))
    row["db_commits_per_worker_s"] = row["db_commits_per_s"] / n
    row["redis_commands_per_worker_s"] = row["redis_commands_per_s"] / n
    return row
