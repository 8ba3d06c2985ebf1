"""Export a finished sweep to Weights & Biases, the way the seed report logged its studies by hand: one run per
swept value (combination), grouped per experiment, each logging `image_<i>` as a video for every input image.

`export_sweep` works on the API's own JSON (GET /v1/sweeps/{id} and its /jobs); `export_from_api` fetches that
JSON and the videos over HTTP. wandb is an optional extra: pip install 'svdq[wandb]'."""

from __future__ import annotations

import importlib
import inspect
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from client._http import SvdqError

# the report's run names: bucket_120, noise_0.1
AXIS_SHORT_NAMES = {"motion_bucket_id": "bucket", "noise_aug_strength": "noise"}
MISSING_WANDB = "Exporting to Weights & Biases needs the wandb package: pip install 'svdq[wandb]'"
UNFINISHED = {"queued", "running"}


class ExportError(SvdqError, RuntimeError):
    """Why an export cannot be made, as the SDK's other errors say it (`code`, `message`, and `status`: the API's
    HTTP status when it answered with an error, else 0), so the CLI reports it like them; a RuntimeError too."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(status, code, message)


def _import_wandb() -> Any:
    try:
        return importlib.import_module("wandb")
    except ImportError as exc:
        raise ExportError("wandb_missing", MISSING_WANDB) from exc


def _reinit_arg(wandb: Any) -> Any:
    """'finish_previous' where this wandb knows it (0.19.10 and later), else the older boolean."""
    try:
        annotation = inspect.signature(wandb.init).parameters["reinit"].annotation
    except (KeyError, TypeError, ValueError):
        return True
    return "finish_previous" if "finish_previous" in str(annotation) else True


def run_name(combo: dict[str, Any]) -> str:
    """`bucket_120`, `noise_0.1`, or for several axes `bucket_120-noise_0.1`."""
    return "-".join(f"{AXIS_SHORT_NAMES.get(axis, axis)}_{value}" for axis, value in combo.items())


def combinations(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes in the sweep's order (the last axis varies fastest)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def _matches(job: dict[str, Any], combo: dict[str, Any]) -> bool:
    params = job.get("params") or {}
    return all(axis in params and params[axis] == value for axis, value in combo.items())


def _cells(sweep: dict[str, Any], jobs: list[dict[str, Any]],
           combos: list[dict[str, Any]]) -> list[list[dict[str, Any] | None]]:
    """cells[c][i]: the job for combination c and image position i (None where no job was listed)."""
    images: list[str] = list(sweep.get("images") or [])
    pools: list[dict[str, list[dict[str, Any]]]] = [{} for _ in combos]
    for job in jobs:
        for c, combo in enumerate(combos):
            if _matches(job, combo):
                pools[c].setdefault(str(job.get("image_id")), []).append(job)
                break
    # an image listed twice has a job per position; hand them out in order
    return [[pool[image].pop(0) if pool.get(image) else None for image in images] for pool in pools]


def export_sweep(sweep: dict[str, Any], jobs: list[dict[str, Any]], fetch_video: Callable[[str], bytes], *,
                 project: str, entity: str | None = None, group: str | None = None,
                 out_dir: Path | None = None) -> list[str]:
    """One W&B run per combination of the swept values, named like `bucket_120`, in `group` (default: the sweep's
    name). Its config is the sweep's base params, that run's swept values, `sweep_id` and `model`. For each image
    position i (the order of sweep["images"]) a succeeded cell is logged as `image_<i>`, a wandb.Video of the
    downloaded mp4; other cells are left out and counted in the run's `skipped` summary (`skipped_cells` says which
    and why). `fetch_video(url)` returns a video's bytes. Runs are written under `out_dir` (wandb's `dir`; default
    WANDB_DIR or ./wandb). Returns the run ids in combination order."""
    wandb = _import_wandb()
    reinit = _reinit_arg(wandb)
    axes: dict[str, list[Any]] = dict(sweep.get("axes") or {})
    if not axes:
        raise ExportError("sweep_has_no_axes", f"sweep {sweep.get('id')!r} has no axes; there is nothing to split "
                          "into runs")
    combos = combinations(axes)
    cells = _cells(sweep, jobs, combos)
    images: list[str] = list(sweep.get("images") or [])
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    run_ids: list[str] = []
    for combo, row in zip(combos, cells, strict=True):
        name = run_name(combo)
        config = {**(sweep.get("params") or {}), **combo, "sweep_id": sweep.get("id"), "model": sweep.get("model")}
        skipped: list[dict[str, Any]] = []
        # downloads live until the run is finished: wandb copies each into the run's media folder on log()
        with tempfile.TemporaryDirectory(prefix="svdq-wandb-") as tmp:
            run = wandb.init(project=project, entity=entity, group=group or sweep.get("name") or sweep.get("id"),
                             name=name, config=config, reinit=reinit,
                             dir=str(out_dir) if out_dir is not None else None)
            try:
                for i, (image_id, job) in enumerate(zip(images, row, strict=True)):
                    result = (job or {}).get("result") or {}
                    if job is None or job.get("status") != "succeeded" or not result.get("video_url"):
                        error = (job or {}).get("error") or {}
                        skipped.append({"image": i, "image_id": image_id,
                                        "job_id": job.get("id") if job else None,
                                        "status": job.get("status") if job else "missing",
                                        "error": error.get("message") or error.get("code")})
                        continue
                    path = Path(tmp) / f"image_{i}.mp4"
                    path.write_bytes(fetch_video(str(result["video_url"])))
                    # no fps=: the file is already encoded at the job's fps (in the config), and wandb ignores
                    # fps for a file path, warning on every video when it is given
                    run.log({f"image_{i}": wandb.Video(str(path), caption=f"{name}: {image_id}", format="mp4")})
                run.summary["skipped"] = len(skipped)
                run.summary["skipped_cells"] = skipped
                run_ids.append(str(run.id))
            finally:
                run.finish()
    return run_ids


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(u.scheme)
    return u.scheme, u.host, u.port or default


def same_origin(url: str, api_url: str) -> bool:
    """Whether `url` is served by the API at `api_url` (scheme, host and port), and so may get its bearer key."""
    return _origin(url) == _origin(api_url)


def _get(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    r = client.get(url, params={k: v for k, v in params.items() if v is not None})
    if r.status_code != 200:
        raise ExportError("api_error", f"GET {url} answered {r.status_code}: {r.text[:300]}", r.status_code)
    return r


def export_from_api(api_url: str, api_key: str, sweep_id: str, *, project: str, entity: str | None = None,
                    out_dir: Path | None = None, group: str | None = None, page_size: int = 200,
                    timeout: float = 120.0, transport: httpx.BaseTransport | None = None) -> list[str]:
    """Fetch sweep `sweep_id` and all its cells from the API at `api_url`, then `export_sweep` it. Videos served by
    the API get the bearer key; any other URL (a presigned S3 link) is fetched without it. A sweep still queued or
    running is refused: wait for it to end."""
    base = api_url.rstrip("/")
    auth = {"Authorization": f"Bearer {api_key}"}
    # follow_redirects: the API may answer a video with a redirect to storage; httpx drops the key across origins
    with httpx.Client(headers=auth, timeout=timeout, transport=transport, follow_redirects=True) as api, \
            httpx.Client(timeout=timeout, transport=transport, follow_redirects=True) as plain:
        sweep: dict[str, Any] = _get(api, f"{base}/v1/sweeps/{sweep_id}").json()
        if sweep.get("status") in UNFINISHED:
            raise ExportError("sweep_not_ended", f"sweep {sweep_id} is {sweep['status']}; export it once it has "
                              "ended")
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = _get(api, f"{base}/v1/sweeps/{sweep_id}/jobs", limit=page_size, cursor=cursor).json()
            jobs += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break

        def fetch_video(url: str) -> bytes:
            return _get(api if same_origin(url, base) else plain, url).content

        return export_sweep(sweep, jobs, fetch_video, project=project, entity=entity, group=group, out_dir=out_dir)
