"""Every import is declared in pyproject.toml, and every declaration is used: deptry, as `make lint` runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ops.harness import ROOT

DEPTRY = Path(sys.executable).with_name("deptry")


def deptry(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DEPTRY), ".", "--no-ansi"], cwd=where, capture_output=True, text=True, timeout=120)


def test_every_import_is_declared_and_every_declaration_used() -> None:
    out = deptry(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_undeclared_import_fails_the_check(tmp_path: Path) -> None:
    # huggingface_hub was imported by the worker and declared nowhere (it came in through diffusers)
    text = (ROOT / "pyproject.toml").read_text()
    declared = next(line for line in text.splitlines() if line.strip().startswith('"huggingface-hub'))
    (tmp_path / "pyproject.toml").write_text(text.replace(declared + "\n", ""))
    for package in ("api", "worker", "models", "client"):  # models/weights.py imports it now
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = deptry(tmp_path)
    assert out.returncode == 1
    assert "DEP003 'huggingface_hub' imported but it is a transitive dependency" in out.stdout + out.stderr
