"""The Weights & Biases export of a study, with wandb in offline mode and read back with the wandb library: a
tiny-model sweep (two images x two motion_bucket_id values) made with `svdq sweep`, exported with
`svdq sweep export-wandb`, then each offline run's transaction log decoded into wandb's own protobuf records and
the cells table rebuilt with `wandb.Table.from_json`. Nothing goes over the network.

wandb 0.31 ships no Python reader of a run's `.wandb` file (the DataStore went with the Python backend, and
LocalApi is not released), so `read_offline_run` walks the file's LevelDB-log framing itself (a 7-byte ':W&B'
header, 32 KiB blocks of chunks) and hands each record to `wandb.proto.wandb_internal_pb2.Record`."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import wandb
import yaml
from wandb.proto import wandb_internal_pb2

from client._errors import SvdqError
from client.wandb_export import (
    ExportError,
    export_from_api,
    export_sweep,
    metric_values,
    run_name,
    same_origin,
)
from ops.harness.images import sample_png
from ops.harness.stack import Stack
from tests.test_cli import svdq

QUICK = {"num_inference_steps": 2, "num_frames": 4, "seed": 42, "fps": 6}
BUCKETS = [120, 240]
COLORS = [(30, 160, 90), (160, 40, 200)]
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
             "WANDB_ERROR_REPORTING": "false", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
             "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_MACHINE_INFO": "true"}
# WANDB_SERVICE is set by wandb itself: dropped so it is cleared again after each test
WANDB_UNSET = ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_SERVICE")


def wandb_dirs(root: Path) -> dict[str, str]:
    """Everything wandb writes under `root`: the runs (WANDB_DIR), the staged artifact files a run table's videos
    wait in until a sync (WANDB_DATA_DIR), its cache and its settings."""
    return {"WANDB_DIR": str(root), "WANDB_DATA_DIR": str(root / "data"), "WANDB_CACHE_DIR": str(root / "cache"),
            "WANDB_CONFIG_DIR": str(root / "config")}


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """wandb offline, writing under tmp_path. wandb reads its settings once per process (at its first init),
    so its service is torn down afterwards for the next test to start afresh."""
    for name, value in {**WANDB_ENV, **wandb_dirs(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for name in WANDB_UNSET:
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    wandb.teardown()


@dataclass
class Study:
    sweep: dict[str, Any]
    jobs: list[dict[str, Any]]

    def job(self, bucket: int, position: int) -> dict[str, Any]:
        image = self.sweep["images"][position]
        (job,) = [j for j in self.jobs if j["image_id"] == image and j["params"]["motion_bucket_id"] == bucket]
        return job


@pytest.fixture(scope="module")
def study(sqlite_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Two images x two motion buckets on the tiny model, submitted and followed to the end with `svdq sweep`."""
    s, tmp = sqlite_stack, tmp_path_factory.mktemp("study")
    for i, color in enumerate(COLORS):
        (tmp / f"image_{i}.png").write_bytes(sample_png(color=color))
    spec = tmp / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "wandb_study", "model": "tiny",
                                    "images": [{"path": f"image_{i}.png"} for i in range(len(COLORS))],
                                    "params": QUICK, "axes": {"motion_bucket_id": BUCKETS}}))
    r = svdq(s, "sweep", str(spec), "--wait", "--json", "-q", timeout=400)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 4, sweep
    assert [g["status"] for g in sweep["grids"]] == ["done", "done"], sweep["grids"]
    # the views again through the test client: their URLs are the in-process API's (http://testserver/...)
    view = s.client.get(f"/v1/sweeps/{sweep['id']}", headers=s.headers).json()
    page = s.client.get(f"/v1/sweeps/{sweep['id']}/jobs", headers=s.headers).json()
    assert page["next_cursor"] is None and len(page["items"]) == 4
    return Study(view, list(page["items"]))


# reading an offline run back ----------------------------------------------------------------------------------


@dataclass
class OfflineRun:
    """What an offline run recorded in its transaction log (run-<id>.wandb, what `wandb sync` uploads)."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per step, with its _step
    metrics: list[Any] = field(default_factory=list)  # define_metric's MetricRecords
    artifacts: list[Any] = field(default_factory=list)  # ArtifactRecords (a logged table is a run_table one)

    def file(self, value: dict[str, Any]) -> Path:
        """The run's copy of a logged media file (a history or summary value with a `path`)."""
        return self.path / "files" / str(value["path"])

    def table(self, key: str) -> Any:
        """The table logged under `key`, rebuilt by wandb.Table.from_json from the run_table artifact's staged
        files (what a sync would upload), its videos wandb.Video objects again."""
        (artifact,) = [a for a in self.artifacts if a.type == "run_table" and a.name == f"run-{self.id}-{key}"]
        staged = {e.path: Path(e.local_path) for e in artifact.manifest.contents}
        logged = json.loads(staged[f"{key}.table.json"].read_text())
        return wandb.Table.from_json(logged, StagedArtifact(staged))  # type: ignore[arg-type]


class StagedEntry:
    def __init__(self, name: str, staged: Path, root: Path) -> None:
        self.name, self.staged, self.root = name, staged, root

    def download(self, root: str | None = None) -> str:
        target = self.root / self.name  # staged files have no extension; a download is named as in the artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.staged, target)
        return str(target)


class StagedArtifact:
    """The part of wandb.Artifact that Table.from_json reads (`get_entry(name).download()`), over a logged but
    unsynced artifact's staged files."""

    def __init__(self, staged: dict[str, Path]) -> None:
        self.staged, self.root = staged, Path(tempfile.mkdtemp(prefix="svdq-staged-"))

    def get_entry(self, name: str) -> StagedEntry:
        return StagedEntry(name, self.staged[name], self.root)


def _fold(target: dict[str, Any], items: Any) -> None:
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)


def records(log: Path) -> Iterator[Any]:
    """Each wandb_internal_pb2.Record in a transaction log: after the 7-byte header, 32 KiB blocks of chunks
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    data, block = log.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            yield record


def read_offline_run(run: Path) -> OfflineRun:
    (log,) = run.glob("run-*.wandb")
    out = OfflineRun(run)
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.id, out.name, out.group = record.run.run_id, record.run.display_name, record.run.run_group
            out.job_type = record.run.job_type
            _fold(out.config, record.run.config.update)
        elif kind == "config":
            _fold(out.config, record.config.update)
        elif kind == "summary":
            _fold(out.summary, record.summary.update)
        elif kind == "history":
            row: dict[str, Any] = {}
            _fold(row, record.history.item)
            out.history.append(row)
        elif kind == "metric":
            out.metrics.append(record.metric)
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
    return out


def offline_runs(root: Path, ids: list[str]) -> list[OfflineRun]:
    runs = []
    for run_id in ids:
        found = list((root / "wandb").glob(f"offline-run-*-{run_id}"))
        assert len(found) == 1, (run_id, sorted(p.name for p in (root / "wandb").iterdir()))
        runs.append(read_offline_run(found[0]))
    assert [r.id for r in runs] == ids
    return runs


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def user_keys(row: dict[str, Any]) -> set[str]:
    return {k for k in row if not k.startswith("_")}


# the study, exported through the command line ------------------------------------------------------------------


def test_a_study_exported_offline_has_a_run_per_configuration_with_its_videos_at_one_step_and_a_summary_run(
        sqlite_stack: Stack, study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, sweep = sqlite_stack, study.sweep
    for name in WANDB_UNSET:
        monkeypatch.delenv(name, raising=False)
    r = svdq(s, "sweep", "export-wandb", sweep["id"], "--project", "svdq-test",
             env={**WANDB_ENV, **wandb_dirs(tmp_path)}, timeout=300)
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == len(set(ids)) == 3  # the configurations' runs, then the summary run
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 3  # nothing else
    *cells, summary = offline_runs(tmp_path, ids)
    images = sweep["images"]
    labels = {"image_0": images[0], "image_1": images[1]}
    metrics_measured = any(metric_values(j)[0] for j in study.jobs)

    for run, bucket in zip(cells, BUCKETS, strict=True):
        assert (run.name, run.group, run.job_type) == (f"motion_bucket_id={bucket}", "wandb_study", "cell")
        # the config: every resolved parameter of the configuration's jobs, the model, the sweep and its axes
        for position in (0, 1):
            for param, value in study.job(bucket, position)["params"].items():
                assert run.config[param] == value, param
        assert run.config["motion_bucket_id"] == bucket and run.config["num_frames"] == 4
        assert run.config["seed"] == 42 and run.config["fps"] == 6
        assert (run.config["model"], run.config["sweep_id"]) == ("tiny", sweep["id"])
        assert run.config["swept_axes"] == ["motion_bucket_id"] and run.config["images"] == labels
        # one step holding both images' videos, each the job's own mp4
        (step,) = run.history
        assert step["_step"] == 0
        videos = {k for k in user_keys(step) if k.startswith("video/")}
        assert videos == {"video/image_0", "video/image_1"}
        for position in (0, 1):
            logged = step[f"video/image_{position}"]
            assert logged["_type"] == "video-file"
            assert sha256(run.file(logged)) == study.job(bucket, position)["result"]["sha256"]
            assert run.summary[f"video/image_{position}"]["path"] == logged["path"]
        assert run.summary["skipped"] == 0 and run.summary["skipped_cells"] == []
        # what the worker measured, per image and as their mean, in that same step
        measured = [metric_values(study.job(bucket, p))[0] for p in (0, 1)]
        names = set(measured[0]) | set(measured[1])
        assert {k for k in user_keys(step) if k.startswith("metrics/")} == (
            {f"metrics/{n}" for n in names} | {f"metrics/{n}/image_{p}" for n in names for p in (0, 1)})
        for n in names:
            assert step[f"metrics/{n}/image_0"] == measured[0][n]
            assert step[f"metrics/{n}"] == pytest.approx((measured[0][n] + measured[1][n]) / 2)
            assert run.summary[f"metrics/{n}"] == step[f"metrics/{n}"]  # what the group's scatter panels plot

    assert (summary.name, summary.group, summary.job_type) == ("wandb_study grids", "wandb_study", "grid")
    assert summary.config["axes"] == {"motion_bucket_id": BUCKETS} and summary.config["images"] == labels
    assert "motion_bucket_id" not in summary.config  # only the configuration runs are plotted against it
    first = summary.history[0]
    assert first["_step"] == 0
    # each image's comparison grid, as the API serves it
    assert {k for k in user_keys(first) if k.startswith("grid/")} == {"grid/image_0", "grid/image_1"}
    for position, grid in enumerate(sweep["grids"]):
        assert grid["image_id"] == images[position]
        logged = first[f"grid/image_{position}"]
        assert logged["_type"] == "video-file"
        served = s.client.get(grid["video_url"], headers=s.headers)
        assert served.status_code == 200
        assert sha256(summary.file(logged)) == hashlib.sha256(served.content).hexdigest()
    # the table: one row per cell, (image, the swept value, its video, each metric)
    assert first["cells"]["_type"] == "table-file" and first["cells"]["nrows"] == 4
    table = summary.table("cells")
    metric_columns = table.columns[3:]
    assert table.columns[:3] == ["image", "motion_bucket_id", "video"]
    assert bool(metric_columns) == metrics_measured
    assert set(metric_columns) == {n for j in study.jobs for n in metric_values(j)[0]}
    assert len(table.data) == 4
    seen = set()
    for label, bucket, video, *values in table.data:
        position = int(label.removeprefix("image_"))
        job = study.job(bucket, position)
        assert isinstance(video, wandb.Video) and sha256(str(video._path)) == job["result"]["sha256"]
        assert values == [metric_values(job)[0].get(n) for n in metric_columns]
        seen.add((label, bucket))
    assert seen == {(f"image_{p}", b) for p in (0, 1) for b in BUCKETS}
    assert summary.summary["grids_missing"] == []
    if metrics_measured:  # each metric's mean over the images against the swept value, W&B's x axis declared
        curve = [row for row in summary.history[1:] if "sweep/motion_bucket_id" in row]
        assert [row["sweep/motion_bucket_id"] for row in curve] == BUCKETS
        assert any(m.glob_name == "vs_motion_bucket_id/*" and m.step_metric == "sweep/motion_bucket_id"
                   for m in summary.metrics)


# the exporter itself, in this process ---------------------------------------------------------------------------


class StackFetcher:
    """The files through the test client (the API's own URLs), checked as the SDK checks them."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.urls = stack, list[str]()

    def _get(self, url: str) -> bytes:
        assert url.startswith("http://testserver/"), url  # the API's own URL: no network
        self.urls.append(url)
        r = self.stack.client.get(url, headers=self.stack.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        return bytes(r.content)

    def video(self, job: dict[str, Any], path: Path) -> None:
        data = self._get(job["result"]["video_url"])
        assert hashlib.sha256(data).hexdigest() == job["result"]["sha256"]
        path.write_bytes(data)

    def grid(self, url: str, path: Path) -> None:
        path.write_bytes(self._get(url))


def with_metrics(job: dict[str, Any], metrics: Any) -> dict[str, Any]:
    return {**job, "result": {**job["result"], "metrics": metrics}}


def test_metrics_of_either_shape_are_logged_per_image_and_as_their_mean_and_a_failed_cell_is_skipped(
        sqlite_stack: Stack, study: Study, offline_wandb: Path) -> None:
    measured_on = {"frames": 4, "width": 128, "height": 64}
    jobs = []
    for job in study.jobs:
        bucket, position = job["params"]["motion_bucket_id"], study.sweep["images"].index(job["image_id"])
        if (bucket, position) == (240, 1):  # as if this cell had failed
            jobs.append({**job, "status": "failed", "result": None,
                         "error": {"code": "render_failed", "message": "out of memory"}})
        elif position == 0:  # the API's shape: value and unit, beside what they were measured on
            jobs.append(with_metrics(job, {"motion": {"value": bucket / 100, "unit": "px/frame"},
                                           "flicker": {"value": 0.5, "unit": "levels"}, "measured_on": measured_on}))
        else:  # a plain number per name
            jobs.append(with_metrics(job, {"motion": bucket / 50, "flicker": 1.5}))
    fetch = StackFetcher(sqlite_stack)
    ids = export_sweep(study.sweep, jobs, fetch, project="svdq-test", group="retry")
    assert len(fetch.urls) == 3 + 2  # the three succeeded cells, the two grids
    low, high, summary = offline_runs(offline_wandb, ids)
    assert {r.group for r in (low, high, summary)} == {"retry"}

    (step,) = low.history
    assert step["metrics/motion/image_0"] == 1.2 and step["metrics/motion/image_1"] == 2.4
    assert step["metrics/motion"] == pytest.approx(1.8) and step["metrics/flicker"] == pytest.approx(1.0)
    assert not any("measured_on" in k for k in step)
    assert low.config["metric_units"] == {"motion": "px/frame", "flicker": "levels"}
    assert low.config["video_fps"] == {"image_0": 6, "image_1": 6}

    (step,) = high.history  # only image_0 succeeded: its video and metrics, the mean over it alone
    assert {k for k in user_keys(step) if k.startswith("video/")} == {"video/image_0"}
    assert step["metrics/motion"] == step["metrics/motion/image_0"] == 2.4
    assert "metrics/motion/image_1" not in step
    assert high.summary["skipped"] == 1
    (skipped,) = high.summary["skipped_cells"]
    assert (skipped["image"], skipped["status"], skipped["error"]) == ("image_1", "failed", "out of memory")

    table = summary.table("cells")
    assert table.columns == ["image", "motion_bucket_id", "video", "motion", "flicker"]
    rows = {(row[0], row[1]): row for row in table.data}
    assert rows[("image_1", 240)][2:] == [None, None, None]  # the failed cell: a row without video or metrics
    assert rows[("image_0", 120)][3:] == [1.2, 0.5] and isinstance(rows[("image_0", 120)][2], wandb.Video)
    # the marginal means against the swept value, with the swept value as their x axis
    curve = summary.history[1:]
    assert [(r["sweep/motion_bucket_id"], r["vs_motion_bucket_id/motion"]) for r in curve] == [
        (120, pytest.approx(1.8)), (240, 2.4)]
    assert curve[0]["vs_motion_bucket_id/motion/image_1"] == 2.4
    (defined,) = [m for m in summary.metrics if m.glob_name == "vs_motion_bucket_id/*"]
    assert defined.step_metric == "sweep/motion_bucket_id" and defined.summary.none
    assert not any(k.startswith("vs_") for k in summary.summary)


def test_export_from_api_pages_through_the_cells_checks_each_video_and_sends_the_key_only_to_the_api(
        sqlite_stack: Stack, study: Study, offline_wandb: Path) -> None:
    s, sweep = sqlite_stack, study.sweep
    requests: list[tuple[str, bool]] = []
    corrupt: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "testserver", request.url  # nothing leaves the process
        requests.append((request.url.path, "authorization" in request.headers))
        r = s.client.request(request.method, str(request.url), headers=dict(request.headers))
        headers = {k: v for k, v in r.headers.items() if k.lower() not in ("content-encoding", "content-length")}
        content = r.content
        if request.url.path in corrupt:
            content = content[:-1] + bytes([content[-1] ^ 1])
        return httpx.Response(r.status_code, headers=headers, content=content)

    def export(out: str) -> list[str]:
        return export_from_api("http://testserver", "svdq_test_key_0123456789abcdef", sweep["id"],
                               project="svdq-test", out_dir=offline_wandb / out, page_size=1,
                               transport=httpx.MockTransport(handler))

    ids = export("out")
    assert len(ids) == 3
    paths = [p for p, _ in requests]
    assert paths.count(f"/v1/sweeps/{sweep['id']}/jobs") == 4  # one cell per page: the cursor was followed
    assert sum(p.startswith("/v1/jobs/") and p.endswith("/video") for p in paths) == 4
    assert sum("/grids/" in p and p.endswith("/video") for p in paths) == 2
    assert all(auth for _, auth in requests)
    for run, bucket in zip(offline_runs(offline_wandb / "out", ids)[:2], BUCKETS, strict=True):
        assert run.config["motion_bucket_id"] == bucket
        assert sha256(run.file(run.history[0]["video/image_1"])) == study.job(bucket, 1)["result"]["sha256"]
    # a video that does not match its job's sha256 stops the export before any run is made
    corrupt.add(httpx.URL(study.job(240, 1)["result"]["video_url"]).path)
    with pytest.raises(SvdqError) as refused:
        export("corrupt")
    assert refused.value.code == "download_corrupt"
    assert not list((offline_wandb / "corrupt").glob("wandb/offline-run-*"))
    # presigned storage links get no bearer key
    assert same_origin("http://testserver/v1/jobs/j/video", "http://testserver:80")
    assert not same_origin("https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Signature=x", "https://api.example.com")
    assert not same_origin("http://api.example.com:9000/v1/jobs/j/video", "http://api.example.com")


@pytest.mark.parametrize("sweep", [{"status": "running", "grids": []},
                                   {"status": "succeeded", "grids": [{"image_id": "img_a", "status": "done"},
                                                                     {"image_id": "img_b", "status": "composing"}]}])
def test_a_sweep_that_has_not_ended_or_whose_grids_are_composing_is_refused(sweep: dict[str, Any]) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"id": "swp_x", "axes": {"fps": [6]}, "images": ["img_a"], **sweep})

    with pytest.raises(ExportError) as refused:
        export_from_api("http://api.test", "key", "swp_x", project="p", transport=httpx.MockTransport(handler))
    assert refused.value.code == "sweep_not_ended" and asked == ["/v1/sweeps/swp_x"]
    assert ("img_b" in refused.value.message) == (sweep["status"] == "succeeded")


def test_run_names_and_metric_shapes() -> None:
    assert run_name({"motion_bucket_id": 240}) == "motion_bucket_id=240"
    assert run_name({"motion_bucket_id": 240, "noise_aug_strength": 0.1}) == (
        "motion_bucket_id=240, noise_aug_strength=0.1")
    job = {"result": {"metrics": {"motion": {"value": 2, "unit": "px/frame"}, "flicker": 0.25, "bad": "x",
                                  "nan": float("nan"), "flag": True, "measured_on": {"frames": 4}}}}
    assert metric_values(job) == ({"motion": 2.0, "flicker": 0.25}, {"motion": "px/frame"})
    assert metric_values({"result": {"metrics": None}}) == ({}, {})
    assert metric_values({"result": None}) == metric_values(None) == ({}, {})


def test_without_wandb_the_export_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'svdq\[wandb\]'") as missing:
        export_from_api("http://api.test", "key", "swp_x", project="p",
                        transport=httpx.MockTransport(lambda r: pytest.fail("asked the API")))
    assert missing.value.code == "wandb_missing" and isinstance(missing.value, RuntimeError)

