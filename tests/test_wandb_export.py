"""The Weights & Biases export of a finished sweep, against a real worker, with wandb in offline mode: one run per
swept value, each holding its logged videos and its swept value in the config. Nothing goes over the network."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest
import wandb
from wandb.proto import wandb_internal_pb2

from client.wandb_export import export_from_api, export_sweep, run_name, same_origin
from ops.harness.images import sample_png
from ops.harness.stack import Stack

QUICK = {"num_inference_steps": 2, "num_frames": 4, "seed": 42}
BUCKETS = [120, 240]


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """wandb offline, writing under tmp_path. wandb reads its settings once per process (at its first init),
    so its service is torn down afterwards for the next test to start afresh."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                        "WANDB_CONSOLE": "off", "WANDB_ERROR_REPORTING": "false", "WANDB_DISABLE_GIT": "true",
                        "WANDB_DISABLE_CODE": "true", "WANDB_X_DISABLE_STATS": "true",
                        "WANDB_X_DISABLE_MACHINE_INFO": "true"}.items():
        monkeypatch.setenv(name, value)
    # WANDB_SERVICE is set by wandb itself: dropped so it is cleared again after the test
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    wandb.teardown()


@pytest.fixture(scope="module")
def finished_sweep(sqlite_stack: Stack) -> dict[str, Any]:
    """1 image x 2 motion buckets, rendered to the end."""
    s = sqlite_stack
    image = s.upload(sample_png(color=(30, 160, 90)))["id"]
    r = s.client.post("/v1/sweeps", headers=s.headers, json={
        "name": "exp_1", "model": "tiny", "images": [{"image_id": image}], "params": QUICK,
        "axes": {"motion_bucket_id": BUCKETS}})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 240
    while True:
        view = s.client.get(f"/v1/sweeps/{r.json()['id']}", headers=s.headers).json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    assert view["status"] == "succeeded", view
    return dict(view)


def sweep_jobs(s: Stack, sweep_id: str) -> list[dict[str, Any]]:
    page = s.client.get(f"/v1/sweeps/{sweep_id}/jobs", headers=s.headers).json()
    assert page["next_cursor"] is None
    return list(page["items"])


def run_dir(root: Path, run_id: str) -> Path:
    found = list((root / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(found) == 1, (run_id, sorted(p.name for p in (root / "wandb").iterdir()))
    return found[0]


def logged_videos(run: Path) -> list[Path]:
    return sorted((run / "files" / "media" / "videos").glob("image_0_*.mp4"))


def frame_count(path: Path) -> int:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (128, 64)
    return sum(1 for _ in reader)


@dataclass
class OfflineRun:
    """What an offline run recorded in its transaction log (run-<id>.wandb, what `wandb sync` uploads)."""

    name: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _fold(target: dict[str, Any], items: Any) -> None:
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)


def read_offline_run(run: Path) -> OfflineRun:
    """Reads the LevelDB-style log wandb writes: a 7-byte ':W&B' header, then 32 KiB blocks of chunks
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last), each record a protobuf Record."""
    (log,) = run.glob("run-*.wandb")
    data, block = log.read_bytes(), 32768
    assert data[:4] == b":W&B"
    out, pos, pending = OfflineRun(), 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        kind_name = record.WhichOneof("record_type")
        if kind_name == "run":
            out.name, out.group = record.run.display_name, record.run.run_group
            _fold(out.config, record.run.config.update)
        elif kind_name == "config":
            _fold(out.config, record.config.update)
        elif kind_name == "summary":
            _fold(out.summary, record.summary.update)
    return out


def test_each_motion_bucket_becomes_an_offline_run_holding_its_video(sqlite_stack: Stack, finished_sweep,  # type: ignore[no-untyped-def]
                                                                    offline_wandb: Path) -> None:
    s, sweep = sqlite_stack, finished_sweep
    fetched: list[str] = []

    def fetch_video(url: str) -> bytes:
        assert url.startswith("http://testserver/"), url  # the API's own URL: no network
        fetched.append(url)
        r = s.client.get(url, headers=s.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        return r.content

    ids = export_sweep(sweep, sweep_jobs(s, sweep["id"]), fetch_video, project="svdq-test")
    assert len(ids) == len(set(ids)) == 2 and len(fetched) == 2
    runs = sorted((offline_wandb / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one per bucket, nothing else
    for run_id, bucket in zip(ids, BUCKETS, strict=True):
        run = run_dir(offline_wandb, run_id)
        logged = read_offline_run(run)
        assert (logged.name, logged.group) == (f"bucket_{bucket}", "exp_1")
        config = logged.config
        assert config["motion_bucket_id"] == bucket
        assert config["sweep_id"] == sweep["id"] and config["model"] == "tiny"
        assert config["num_frames"] == 4 and config["seed"] == 42
        videos = logged_videos(run)
        assert len(videos) == 1 and frame_count(videos[0]) == 4
        assert logged.summary["skipped"] == 0 and logged.summary["skipped_cells"] == []
        assert logged.summary["image_0"]["_type"] == "video-file"
        assert logged.summary["image_0"]["path"] == videos[0].relative_to(run / "files").as_posix()
    assert [run_name({"motion_bucket_id": b}) for b in BUCKETS] == ["bucket_120", "bucket_240"]


def test_a_failed_cell_is_skipped_and_counted(sqlite_stack: Stack, finished_sweep, offline_wandb: Path) -> None:  # type: ignore[no-untyped-def]
    s, sweep = sqlite_stack, finished_sweep
    jobs = sweep_jobs(s, sweep["id"])
    for job in jobs:  # as if the bucket-240 cell had failed
        if job["params"]["motion_bucket_id"] == 240:
            job.update(status="failed", result=None, error={"code": "render_failed", "message": "out of memory"})

    def fetch_video(url: str) -> bytes:
        return bytes(s.client.get(url, headers=s.headers).content)

    ok, failed = export_sweep(sweep, jobs, fetch_video, project="svdq-test", group="exp_1_retry")
    assert len(logged_videos(run_dir(offline_wandb, ok))) == 1
    assert read_offline_run(run_dir(offline_wandb, ok)).summary["skipped"] == 0
    assert logged_videos(run_dir(offline_wandb, failed)) == []
    logged = read_offline_run(run_dir(offline_wandb, failed))
    assert (logged.name, logged.group) == ("bucket_240", "exp_1_retry")
    summary = logged.summary
    assert summary["skipped"] == 1 and "image_0" not in summary
    assert summary["skipped_cells"][0]["status"] == "failed"
    assert summary["skipped_cells"][0]["error"] == "out of memory"


def test_export_from_api_pages_through_the_cells_and_sends_the_key_only_to_the_api(  # type: ignore[no-untyped-def]
        sqlite_stack: Stack, finished_sweep, offline_wandb: Path) -> None:
    s, sweep = sqlite_stack, finished_sweep
    requests: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "testserver", request.url  # nothing leaves the process
        requests.append((request.url.path, "authorization" in request.headers))
        r = s.client.request(request.method, str(request.url), headers=dict(request.headers))
        headers = {k: v for k, v in r.headers.items() if k.lower() not in ("content-encoding", "content-length")}
        return httpx.Response(r.status_code, headers=headers, content=r.content)

    ids = export_from_api("http://testserver", "svdq_test_key_0123456789abcdef", sweep["id"], project="svdq-test",
                          out_dir=offline_wandb / "out", page_size=1, transport=httpx.MockTransport(handler))
    assert len(ids) == 2
    paths = [p for p, _ in requests]
    assert paths.count(f"/v1/sweeps/{sweep['id']}/jobs") == 2  # one cell per page: the cursor was followed
    assert sum(p.endswith("/video") for p in paths) == 2
    assert all(auth for _, auth in requests)
    for run_id, bucket in zip(ids, BUCKETS, strict=True):
        run = run_dir(offline_wandb / "out", run_id)
        assert read_offline_run(run).config["motion_bucket_id"] == bucket
        assert frame_count(logged_videos(run)[0]) == 4
    # presigned storage links get no bearer key
    assert same_origin("http://testserver/v1/jobs/j/video", "http://testserver:80")
    assert not same_origin("https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Signature=x", "https://api.example.com")
    assert not same_origin("http://api.example.com:9000/v1/jobs/j/video", "http://api.example.com")


def test_without_wandb_the_export_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'svdq\[wandb\]'"):
        export_sweep({"id": "swp_x", "axes": {"fps": [6]}, "images": []}, [], bytes, project="p")
