"""A chaos run's verdict: the checks that make it PASS or FAIL, the report they fill (also written as JSON),
and the Markdown table it prints."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ops.chaos.evidence import history, job_rows, log_stats, result_objects
from ops.chaos.faults import Event
from ops.chaos.plan import EXPECTED_OBJECTS, PARAMS, TIMINGS, Options, Run
from ops.harness.machine import machine
from ops.harness.processes import Proc


@dataclass
class Report:
    date: str
    machine: str
    options: dict[str, Any]
    timings: dict[str, str]
    database: str
    wall_s: float
    submitted: int
    succeeded: int
    failed: dict[str, int]
    lost: list[str]
    stuck: list[str]
    still_running: list[str]
    duplicates: dict[str, int]
    objects_max: int
    objects_min: int
    objects_wrong: dict[str, list[str]]
    webhook_ids_max: int
    webhook_ids_min: int
    webhook_missing: list[str]
    webhook_deliveries: int
    webhook_refused: int
    kills: int
    kills_mid_render: int
    wipes: int
    sigterms: int
    sigterm_outcome: str
    retried: int
    max_attempts_used: int
    taken_from_live: int
    handed_back: int
    workers_started: int
    unexpected_exits: int
    events: list[dict[str, Any]]
    processes: list[dict[str, Any]]  # every process this run started: name, pid, exit status
    histories: dict[str, list[str]]
    passed: bool = False
    reasons: list[str] = field(default_factory=list)


def build_report(run: Run, ids: list[str], opt: Options, events: list[Event], when: dt.datetime,
                 wall_s: float, db_name: str, started: list[Proc]) -> Report:
    stack = run.stack
    rows = job_rows(run.engine, ids)
    stats = log_stats(stack.workers)
    missing = [i for i in ids if i not in rows]
    statuses = Counter(r.status for r in rows.values())
    failed = Counter(f"{r.status}:{r.error_code}" for r in rows.values() if r.status in ("failed", "canceled"))
    lost = sorted([r.id for r in rows.values() if r.status == "queued"] + missing)
    stuck = sorted(r.id for r in rows.values() if r.status == "running" and r.lease_expired)
    still = sorted(r.id for r in rows.values() if r.status == "running" and not r.lease_expired)
    dup = {j: n for j, n in stats["succeeded"].items() if n > 1 and j in rows}
    objects = {i: result_objects(stack.tmp / "results", i) for i in ids}
    counts = [len(v) for v in objects.values()] or [0]
    wrong = {i: v for i, v in objects.items() if v != EXPECTED_OBJECTS}
    kills = [e for e in events if e.kind == "kill"]
    sigterms = [e for e in events if e.kind == "sigterm"]
    hook_counts = [len(run.hooks.ids.get(i, set())) for i in ids] or [0]
    outcome = "—"
    if sigterms:
        parts = []
        for e in sigterms:
            w = next(p for p in stack.workers if p.pid == e.detail["pid"])
            code = w.poll()
            job = e.detail.get("job")
            fate = ("its job was handed back" if job and stats["handed_back"][job] else
                    "it finished its job first" if job and stats["succeeded"][job] and any(
                        f"job {job} succeeded" in line for line in w.log_path.read_text(errors="replace").splitlines())
                    else "no job" if not job else "its job ended elsewhere")
            parts.append(f"exit {code}, {fate}")
        outcome = "; ".join(parts)
    histories = {}
    bad = sorted(set(lost) | set(stuck) | set(still) | set(dup) | set(wrong)
                 | {r.id for r in rows.values() if r.status in ("failed", "canceled")})
    for job_id in bad[:10]:
        histories[job_id] = history(stack.workers, job_id)
    unexpected = sum(1 for w in stack.workers if w.exit_seen and w.stopping_since is None
                     and w.pid not in {e.detail.get("pid") for e in kills})
    rep = Report(
        date=when.strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        options=asdict(opt), timings=dict(TIMINGS), database=db_name, wall_s=round(wall_s, 1),
        submitted=len(ids), succeeded=statuses.get("succeeded", 0), failed=dict(failed), lost=lost, stuck=stuck,
        still_running=still, duplicates=dup, objects_max=max(counts), objects_min=min(counts),
        objects_wrong=wrong, webhook_ids_max=max(hook_counts), webhook_ids_min=min(hook_counts),
        webhook_missing=sorted(i for i in ids if not run.hooks.ids.get(i)),
        webhook_deliveries=run.hooks.deliveries, webhook_refused=run.hooks.refused,
        kills=len(kills), kills_mid_render=sum(1 for e in kills if e.detail.get("job")),
        wipes=sum(1 for e in events if e.kind == "wipe"), sigterms=len(sigterms), sigterm_outcome=outcome,
        retried=sum(1 for r in rows.values() if r.attempts > 1),
        max_attempts_used=max((r.attempts for r in rows.values()), default=0),
        taken_from_live=sum(stats["taken"].values()), handed_back=sum(stats["handed_back"].values()),
        workers_started=len(stack.workers), unexpected_exits=unexpected,
        events=[{"kind": e.kind, "at_fraction": round(e.at_fraction, 3), "at_s": e.done_at_s,
                 "jobs_ended": e.ended_jobs, **e.detail} for e in events],
        processes=[{"name": p.name, "pid": p.pid, "returncode": p.poll()} for p in started],
        histories=histories,
    )
    checks = [
        (rep.succeeded == rep.submitted, f"{rep.submitted - rep.succeeded} of {rep.submitted} jobs did not succeed"),
        (not lost, f"{len(lost)} jobs lost"),
        (not stuck, f"{len(stuck)} jobs stuck"),
        (not still, f"{len(still)} jobs still running at the deadline"),
        (not dup, f"{len(dup)} jobs rendered to completion more than once"),
        (not wrong, f"{len(wrong)} jobs without exactly {', '.join(EXPECTED_OBJECTS)}"),
        (max(hook_counts) == 1 == min(hook_counts), "not exactly one webhook event id per job"),
        (rep.kills == opt.kills, f"{rep.kills} of {opt.kills} kills done"),
        (rep.wipes == opt.wipes, f"{rep.wipes} of {opt.wipes} Redis wipes done"),
        (rep.sigterms == opt.sigterms, f"{rep.sigterms} of {opt.sigterms} SIGTERMs done"),
    ]
    rep.reasons = [why for ok, why in checks if not ok]
    rep.passed = not rep.reasons
    return rep


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def render(rep: Report) -> str:
    failed_total = sum(rep.failed.values())
    failed = str(failed_total) + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(rep.failed.items())) + ")"
                                  if rep.failed else "")
    objects = f"max {rep.objects_max}, min {rep.objects_min}" + (
        f"; {len(rep.objects_wrong)} jobs differ: " + ", ".join(f"{k} {v}" for k, v in
                                                                 list(rep.objects_wrong.items())[:5])
        if rep.objects_wrong else "")
    o = rep.options
    rows = [
        ("jobs submitted", str(rep.submitted), "—", "—"),
        ("succeeded", str(rep.succeeded), str(rep.submitted), yes(rep.succeeded == rep.submitted)),
        ("failed (by error code)", failed, "0", yes(failed_total == 0)),
        ("lost (never ended: still queued at the end)", str(len(rep.lost)), "0", yes(not rep.lost)),
        ("stuck (running, lease expired at the end)", str(len(rep.stuck)), "0", yes(not rep.stuck)),
        ("still running with a live lease at the deadline", str(len(rep.still_running)), "0",
         yes(not rep.still_running)),
        ("jobs rendered to completion more than once", str(len(rep.duplicates)), "0", yes(not rep.duplicates)),
        ("result objects per job", objects, "exactly 2 (video.mp4, poster.jpg)", yes(not rep.objects_wrong)),
        ("webhook event ids per job", f"max {rep.webhook_ids_max}, min {rep.webhook_ids_min}"
         + (f"; no delivery for {len(rep.webhook_missing)} jobs" if rep.webhook_missing else ""),
         "exactly 1", yes(rep.webhook_ids_max == 1 == rep.webhook_ids_min)),
        ("webhook deliveries received (first tries refused with 500 on purpose)",
         f"{rep.webhook_deliveries} ({rep.webhook_refused} refused)", "—", "—"),
        ("workers SIGKILLed", f"{rep.kills} ({rep.kills_mid_render} mid-render)", str(o["kills"]),
         yes(rep.kills == o["kills"])),
        ("Redis restarted with its data wiped", str(rep.wipes), str(o["wipes"]), yes(rep.wipes == o["wipes"])),
        ("workers SIGTERMed", f"{rep.sigterms} ({rep.sigterm_outcome})", str(o["sigterms"]),
         yes(rep.sigterms == o["sigterms"])),
        ("jobs that needed more than one attempt", f"{rep.retried} (most attempts: {rep.max_attempts_used})",
         "—", "—"),
        ("leases taken from live workers", str(rep.taken_from_live), "—", "—"),
        ("jobs handed back on shutdown", str(rep.handed_back), "—", "—"),
        ("worker processes started (with replacements)", str(rep.workers_started), "—", "—"),
        ("workers that exited by themselves", str(rep.unexpected_exits), "—", "—"),
        ("total wall time (s)", f"{rep.wall_s:.1f}", "—", "—"),
    ]
    lines = [
        f"svdq chaos run, {rep.date}",
        f"machine: {rep.machine}",
        "options: " + ", ".join(f"{k}={v}" for k, v in o.items()),
        "timings: " + ", ".join(f"{k}={v}" for k, v in rep.timings.items()) + f"; params {json.dumps(PARAMS)}",
        "",
        "| metric | value | target | met |",
        "|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]
    for job_id, hist in rep.histories.items():
        lines.append(f"history of {job_id}:")
        lines += [f"    {h}" for h in hist] or ["    (no worker log line names it)"]
    lines.append("PASS" if rep.passed else "FAIL: " + "; ".join(rep.reasons))
    return "\n".join(lines)
