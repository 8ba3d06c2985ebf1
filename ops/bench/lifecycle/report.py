"""The lifecycle benchmark's report: a row and whether it met its target, the versions of everything measured,
and the Markdown table with its header and notes."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import redis as redis_lib
from sqlalchemy import create_engine, text

from ops.bench.lifecycle.plan import NEVER_REFUSE, Options
from ops.harness import ROOT


@dataclass
class Row:
    metric: str
    value: float
    target: str = "—"
    met: bool | None = None
    decimals: int = 1

    def cells(self) -> list[str]:
        value = "n/a" if not math.isfinite(self.value) else f"{self.value:.{self.decimals}f}"
        met = "—" if self.met is None else ("yes" if self.met else "no")
        return [self.metric, value, self.target, met]


def at_least(value: float, target: float) -> bool:
    return math.isfinite(value) and value >= target


def at_most(value: float, target: float) -> bool:
    return math.isfinite(value) and value <= target


def versions(redis_url: str | None, db_url: str | None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("svdq", "fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "redis", "celery", "kombu",
                 "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    if git.returncode == 0:
        out["git"] = git.stdout.strip()
    if redis_url:
        with contextlib.suppress(Exception):
            r = redis_lib.Redis.from_url(redis_url)
            out["redis-server"] = str(r.info("server")["redis_version"])
            r.close()
    if db_url:
        with contextlib.suppress(Exception):
            eng = create_engine(db_url)
            with eng.connect() as conn:
                out["postgresql"] = str(conn.scalar(text("SHOW server_version"))).split()[0]
            eng.dispose()
    return out


def render(rows: list[Row], when: dt.datetime, machine: str, vers: dict[str, str], opt: Options,
           details: dict[str, Any]) -> str:
    lines = [
        f"svdq lifecycle benchmark, {when:%Y-%m-%d %H:%M} UTC, {'quick' if opt.quick else 'full'} mode",
        f"machine: {machine}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"options: {', '.join(f'{k}={v}' for k, v in asdict(opt).items())}; "
        f"{', '.join(f'{k}={v}' for k, v in NEVER_REFUSE.items())} (checked, never refusing)",
        "",
        "| metric | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    r1 = details.get("row1", {})
    if r1:
        lines += ["", f"bench process CPU busy during healthz load: {r1['healthz']['bench_cpu_busy']:.2f} cores, "
                      f"API process: {r1['healthz']['api_cpu_busy']:.2f} cores; during submit load: "
                      f"bench {r1['submit']['bench_cpu_busy']:.2f}, API {r1['submit']['api_cpu_busy']:.2f}"]
    if "row4_fill" in details:
        fill = details["row4_fill"]
        lines.append(f"deep queue: {fill['jobs']:,} rows by INSERT ... SELECT in {fill['insert_s']} s, then VACUUM "
                     f"ANALYZE + CHECKPOINT in {fill['vacuum_checkpoint_s']} s, ZADD in {fill['zadd_s']} s (Redis "
                     f"queue index depth {fill['redis_queue_depth']:,}); the broker's message lists were not filled")
    fails = details.get("failures", {})
    if fails.get("count"):
        lines.append(f"failed requests by row: {fails['by_row']}; first: {fails['first'][0][:240]}")
    return "\n".join(lines)
