"""Weights the way diffusers users get them: `svdq models pull` (huggingface_hub's snapshot_download of the one
allow-list, at the pinned revision, under the cache's lock) against a stand-in hub on loopback serving a real
pipeline (the tiny model's fp16 variant, next to full-precision copies and original checkpoints it must leave),
the worker loading that snapshot (safetensors only), `svdq models list`, and the one-sentence failure of a worker
started offline without its weights."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from models import weights
from models.settings import Settings
from ops.harness import ROOT
from ops.harness.hub import StandInHub

REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"

# the file list of stabilityai/stable-video-diffusion-img2vid-xt on the hub (main)
SVD_XT_FILES = [
    ".gitattributes", "LICENSE.md", "README.md", "comparison.png", "output_tile.gif", "images/rocket.png",
    "images/output_rocket.gif", "model_index.json", "svd_xt.safetensors", "svd_xt_image_decoder.safetensors",
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json", "image_encoder/model.fp16.safetensors", "image_encoder/model.safetensors",
    "scheduler/scheduler_config.json",
    "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
]
LOADED = {
    "LICENSE.md", "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
    "image_encoder/config.json", "image_encoder/model.fp16.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
}


def test_the_allow_list_keeps_only_the_fp16_safetensors_and_the_configs_of_svd_xt() -> None:
    from huggingface_hub.utils import filter_repo_objects

    kept = set(filter_repo_objects(SVD_XT_FILES, allow_patterns=weights.allow_patterns()))
    assert kept == LOADED


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def svd_xt_repo(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An SVD-XT-shaped repository that loads: the tiny pipeline saved as the fp16 variant, its full-precision
    copy beside it (as the real repo has both), and the original checkpoints and card files."""
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from models.tiny import ensure_tiny

    tiny = ensure_tiny(tiny_cache)
    fp16 = tmp_path_factory.mktemp("tiny-fp16")
    StableVideoDiffusionPipeline.from_pretrained(str(tiny)).to(torch.float16).save_pretrained(
        str(fp16), variant="fp16", safe_serialization=True)
    files = {**files_of(tiny), **files_of(fp16)}
    for name in SVD_XT_FILES:
        files.setdefault(name, b"not for the worker: " + name.encode())
    assert set(files) == set(SVD_XT_FILES)
    return files


@pytest.fixture
def hub() -> Iterator[StandInHub]:
    with StandInHub() as h:
        yield h


def hub_env(hub: StandInHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVDQ_", "HF_"))}
    return {**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1", "SVDQ_CACHE_DIR": str(home / "svdq"), **extra}


def svdq(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(home: Path, commit: str) -> Path:
    return home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit


def test_pull_downloads_only_what_the_worker_loads_with_a_progress_bar(hub: StandInHub, svd_xt_repo: dict[str, bytes],
                                                                       tmp_path: Path) -> None:
    commit = hub.add(REPO, svd_xt_repo)
    out = svdq("models", "pull", "svd-xt", env=hub_env(hub, tmp_path))
    assert out.returncode == 0, out.stderr
    path = snapshot(tmp_path, commit)
    assert out.stdout.startswith(f"svd-xt: {REPO}@{commit} in {path} (10 files, ")
    assert set(files_of(path)) == LOADED
    assert {p.split(f"/resolve/{commit}/", 1)[1] for p in hub.got("GET", "/resolve/")} == LOADED
    assert "Fetching 10 files" in out.stderr  # huggingface_hub's tqdm bar


def test_the_pinned_revision_reaches_the_hub_the_worker_and_the_jobs_record(hub: StandInHub, tmp_path: Path,
                                                                          svd_xt_repo: dict[str, bytes],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = hub.add(REPO, svd_xt_repo, ref="v1.0")
    main = hub.add(REPO, {**svd_xt_repo, "model_index.json": b"{}"})  # main has moved on (and would not load)
    env = hub_env(hub, tmp_path, SVDQ_MODEL_SVD_XT_REVISION="v1.0")
    out = svdq("models", "pull", "svd-xt", env=env)
    assert out.returncode == 0, out.stderr
    assert hub.got("GET", "/revision/") == [f"/api/models/{REPO}/revision/v1.0"]
    assert f"@{pinned} in {snapshot(tmp_path, pinned)}" in out.stdout
    # --revision pulls another, and says the workers keep loading the pin
    other = svdq("models", "pull", "svd-xt", "--revision", "main", env=env)
    assert other.returncode == 0 and f"@{main} in" in other.stdout, other.stderr
    assert "workers load SVDQ_MODEL_SVD_XT_REVISION=v1.0" in other.stderr

    # the worker's load, offline, from that cache: the pinned snapshot, its commit and the pin in the record
    import huggingface_hub.constants
    import torch

    from worker.pipeline import PipelineHolder

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("SVDQ_MODEL_SVD_XT_REVISION", "v1.0")
    asked = len(hub.requests)
    holder = PipelineHolder.from_settings(Settings(device="cpu"), model="svd-xt", source=REPO)
    holder.load()
    assert len(hub.requests) == asked  # offline: the cache only
    assert holder.path == str(snapshot(tmp_path, pinned))
    record = holder.record()
    assert (record["source"], record["revision"], record["revision_pin"]) == (REPO, pinned, "v1.0")
    assert holder.dtype == "float32" and holder.pipe.unet.dtype == torch.float32  # the fp16 variant, cast up


def reader(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str], text: str, timeout: float) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} within {timeout} s; saw {seen}") from None
        seen.append(line)
        if text in line:
            return line


def test_two_pulls_at_once_download_each_file_once(hub: StandInHub, svd_xt_repo: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    """The second pull waits on the cache's lock while the first downloads, asks the hub nothing meanwhile, and then
    finds every file in the cache."""
    commit = hub.add(REPO, svd_xt_repo)
    gate = hub.gate(UNET_FP16)
    env = hub_env(hub, tmp_path)
    cmd = [sys.executable, "-m", "client.cli", "models", "pull", "svd-xt"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second: subprocess.Popen[str] | None = None
    try:
        assert gate.reached.wait(60), "the first pull never asked for the UNet"
        second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert second.stderr is not None
        line = wait_for_line(reader(second.stderr), "waiting for another process downloading", 60)
        assert REPO in line
        assert len(hub.got("GET", "/revision/")) == 1  # the second has not reached the hub
        gate.opened.set()
        out1, err1 = first.communicate(timeout=120)
        out2, _ = second.communicate(timeout=120)
    finally:
        gate.opened.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0 and second.returncode == 0, err1
    assert out1.split(" (")[0] == out2.split(" (")[0] == f"svd-xt: {REPO}@{commit} in {snapshot(tmp_path, commit)}"
    gets = hub.got("GET", "/resolve/")
    assert sorted(gets) == sorted(f"/{REPO}/resolve/{commit}/{name}" for name in LOADED)  # each once
    assert len(hub.got("GET", "/revision/")) == 2


def test_workers_starting_together_download_once_and_the_second_asks_the_hub_nothing(
        hub: StandInHub, svd_xt_repo: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's first load (models.weights.ensure) in two threads online: one downloads, the other waits on the
    lock and loads the first one's snapshot."""
    import huggingface_hub.constants as hc

    commit = hub.add(REPO, svd_xt_repo)
    gate = hub.gate(UNET_FP16)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", hub.url)
    monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    target = weights.ModelWeights("svd-xt", REPO, None)
    results: dict[str, Any] = {}
    waited = threading.Event()

    def start(name: str) -> None:
        try:
            results[name] = weights.ensure(target, tmp_path, on_wait=lambda _: waited.set())
        except Exception as exc:
            results[name] = exc

    first = threading.Thread(target=start, args=("first",))
    first.start()
    assert gate.reached.wait(60)
    second = threading.Thread(target=start, args=("second",))
    second.start()
    assert waited.wait(30), "the second load did not wait for the lock"
    gate.opened.set()
    first.join(60)
    second.join(60)
    path = tmp_path / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
    assert results == {"first": path, "second": path}
    # the second found the first one's complete snapshot: it resolved no revision and fetched nothing
    assert len(hub.got("GET", "/revision/")) == 1
    assert sorted(hub.got("GET", "/resolve/")) == sorted(f"/{REPO}/resolve/{commit}/{n}" for n in LOADED)
    assert sorted(hub.got("HEAD", "/resolve/")) == sorted(hub.got("GET", "/resolve/"))


def test_a_worker_started_offline_without_its_weights_says_in_one_line_what_to_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVDQ_", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), SVDQ_REDIS_URL="redis://127.0.0.1:1/0",
               SVDQ_DATABASE_URL=f"sqlite:///{tmp_path}/svdq.db", SVDQ_CACHE_DIR=str(tmp_path / "svdq"))
    out = svdq("worker", "--model", "svd-xt", "--metrics-port", "0", env=env)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "`svdq models pull svd-xt`" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert lines[0].startswith("svdq worker: the svd-xt weights") and "Traceback" not in out.stderr + out.stdout


def test_models_list_shows_each_models_source_pin_and_whether_the_cache_has_it(
        hub: StandInHub, svd_xt_repo: dict[str, bytes], tmp_path: Path) -> None:
    pinned = hub.add(REPO, svd_xt_repo, ref="v1.0")
    env = hub_env(hub, tmp_path, SVDQ_MODEL_SVD_XT_REVISION="v1.0")
    before = svdq("models", "list", env={**env, "HF_HUB_OFFLINE": "1"})
    assert before.returncode == 0, before.stderr
    assert svdq("models", "pull", "svd-xt", env=env).returncode == 0
    after = svdq("models", "list", env={**env, "HF_HUB_OFFLINE": "1"})
    assert after.returncode == 0, after.stderr
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in after.stdout.splitlines()[1:-1]}
    assert rows["svd-xt"] == [REPO, "v1.0", f"cached ({pinned[:12]})"]
    assert rows["svd"] == ["stabilityai/stable-video-diffusion-img2vid", "main", "not in cache: svdq models pull svd"]
    assert rows["tiny"][0] == "built-in"  # "built-in (random weights)"
    assert "svd-xt" in before.stdout and "not in cache: svdq models pull svd-xt" in before.stdout
    assert after.stdout.splitlines()[-1].startswith(f"hub cache: {tmp_path / 'hub'} ")

    listed = svdq("models", "list", "--json", env={**env, "HF_HUB_OFFLINE": "1"})
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "svd-xt")
    assert row == {"name": "svd-xt", "source": REPO, "revision": "v1.0",
                   "revision_variable": "SVDQ_MODEL_SVD_XT_REVISION", "cached": True, "commit": pinned,
                   "path": str(snapshot(tmp_path, pinned))}


def test_pull_errors_are_one_line_with_the_documented_exit_codes(hub: StandInHub, svd_xt_repo: dict[str, bytes],
                                                                 tmp_path: Path) -> None:
    hub.add(REPO, svd_xt_repo)
    env = hub_env(hub, tmp_path)
    cases = [
        (("nope",), {}, 2, "error: unknown_model: no model 'nope'"),
        (("svd-xt",), {"HF_HUB_OFFLINE": "1"}, 2, "error: offline: HF_HUB_OFFLINE=1 is set"),
        (("svd-xt", "--revision", "v9"), {}, 4, "error: hub_refused: " + REPO + " has no revision 'v9'"),
        (("svd",), {}, 4, "error: hub_refused: the hub has no repository stabilityai/stable-video-diffusion-img2vid"),
        (("svd-xt",), {"HF_ENDPOINT": "http://127.0.0.1:9"}, 5, "error: hub_unreachable: could not download"),
    ]
    for args, extra, code, start in cases:
        out = svdq("models", "pull", *args, env={**env, **extra})
        assert (out.returncode, out.stderr.splitlines()[-1][:len(start)]) == (code, start), out.stderr
        assert "Traceback" not in out.stderr


def test_a_directory_of_pickled_weights_is_refused(tiny_cache: Path, tmp_path: Path) -> None:
    """use_safetensors=True: the worker never unpickles a checkpoint (the tiny model itself is saved as
    safetensors and loads)."""
    from diffusers import StableVideoDiffusionPipeline

    from models.tiny import ensure_tiny
    from worker.pipeline import PipelineHolder

    tiny = ensure_tiny(tiny_cache)
    assert list(tiny.glob("*/*.safetensors")) and not list(tiny.glob("*/*.bin"))
    StableVideoDiffusionPipeline.from_pretrained(str(tiny)).save_pretrained(str(tmp_path), safe_serialization=False)
    assert list(tmp_path.glob("unet/*.bin"))
    holder = PipelineHolder(model="tiny", source=str(tmp_path), device="cpu")
    with pytest.raises((OSError, ValueError)):
        holder.load()


def test_every_hub_model_has_its_revision_setting_and_an_empty_one_pins_nothing() -> None:
    from models.registry import REGISTRY

    fields = {"SVDQ_" + name.upper() for name in Settings.model_fields}
    hub_models = [name for name in REGISTRY if Settings().model_source(name) is not None]
    assert hub_models == ["svd", "svd-xt", "svd-xt-1-1"]
    for name in hub_models:
        assert weights.revision_variable(name) in fields
    assert weights.revision_variable("svd-xt-1-1") == "SVDQ_MODEL_SVD_XT_1_1_REVISION"
    pinned = Settings(model_svd_xt_revision="v1.0", model_svd_revision="")
    assert (pinned.model_revision("svd-xt"), pinned.model_revision("svd"), pinned.model_revision("tiny")) == \
        ("v1.0", None, None)


def test_svdq_models_prints_what_the_servers_v1_models_says(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    from client import commands
    from client.cli import main
    from client.sdk import Client

    answer = [{"name": "svd-xt", "description": "SVD-XT img2vid", "source": REPO, "workers_ready": 2},
              {"name": "tiny", "description": "random weights", "source": "built-in (random weights)"}]
    seen: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=answer)

    def scripted(handler: Any) -> None:
        monkeypatch.setattr(commands, "_client",
                            lambda: Client("http://svdq.test", "k", retries=0, transport=httpx.MockTransport(handler)))

    scripted(serve)
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert seen == ["/v1/models"]
    assert lines[0].split() == ["svd-xt", "2", "ready", REPO, "SVD-XT", "img2vid"]
    assert lines[1].split()[:3] == ["tiny", "0", "ready"]
    assert main(["models", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["svd-xt", "tiny"]
    # an error answer: the user commands' one-line error and exit code
    scripted(lambda _: httpx.Response(401, json={"error": {"code": "unauthorized", "message": "bad key"}}))
    assert main(["models"]) == commands.EXIT_REFUSED
    assert capsys.readouterr().err.startswith("error: unauthorized: bad key")
