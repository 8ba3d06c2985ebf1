"""Export an ended sweep to Weights & Biases with the wandb library, the way the seed report logged its studies,
but with everything lined up for W&B's own panels:

* one run per cell configuration (a combination of the swept axes' values), named like `motion_bucket_id=240`
  (`motion_bucket_id=240, noise_aug_strength=0.1` for two axes), job_type `cell`, in one group (the sweep's
  name). Its config is every resolved render parameter of that configuration's jobs (their `params`), the model,
  the sweep's id and name, the swept axes, and which image each label stands for;
* in that run, ONE `wandb.log` step holding every image's video as `video/<label>` (`image_0`, `image_1`, ... in
  the sweep's image order) and, where the worker measured them, each metric as `metrics/<name>/<label>` and its
  mean over the images as `metrics/<name>`, so a media panel shows the images of one configuration side by side
  and a scatter or parallel-coordinates panel over the group plots each metric (summary) against each swept value
  (config);
* one summary run, `<sweep name> grids` (job_type `grid`), holding what spans every configuration: the comparison
  grid video of each image (`grid/<label>`) and the `cells` table, one row per cell with the columns
  (image, <each swept axis>, video, <each metric>). Where a swept axis is numeric it also logs, per axis, the
  marginal mean of each metric at each value (`vs_<axis>/<name>`, and per image `vs_<axis>/<name>/<label>`)
  against `sweep/<axis>`, declared with `define_metric(step_metric=...)`, so W&B draws metric-vs-value lines
  with no panel set up by hand.

Why the grids live in one summary run and not in each cell run: a grid is one image across every configuration,
so it belongs to no single cell run; logged in each it would be the same file N times (stored and shown N times),
and the table, which also spans the configurations, sits beside it.

`export_sweep` works on the API's own JSON (GET /v1/sweeps/{id} and its /jobs) and a `Fetcher` for the files;
`export_from_api` fetches that JSON over HTTP and the files with the SDK (`Client.download`, which checks each
video's size and sha256). WANDB_MODE=offline works as for any wandb script: the runs are written under
WANDB_DIR for a later `wandb sync`. wandb is an optional extra: pip install 'svdq[wandb]'."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from client._errors import SvdqError

MISSING_WANDB = "Exporting to Weights & Biases needs the wandb package: pip install 'svdq[wandb]'"
UNFINISHED = {"queued", "running"}
GRID_ENDED = {"done", "failed", "expired"}
TABLE_KEY = "cells"


class ExportError(SvdqError, RuntimeError):
    """Why an export cannot be made, as the SDK's other errors say it (`code`, `message`, and `status`: the API's
    HTTP status when it answered with an error, else 0), so the CLI reports it like them; a RuntimeError too."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(status, code, message)


class Fetcher(Protocol):
    """Where the export gets its files: each writes the file to `path`, or raises an SvdqError."""

    def video(self, job: dict[str, Any], path: Path) -> None:
        """The succeeded job's mp4 (its `result.video_url`), checked against the job's sha256."""

    def grid(self, url: str, path: Path) -> None:
        """A comparison grid's mp4."""


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


@contextlib.contextmanager
def _wandb_errors(wandb: Any) -> Iterator[None]:
    """wandb's own errors (no API key online, a refused project, ...) as one ExportError line."""
    errors = getattr(getattr(wandb, "errors", None), "Error", None)
    try:
        yield
    except Exception as exc:
        if isinstance(errors, type) and isinstance(exc, errors):
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise ExportError("wandb_error", f"W&B refused the export: {text}") from exc
        raise


def run_name(combo: dict[str, Any]) -> str:
    """`motion_bucket_id=240`, or for several axes `motion_bucket_id=240, noise_aug_strength=0.1`."""
    return ", ".join(f"{axis}={value}" for axis, value in combo.items())


def image_label(position: int) -> str:
    """The key of the image at `position` in the sweep's image order: `image_0`, `image_1`, ... (as the report)."""
    return f"image_{position}"


def combinations(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes in the sweep's order (the last axis varies fastest), as the API numbers its
    cells (`sweep_index`)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def metric_values(job: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, str]]:
    """The job's measured metrics as (name -> value, name -> unit). `result.metrics` maps each name to
    {"value": v, "unit": u} or to a plain number; anything else there (`measured_on`, a null) is not a metric, and
    a result without metrics has none."""
    raw = (((job or {}).get("result") or {}).get("metrics")) or {}
    values: dict[str, float] = {}
    units: dict[str, str] = {}
    if not isinstance(raw, dict):
        return values, units
    for name, entry in raw.items():
        if isinstance(entry, dict):
            value = _number(entry.get("value"))
            if value is not None and isinstance(entry.get("unit"), str):
                units[str(name)] = entry["unit"]
        else:
            value = _number(entry)
        if value is not None:
            values[str(name)] = value
    return values, units


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


@dataclass
class Cell:
    """One cell of the sweep: a configuration (`combo`) rendered from the image at `position`."""

    combo_index: int
    combo: dict[str, Any]
    position: int
    image_id: str
    job: dict[str, Any] | None
    video: Path | None = None  # the downloaded mp4, for a succeeded cell
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return image_label(self.position)

    @property
    def fps(self) -> Any:
        return ((self.job or {}).get("result") or {}).get("fps")

    def skipped(self) -> dict[str, Any]:
        job = self.job or {}
        error = job.get("error") or {}
        status = job.get("status") or "missing"
        if status == "succeeded" and job.get("result_expired_at"):
            status = "expired"
        return {"image": self.label, "image_id": self.image_id, "job_id": job.get("id"), "status": status,
                "error": error.get("message") or error.get("code")}


def _combo_index(job: dict[str, Any], combos: list[dict[str, Any]]) -> int | None:
    """Which configuration a job renders: its `sweep_index` (checked against its `sweep_cell`), else the
    configuration whose every swept value its params hold."""
    index = job.get("sweep_index")
    if isinstance(index, int) and 0 <= index < len(combos):
        cell = job.get("sweep_cell")
        if cell is None or cell == combos[index]:
            return index
    params = job.get("params") or {}
    for i, combo in enumerate(combos):
        if all(axis in params and params[axis] == value for axis, value in combo.items()):
            return i
    return None


def plan_cells(sweep: dict[str, Any], jobs: list[dict[str, Any]], combos: list[dict[str, Any]]) -> list[list[Cell]]:
    """cells[c][i]: configuration c rendered from image position i (its job None where none was listed)."""
    images = [str(i) for i in sweep.get("images") or []]
    pools: list[dict[str, list[dict[str, Any]]]] = [{} for _ in combos]
    for job in jobs:
        c = _combo_index(job, combos)
        if c is not None:
            pools[c].setdefault(str(job.get("image_id")), []).append(job)
    # an image listed twice has a job per position; hand them out in order
    return [[Cell(c, combo, i, image, pools[c][image].pop(0) if pools[c].get(image) else None)
             for i, image in enumerate(images)] for c, combo in enumerate(combos)]


def _succeeded(cell: Cell) -> bool:
    job = cell.job or {}
    return (job.get("status") == "succeeded" and not job.get("result_expired_at")
            and bool((job.get("result") or {}).get("video_url")))


def cell_config(sweep: dict[str, Any], row: list[Cell], labels: dict[str, str]) -> dict[str, Any]:
    """A configuration run's config: every resolved render parameter its jobs rendered with (a parameter that
    differs between its images, as a server-picked seed could, maps each image label to its value), then the
    model, the sweep and its axes."""
    jobs = [c for c in row if c.job is not None and c.job.get("params")]
    params: dict[str, Any] = dict(sweep.get("params") or {}) if not jobs else {}
    for name in dict.fromkeys(k for c in jobs for k in (c.job or {})["params"]):
        values = {c.label: (c.job or {})["params"].get(name) for c in jobs}
        distinct = {repr(v) for v in values.values()}
        params[name] = next(iter(values.values())) if len(distinct) == 1 else values
    params.update(row[0].combo if row else {})  # the swept values themselves, whatever the jobs say
    model = next((c.job.get("model") for c in jobs if c.job and c.job.get("model")), None) or sweep.get("model")
    return {**params, "model": model, "sweep_id": sweep.get("id"), "sweep_name": sweep.get("name"),
            "swept_axes": list(sweep.get("axes") or {}), "images": labels}


def export_sweep(sweep: dict[str, Any], jobs: list[dict[str, Any]], fetch: Fetcher, *, project: str,
                 entity: str | None = None, group: str | None = None, out_dir: Path | None = None) -> list[str]:
    """Log the sweep to W&B as the module's docstring says: one run per configuration, then the summary run.
    `group` defaults to the sweep's name (else its id); runs are written under `out_dir` (wandb's `dir`; default
    WANDB_DIR or ./wandb). Every file is fetched before the first run starts, so a broken link leaves no runs
    half made. A cell that did not succeed is left out of its run (counted in its `skipped` summary,
    `skipped_cells` says which and why) and has an empty video in the table. Returns the run ids: the
    configurations' in order (the last axis varying fastest), the summary run's last."""
    wandb = _import_wandb()
    reinit = _reinit_arg(wandb)
    axes: dict[str, list[Any]] = dict(sweep.get("axes") or {})
    if not axes:
        raise ExportError("sweep_has_no_axes", f"sweep {sweep.get('id')!r} has no axes; there is nothing to split "
                          "into runs")
    combos = combinations(axes)
    rows = plan_cells(sweep, jobs, combos)
    images = [str(i) for i in sweep.get("images") or []]
    labels = {image_label(i): image for i, image in enumerate(images)}
    group = group or sweep.get("name") or sweep.get("id")
    sweep_title = sweep.get("name") or sweep.get("id")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    init = {"project": project, "entity": entity, "group": group, "reinit": reinit,
            "dir": str(out_dir) if out_dir is not None else None}
    units: dict[str, str] = {}
    metric_names: dict[str, None] = {}
    # the downloads live until the last run is finished: wandb copies each file when it is logged, and the
    # summary run's table logs the cells' videos again
    with tempfile.TemporaryDirectory(prefix="svdq-wandb-") as tmp:
        for row in rows:
            for cell in row:
                cell.metrics, cell_units = metric_values(cell.job)
                units.update(cell_units)
                metric_names.update(dict.fromkeys(cell.metrics))
                if _succeeded(cell):
                    cell.video = Path(tmp) / f"cell_{cell.combo_index}-{cell.label}.mp4"
                    fetch.video(cell.job or {}, cell.video)
        grids: dict[str, Path] = {}
        grids_missing: list[dict[str, Any]] = []
        for grid in sweep.get("grids") or []:
            image_id = str(grid.get("image_id"))
            label = next((lb for lb, image in labels.items() if image == image_id), image_id)
            if grid.get("status") == "done" and grid.get("video_url"):
                grids[label] = Path(tmp) / f"grid-{label}.mp4"
                fetch.grid(str(grid["video_url"]), grids[label])
            else:
                grids_missing.append({"image": label, "image_id": image_id, "status": grid.get("status"),
                                      "error": grid.get("error")})

        run_ids: list[str] = []
        with _wandb_errors(wandb):
            for combo, row in zip(combos, rows, strict=True):
                run_ids.append(_log_cell_run(wandb, init, sweep, combo, row, labels, units))
            run_ids.append(_log_summary_run(wandb, init, sweep, axes, rows, labels, units, list(metric_names),
                                            grids, grids_missing, name=f"{sweep_title} grids"))
    return run_ids


def _caption(cell: Cell) -> str:
    fps = f", {cell.fps} fps" if cell.fps is not None else ""
    return f"{cell.label} ({cell.image_id}), {run_name(cell.combo)}{fps}"


def _video(wandb: Any, path: Path, caption: str) -> Any:
    # no fps=: a file is logged as it was encoded (the job's result.fps, in the caption and the config), and
    # wandb ignores fps for a file path, warning on every video when it is given
    return wandb.Video(str(path), caption=caption, format="mp4")


def _log_cell_run(wandb: Any, init: dict[str, Any], sweep: dict[str, Any], combo: dict[str, Any],
                  row: list[Cell], labels: dict[str, str], units: dict[str, str]) -> str:
    config = {**cell_config(sweep, row, labels), "metric_units": units,
              "video_fps": {c.label: c.fps for c in row if c.video is not None}}
    run = wandb.init(**init, name=run_name(combo), job_type="cell", config=config)
    try:
        step: dict[str, Any] = {}
        per_metric: dict[str, list[float]] = {}
        for cell in row:
            if cell.video is None:
                continue
            step[f"video/{cell.label}"] = _video(wandb, cell.video, _caption(cell))
            for name, value in cell.metrics.items():
                step[f"metrics/{name}/{cell.label}"] = value
                per_metric.setdefault(name, []).append(value)
        for name, values in per_metric.items():
            step[f"metrics/{name}"] = _mean(values)
        if step:
            run.log(step)  # one step: every image of this configuration lines up in W&B's media panels
        skipped = [c.skipped() for c in row if c.video is None]
        run.summary["skipped"] = len(skipped)
        run.summary["skipped_cells"] = skipped
        return str(run.id)
    finally:
        run.finish()


def _curves(axes: dict[str, list[Any]], rows: list[list[Cell]],
            metric_names: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """For each numeric axis: one history row per value, the metrics' mean over every cell at that value (the
    other axes' values and the images pooled, and per image over the other axes)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    cells = [c for row in rows for c in row if c.video is not None]
    for axis, values in axes.items():
        if not metric_names or any(_number(v) is None for v in values):
            continue
        history: list[dict[str, Any]] = []
        for value in values:
            at = [c for c in cells if c.combo.get(axis) == value]
            entry: dict[str, Any] = {f"sweep/{axis}": value}
            for name in metric_names:
                pooled = [c.metrics[name] for c in at if name in c.metrics]
                if pooled:
                    entry[f"vs_{axis}/{name}"] = _mean(pooled)
                for label in dict.fromkeys(c.label for c in at):
                    mine = [c.metrics[name] for c in at if c.label == label and name in c.metrics]
                    if mine:
                        entry[f"vs_{axis}/{name}/{label}"] = _mean(mine)
            if len(entry) > 1:
                history.append(entry)
        if history:
            out.append((axis, history))
    return out


def _log_summary_run(wandb: Any, init: dict[str, Any], sweep: dict[str, Any], axes: dict[str, list[Any]],
                     rows: list[list[Cell]], labels: dict[str, str], units: dict[str, str], metric_names: list[str],
                     grids: dict[str, Path], grids_missing: list[dict[str, Any]], *, name: str) -> str:
    model = next((c.job.get("model") for row in rows for c in row if c.job and c.job.get("model")), None)
    # the swept values are not flattened into this run's config: a scatter or parallel-coordinates panel over
    # the group then plots only the configuration runs
    config = {"sweep_id": sweep.get("id"), "sweep_name": sweep.get("name"), "model": model or sweep.get("model"),
              "swept_axes": list(axes), "axes": axes, "base_params": sweep.get("params") or {}, "images": labels,
              "metric_units": units, "cells": sum(len(row) for row in rows)}
    run = wandb.init(**init, name=name, job_type="grid", config=config)
    try:
        table = wandb.Table(columns=["image", *axes, "video", *metric_names])
        for row in rows:
            for cell in row:
                video = _video(wandb, cell.video, _caption(cell)) if cell.video is not None else None
                table.add_data(cell.label, *(cell.combo[a] for a in axes), video,
                               *(cell.metrics.get(m) for m in metric_names))
        step: dict[str, Any] = {TABLE_KEY: table}
        for label, path in grids.items():
            step[f"grid/{label}"] = _video(wandb, path, f"{label} ({labels.get(label, label)}): every "
                                           f"configuration of {', '.join(axes)}")
        run.log(step)
        for axis, history in _curves(axes, rows, metric_names):
            run.define_metric(f"sweep/{axis}", hidden=True)
            # the x axis of these lines is the swept value; no summary, as a last value of a curve means nothing
            run.define_metric(f"vs_{axis}/*", step_metric=f"sweep/{axis}", summary="none")
            for entry in history:
                run.log(entry)
        run.summary["grids_missing"] = grids_missing
        return str(run.id)
    finally:
        run.finish()


# over HTTP --------------------------------------------------------------------------------------------------


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(u.scheme)
    return u.scheme, u.host, u.port or default


def same_origin(url: str, api_url: str) -> bool:
    """Whether `url` is served by the API at `api_url` (scheme, host and port), and so may get its bearer key."""
    return _origin(url) == _origin(api_url)


def _get(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    r = client.get(url, params={k: v for k, v in params.items() if v is not None}, follow_redirects=True)
    if r.status_code != 200:
        raise ExportError("api_error", f"GET {url} answered {r.status_code}: {r.text[:300]}", r.status_code)
    return r


class ApiFetcher:
    """The files of a sweep served by the API at `base` (or presigned storage links), through the SDK's
    `client`: videos with `Client.download` (size and sha256 checked), grids streamed, the bearer key sent to the
    API's own origin only."""

    def __init__(self, client: Any, base: str, plain: httpx.Client) -> None:
        self.client, self.base, self.plain = client, base, plain

    def video(self, job: dict[str, Any], path: Path) -> None:
        from client.types import Job

        result = {k: v for k, v in (job.get("result") or {}).items() if k != "metrics"}  # not needed to download
        self.client.download(Job.model_validate({**job, "result": result}), path)

    def grid(self, url: str, path: Path) -> None:
        url = str(httpx.URL(self.base).join(url))
        http = self.client.http if same_origin(url, self.base) else self.plain
        with http.stream("GET", url, follow_redirects=True) as r:
            if r.status_code != 200:
                r.read()
                raise ExportError("api_error", f"GET {url} answered {r.status_code}: {r.text[:300]}", r.status_code)
            with path.open("wb") as fh:
                for chunk in r.iter_bytes():
                    fh.write(chunk)


def export_from_api(api_url: str, api_key: str, sweep_id: str, *, project: str, entity: str | None = None,
                    out_dir: Path | None = None, group: str | None = None, page_size: int = 200,
                    timeout: float = 120.0, transport: httpx.BaseTransport | None = None) -> list[str]:
    """Fetch sweep `sweep_id` and all its cells from the API at `api_url`, then `export_sweep` it. Videos served by
    the API get the bearer key; any other URL (a presigned S3 link) is fetched without it. A sweep still queued or
    running, or whose grids are still being composed, is refused: wait for it to end (`svdq sweep wait`)."""
    from client.sdk import Client

    base = api_url.rstrip("/")
    _import_wandb()  # before any request: a missing extra is the first thing to say
    with Client(base, api_key, timeout=timeout, transport=transport) as c, \
            httpx.Client(timeout=timeout, transport=transport, follow_redirects=True) as plain:
        sweep: dict[str, Any] = _get(c.http, f"{base}/v1/sweeps/{sweep_id}").json()
        if sweep.get("status") in UNFINISHED:
            raise ExportError("sweep_not_ended", f"sweep {sweep_id} is {sweep['status']}; export it once it has "
                              "ended")
        composing = [g.get("image_id") for g in sweep.get("grids") or [] if g.get("status") not in GRID_ENDED]
        if composing:
            raise ExportError("sweep_not_ended", f"sweep {sweep_id} ended but the grids of {', '.join(composing)} "
                              "are still being composed; export it once they are")
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = _get(c.http, f"{base}/v1/sweeps/{sweep_id}/jobs", limit=page_size, cursor=cursor).json()
            jobs += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return export_sweep(sweep, jobs, ApiFetcher(c, base, plain), project=project, entity=entity, group=group,
                            out_dir=out_dir)
