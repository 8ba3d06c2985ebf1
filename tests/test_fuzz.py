"""Schemathesis against the app's own /openapi.json, every operation, a bounded number of examples, with a
valid key: no 5xx, and no response that breaks the published schema."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.services import unavailable
from tests.stack import API_KEY, ROOT, Stack


def test_schemathesis_finds_no_server_error_and_no_schema_break(sqlite_stack: Stack, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(os.sys.executable).parent))  # type: ignore[attr-defined]
    if exe is None:
        unavailable("schemathesis is not installed (it is in the test extras)")
    base = sqlite_stack.serve()
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [exe, "run", f"{base}/openapi.json", "--url", base, "-H", f"Authorization: Bearer {API_KEY}",
         "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "15",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--report", "junit",
         "--report-dir", str(tmp_path), "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    import re

    tested = re.search(r"Tested: (\d+)", out)
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested and int(tested.group(1)) >= 15, out[-3000:]  # every operation of the API
    assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) > 100, out[-3000:]
    del report
