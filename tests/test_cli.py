"""The `svdq` command against a real stack over real HTTP; exit codes against a scripted one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import imageio_ffmpeg
import pytest

from client import commands
from client.cli import build_parser, main
from client.procs import free_port
from client.sdk import Client
from ops.harness import ROOT
from ops.harness.stack import API_KEY, Stack

SAMPLE = ROOT / "ops" / "samples" / "rocket.jpg"


def svdq(stack: Stack, *args: str, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SVDQ_API_URL": stack.serve(), "SVDQ_API_KEY": API_KEY, **(env or {})}
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def frames_of(path: Path) -> tuple[int, tuple[int, int]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    return sum(1 for _ in gen), tuple(meta["size"])  # type: ignore[return-value]


def test_submit_wait_and_download_from_the_command_line(sqlite_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--num-inference-steps", "3", "--num-frames", "5",
             "--seed", "3", "--no-reuse", "--wait", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["params"]["seed"] == 3
    assert frames_of(out) == (5, (128, 64))
    assert f"wrote {out} ({out.stat().st_size} bytes)" in r.stderr.splitlines()
    # off a terminal, progress is one plain line per change on stderr, rising to the last step
    steps = [int(m) for m in re.findall(rf"^{job['id']} (\d+)/3 ", r.stderr, re.M)]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == 3, r.stderr
    r = svdq(sqlite_stack, "status", job["id"])
    assert r.returncode == 0 and job["id"] in r.stdout and "succeeded" in r.stdout
    r = svdq(sqlite_stack, "download", job["id"], "-o", str(tmp_path / "again.mp4"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["sha256"] == job["result"]["sha256"]
    assert (tmp_path / "again.mp4").read_bytes() == out.read_bytes()


def test_on_a_terminal_progress_is_a_live_bar(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--num-inference-steps", "4", "--num-frames", "3", "--no-reuse",
             "--wait", env={"FORCE_COLOR": "1", "TERM": "xterm", "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    assert "\x1b[" in r.stderr and "━" in r.stderr and "4/4" in r.stderr
    assert r.stdout.split()[1] == "succeeded"


def test_refused_input_exits_4_and_names_the_code_and_field(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--width", "1000")
    assert r.returncode == 4
    assert "error: invalid_params: " in r.stderr and "params.width" in r.stderr


def test_a_canceled_job_waits_to_exit_code_3(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "submit", str(SAMPLE), "--num-inference-steps", "50", "--no-reuse", "--json")
    job = json.loads(r.stdout)
    assert svdq(sqlite_stack, "cancel", job["id"]).returncode == 0
    r = svdq(sqlite_stack, "wait", job["id"], "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["status"] == "canceled"
    assert "error: canceled: " in r.stderr


def test_jobs_lists_as_one_json_array_filtered_by_status(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "jobs", "--status", "canceled", "--limit", "3", "--json")
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)
    assert 1 <= len(jobs) <= 3 and {j["status"] for j in jobs} == {"canceled"}


def scripted_client(answer: httpx.Response) -> Client:
    return Client("http://svdq.test", "k", retries=0, transport=httpx.MockTransport(lambda _: answer))


FAILED = {"id": "job_f", "status": "failed", "model": "tiny", "error": {"code": "worker_lost", "message": "gone"}}


@pytest.mark.parametrize("answer,code,printed", [
    (httpx.Response(200, text=f"data: {json.dumps(FAILED)}\n\n", headers={"content-type": "text/event-stream"}),
     1, "error: worker_lost: gone"),
    (httpx.Response(500, json={"error": {"code": "internal", "message": "a bug"}}), 5, "error: internal: a bug"),
])
def test_a_failed_job_and_a_broken_server_have_their_own_exit_codes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: httpx.Response, code: int,
        printed: str) -> None:
    monkeypatch.setattr(commands, "_client", lambda: scripted_client(answer))
    assert main(["wait", "job_f"]) == code
    assert printed in capsys.readouterr().err


def test_an_unreachable_api_exits_5(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(commands, "_client", lambda: Client(f"http://127.0.0.1:{free_port()}", "k", retries=0))
    assert main(["status", "job_x"]) == 5
    assert "error: unreachable: " in capsys.readouterr().err


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_an_image_file_it_cannot_read_is_one_error_line_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], what: str) -> None:
    # the request never leaves: an unreachable API behind the client proves nothing was sent
    monkeypatch.setattr(commands, "_client", lambda: Client(f"http://127.0.0.1:{free_port()}", "k", retries=0))
    path = tmp_path / "nope.png" if what == "missing" else tmp_path
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: image_unreadable: Cannot read the image {str(path)!r}: "
                                f"{'No such file or directory' if what == 'missing' else 'Is a directory'}; "
                                "give the path of a PNG, JPEG or WebP file, or an http(s) URL."]


def test_export_wandb_of_an_unknown_sweep_is_one_error_line_and_exit_4(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "sweep", "export-wandb", "sw_nope", "--project", "p", timeout=120)
    assert r.returncode == 4, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: api_error: GET ") and " 404: " in r.stderr


@pytest.mark.parametrize(("code", "status", "exit_code"), [("wandb_missing", 0, 2), ("sweep_not_ended", 0, 4),
                                                            ("api_error", 503, 5)])
def test_export_wandb_failures_are_one_error_line_with_their_exit_code(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: str, status: int,
        exit_code: int) -> None:
    from client import wandb_export

    def refuse(*_: object, **__: object) -> list[str]:
        raise wandb_export.ExportError(code, "why it cannot be exported", status)

    monkeypatch.setattr(wandb_export, "export_from_api", refuse)
    assert main(["sweep", "export-wandb", "sw_x", "--project", "p"]) == exit_code
    assert capsys.readouterr().err.splitlines() == [f"error: {code}: why it cannot be exported"]


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"svdq {version('svdq')}"


def test_the_sdk_ships_its_type_information() -> None:
    import tomllib
    from importlib.resources import files

    assert files("client").joinpath("py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["client"]


def test_the_help_lists_the_exit_codes() -> None:
    text = build_parser().format_help()
    assert "3  the job or sweep ended canceled" in text and "4  the API refused" in text


def test_the_reports_first_study_on_the_sample_images_runs_from_its_spec(sqlite_stack: Stack) -> None:
    r = svdq(sqlite_stack, "sweep", "ops/examples/exp1_samples.yaml", "--wait", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 10
    assert sweep["axes"] == {"motion_bucket_id": [120, 180, 240, 300, 360]}
    assert [g["status"] for g in sweep["grids"]] == ["done", "done"]
    assert "gallery " in r.stderr and sweep["gallery_url"] in r.stderr
