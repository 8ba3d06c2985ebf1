"""The user's commands: submit, status, wait, cancel, rerun, download, jobs, sweep. Exit codes scripts can
trust: 0 done, 1 the job or sweep ended failed or canceled, 2 the request was refused (code printed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PARAMS = ["width", "height", "num_frames", "num_inference_steps", "fps", "motion_bucket_id",
          "noise_aug_strength", "min_guidance_scale", "max_guidance_scale", "decode_chunk_size", "seed"]
FLOATS = {"noise_aug_strength", "min_guidance_scale", "max_guidance_scale"}


def _client() -> Any:
    from client.sdk import Client

    return Client()


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2))
    elif "counts" in obj:
        print(f"{obj['id']} {obj['status']} " + " ".join(f"{k}={v}" for k, v in obj["counts"].items() if v))
        for g in obj.get("grids", []):
            print(f"  grid {g['image_id']}: {g['status']} {g.get('video_url') or ''}")
    else:
        line = f"{obj['id']} {obj['status']}"
        if obj.get("result"):
            r = obj["result"]
            line += f" {r['frames']} frames {r['width']}x{r['height']} @ {r['fps']} fps {r['video_url']}"
        if obj.get("error"):
            line += f" {obj['error']['code']}: {obj['error']['message']}"
        print(line)


def _bar(job: dict[str, Any]) -> None:
    if not sys.stderr.isatty():
        return
    p = job["progress"]
    done = round(30 * (p.get("fraction") or 0))
    where = f"queue position {job['queue_position']}" if job["status"] == "queued" else (p.get("stage") or "")
    sys.stderr.write(f"\r{job['id']} [{'#' * done}{'.' * (30 - done)}] {p['step']}/{p['total']} {where:<20}")
    sys.stderr.flush()


def _end(job: dict[str, Any], as_json: bool) -> int:
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    _print(job, as_json)
    return 0 if job["status"] == "succeeded" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    params = {p: getattr(args, p) for p in PARAMS if getattr(args, p) is not None}
    with _client() as c:
        job = c.submit(args.image, model=args.model, output={"format": args.format}, priority=args.priority,
                       reuse=not args.no_reuse, **params)
        if not (args.wait or args.output):
            _print(job, args.json)
            return 0
        job = c.wait(job["id"], on_progress=_bar)
        if args.output and job["status"] == "succeeded":
            c.download(job, args.output)
        return _end(job, args.json)


def cmd_job(args: argparse.Namespace) -> int:
    with _client() as c:
        if args.command == "status":
            job = c.get(args.job)
        elif args.command == "cancel":
            job = c.cancel(args.job)
        elif args.command == "rerun":
            job = c.rerun(args.job)
        elif args.command == "download":
            job = c.get(args.job)
            path = c.download(job, args.output or f"{args.job}.{job['output']['format'].replace('frames', 'zip')}")
            print(path)
            return 0
        else:  # wait
            return _end(c.wait(args.job, on_progress=_bar), args.json)
        _print(job, args.json)
        return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client() as c:
        for i, job in enumerate(c.list_jobs(status=args.status)):
            if i >= args.limit:
                break
            _print(job, args.json)
    return 0


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
            images.append({"image_id": client.upload_image((path.parent / item["path"]).resolve())["id"]})
        elif "url" in item:
            r = httpx.get(item["url"], follow_redirects=True, timeout=60)
            r.raise_for_status()
            images.append({"image_id": client.upload_image(r.content)["id"]})
        else:
            raise SystemExit(f"{path}: each image needs path, url or image_id")
    spec["images"] = images
    return spec


def cmd_sweep(args: argparse.Namespace) -> int:
    rest: list[str] = args.rest
    if rest and rest[0] == "export-wandb":
        p = argparse.ArgumentParser(prog="svdq sweep export-wandb")
        p.add_argument("sweep_id")
        p.add_argument("--project", required=True)
        p.add_argument("--entity")
        a = p.parse_args(rest[1:])
        import os

        from client.wandb_export import export_from_api

        runs = export_from_api(os.environ.get("SVDQ_API_URL", "http://127.0.0.1:8000"),
                               os.environ.get("SVDQ_API_KEY", ""), a.sweep_id, project=a.project, entity=a.entity)
        print("\n".join(runs))
        return 0
    p = argparse.ArgumentParser(prog="svdq sweep")
    p.add_argument("spec", type=Path)
    p.add_argument("--wait", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(rest)
    with _client() as c:
        sweep = c.sweep(load_sweep_spec(a.spec, c))
        print(f"sweep {sweep['id']}: {sweep['total']} cells; gallery {c.base_url}{sweep['gallery_url']}",
              file=sys.stderr)
        if not a.wait:
            _print(sweep, a.json)
            return 0

        def show(s: dict[str, Any]) -> None:
            if sys.stderr.isatty():
                counts = " ".join(f"{k}={v}" for k, v in s["counts"].items() if v)
                sys.stderr.write(f"\r{s['id']} {s['status']:<9} {counts:<60}")
                sys.stderr.flush()

        sweep = c.wait_sweep(sweep["id"], on_update=show)
        return _end(sweep, a.json)


def add_user_commands(sub: Any) -> None:
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
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_submit)
    for name in ("status", "wait", "cancel", "rerun", "download"):
        j = sub.add_parser(name, help=f"{name} a job")
        j.add_argument("job")
        j.add_argument("--json", action="store_true")
        if name == "download":
            j.add_argument("-o", "--output")
        j.set_defaults(fn=cmd_job)
    ls = sub.add_parser("jobs", help="list your jobs, newest first")
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_jobs)
    sw = sub.add_parser("sweep", help="svdq sweep SPEC.yaml [--wait] | svdq sweep export-wandb ID --project P")
    sw.add_argument("rest", nargs=argparse.REMAINDER)
    sw.set_defaults(fn=cmd_sweep)
