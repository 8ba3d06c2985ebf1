"""The HTTP contract as clients nobody here wrote see it: the app's own /openapi.json is valid OpenAPI 3.1; a client
generated from it by openapi-python-client imports unedited and submits, polls and lists jobs with typed params;
and schemathesis, with every check it has, on every operation, finds nothing (tests/schemathesis.toml says the
one allowance it is given, and why)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.harness import ROOT
from ops.harness.images import sample_png
from ops.harness.services import unavailable
from ops.harness.stack import API_KEY, Stack, build_stack

HERE = Path(__file__).resolve().parent


def tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        unavailable(f"{name} is not installed (it is in the test extras)")
    assert exe is not None
    return exe


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_cache: Path) -> Iterator[Stack]:
    """An API with no worker (what schemathesis creates stays queued, and no other test waits behind it) and no
    rate limit in the way, over real HTTP."""
    tmp = tmp_path_factory.mktemp("contract")
    stack = build_stack(tmp, database_url=f"sqlite:///{tmp}/svdq.db", storage_url=f"file://{tmp}/results",
                        redis_url=f"{redis_url}/8", tiny_cache=tiny_cache, SVDQ_RATE_LIMIT_PER_S="0",
                        SVDQ_MAX_OPEN_JOBS_PER_KEY="1000000",
                        # the jobs schemathesis makes never end (no worker): each of its event streams closes
                        # after 1 s, as any stream does after SVDQ_SSE_MAX_S, instead of holding its 30 s timeout
                        SVDQ_SSE_MAX_S="1")
    stack.serve()
    yield stack
    stack.stop()
    stack.client.__exit__(None, None, None)


def test_the_openapi_document_is_valid_openapi_3_1_with_a_bearer_scheme(contract_stack: Stack) -> None:
    from openapi_spec_validator import validate

    doc = httpx.get(f"{contract_stack.url}/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    scheme = doc["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    # every /v1 operation asks for the key and declares the error envelope for what it can answer
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/"):
                assert op["security"] == [{"ApiKey": []}], (method, path)
                assert {"401", "429", "503"} <= set(op["responses"]), (method, path)
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json"]  # one content type per operation; the form is /v1/jobs/upload
    create = doc["components"]["schemas"]["JobCreate"]
    assert create["additionalProperties"] is False
    assert set(create["properties"]) >= {"model", "params", "output", "postprocess", "webhook_url", "image_url",
                                         "image_id", "reuse", "priority"}
    params = doc["components"]["schemas"]["RenderParams"]
    assert params["additionalProperties"] is False
    width = next(s for s in params["properties"]["width"]["anyOf"] if s["type"] == "integer")
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 64)
    listing = {p["name"]: p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]}
    limit = listing["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 200)
    assert next(s for s in listing["status"]["schema"]["anyOf"] if "$ref" in s)["$ref"].endswith("/JobStatus")


def test_a_generated_client_submits_a_job_polls_it_to_success_and_lists_it(sqlite_stack: Stack,
                                                                           tmp_path: Path) -> None:
    # Given a client generated from the running app's document, untouched
    base = sqlite_stack.serve()
    (tmp_path / "openapi.json").write_text(httpx.get(f"{base}/openapi.json").text)
    (tmp_path / "generator.yaml").write_text("post_hooks: []\n")
    made = subprocess.run([tool("openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
                           "--output-path", "generated_svdq", "--config", "generator.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod: Any = importlib.import_module("generated_svdq")
        api = {name: importlib.import_module(f"generated_svdq.api.{group}.{name}") for group, name in (
            ("images", "upload_image"), ("jobs", "create_job"), ("jobs", "create_job_upload"), ("jobs", "get_job"),
            ("jobs", "list_jobs"))}
        m: Any = importlib.import_module("generated_svdq.models")
        types: Any = importlib.import_module("generated_svdq.types")
        client = client_mod.AuthenticatedClient(base_url=base, token=API_KEY)
        with client as c:
            # When it uploads an image and submits a job as JSON with typed params
            image = api["upload_image"].sync(client=c, body=m.UploadImageBody(
                image=types.File(payload=sample_png(), file_name="in.png", mime_type="image/png")))
            assert isinstance(image, m.Image), image
            params = m.RenderParams(num_inference_steps=2, num_frames=4, seed=7)
            job = api["create_job"].sync(client=c, body=m.JobCreate(model=m.ModelName.TINY, image_id=image.id,
                                                                   params=params))
            assert isinstance(job, m.Job) and job.status == "queued", job
            # and another with the image in a multipart form beside its typed spec
            uploaded = api["create_job_upload"].sync(client=c, body=m.CreateJobUploadBody(
                image=types.File(payload=sample_png(color=(9, 9, 200)), file_name="b.png", mime_type="image/png"),
                spec=m.JobSpec(model=m.ModelName.TINY, params=m.RenderParams(num_inference_steps=2, num_frames=4))))
            assert isinstance(uploaded, m.Job) and uploaded.params["num_frames"] == 4, uploaded
            # Then polling brings both to succeeded, with a result, and the list shows them newest first
            for submitted in (job, uploaded):
                deadline = time.monotonic() + 120
                while (got := api["get_job"].sync(job_id=submitted.id, client=c)).status != "succeeded":
                    assert got.status in ("queued", "running") and time.monotonic() < deadline, got
                    time.sleep(0.2)
                assert got.result.frames == 4 and got.result.video_url
            page = api["list_jobs"].sync(client=c, limit=5)
            assert isinstance(page, m.PageJob), page
            ids = [j.id for j in page.items]
            assert ids.index(uploaded.id) < ids.index(job.id)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "generated_svdq" or n.startswith("generated_svdq.")]:
            del sys.modules[name]


def test_schemathesis_with_every_check_on_every_operation_finds_nothing(contract_stack: Stack,
                                                                        tmp_path: Path) -> None:
    base = contract_stack.url
    proc = subprocess.run(
        [tool("schemathesis"), "--config-file", str(HERE / "schemathesis.toml"), "run", f"{base}/openapi.json",
         "--url", base, "-H", f"Authorization: Bearer {API_KEY}", "--checks", "all", "--max-examples", "5",
         "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "30", "--seed", "1",
         "--report", "junit", "--report-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    tested = re.search(r"Tested: (\d+)", out)
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested and int(tested.group(1)) >= 22, out[-3000:]  # every operation of the API
    assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) > 100, out[-3000:]
    assert "failures" not in out.splitlines()[-1], out[-3000:]
