"""Object storage behind one small interface: a local directory or an S3-compatible bucket.

Keys are deterministic per job (`jobs/<id>/video.mp4`), so a second render of the same job overwrites
its own objects and never adds new ones."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from models.settings import Settings


class StorageError(Exception):
    """The store could not be reached or refused an operation; usually transient."""


class ObjectMissing(StorageError):
    pass


class ResultStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete_many(self, keys: list[str]) -> None: ...
    def presigned_url(self, key: str, content_type: str | None = None) -> str | None: ...
    def check(self) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
        raise ValueError(f"bad storage key {key!r}")
    return key


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.local_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # readers see the whole object or none of it
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.local_path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete_many(self, keys: list[str]) -> None:
        """Removes each object; one already gone is not an error."""
        for key in keys:
            self.local_path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, content_type: str | None = None) -> str | None:
        return None  # the API serves local objects itself

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"results directory {self.root} is not writable")


class S3Store:
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None, region: str,
                 presign_expiry_s: int) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.expiry = presign_expiry_s
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=30),
        )

    def _key(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> Path | None:
        return None

    def _call(self, fn: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, fn)(**kw)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(kw.get("Key", "")) from exc
            raise StorageError(f"S3 {fn} failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {fn} failed: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        body = self._call("get_object", Bucket=self.bucket, Key=self._key(key))["Body"]
        data: bytes = body.read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            return False
        return True

    def delete_many(self, keys: list[str]) -> None:
        """Removes each object (DeleteObjects, up to 1000 a request); one already gone is not an error. Raises
        StorageError when any key was not deleted, so the caller keeps its record and tries again."""
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            answer = self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                raise StorageError(f"S3 delete_objects left {len(failed)} objects, first {first.get('Key')}: "
                                   f"{first.get('Code')} {first.get('Message', '')}".rstrip())

    def presigned_url(self, key: str, content_type: str | None = None) -> str | None:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._key(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        url: str = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.expiry)
        return url

    def check(self) -> None:
        self._call("head_bucket", Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        try:
            self.check()
        except StorageError:
            self._call("create_bucket", Bucket=self.bucket)


def open_store(settings: Settings) -> LocalStore | S3Store:
    url = settings.storage_url
    if url.startswith("file://"):
        return LocalStore(Path(url[len("file://"):]))
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"SVDQ_STORAGE_URL {url!r} names no bucket; use s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=settings.s3_endpoint_url,
                       region=settings.s3_region, presign_expiry_s=settings.presign_expiry_s)
    raise ValueError(f"SVDQ_STORAGE_URL {url!r} must start with file:// or s3://")


def job_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def image_key(image_id: str) -> str:
    return f"images/{image_id}.png"
