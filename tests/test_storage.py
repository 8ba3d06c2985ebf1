"""Both stores behind one interface: a local directory, and S3 over real HTTP (moto's server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from models.settings import Settings
from models.storage import LocalStore, ObjectMissing, S3Store, StorageError, job_key, open_store


def test_local_store_round_trip_and_refuses_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    store.put(job_key("job_1", "video.mp4"), b"abc", "video/mp4")
    assert store.get("jobs/job_1/video.mp4") == b"abc" and store.exists("jobs/job_1/video.mp4")
    assert store.presigned_url("jobs/job_1/video.mp4") is None
    with pytest.raises(ObjectMissing):
        store.get("jobs/none")
    for bad in ("../etc/passwd", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(ValueError):
            store.put(bad, b"x", "text/plain")
    assert not list((tmp_path / "r" / "jobs" / "job_1").glob(".tmp-*"))  # no half-written leftovers


def test_s3_store_round_trip_with_a_presigned_url_that_downloads(s3_endpoint: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    settings = Settings(_env_file=None, storage_url="s3://unit-bucket/pre/fix", s3_endpoint_url=s3_endpoint)
    store = open_store(settings)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    store.put("jobs/j/video.mp4", b"video-bytes", "video/mp4")
    assert store.get("jobs/j/video.mp4") == b"video-bytes" and store.exists("jobs/j/video.mp4")
    assert not store.exists("jobs/j/other")
    with pytest.raises(ObjectMissing):
        store.get("jobs/j/other")
    url = store.presigned_url("jobs/j/video.mp4", "video/mp4")
    assert url is not None and "pre/fix/jobs/j/video.mp4" in url and "X-Amz-Signature" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"video-bytes" and r.headers["content-type"] == "video/mp4"


def test_an_unreachable_s3_endpoint_is_a_storage_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from client.procs import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Store("b", "", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
                    presign_expiry_s=60)
    with pytest.raises(StorageError):
        store.check()


def test_storage_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        open_store(Settings(_env_file=None, storage_url="ftp://x"))
    with pytest.raises(ValueError, match="names no bucket"):
        open_store(Settings(_env_file=None, storage_url="s3:///prefix"))
