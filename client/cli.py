"""`svdq`: every process role and the operator's commands, configured by SVDQ_* variables."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from typing import Any


def _setup_logging() -> None:
    from models.logs import setup_logging

    setup_logging()  # JSON lines; SVDQ_LOG_FORMAT=text for the plain format


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    from models.migrate import upgrade
    from models.settings import Settings

    settings = Settings()
    upgrade(settings.database_url)
    print(f"database at {settings.database_url.split('@')[-1]} is up to date")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from models.settings import Settings

    _setup_logging()
    workers = args.workers if args.workers is not None else Settings().api_workers
    if workers < 1:
        print(f"svdq api: --workers must be 1 or more, got {workers}", file=sys.stderr)
        return 2
    # log_config=None: uvicorn's loggers go through the root handler, so they are JSON lines too. With several
    # workers uvicorn starts each process from the factory, which sets up its own logging and app.
    uvicorn.run("api.app:app_from_env", factory=True, host=args.host, port=args.port, workers=workers,
                log_level="info", access_log=False, log_config=None)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging()
    from models.settings import Settings
    from worker.process import run_worker

    settings = Settings()
    if not settings.redis_url:
        print("svdq worker: set SVDQ_REDIS_URL (svdq dev sets it for you)", file=sys.stderr)
        return 2
    return run_worker(settings, model=args.model, gpu=None if args.gpu is None else str(args.gpu),
                      metrics_port=args.metrics_port)


def cmd_flower(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from models.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        # the messages only: pydantic's own text quotes the input, secrets included
        for err in exc.errors(include_input=False):
            print(f"svdq flower: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("svdq flower: set SVDQ_REDIS_URL to the workers' broker", file=sys.stderr)
        return 2
    if settings.flower_basic_auth:
        # through the environment, not argv: `ps` shows a process's arguments to every user
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    elif settings.env != "dev":
        print("svdq flower: set SVDQ_FLOWER_BASIC_AUTH=user:password (required outside SVDQ_ENV=dev)",
              file=sys.stderr)
        return 2
    else:
        # dev: Flower's HTTP API open on this machine's loopback only, so local tools can read it
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    from client.flower import run_flower  # lists workers that start after it, without ?refresh=1

    return run_flower(settings, port=args.port, host=args.host)


def dev_public_url(host: str, port: int) -> str:
    """How `svdq dev`'s API is reached from this machine (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_dev(args: argparse.Namespace) -> int:
    from client.procs import Supervisor, free_port, redis_server_cmd, wait_for_port
    from models.migrate import upgrade
    from models.settings import Settings

    settings = Settings()
    env = dict(os.environ)
    sup = Supervisor()
    stop = False

    def _on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        if not settings.redis_url:
            rport = free_port()
            sup.start("redis", redis_server_cmd(rport), underneath=True)
            if not wait_for_port(rport, 10):
                raise RuntimeError("the private redis-server did not start")
            env["SVDQ_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        upgrade(settings.database_url)
        if not settings.bootstrap_api_key:
            env["SVDQ_BOOTSTRAP_API_KEY"] = "svdq_dev_" + secrets.token_urlsafe(16)
        env.setdefault("SVDQ_LOG_FORMAT", "text")  # a person reads these; api/worker default to JSON
        # webhook payloads name API-served results by this URL: the port this API listens on, unless set
        env.setdefault("SVDQ_PUBLIC_URL", dev_public_url(args.host, args.port))
        me = [sys.executable, "-m", "client.cli"]
        flower_port = args.flower_port or free_port()
        sup.start("api", [*me, "api", "--port", str(args.port), "--host", args.host], env)
        sup.start("worker", [*me, "worker", "--model", args.model], env)
        sup.start("flower", [*me, "flower", "--port", str(flower_port), "--host", args.host], env)
        print(f"svdq dev: API  http://{args.host}:{args.port}  (docs at /docs)", flush=True)
        print(f"svdq dev: Flower http://{args.host}:{flower_port}", flush=True)
        print(f"svdq dev: API key {env['SVDQ_BOOTSTRAP_API_KEY']}", flush=True)
        print("svdq dev: Ctrl-C stops everything", flush=True)
        while not stop:
            exited = sup.first_exited()
            if exited is not None:
                print(f"svdq dev: {exited[0]} exited with code {exited[1]}; stopping", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        sup.stop()
        print("svdq dev: stopped", flush=True)


def cmd_workers(args: argparse.Namespace) -> int:
    _setup_logging()
    from client.supervisor import GpuSpecError, GpuSupervisor, list_gpus, parse_gpus, worker_command
    from models.settings import Settings

    try:
        gpus = parse_gpus(args.gpus, list_gpus())
    except GpuSpecError as exc:
        print(f"svdq workers: {exc}", file=sys.stderr)
        return 2
    settings = Settings()
    stop = False

    def _on_signal(signum: int, _: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sup = GpuSupervisor(gpus, lambda gpu: worker_command(args.model, gpu), dict(os.environ),
                        grace_s=settings.shutdown_grace_s + 15, metrics_port_base=settings.worker_metrics_port)
    return sup.run(lambda: stop)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("svdq")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from client.commands import EXIT_CODES_HELP
    from client.key_commands import add_key_commands

    p = argparse.ArgumentParser(prog="svdq", description="Stable Video Diffusion as a job service.",
                                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"svdq {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(fn=cmd_db_upgrade)

    add_key_commands(sub)

    from client.model_commands import add_model_commands

    add_model_commands(sub)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=None,
                     help="API processes on this port (default SVDQ_API_WORKERS, 1); one core each is a good start")
    api.set_defaults(fn=cmd_api)

    w = sub.add_parser("worker", help="run one render worker (one per GPU)")
    w.add_argument("--model", default="tiny")
    w.add_argument("--gpu", default=None, help="GPU index; sets CUDA_VISIBLE_DEVICES for this process")
    w.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus exporter port (default SVDQ_WORKER_METRICS_PORT, 9101; 0 turns it off)")
    w.set_defaults(fn=cmd_worker)

    ws = sub.add_parser("workers", help="one worker per GPU, restarted when it crashes")
    ws.add_argument("--gpus", default="all", help="all (every visible GPU) or indices, e.g. 0,1")
    ws.add_argument("--model", default="tiny")
    ws.set_defaults(fn=cmd_workers)

    f = sub.add_parser("flower", help="run Flower on the same broker")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, default=5555)
    f.set_defaults(fn=cmd_flower)

    d = sub.add_parser("dev", help="API + worker + Flower (+ a private Redis) on embedded defaults")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8000)
    d.add_argument("--flower-port", type=int, default=None)
    d.add_argument("--model", default="tiny")
    d.set_defaults(fn=cmd_dev)

    from client.commands import add_user_commands

    add_user_commands(sub)
    return p


# distributions whose import name is not their name with dashes as underscores
IMPORT_NAMES = {"pillow": "PIL", "pyyaml": "yaml", "python-multipart": "multipart"}


def missing_extra(module: str | None) -> str | None:
    """The extra of this install's metadata that brings `module`, when it is one of an extra's
    dependencies (the core, `pip install svdq`, is the SDK and the CLI client only)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    top = (module or "").split(".")[0]
    try:
        reqs = requires("svdq") or []
    except PackageNotFoundError:
        return None
    for req in reqs:
        dist = re.split(r"[^A-Za-z0-9_.-]", req, maxsplit=1)[0].lower()
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", req)
        if extra and top == IMPORT_NAMES.get(dist, dist.replace("-", "_")):
            return extra.group(1)
    return None


def main(argv: list[str] | None = None) -> int:
    from client.commands import sweep_argv
    from client.sdk import SvdqError

    args = build_parser().parse_args(sweep_argv(sys.argv[1:] if argv is None else argv))
    try:
        rc: int = args.fn(args)
    except ModuleNotFoundError as exc:
        if (extra := missing_extra(exc.name)) is None:
            raise
        print(f"error: missing_extra: `svdq {args.command}` needs {exc.name}, which this install lacks; "
              f"install it with: pip install 'svdq[{extra}]'", file=sys.stderr)
        return 2
    except SvdqError as exc:
        print(f"svdq: {exc.code}: {exc.message}", file=sys.stderr)
        for d in exc.details:
            print(f"  {d.get('field')}: {d.get('message')}" if isinstance(d, dict) else f"  {d}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
