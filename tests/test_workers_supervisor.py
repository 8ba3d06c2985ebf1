"""`svdq workers`: one worker per GPU, supervised. No GPU here: SVDQ_FAKE_GPUS stands in for the device list and
SVDQ_WORKER_CMD for `svdq worker`, with a fake worker that records its pid, argv and environment to a file and
exits 0 on SIGTERM. The supervisor itself is the real CLI in its own process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.supervisor import GpuSpecError, GpuSupervisor, list_gpus, parse_gpus, worker_command

ROOT = Path(__file__).resolve().parent.parent

FAKE_WORKER = """
import json, os, signal, sys, time
out, gpu = sys.argv[1], sys.argv[sys.argv.index("--gpu") + 1]
def bye(*_):
    open(os.path.join(out, f"stop-{gpu}-{os.getpid()}"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
record = {"pid": os.getpid(), "gpu": gpu, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "metrics_port": os.environ.get("SVDQ_WORKER_METRICS_PORT")}
path = os.path.join(out, f"start-{gpu}-{os.getpid()}.json")
with open(path + ".tmp", "w") as f:
    json.dump(record, f)
os.rename(path + ".tmp", path)
if os.environ.get("FAKE_WORKER_CRASH"):
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {check}")


def starts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("start-*.json"))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    script, out = tmp_path / "fake_worker.py", tmp_path / "out"
    script.write_text(FAKE_WORKER)
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SVDQ_FAKE_GPUS")}
    env.update(SVDQ_WORKER_CMD=f"{sys.executable} {script} {out}", SVDQ_WORKER_METRICS_PORT="19101",
               SVDQ_SHUTDOWN_GRACE_S="5")
    return out, env


@pytest.fixture
def supervisor(fake: tuple[Path, dict[str, str]]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "client.cli", "workers", *args], cwd=ROOT,
                                env={**fake[1], **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:  # a failed test must not leave a supervisor (and its workers) behind
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_gpus_0_1_starts_two_workers_each_pinned_to_its_gpu(fake: tuple[Path, dict[str, str]],
                                                              supervisor: Callable[..., subprocess.Popen[str]]) -> None:
    out, _ = fake
    sup = supervisor("--gpus", "0,1", SVDQ_FAKE_GPUS="2")
    records = wait_for(lambda: len(starts(out)) == 2 and starts(out))
    by_gpu = {r["gpu"]: r for r in records}
    assert sorted(by_gpu) == ["0", "1"]
    assert by_gpu["0"]["cuda_visible_devices"] == "0" and by_gpu["1"]["cuda_visible_devices"] == "1"
    assert {by_gpu["0"]["metrics_port"], by_gpu["1"]["metrics_port"]} == {"19101", "19102"}  # no port clash
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0


def test_a_killed_worker_is_started_again_on_the_same_gpu(fake: tuple[Path, dict[str, str]],
                                                           supervisor: Callable[..., subprocess.Popen[str]]) -> None:
    out, _ = fake
    sup = supervisor("--gpus", "0,1", SVDQ_FAKE_GPUS="2")
    first = {r["gpu"]: r for r in wait_for(lambda: len(starts(out)) == 2 and starts(out))}
    os.kill(first["1"]["pid"], signal.SIGKILL)
    again = wait_for(lambda: [r for r in starts(out) if r["gpu"] == "1" and r["pid"] != first["1"]["pid"]])
    assert again[0]["cuda_visible_devices"] == "1"
    assert alive(first["0"]["pid"])  # the other GPU's worker was left alone
    assert len([r for r in starts(out) if r["gpu"] == "0"]) == 1
    sup.send_signal(signal.SIGTERM)
    log, _ = sup.communicate(timeout=30)
    assert sup.returncode == 0
    assert f"gpu 1: worker (pid {first['1']['pid']}) exited with code -9" in log and "restarting in" in log


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(
        fake: tuple[Path, dict[str, str]], supervisor: Callable[..., subprocess.Popen[str]]) -> None:
    out, _ = fake
    sup = supervisor("--gpus", "all", SVDQ_FAKE_GPUS="2")
    records = wait_for(lambda: len(starts(out)) == 2 and starts(out))
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    # each worker got SIGTERM (its handler left a mark) and is gone, not orphaned
    for r in records:
        assert (out / f"stop-{r['gpu']}-{r['pid']}").exists()
        assert not alive(r["pid"])


def test_gpus_all_with_a_fake_list_of_three_starts_three(fake: tuple[Path, dict[str, str]],
                                                         supervisor: Callable[..., subprocess.Popen[str]]) -> None:
    out, _ = fake
    sup = supervisor("--gpus", "all", SVDQ_FAKE_GPUS="3")
    records = wait_for(lambda: len(starts(out)) == 3 and starts(out))
    assert sorted((r["gpu"], r["cuda_visible_devices"]) for r in records) == [("0", "0"), ("1", "1"), ("2", "2")]
    sup.send_signal(signal.SIGINT)  # Ctrl-C stops them the same way
    assert sup.wait(timeout=30) == 0
    assert len(list(out.glob("stop-*"))) == 3


@pytest.mark.parametrize(("spec", "message"), [
    ("gpu0", "write `all` or GPU indices separated by commas"),
    ("0,,1", "write `all` or GPU indices"),
    ("-1", "'-1' is not an index"),
    ("0,0", "each GPU may appear once"),
    ("2", "no GPU 2 on this machine; it has 0, 1"),
])
def test_bad_gpus_values_are_refused_with_a_clear_message(spec: str, message: str, fake: tuple[Path, dict[str, str]],
                                                          supervisor: Callable[..., subprocess.Popen[str]]) -> None:
    out, _ = fake
    sup = supervisor("--gpus", spec, SVDQ_FAKE_GPUS="2")
    log, _ = sup.communicate(timeout=30)
    assert sup.returncode == 2 and f"svdq workers: --gpus {spec!r}" in log and message in log
    assert not starts(out)


def test_gpus_all_on_a_machine_without_gpus_is_refused() -> None:
    with pytest.raises(GpuSpecError, match="shows no GPU"):
        parse_gpus("all", list_gpus({"SVDQ_FAKE_GPUS": "0"}))


def test_the_gpu_list_comes_from_cuda_visible_devices_then_nvidia_smi() -> None:
    smi = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)\n"
    assert list_gpus({}, run=lambda cmd: smi) == ["0", "1"]
    # a supervisor that was itself pinned shares out only its own GPUs
    assert list_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, run=lambda cmd: smi) == ["2", "3"]
    with pytest.raises(GpuSpecError, match="give a count"):
        list_gpus({"SVDQ_FAKE_GPUS": "two"})


def test_the_default_child_is_svdq_worker_with_its_gpu() -> None:
    cmd = worker_command("svd-xt", "3", {})
    assert cmd == [sys.executable, "-m", "client.cli", "worker", "--model", "svd-xt", "--gpu", "3"]


def test_a_restart_storm_gives_up_on_that_gpu_loudly(fake: tuple[Path, dict[str, str]],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # Given a worker that exits at once, every time, and a fast backoff
    out, env = fake
    sup = GpuSupervisor(["0"], lambda gpu: worker_command("tiny", gpu, env), {**env, "FAKE_WORKER_CRASH": "1"},
                        backoff_s=0.02, max_backoff_s=0.1, storm_limit=4, storm_window_s=60)
    # When it is supervised
    with caplog.at_level(logging.INFO, logger="svdq.workers"):
        rc = sup.run(lambda: False, every_s=0.01)
    # Then it was started storm_limit times, with growing backoff, then given up on with an error
    assert rc == 1 and len(starts(out)) == 4
    assert sup.children["0"].given_up and sup.children["0"].backoff_s == pytest.approx(0.08)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("RESTART STORM" in m and "exited 4 times" in m for m in errors)


# a child that writes "<name> term <time>" on SIGTERM, then takes `linger` seconds to exit (as a worker hands
# back its job), and "<name> exit <time>" as it goes
LINGERING = """
import signal, sys, time
name, linger, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def term(*_):
    open(out, "a").write(f"{name} term {time.time()}\\n")
    time.sleep(linger)
    open(out, "a").write(f"{name} exit {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(out, "a").write(f"{name} up\\n")
while True:
    time.sleep(0.05)
"""


def test_svdq_dev_stops_redis_only_after_the_processes_that_use_it(tmp_path: Path) -> None:
    from client.procs import Supervisor

    script, out = tmp_path / "child.py", tmp_path / "events.txt"
    script.write_text(LINGERING)
    sup = Supervisor()
    sup.start("redis", [sys.executable, str(script), "redis", "0", str(out)], underneath=True)
    sup.start("api", [sys.executable, str(script), "api", "0.2", str(out)])
    sup.start("worker", [sys.executable, str(script), "worker", "0.6", str(out)])
    deadline = time.monotonic() + 20
    while (not out.exists() or out.read_text().count(" up") < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    sup.stop(grace=10)
    events = {" ".join(parts[:2]): float(parts[2]) for parts in (line.split() for line in out.read_text().splitlines())
              if len(parts) == 3}
    # the worker and the API were told at once; Redis only once both had exited
    assert abs(events["worker term"] - events["api term"]) < 0.5
    assert events["redis term"] >= max(events["worker exit"], events["api exit"])
