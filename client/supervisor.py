"""`svdq workers --gpus all|0,1,...`: one `svdq worker --gpu N` per GPU, restarted when it crashes (with backoff,
and given up on loudly in a restart storm), stopped with the workers' grace period on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from client.procs import Supervisor

log = logging.getLogger("svdq.workers")

FAKE_GPUS_ENV = "SVDQ_FAKE_GPUS"  # a count: pretend this machine has that many GPUs (tests, dry runs)
WORKER_CMD_ENV = "SVDQ_WORKER_CMD"  # the child command instead of `svdq worker`; `--gpu N` is appended


class GpuSpecError(ValueError):
    """A --gpus value that names no usable GPU list; the message says what to write instead."""


def list_gpus(env: Mapping[str, str] | None = None, run: Callable[[list[str]], str] | None = None) -> list[str]:
    """The GPUs a worker may be pinned to, by index: SVDQ_FAKE_GPUS, else this process's CUDA_VISIBLE_DEVICES
    (a supervisor pinned to some GPUs shares out only those), else `nvidia-smi -L`, else torch's count."""
    env = env if env is not None else os.environ
    fake = env.get(FAKE_GPUS_ENV)
    if fake is not None:
        if not fake.strip().isdigit():
            raise GpuSpecError(f"{FAKE_GPUS_ENV}={fake!r}: give a count of GPUs, e.g. {FAKE_GPUS_ENV}=3")
        return [str(i) for i in range(int(fake))]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    if run is None and shutil.which("nvidia-smi") is None:
        return [str(i) for i in range(_torch_device_count())]
    try:
        out = (run or _nvidia_smi)(["nvidia-smi", "-L"])
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi -L failed (%s); counting GPUs with torch", exc)
        return [str(i) for i in range(_torch_device_count())]
    return re.findall(r"^GPU (\d+):", out, flags=re.MULTILINE)


def _nvidia_smi(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout


def _torch_device_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def parse_gpus(spec: str, available: list[str]) -> list[str]:
    """`all` or a comma-separated list of distinct indices, each one of `available`."""
    spec = spec.strip()
    if spec == "all":
        if not available:
            raise GpuSpecError("--gpus all: this machine shows no GPU (nvidia-smi -L lists none); "
                               "run `svdq worker` for a CPU worker")
        return list(available)
    parts = [p.strip() for p in spec.split(",")]
    bad = [p for p in parts if not p.isdigit()]
    if not spec or bad:
        raise GpuSpecError(f"--gpus {spec!r}: write `all` or GPU indices separated by commas, e.g. --gpus 0,1"
                           + (f" ({', '.join(repr(b) for b in bad)} is not an index)" if spec and bad else ""))
    gpus = [str(int(p)) for p in parts]
    if len(set(gpus)) != len(gpus):
        raise GpuSpecError(f"--gpus {spec!r}: each GPU may appear once (one worker per GPU)")
    missing = [g for g in gpus if g not in available]
    if missing:
        raise GpuSpecError(f"--gpus {spec!r}: no GPU {', '.join(missing)} on this machine; "
                           f"it has {', '.join(available) or 'none'}")
    return gpus


def worker_command(model: str, gpu: str, env: Mapping[str, str] | None = None) -> list[str]:
    env = env if env is not None else os.environ
    custom = env.get(WORKER_CMD_ENV)
    base = shlex.split(custom) if custom else [sys.executable, "-m", "client.cli", "worker", "--model", model]
    return [*base, "--gpu", gpu]


@dataclass
class Child:
    gpu: str
    started_at: float = 0.0
    pid: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None  # when it is due to start again after a crash
    crashes: deque[float] = field(default_factory=deque)  # times of recent crashes, for the storm cap
    given_up: bool = False


@dataclass
class GpuSupervisor:
    """One child per GPU. Policy: a child that exits is started again after a backoff that doubles with each
    quick crash (from backoff_s to max_backoff_s) and resets once a child ran healthy_after_s; a GPU whose child
    crashed storm_limit times within storm_window_s is given up on (logged as an error) and left idle."""

    gpus: list[str]
    command: Callable[[str], list[str]]
    env: dict[str, str]
    grace_s: float = 75.0  # the workers' shutdown_grace_s plus time to hand a job back
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    healthy_after_s: float = 30.0
    storm_limit: int = 5
    storm_window_s: float = 300.0
    metrics_port_base: int = 0  # each worker's exporter on base + its position (0: off), so they do not collide
    procs: Supervisor = field(default_factory=Supervisor)
    children: dict[str, Child] = field(default_factory=dict)

    def start(self) -> None:
        for gpu in self.gpus:
            self.children[gpu] = Child(gpu)
            self._launch(self.children[gpu], restart=False)

    def _launch(self, child: Child, *, restart: bool) -> None:
        # before the child imports torch: it sees exactly one GPU, as cuda:0
        env = {**self.env, "CUDA_VISIBLE_DEVICES": child.gpu}
        if self.metrics_port_base:
            env["SVDQ_WORKER_METRICS_PORT"] = str(self.metrics_port_base + self.gpus.index(child.gpu))
        cmd = self.command(child.gpu)
        name = f"gpu{child.gpu}"
        proc = self.procs.restart(name, cmd, env, tied=True) if restart else self.procs.start(name, cmd, env, tied=True)
        child.pid, child.started_at, child.restart_at = proc.pid, time.monotonic(), None
        log.info("gpu %s: worker started (pid %d): %s", child.gpu, proc.pid, shlex.join(cmd))

    def poll(self) -> None:
        """Notice exited children and start due ones again; call it often."""
        now = time.monotonic()
        for name, proc in list(self.procs.procs):
            child = self.children[name.removeprefix("gpu")]
            code = proc.poll()
            if code is None or child.given_up or child.restart_at is not None or proc.pid != child.pid:
                continue
            ran = now - child.started_at
            child.crashes.append(now)
            while child.crashes and now - child.crashes[0] > self.storm_window_s:
                child.crashes.popleft()
            if len(child.crashes) >= self.storm_limit:
                child.given_up = True
                log.error("gpu %s: RESTART STORM: the worker exited %d times within %.0f s (last code %s after "
                          "%.1f s); not restarting it. Fix the cause (see its log above), then restart svdq workers",
                          child.gpu, len(child.crashes), self.storm_window_s, code, ran)
                continue
            child.backoff_s = (self.backoff_s if ran >= self.healthy_after_s or not child.backoff_s
                               else min(self.max_backoff_s, child.backoff_s * 2))
            child.restart_at = now + child.backoff_s
            log.warning("gpu %s: worker (pid %d) exited with code %s after %.1f s; restarting in %.1f s",
                        child.gpu, proc.pid, code, ran, child.backoff_s)
        for child in self.children.values():
            if child.restart_at is not None and now >= child.restart_at and not child.given_up:
                self._launch(child, restart=True)

    @property
    def all_given_up(self) -> bool:
        return bool(self.children) and all(c.given_up for c in self.children.values())

    def run(self, should_stop: Callable[[], bool], every_s: float = 0.2) -> int:
        """Supervise until should_stop() (then stop the children: 0) or every GPU is given up on (1)."""
        self.start()
        try:
            while not should_stop():
                self.poll()
                if self.all_given_up:
                    log.error("every GPU's worker was given up on; exiting")
                    return 1
                time.sleep(every_s)
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        log.info("stopping %d worker(s); each gets up to %.0f s to finish or hand back its job",
                 sum(p.poll() is None for _, p in self.procs.procs), self.grace_s)
        self.procs.stop(grace=self.grace_s)
        for name, proc in self.procs.procs:
            log.info("%s: worker (pid %d) exited with code %s", name.replace("gpu", "gpu "), proc.pid, proc.returncode)
