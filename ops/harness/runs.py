"""A benchmark's life on a private stack: a temp dir for the process logs, a scratch PostgreSQL database, the stack
(ops/harness/stack.py's `start_stack`), the run itself, and, however it ends, every process stopped, the database
dropped and the temp dir removed (kept when the run failed, or when asked)."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.harness.databases import ScratchDatabase, end_run
from ops.harness.processes import Processes, no_interrupts, tail
from ops.harness.stack import Stack, start_stack


def run_on_private_stack(run: Callable[[Stack, ScratchDatabase], None], *, tmp_prefix: str, db_prefix: str,
                         admin_url: str,
                         log: Callable[[str], None], keep_logs: bool = False, cache_dir: Path | None = None,
                         **stack_settings: Any) -> int:
    """0 when `run` returned, 1 when anything failed (reported with the API's and first worker's log tails),
    130 when interrupted (Ctrl-C, or a SIGTERM handler that raises KeyboardInterrupt)."""
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    procs = Processes(tmp)
    db = ScratchDatabase(admin_url, db_prefix)
    stack: Stack | None = None
    ok = False
    try:
        db.create()
        log(f"created database {db.name}; migrating")
        stack = start_stack(tmp, procs, database_url=db.url, cache_dir=cache_dir or tmp / "models",
                            api_key="svdq_bench_" + secrets.token_urlsafe(24), api_timeout=90, **stack_settings)
        assert stack.api is not None
        log(f"API ready at {stack.url} (pid {stack.api.pid}), redis at {stack.redis_url}")
        run(stack, db)
        ok = True
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: report it, then clean up
        log(f"failed: {exc.__class__.__name__}: {exc}")
        for name in ("api", "worker-0"):
            if (tmp / f"{name}.log").exists():
                log(f"--- {name} log tail ---\n{tail(tmp / f'{name}.log')}")
        return 1
    finally:
        with no_interrupts():
            procs.stop_all()
            if stack is not None:
                stack.client.close()
            end_run(db, tmp, keep_logs=keep_logs or not ok, log=log)
