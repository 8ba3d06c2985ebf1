"""`Client.run` and `svdq run`: one call from an image (a path, an http(s) URL, bytes, a file object or a PIL
image) to the finished job and its video; `-p name=value` for any render parameter; no client names a model
the user did not (the server's default applies); help with each model's defaults and ranges."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest
from PIL import Image as PILImage

from client.cli import main
from client.procs import free_port
from client.sdk import AsyncClient, Client, JobFailed, SvdqError
from ops.harness import ROOT
from ops.harness.stack import API_KEY, Stack
from tests.test_cli import svdq
from tests.test_image_url import Server

SAMPLE = ROOT / "ops" / "samples" / "rocket.jpg"
FAST = {"num_inference_steps": 1, "num_frames": 2, "reuse": False}


def frames(path: Path) -> int:
    gen = imageio_ffmpeg.read_frames(str(path))
    next(gen)
    return sum(1 for _ in gen)


@pytest.fixture(scope="module")
def image_server() -> Server:
    server = Server("127.0.0.1")  # the test stacks allow private addresses (SVDQ_ALLOW_PRIVATE_URLS)
    server.routes["/rocket.jpg"] = (200, {"Content-Type": "image/jpeg"}, SAMPLE.read_bytes())
    return server


def _client(stack: Stack) -> Client:
    return Client(stack.serve(), API_KEY)


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "file", "pil", "url"])
def test_run_takes_every_kind_of_image_and_answers_the_finished_job(sqlite_stack: Stack, image_server: Server,
                                                                   tmp_path: Path, kind: str) -> None:
    images: dict[str, Any] = {
        "path": SAMPLE, "str": str(SAMPLE), "bytes": SAMPLE.read_bytes(), "file": SAMPLE.open("rb"),
        "pil": PILImage.open(SAMPLE).convert("RGB"), "url": f"http://127.0.0.1:{image_server.port}/rocket.jpg"}
    out = tmp_path / f"{kind}.mp4"
    fetched = len(image_server.hosts)
    with _client(sqlite_stack) as c:
        job = c.run(images[kind], model="tiny", output_path=out, **FAST)
    assert job.status == "succeeded" and job.result is not None
    assert frames(out) == 2 and out.stat().st_size == job.result.bytes
    # a URL is sent as image_url: the server fetched it (once); every other kind is uploaded by the client
    assert len(image_server.hosts) - fetched == (1 if kind == "url" else 0)
    if kind == "file":
        images["file"].close()


def test_a_pil_image_is_sent_as_the_png_of_its_pixels(sqlite_stack: Stack) -> None:
    pil = PILImage.new("RGB", (64, 32), (12, 34, 56))
    with _client(sqlite_stack) as c:
        uploaded = c.upload_image(pil)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    import hashlib

    assert (uploaded.width, uploaded.height, uploaded.content_type) == (64, 32, "image/png")
    assert uploaded.sha256 == hashlib.sha256(buf.getvalue()).hexdigest()


def test_async_run_answers_the_same(sqlite_stack: Stack, tmp_path: Path) -> None:
    async def go() -> Any:
        async with AsyncClient(sqlite_stack.serve(), API_KEY) as c:
            return await c.run(SAMPLE.read_bytes(), model="tiny", output_path=tmp_path / "a.mp4", **FAST)

    job = asyncio.run(go())
    assert job.status == "succeeded" and frames(tmp_path / "a.mp4") == 2


def _scripted(job: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    image = {"id": "img_1", "width": 8, "height": 8, "content_type": "image/png", "bytes": 3, "sha256": "x"}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/images":
            return httpx.Response(201, json=image)
        if request.url.path == "/v1/jobs":
            return httpx.Response(202, json={**job, "status": "queued", "error": None})
        return httpx.Response(200, text=f"data: {json.dumps(job)}\n\n", headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(("job", "code"), [
    ({"id": "job_f", "status": "failed", "model": "tiny", "error": {"code": "worker_lost", "message": "gone"}},
     "worker_lost"),
    ({"id": "job_c", "status": "canceled", "model": "tiny", "error": None}, "job_canceled"),
])
def test_run_raises_job_failed_carrying_the_job(job: dict[str, Any], code: str) -> None:
    with Client("http://svdq.test", "k", retries=0, transport=_scripted(job, [])) as c:
        with pytest.raises(JobFailed) as exc:
            c.run(b"\x89PNG...")
    assert exc.value.code == code and exc.value.job.id == job["id"] and isinstance(exc.value, SvdqError)


def test_no_client_names_a_model_the_user_did_not() -> None:
    seen: list[httpx.Request] = []
    done = {"id": "job_s", "status": "succeeded", "model": "tiny", "error": None}
    with Client("http://svdq.test", "k", retries=0, transport=_scripted(done, seen)) as c:
        c.submit(b"png", seed=1)
        c.submit("https://example.com/a.png")
    bodies = [json.loads(r.content) for r in seen if r.url.path == "/v1/jobs"]
    assert [("model" in b) for b in bodies] == [False, False]
    assert bodies[1]["image_url"] == "https://example.com/a.png" and "image_id" not in bodies[1]
    assert bodies[0]["image_id"] == "img_1" and bodies[0]["params"] == {"seed": 1}


def test_previews_can_be_turned_off_from_the_sdk_and_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from client import commands

    seen: list[httpx.Request] = []
    done = {"id": "job_s", "status": "succeeded", "model": "tiny", "error": None}
    with Client("http://svdq.test", "k", retries=0, transport=_scripted(done, seen)) as c:
        c.submit(b"png", preview=False)
        c.submit(b"png")
    monkeypatch.setattr(commands, "_client", lambda: Client("http://svdq.test", "k", retries=0,
                                                            transport=_scripted(done, seen)))
    assert main(["submit", str(SAMPLE), "--no-preview"]) == 0
    assert main(["submit", str(SAMPLE)]) == 0
    bodies = [json.loads(r.content) for r in seen if r.url.path == "/v1/jobs"]
    assert [b.get("preview") for b in bodies] == [False, None, False, None]  # None: not sent, the server's true
    assert all("preview" not in b["params"] for b in bodies)


def test_an_image_of_no_known_kind_is_one_clear_error() -> None:
    with Client("http://svdq.test", "k", retries=0, transport=_scripted({}, [])) as c, \
            pytest.raises(SvdqError) as exc:
        c.submit(12345)
    assert exc.value.code == "no_image" and "not int" in exc.value.message


# the command line -------------------------------------------------------------------------------------

def test_svdq_run_renders_with_generic_params_and_saves_the_video(sqlite_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "run.mp4"
    r = svdq(sqlite_stack, "run", str(SAMPLE), "--model", "tiny", "-p", "motion_bucket_id=40", "-p", "num_frames=3",
             "--num-inference-steps", "2", "--no-reuse", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["params"]["motion_bucket_id"] == 40 and job["params"]["num_frames"] == 3
    assert frames(out) == 3 and f"wrote {out} ({out.stat().st_size} bytes)" in r.stderr


def test_svdq_run_by_url_with_the_default_output_name(sqlite_stack: Stack, image_server: Server,
                                                      tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SVDQ_API_URL": sqlite_stack.serve(), "SVDQ_API_KEY": API_KEY}
    r = subprocess.run([sys.executable, "-m", "client.cli", "run", "--image-url",
                        f"http://127.0.0.1:{image_server.port}/rocket.jpg", "--model", "tiny", "-p", "num_frames=2",
                        "--num-inference-steps", "1", "--no-reuse", "--json"], cwd=tmp_path, env={
                            **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert frames(tmp_path / f"{job['id']}.mp4") == 2


def test_an_unknown_param_is_the_servers_422_and_a_malformed_one_exit_2(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "run", str(SAMPLE), "-p", "motion_bukket_id=40")
    assert r.returncode == 4 and "error: invalid_params: " in r.stderr and "motion_bukket_id" in r.stderr
    r = svdq(sqlite_stack, "run", str(SAMPLE), "-p", "motion_bucket_id")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: bad_argument: -p takes NAME=VALUE, e.g. -p motion_bucket_id=180; "
                                             "got 'motion_bucket_id'."]
    r = svdq(sqlite_stack, "run")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no_image: ")


def test_help_shows_each_models_defaults_and_ranges_from_the_api(sqlite_stack: Stack) -> None:
    with _client(sqlite_stack) as c:
        tiny = next(m for m in c.models() if m.name == "tiny")
    r = svdq(sqlite_stack, "run", "--help", env={"COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    mb = tiny.ranges["motion_bucket_id"]
    assert f"tiny: {tiny.defaults['motion_bucket_id']} ({mb['min']:g}..{mb['max']:g})" in r.stdout
    w = tiny.ranges["width"]
    assert f"tiny: {tiny.defaults['width']} ({w['min']:g}..{w['max']:g}, multiple of {w['multiple_of']:g})" in r.stdout
    r = svdq(sqlite_stack, "submit", "--help", env={"SVDQ_API_URL": f"http://127.0.0.1:{free_port()}",
                                                     "COLUMNS": "400"})
    assert r.returncode == 0 and "the API was not reachable" in r.stdout and "how much motion" in r.stdout


def test_sweep_has_real_subcommands_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("submit", "status", "wait", "cancel", "export-wandb"):
        assert name in out
    with pytest.raises(SystemExit):
        main(["sweep", "export-wandb", "--help"])
    assert "--project" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "status"])  # no id: argparse's usage error
    assert exit_.value.code == 2


def test_the_short_sweep_form_is_submit() -> None:
    from client.commands import sweep_argv

    assert sweep_argv(["sweep", "spec.yaml", "--wait"]) == ["sweep", "submit", "spec.yaml", "--wait"]
    assert sweep_argv(["sweep", "status", "sw_1"]) == ["sweep", "status", "sw_1"]
    assert sweep_argv(["submit", "sweep.png"]) == ["submit", "sweep.png"]


def test_the_server_names_its_default_model_and_renders_a_job_that_names_none(tmp_path: Path,
                                                                             redis_url: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.migrate import upgrade
    from models.settings import Settings

    db = f"sqlite:///{tmp_path}/d.db"
    upgrade(db)
    settings = Settings(_env_file=None, database_url=db, storage_url=f"file://{tmp_path}/r", redis_url=redis_url,
                        bootstrap_api_key=API_KEY, default_model="svd")
    h = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(create_app(settings)) as c:
        marked = {m["name"]: m["default"] for m in c.get("/v1/models", headers=h).json()}
        assert [name for name, default in marked.items() if default] == ["svd"]
        image = c.post("/v1/images", headers=h, files={"image": ("a.jpg", SAMPLE.read_bytes())}).json()
        job = c.post("/v1/jobs", headers=h, json={"image_id": image["id"], "reuse": False}).json()
        assert job["model"] == "svd" and job["params"]["num_frames"] == 14  # svd's own defaults
        sweep = c.post("/v1/sweeps", headers=h, json={"images": [{"image_id": image["id"]}],
                                                      "axes": {"motion_bucket_id": [60, 120]}}).json()
        assert sweep["model"] == "svd", sweep
        c.post(f"/v1/jobs/{job['id']}/cancel", headers=h)
        c.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=h)
    with pytest.raises(ValueError, match="SVDQ_DEFAULT_MODEL names no model: choose one of"):
        Settings(_env_file=None, default_model="svd-xxl")


@pytest.mark.parametrize(("spec", "code"), [
    (None, "spec_unreadable"), ("images: [\n", "bad_spec"), ("- just\n- a list\n", "bad_spec"),
    ("images:\n  - name: no source\n", "bad_spec"), ("images:\n  - path: missing.png\n", "image_unreadable"),
    ("images:\n  - url: http://127.0.0.1:9/a.png\n", "image_url_unreachable"),
])
def test_a_sweep_spec_it_cannot_use_is_one_error_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 spec: str | None, code: str) -> None:
    from client import commands

    path = tmp_path / "study.yaml"
    if spec is not None:
        path.write_text(spec)
    # nothing reaches an API: an unreachable one behind the client proves the spec was refused first
    monkeypatch.setattr(commands, "_client", lambda: Client(f"http://127.0.0.1:{free_port()}", "k", retries=0))
    assert main(["sweep", "submit", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {code}: ") and line.endswith("."), line


def test_a_video_it_cannot_write_is_one_error_line_and_exit_2(sqlite_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # missing folders are made; a file in the way is not
    target = tmp_path / "a-file" / "v.mp4"
    r = svdq(sqlite_stack, "run", str(SAMPLE), "--model", "tiny", "-p", "num_frames=2", "--num-inference-steps", "1",
             "--no-reuse", "-o", str(target))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: local_file: cannot write ") and (
        "Not a directory" in lines[0] or "File exists" in lines[0]), r.stderr
    assert "Traceback" not in r.stderr
