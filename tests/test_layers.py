"""`make lint` keeps the layers of ../shared/ARCHITECTURE.md: models/ imports neither api/ nor worker/, api/ and
worker/ never import each other, the SDK reaches the server over HTTP only, and no import loop exists anywhere.
The real tree passes; a copy of it with one bad import, or one loop, fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.harness import ROOT

PACKAGES = ("api", "worker", "models", "client")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports, then the cycle check, as `make lint` runs them, on the packages found from `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    bin_dir = Path(sys.executable).parent
    layers = subprocess.run([str(bin_dir / "lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    if layers.returncode != 0:
        return layers
    return subprocess.run([sys.executable, str(ROOT / "ops" / "lint" / "import_cycles.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_todays_tree_keeps_every_layer_and_has_no_import_loop() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no import loops" in result.stdout


def test_the_copy_passes_until_it_is_broken(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_api_module_importing_a_worker_module_fails_lint(tree: Path) -> None:
    (tree / "api" / "shortcut.py").write_text('"""A shortcut that would break the layers."""\n\nimport worker.render\n')
    result = lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "api.shortcut -> worker.render" in result.stdout, result.stdout


def test_a_models_module_importing_the_api_fails_lint(tree: Path) -> None:
    # an import inside a function is an import all the same
    upward = "def app():\n    from api.app import create_app\n\n    return create_app\n"
    (tree / "models" / "upward.py").write_text(upward)
    result = lint(tree)
    assert result.returncode != 0 and "models.upward -> api.app" in result.stdout, result.stdout


def test_an_import_loop_fails_lint(tree: Path) -> None:
    (tree / "models" / "loop_a.py").write_text("from models import loop_b\n")
    (tree / "models" / "loop_b.py").write_text("def back():\n    from models import loop_a\n    return loop_a\n")
    result = lint(tree)
    assert result.returncode == 1
    assert "import loop: models.loop_a <-> models.loop_b" in result.stdout, result.stdout
