"""Bad input tried as a new user would: each gets its documented 4xx and error code, nothing is created,
and the API and the worker keep serving."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from sqlalchemy import func, select

from models.tables import Job
from ops.harness.images import sample_png
from ops.harness.stack import Stack


def huge_png(width: int = 30000, height: int = 30000) -> bytes:
    """A real, valid 1-bit PNG of width x height, built row by row so the test never holds it decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def job_count(stack: Stack) -> int:
    with stack.client.app.state.svdq.sessions() as s:  # type: ignore[attr-defined]
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def post_job(stack: Stack, *, image: bytes | None = None, spec: dict[str, Any] | None = None,
             name: str = "x.png", headers: dict[str, str] | None = None) -> Any:
    import json

    files = {"image": (name, image, "image/png")} if image is not None else {"dummy": ("d.txt", b"", "text/plain")}
    data = {"spec": json.dumps(spec)} if spec is not None else {}
    return stack.client.post("/v1/jobs", headers=stack.headers if headers is None else headers,
                             files=files, data=data)


CASES = [
    ("no image", dict(spec={"model": "tiny"}), 422, "invalid_request", "image"),
    ("a text file named .png", dict(image=b"hello, I am not a picture\n" * 20), 415, "unsupported_media_type", None),
    ("a truncated PNG", dict(image=sample_png()[:300]), 422, "invalid_image", None),
    ("a 30000x30000 PNG", dict(image=huge_png()), 422, "invalid_image", None),
    ("width 1000", dict(image=sample_png(), spec={"model": "tiny", "params": {"width": 1000}}),
     422, "invalid_params", "params.width"),
    ("num_frames 0", dict(image=sample_png(), spec={"model": "tiny", "params": {"num_frames": 0}}),
     422, "invalid_params", "params.num_frames"),
    ("an unknown model", dict(image=sample_png(), spec={"model": "sora"}), 422, "invalid_params", "model"),
    ("an unknown field", dict(image=sample_png(), spec={"model": "tiny", "colour": "red"}),
     422, "invalid_params", "colour"),
    ("an unknown param", dict(image=sample_png(), spec={"model": "tiny", "params": {"strength": 1}}),
     422, "invalid_params", "params.strength"),
    ("a wrongly typed param", dict(image=sample_png(), spec={"model": "tiny", "params": {"fps": "fast"}}),
     422, "invalid_params", "params.fps"),
    ("an unknown output format", dict(image=sample_png(), spec={"model": "tiny", "output": {"format": "avi"}}),
     422, "invalid_params", "output.format"),
    ("priority 12", dict(image=sample_png(), spec={"model": "tiny", "priority": 12}),
     422, "invalid_params", "priority"),
    ("no API key", dict(image=sample_png(), headers={}), 401, "unauthorized", None),
    ("a wrong API key", dict(image=sample_png(), headers={"Authorization": "Bearer svdq_nope"}),
     401, "unauthorized", None),
]


@pytest.mark.parametrize(("what", "kw", "status", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_job_requests_get_their_documented_error(sqlite_stack: Stack, what: str, kw: dict[str, Any],
                                                     status: int, code: str, field: str | None) -> None:
    before = job_count(sqlite_stack)
    r = post_job(sqlite_stack, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"].endswith(".") and len(err["message"]) > 20  # a sentence a person can act on
    if field is not None:
        assert field in [d["field"] for d in err["details"]], err
    assert job_count(sqlite_stack) == before  # nothing half-created


def test_json_requests_with_bad_bodies_are_refused(sqlite_stack: Stack) -> None:
    h = sqlite_stack.headers
    c = sqlite_stack.client
    r = c.post("/v1/jobs", headers={**h, "content-type": "application/json"}, content=b"{not json")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    r = c.post("/v1/jobs", headers=h, json={"model": "tiny"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    r = c.post("/v1/jobs", headers=h, json={"model": "tiny", "image_id": "img_doesnotexist"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = c.post("/v1/jobs", headers=h, json=[1, 2])
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    r = c.post("/v1/jobs", headers={**h, "content-type": "text/plain"}, content=b"hello")
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type")


def test_an_oversized_upload_is_refused_with_413(sqlite_stack: Stack) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * 3_000_000  # over the stack's 2 MB limit
    r = sqlite_stack.client.post("/v1/images", headers=sqlite_stack.headers, files={"image": ("big.png", big)})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):  # no content-length: the limit is counted while streaming
            yield b"\x00" * 100_000

    r = sqlite_stack.client.post("/v1/images", content=chunks(),
                                 headers={**sqlite_stack.headers, "content-type": "multipart/form-data; boundary=x"})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")


def test_unknown_ids_and_unfinished_videos(sqlite_stack: Stack) -> None:
    c, h = sqlite_stack.client, sqlite_stack.headers
    r = c.get("/v1/jobs/job_nope", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = c.get("/v1/jobs/job_nope/video", headers=h)
    assert r.status_code == 404
    r = c.get("/v1/nothing-here", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = c.get("/v1/jobs?status=exploded", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_after_every_bad_request_the_api_and_worker_still_serve(sqlite_stack: Stack) -> None:
    # Given every bad job request of this module, sent again here (whatever ran before)
    for what, kw, status, _code, _field in CASES:
        assert post_job(sqlite_stack, **kw).status_code == status, what
    # When a good job is sent
    image = sqlite_stack.upload()
    done = sqlite_stack.wait(sqlite_stack.submit(image["id"], params={"num_inference_steps": 2, "num_frames": 4})["id"])
    # Then it renders
    assert done["status"] == "succeeded"
    assert sqlite_stack.workers[0].poll() is None
    assert sqlite_stack.client.get("/readyz").status_code == 200
