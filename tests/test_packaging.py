"""`pip install svdq` is the SDK and the CLI client only: the wheel built from this tree, installed into a
fresh virtualenv without any extra, talks to a running stack with no torch (nor any server part) importable
there, and a server command run from it names the extra to install in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import imageio_ffmpeg
import pytest

from ops.harness import ROOT
from ops.harness.stack import API_KEY, Stack

SAMPLE = ROOT / "ops" / "samples" / "rocket.jpg"
CORE = {"httpx", "httpx-sse", "pydantic", "pyyaml", "rich"}
SERVER_SIDE = ["torch", "diffusers", "transformers", "fastapi", "sqlalchemy", "celery", "redis", "boto3", "PIL",
               "numpy", "flower"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree (a copy of what the wheel is made of, so no build output lands here)."""
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for package in ("api", "models", "worker", "client"):
        shutil.copytree(ROOT / package, src / package, ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    (whl,) = out.glob("svdq-*.whl")
    return whl


@pytest.fixture(scope="module")
def core_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ERROR" not in r.stderr, r.stderr[-3000:]
    return venv


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode()).get_all("Requires-Dist") or []


def test_the_wheel_carries_its_licence_and_the_notices_of_the_code_it_adapts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = Parser().parsestr(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        notice = z.read(next(n for n in names if n.endswith("/NOTICE"))).decode()
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(n.endswith("/LICENSE") for n in names)
    assert "worker/rife.py" in notice and "MIT License" in notice and "Copyright (c) 2020 hzwer" in notice


def test_the_wheel_requires_only_the_core_and_offers_the_rest_as_extras(wheel: Path) -> None:
    reqs = _metadata(wheel)
    plain = {re.split(r"[^A-Za-z0-9_.-]", r, maxsplit=1)[0].lower() for r in reqs if "extra ==" not in r}
    assert plain == CORE
    extras = {r.split("extra ==")[1].strip().strip("'\"") for r in reqs if "extra ==" in r}
    assert {"server", "worker", "postprocess", "flower", "wandb", "all"} <= extras
    worker = [r for r in reqs if "extra == \"worker\"" in r or "extra == 'worker'" in r]
    assert any(r.startswith("torch") for r in worker) and any(r.startswith("diffusers") for r in worker)


def _run(venv: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SVDQ_", "PYTHON", "VIRTUAL_ENV"))}
    # run outside the checkout, so nothing of it is importable from the working directory
    return subprocess.run(list(args), cwd=venv, env={**clean, "PATH": f"{venv / 'bin'}:/usr/bin:/bin", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_the_core_install_has_no_server_part(core_venv: Path) -> None:
    py = str(core_venv / "bin" / "python")
    probe = ("import importlib.util, json; "
             f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {SERVER_SIDE!r}}}))")
    r = _run(core_venv, py, "-c", probe)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == dict.fromkeys(SERVER_SIDE, False)
    r = _run(core_venv, py, "-c", "import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = _run(core_venv, "svdq", "--version")
    assert r.returncode == 0 and r.stdout.startswith("svdq "), r.stderr


@pytest.mark.parametrize(("command", "extra"), [(["api"], "server"), (["worker"], "server"),
                                                (["keys", "list"], "server")])
def test_a_server_command_from_the_core_names_its_extra_in_one_line(core_venv: Path, command: list[str],
                                                                    extra: str) -> None:
    r = _run(core_venv, "svdq", *command, env={"SVDQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: missing_extra: ") and f"pip install 'svdq[{extra}]'" in line, line


def test_the_sdk_and_the_cli_from_the_core_render_on_a_running_stack(core_venv: Path, sqlite_stack: Stack,
                                                                     tmp_path: Path) -> None:
    env = {"SVDQ_API_URL": sqlite_stack.serve(), "SVDQ_API_KEY": API_KEY}
    out = tmp_path / "core.mp4"
    r = _run(core_venv, "svdq", "submit", str(SAMPLE), "--model", "tiny", "--num-inference-steps", "2",
             "--num-frames", "4", "--no-reuse", "-o", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "succeeded"
    gen = imageio_ffmpeg.read_frames(str(out))
    meta = next(gen)
    assert sum(1 for _ in gen) == 4 and tuple(meta["size"]) == (128, 64)
    sdk = ("import sys, client.sdk as s\n"
           "with s.Client() as c:\n"
           "    job = c.wait(c.submit(sys.argv[1], model='tiny', num_inference_steps=2, num_frames=3, reuse=False))\n"
           "    print(job.status, job.result.frames)\n"
           "print(sorted(m for m in ('torch', 'fastapi', 'celery') if m in sys.modules))\n")
    r = _run(core_venv, str(core_venv / "bin" / "python"), "-c", sdk, str(SAMPLE), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["succeeded 3", "[]"]
