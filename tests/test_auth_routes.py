"""Every /v1 route refuses a missing, malformed, revoked or other tenant's key. The test walks the app's
route table, so a new route cannot slip through."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.keys import new_key_string, store_key
from models.tables import ApiKey, utcnow
from ops.harness.images import sample_png
from ops.harness.stack import Stack


def v1_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every /v1 operation the app serves, from its own OpenAPI document (the route table as published)."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1") for m in ops]


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x_unknown"), path)


@pytest.fixture(scope="module")
def setup(sqlite_stack: Stack) -> dict[str, str]:
    """Ids owned by the stack's key, a revoked key and a second tenant's key."""
    s = sqlite_stack
    image = s.upload(sample_png(color=(3, 3, 3)))
    job = s.wait(s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2})["id"])
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json={
        "model": "tiny", "images": [{"image_id": image["id"]}], "axes": {"fps": [6]},
        "params": {"num_inference_steps": 1, "num_frames": 2}}).json()
    with s.client.app.state.svdq.sessions() as session:  # type: ignore[attr-defined]
        other, revoked = new_key_string(), new_key_string()
        store_key(session, other, name="tenant-b")
        row = store_key(session, revoked, name="gone")
        session.get(ApiKey, row.id).revoked_at = utcnow()  # type: ignore[union-attr]
        session.commit()
    return {"job_id": job["id"], "sweep_id": sweep["id"], "image_id": image["id"], "other": other,
            "revoked": revoked}


def test_the_route_table_has_the_routes_this_test_expects(sqlite_stack: Stack) -> None:
    paths = {p for _, p in v1_routes(sqlite_stack.client)}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/images", "/v1/sweeps", "/v1/models"} <= paths


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer", "Bearer not-a-key", "revoked"])
def test_every_v1_route_refuses_a_bad_key(sqlite_stack: Stack, setup: dict[str, str], header: str | None) -> None:
    c = sqlite_stack.client
    for method, path in v1_routes(c):
        headers = {}
        if header == "revoked":
            headers["Authorization"] = f"Bearer {setup['revoked']}"
        elif header is not None:
            headers["Authorization"] = header
        r = c.request(method, fill(path, setup), headers=headers)
        assert r.status_code == 401, (method, path, header, r.status_code)
        assert r.json()["error"]["code"] == "unauthorized"


def test_another_tenants_ids_are_404_never_data(sqlite_stack: Stack, setup: dict[str, str]) -> None:
    c = sqlite_stack.client
    other = {"Authorization": f"Bearer {setup['other']}"}
    checked = 0
    for method, path in v1_routes(c):
        if "{" not in path:
            continue
        r = c.request(method, fill(path, setup), headers=other)
        assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
        assert setup["job_id"] not in r.text or "No job" in r.text
        checked += 1
    assert checked >= 8
    # and listing shows none of the first tenant's jobs
    assert c.get("/v1/jobs", headers=other).json()["items"] == []


def test_keys_list_and_revoke_from_the_command_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from ops.harness import ROOT

    env = {**os.environ, "SVDQ_DATABASE_URL": f"sqlite:///{tmp_path}/k.db"}

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "client.cli", *a], env=env, cwd=ROOT, capture_output=True,
                              text=True)

    run("db", "upgrade")
    created = run("keys", "create", "--name", "carol")
    assert "webhook signing secret: whsec_" in created.stderr
    key_id = created.stderr.split("(key ")[1].split(" ")[0]
    listed = run("keys", "list").stdout
    assert key_id in listed and "carol" in listed and "active" in listed and created.stdout.strip() not in listed
    assert run("keys", "revoke", key_id).returncode == 0
    assert "revoked" in run("keys", "list").stdout
    assert run("keys", "revoke", key_id).returncode == 2
