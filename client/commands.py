"""The user's commands: submit, status, wait, cancel, rerun, download, jobs, sweep. Progress is drawn on
stderr from the job's event stream; stdout holds only the answer (`--json` for scripts); the exit code
says how it ended (EXIT_CODES_HELP)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from client.cli_output import (
    EXIT_CANCELED,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    USAGE_CODES,
    ProgressView,
    end,
    guarded,
    line,
    show,
)
from client.render_args import add_render_args, render_request
from client.types import Job

# the output helpers are re-exported: the other command modules take them from here
__all__ = ["EXIT_CANCELED", "EXIT_CODES_HELP", "EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE",
           "EXIT_USAGE", "USAGE_CODES", "ProgressView", "add_user_commands", "end", "guarded", "line",
           "load_sweep_spec", "show", "sweep_argv"]


def _client() -> Any:
    from client.sdk import Client

    return Client()


def _follow(c: Any, job: Job, quiet: bool) -> Job:
    with ProgressView(quiet) as view:
        finished: Job = c.wait(job, on_progress=view.job)
    return finished


def _save(c: Any, job: Job, path: str, quiet: bool) -> None:
    saved = c.download(job, path)
    if not quiet:  # stdout keeps only the answer
        print(f"wrote {saved} ({job.result.bytes if job.result else 0} bytes)", file=sys.stderr)


@guarded
def cmd_submit(args: argparse.Namespace) -> int:
    image, kwargs = render_request(args)
    with _client() as c:
        job = c.submit(image, **kwargs)
        if not (args.wait or args.output):
            show(job, args.json)
            return EXIT_OK
        job = _follow(c, job, args.quiet)
        if args.output and job.status == "succeeded":
            _save(c, job, args.output, args.quiet)
        return end(job, args.json)


@guarded
def cmd_run(args: argparse.Namespace) -> int:
    """submit, follow and download in one: the video lands at -o (default JOB_ID.mp4 here)."""
    image, kwargs = render_request(args)
    with _client() as c:
        job = _follow(c, c.submit(image, **kwargs), args.quiet)
        if job.status == "succeeded":
            ext = args.format.replace("frames", "zip")
            _save(c, job, args.output or f"{job.id}.{ext}", args.quiet)
        return end(job, args.json)


@guarded
def cmd_job(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.command == "wait":
            with ProgressView(args.quiet) as view:
                return end(c.wait(args.job, on_progress=view.job), args.json)
        if args.command == "download":
            job = c.get(args.job)
            ext = job.output.get("format", "mp4").replace("frames", "zip")
            path = c.download(job, args.output or f"{args.job}.{ext}")
            assert job.result is not None  # download raised otherwise
            print(json.dumps({"id": job.id, "path": str(path), "bytes": job.result.bytes,
                              "sha256": job.result.sha256}) if args.json else path)
            return EXIT_OK
        action = {"status": c.get, "cancel": c.cancel, "rerun": c.rerun}[args.command]
        show(action(args.job), args.json)
        return EXIT_OK


@guarded
def cmd_jobs(args: argparse.Namespace) -> int:
    with _client() as c:
        jobs = list(islice(c.list_jobs(status=args.status, page_size=min(args.limit, 200)), args.limit))
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
    for job in [] if args.json else jobs:
        print(line(job))
    return EXIT_OK


def load_sweep_spec(path: Path, client: Any) -> dict[str, Any]:
    """A YAML (or JSON) sweep spec; images may be local paths (uploaded), URLs (fetched here, then
    uploaded) or image ids."""
    import httpx
    import yaml

    from client._errors import SvdqError

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SvdqError(0, "spec_unreadable", f"Cannot read the sweep spec {str(path)!r}: {exc.strerror or exc}; "
                        "give the path of a YAML or JSON file (ops/examples/ has some).") from exc
    except yaml.YAMLError as exc:
        raise SvdqError(0, "bad_spec", f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}.") from exc
    if not isinstance(loaded, dict) or not isinstance(loaded.get("images", []), list):
        raise SvdqError(0, "bad_spec", f"{path}: a sweep spec is a mapping with images (a list), model, params and "
                        "axes; see ops/examples/.")
    spec = dict(loaded)
    images = []
    for n, item in enumerate(spec.pop("images", [])):
        if not isinstance(item, dict):
            raise SvdqError(0, "bad_spec", f"{path}: images[{n}] needs path, url or image_id.")
        if "image_id" in item:
            images.append({"image_id": item["image_id"]})
        elif "path" in item:
            images.append({"image_id": client.upload_image((path.parent / item["path"]).resolve()).id})
        elif "url" in item:
            try:
                r = httpx.get(item["url"], follow_redirects=True, timeout=60)
                r.raise_for_status()
            except httpx.HTTPError as exc:
                raise SvdqError(0, "image_url_unreachable", f"{path}: images[{n}]: fetching {item['url']} failed "
                                f"({exc}).") from exc
            images.append({"image_id": client.upload_image(r.content).id})
        else:
            raise SvdqError(0, "bad_spec", f"{path}: images[{n}] needs path, url or image_id.")
    spec["images"] = images
    return spec


@guarded
def cmd_export_wandb(a: argparse.Namespace) -> int:
    import os

    from client.wandb_export import export_from_api

    # its ExportError is an SvdqError: `guarded` prints it and picks the exit code
    runs = export_from_api(os.environ.get("SVDQ_API_URL", "http://127.0.0.1:8000"),
                           os.environ.get("SVDQ_API_KEY", ""), a.sweep_id, project=a.project, entity=a.entity)
    print("\n".join(runs))
    return EXIT_OK


@guarded
def cmd_sweep(a: argparse.Namespace) -> int:
    with _client() as c:
        if a.sweep_command == "status":
            sweep = c.get_sweep(a.sweep_id)
        elif a.sweep_command == "cancel":
            sweep = c.cancel_sweep(a.sweep_id)
        elif a.sweep_command == "wait":
            sweep, a.wait = c.get_sweep(a.sweep_id), True
        else:
            sweep = c.sweep(load_sweep_spec(a.spec, c))
            print(f"sweep {sweep.id}: {sweep.total} cells; gallery {c.base_url}{sweep.gallery_url}", file=sys.stderr)
        if not getattr(a, "wait", False):
            show(sweep, a.json)
            return EXIT_OK
        with ProgressView(a.quiet) as view:
            sweep = c.wait_sweep(sweep.id, on_update=view.sweep)
        return end(sweep, a.json)


SWEEP_COMMANDS = ("submit", "status", "wait", "cancel", "export-wandb")


def sweep_argv(argv: list[str]) -> list[str]:
    """`svdq sweep SPEC.yaml ...`, the short form, is `svdq sweep submit SPEC.yaml ...`."""
    i = argv.index("sweep") if "sweep" in argv else -1
    if i >= 0 and all(a.startswith("-") for a in argv[:i]) and i + 1 < len(argv):
        nxt = argv[i + 1]
        if nxt not in SWEEP_COMMANDS and not nxt.startswith("-"):
            return [*argv[: i + 1], "submit", *argv[i + 1:]]
    return argv


def _add_sweep_commands(sub: Any, flags: Callable[..., None]) -> None:
    sw = sub.add_parser("sweep", help="a parameter study: submit a spec, follow it, export it to W&B",
                        description="svdq sweep SPEC.yaml is short for svdq sweep submit SPEC.yaml.")
    ssub = sw.add_subparsers(dest="sweep_command", required=True, metavar="{submit,status,wait,cancel,export-wandb}")
    s = ssub.add_parser("submit", help="submit a sweep spec (YAML or JSON; see ops/examples/)")
    s.add_argument("spec", type=Path, help="images (path, url or image_id), model, params and axes")
    s.add_argument("--wait", action="store_true", help="follow it to its end (exit code: how it ended)")
    flags(s, progress=True)
    s.set_defaults(fn=cmd_sweep)
    for name, text in (("status", "show a sweep's cells and grids"), ("wait", "follow a sweep to its end"),
                       ("cancel", "cancel every cell that has not ended")):
        p = ssub.add_parser(name, help=text)
        p.add_argument("sweep_id")
        flags(p, progress=name == "wait")
        p.set_defaults(fn=cmd_sweep)
    x = ssub.add_parser("export-wandb", help="log an ended sweep to Weights & Biases (needs svdq[wandb])",
                        description="One W&B run per configuration of the swept values (config: every resolved "
                        "parameter; each image's video and metrics at one step), then one '<name> grids' run with "
                        "each image's comparison grid and the table of cells. Prints the run ids, that run's last. "
                        "WANDB_MODE=offline writes them under WANDB_DIR for a later `wandb sync`.")
    x.add_argument("sweep_id")
    x.add_argument("--project", required=True, help="the W&B project")
    x.add_argument("--entity", help="the W&B entity (default: yours)")
    x.set_defaults(fn=cmd_export_wandb)


def add_user_commands(sub: Any) -> None:
    def flags(p: argparse.ArgumentParser, *, progress: bool = False) -> None:
        p.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
        if progress:
            p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    r = sub.add_parser("run", help="render one image and save the video: submit, follow, download",
                       add_help=False, description="svdq run IMAGE -o out.mp4: the job's progress on stderr, "
                       "the video at -o (default JOB_ID.mp4), the job on stdout; the exit code says how it ended.")
    add_render_args(r)
    r.add_argument("-o", "--output", help="where the video goes (default JOB_ID.EXT in this directory)")
    flags(r, progress=True)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("submit", help="submit one image; --wait to follow it, -o to download the video",
                       add_help=False)
    add_render_args(s)
    s.add_argument("--wait", action="store_true", help="follow the job to its end")
    s.add_argument("-o", "--output", help="follow the job and save its video here")
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
    _add_sweep_commands(sub, flags)
