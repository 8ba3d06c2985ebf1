"""The user's commands: submit, status, wait, cancel, rerun, download, jobs, sweep. Progress is drawn on
stderr from the job's event stream; stdout holds only the answer (`--json` for scripts); the exit code
says how it ended (EXIT_CODES_HELP)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from client.types import Job, Sweep

PARAMS = ["width", "height", "num_frames", "num_inference_steps", "fps", "motion_bucket_id",
          "noise_aug_strength", "min_guidance_scale", "max_guidance_scale", "decode_chunk_size", "seed"]
FLOATS = {"noise_aug_strength", "min_guidance_scale", "max_guidance_scale"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5
EXIT_CODES_HELP = """exit codes (submit --wait, wait, sweep --wait and every other command):
  0  done: the job or sweep succeeded, or the command did what it says
  1  the job or sweep ended failed            stderr: error: <code>: <message>
  2  the command line is wrong (an image file it cannot read, no API key)
                                              stderr: error: <code>: <message>
  3  the job or sweep ended canceled          stderr: error: <code>: <message>
  4  the API refused the request (4xx)        stderr: error: <code>: <message>
  5  the API could not be reached or failed (5xx, connection; worth retrying later)"""
# what the SDK itself refuses before any request: the command line (or the environment) is wrong
USAGE_CODES = frozenset({"no_api_key", "no_image", "image_unreadable", "wandb_missing"})
ENDINGS = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "canceled": EXIT_CANCELED}


def _client() -> Any:
    from client.sdk import Client

    return Client()


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns an error answer or a dead connection into `error: <code>: <message>` and its exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        import httpx

        from client.sdk import SvdqError

        try:
            return fn(args)
        except SvdqError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            for d in exc.details:
                print(f"  {d.get('field')}: {d.get('message')}" if isinstance(d, dict) else f"  {d}", file=sys.stderr)
            if exc.code in USAGE_CODES:
                return EXIT_USAGE
            return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED
        except httpx.TransportError as exc:
            print(f"error: unreachable: {type(exc).__name__}: {exc}; is the API running at SVDQ_API_URL?",
                  file=sys.stderr)
            return EXIT_UNREACHABLE

    return run


def _line(obj: Job | Sweep) -> str:
    if isinstance(obj, Sweep):
        counts = " ".join(f"{k}={v}" for k, v in obj.counts.items() if v)
        grids = "".join(f"\n  grid {g.image_id}: {g.status} {g.video_url or ''}" for g in obj.grids)
        return f"{obj.id} {obj.status} {counts}{grids}"
    line = f"{obj.id} {obj.status}"
    if r := obj.result:
        line += f" {r.frames} frames {r.width}x{r.height} @ {r.fps} fps {r.video_url}"
    if obj.error:
        line += f" {obj.error.code}: {obj.error.message}"
    return line


def _print(obj: Job | Sweep, as_json: bool) -> None:
    print(json.dumps(obj.model_dump(mode="json"), indent=2) if as_json else _line(obj))


def _end(obj: Job | Sweep, as_json: bool) -> int:
    _print(obj, as_json)
    code = ENDINGS.get(obj.status, EXIT_FAILED)
    if code:
        err = obj.error if isinstance(obj, Job) else None
        why = f"{err.code}: {err.message}" if err else f"{obj.status}: {obj.id} ended {obj.status}"
        print(f"error: {why}", file=sys.stderr)
    return code


class ProgressView:
    """Live progress on stderr: a rich bar on a terminal; elsewhere (logs, CI, pipes) one plain line per
    change, so a script's log still shows how far a job got."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.quiet, self.console = quiet, Console(stderr=True)
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.last = ""

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[where]}"), TimeElapsedColumn(), console=self.console)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def job(self, job: Job) -> None:
        where = f"queued, position {job.queue_position}" if job.status == "queued" else job.status
        if job.status == "running" and job.progress.stage:
            where = job.progress.stage
        self.show(job.id, job.progress.step, job.progress.total, where)

    def sweep(self, sweep: Sweep) -> None:
        counts = " ".join(f"{k}={v}" for k, v in sweep.counts.items() if v)
        self.show(sweep.id, sweep.finished_cells, sweep.total, f"{sweep.status} {counts}")

    def show(self, name: str, done: int, total: int, where: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(name, total=total or None, where=where)
            self.bar.update(self.tasks[name], completed=done, total=total or None, where=where)
            return
        line = f"{name} {done}/{total} {where}"
        if line != self.last:
            self.last = line
            print(line, file=sys.stderr, flush=True)


@guarded
def cmd_submit(args: argparse.Namespace) -> int:
    params = {p: getattr(args, p) for p in PARAMS if getattr(args, p) is not None}
    with _client() as c:
        job = c.submit(args.image, model=args.model, output={"format": args.format}, priority=args.priority,
                       reuse=not args.no_reuse, **params)
        if not (args.wait or args.output):
            _print(job, args.json)
            return EXIT_OK
        with ProgressView(args.quiet) as view:
            job = c.wait(job, on_progress=view.job)
        if args.output and job.status == "succeeded":
            path = c.download(job, args.output)
            if not args.quiet:  # stdout keeps only the answer
                print(f"wrote {path} ({job.result.bytes if job.result else 0} bytes)", file=sys.stderr)
        return _end(job, args.json)


@guarded
def cmd_job(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.command == "wait":
            with ProgressView(args.quiet) as view:
                return _end(c.wait(args.job, on_progress=view.job), args.json)
        if args.command == "download":
            job = c.get(args.job)
            ext = job.output.get("format", "mp4").replace("frames", "zip")
            path = c.download(job, args.output or f"{args.job}.{ext}")
            assert job.result is not None  # download raised otherwise
            print(json.dumps({"id": job.id, "path": str(path), "bytes": job.result.bytes,
                              "sha256": job.result.sha256}) if args.json else path)
            return EXIT_OK
        action = {"status": c.get, "cancel": c.cancel, "rerun": c.rerun}[args.command]
        _print(action(args.job), args.json)
        return EXIT_OK


@guarded
def cmd_jobs(args: argparse.Namespace) -> int:
    with _client() as c:
        jobs = list(islice(c.list_jobs(status=args.status, page_size=min(args.limit, 200)), args.limit))
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
    for job in [] if args.json else jobs:
        print(_line(job))
    return EXIT_OK


def load_sweep_spec(path: Path, client: Any) -> dict[str, Any]:
    """A YAML (or JSON) sweep spec; images may be local paths (uploaded), URLs (fetched here, then
    uploaded) or image ids."""
    import httpx
    import yaml

    spec = dict(yaml.safe_load(path.read_text()))
    images = []
    for item in spec.pop("images", []):
        if "image_id" in item:
            images.append({"image_id": item["image_id"]})
        elif "path" in item:
            images.append({"image_id": client.upload_image((path.parent / item["path"]).resolve()).id})
        elif "url" in item:
            r = httpx.get(item["url"], follow_redirects=True, timeout=60)
            r.raise_for_status()
            images.append({"image_id": client.upload_image(r.content).id})
        else:
            raise SystemExit(f"{path}: each image needs path, url or image_id")
    spec["images"] = images
    return spec


def _export_wandb(rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog="svdq sweep export-wandb")
    p.add_argument("sweep_id")
    p.add_argument("--project", required=True)
    p.add_argument("--entity")
    a = p.parse_args(rest)
    import os

    from client.wandb_export import export_from_api

    # its ExportError is an SvdqError: cmd_sweep's `guarded` prints it and picks the exit code
    runs = export_from_api(os.environ.get("SVDQ_API_URL", "http://127.0.0.1:8000"),
                           os.environ.get("SVDQ_API_KEY", ""), a.sweep_id, project=a.project, entity=a.entity)
    print("\n".join(runs))
    return EXIT_OK


@guarded
def cmd_sweep(args: argparse.Namespace) -> int:
    rest: list[str] = args.rest
    if rest and rest[0] == "export-wandb":
        return _export_wandb(rest[1:])
    action = rest[0] if rest and rest[0] in ("status", "wait", "cancel") else None
    p = argparse.ArgumentParser(prog=f"svdq sweep {action}" if action else "svdq sweep")
    p.add_argument("sweep_id" if action else "spec", type=str if action else Path)
    p.add_argument("--wait", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(rest[1:] if action else rest)
    with _client() as c:
        if action == "status":
            sweep = c.get_sweep(a.sweep_id)
        elif action == "cancel":
            sweep = c.cancel_sweep(a.sweep_id)
        elif action == "wait":
            sweep, a.wait = c.get_sweep(a.sweep_id), True
        else:
            sweep = c.sweep(load_sweep_spec(a.spec, c))
            print(f"sweep {sweep.id}: {sweep.total} cells; gallery {c.base_url}{sweep.gallery_url}", file=sys.stderr)
        if not a.wait:
            _print(sweep, a.json)
            return EXIT_OK
        with ProgressView(a.quiet) as view:
            sweep = c.wait_sweep(sweep.id, on_update=view.sweep)
        return _end(sweep, a.json)


def add_user_commands(sub: Any) -> None:
    def flags(p: argparse.ArgumentParser, *, progress: bool = False) -> None:
        p.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
        if progress:
            p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    s = sub.add_parser("submit", help="submit one image; --wait to follow it, -o to download the video")
    s.add_argument("image")
    s.add_argument("--model", default="tiny")
    for name in PARAMS:
        s.add_argument("--" + name.replace("_", "-"), dest=name, type=float if name in FLOATS else int)
    s.add_argument("--format", default="mp4", choices=["mp4", "webm", "gif", "frames"])
    s.add_argument("--priority", type=int)
    s.add_argument("--no-reuse", action="store_true")
    s.add_argument("--wait", action="store_true")
    s.add_argument("-o", "--output")
    flags(s, progress=True)
    s.set_defaults(fn=cmd_submit)
    for name in ("status", "wait", "cancel", "rerun", "download"):
        j = sub.add_parser(name, help=f"{name} a job")
        j.add_argument("job")
        flags(j, progress=name == "wait")
        if name == "download":
            j.add_argument("-o", "--output")
        j.set_defaults(fn=cmd_job)
    ls = sub.add_parser("jobs", help="list your jobs, newest first")
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=20)
    flags(ls)
    ls.set_defaults(fn=cmd_jobs)
    sw = sub.add_parser("sweep", help="svdq sweep SPEC.yaml [--wait] | svdq sweep status|wait|cancel ID | "
                        "svdq sweep export-wandb ID --project P")
    sw.add_argument("rest", nargs=argparse.REMAINDER)
    sw.set_defaults(fn=cmd_sweep)
