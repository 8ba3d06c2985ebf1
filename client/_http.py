"""What the sync `Client` and the `AsyncClient` share, written once and free of I/O.

Each API operation is a generator (`Op`) that yields the `Call`s it needs and receives their decoded
answers; `Client._run` and `AsyncClient._run` drive the same generator with blocking or awaited sends.
`RetryPolicy` decides, from a response or a transport error, whether and how long to wait before the next
try; `Watch` turns job snapshots (from SSE or polling) into progress callbacks and an end; `Sink` writes
and checks a download. The clients only move bytes."""

from __future__ import annotations

import email.utils
import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from client._errors import SvdqError as SvdqError  # re-exported: the ops raise it
from client._images import ImageArg as ImageArg  # re-exported: the clients take it
from client._images import image_file, is_url
from client._watch import ProgressCallback as ProgressCallback  # re-exported for the clients
from client._watch import Sink as Sink
from client._watch import Watch as Watch
from client.types import Image, Job, Model, Page, Sweep

T = TypeVar("T")
Op = Generator["Call", Any, T]
JobRef = Job | str
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# a dropped or refused connection, a timeout: worth another try; a malformed URL or request is not
RETRY_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass
class Call:
    """One HTTP request. A create carries one Idempotency-Key for all its tries, so a submit whose answer
    was lost is retried into the job it already made, never a second one."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    idempotency_key: str | None = None

    @classmethod
    def create(cls, path: str, key: str | None = None, **kw: Any) -> Call:
        return cls("POST", path, idempotency_key=key or uuid.uuid4().hex, **kw)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"method": self.method, "url": self.path}
        if self.idempotency_key:
            kw["headers"] = {"Idempotency-Key": self.idempotency_key}
        for name in ("json", "params", "files"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        return kw


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    max_retry_after: float = 60.0  # a server asking for longer than this is treated as down

    def backoff(self, attempt: int) -> float:
        return float(min(self.base_delay * 2**attempt, self.max_delay))

    def after_error(self, attempt: int, error: Exception) -> float:
        """Seconds to wait before trying again; re-raises when the error is final."""
        if attempt >= self.retries or not isinstance(error, RETRY_ERRORS):
            raise error
        return self.backoff(attempt)

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again, or None: this answer is the answer."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        asked = retry_after_seconds(response.headers.get("retry-after"))
        if asked is None:
            return self.backoff(attempt)
        return asked if asked <= self.max_retry_after else None


def decode(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            code, message, details = err["code"], err.get("message", ""), err.get("details")
        except (ValueError, KeyError, TypeError):
            code, message, details = f"http_{response.status_code}", response.text[:200], None
        raise SvdqError(response.status_code, code, message, details)
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response


def connection(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The API's URL and auth headers, from the arguments or SVDQ_API_URL / SVDQ_API_KEY."""
    url = (base_url or os.environ.get("SVDQ_API_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = api_key or os.environ.get("SVDQ_API_KEY")
    if not key:
        raise SvdqError(0, "no_api_key", "Give an API key (api_key=... or SVDQ_API_KEY).")
    return url, {"Authorization": f"Bearer {key}"}


def job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


# operations ----------------------------------------------------------------------------------------


def upload_image(image: ImageArg) -> Op[Image]:
    if is_url(image):
        raise SvdqError(0, "no_image", "upload_image takes the image itself; give a URL to submit or run, "
                        "which send it as image_url for the server to fetch.")
    name, data = image_file(image)
    return Image.model_validate((yield Call("POST", "/v1/images", files={"image": (name, data)})))


def submit(image: ImageArg | None, image_id: str | None, idempotency_key: str | None,
           spec: dict[str, Any]) -> Op[Job]:
    """Uploads the image (the same bytes give the same id, so that is safe to repeat), or names its URL, then
    creates."""
    body = {k: v for k, v in spec.items() if v is not None}
    if image_id is None and is_url(image):
        body["image_url"] = image  # the server fetches it (and refuses private addresses)
    elif image_id is None:
        if image is None:
            raise SvdqError(0, "no_image", "Give an image (a path, an http(s) URL, bytes, a file object or a PIL "
                            "image) or image_id.")
        body["image_id"] = (yield from upload_image(image)).id
    else:
        body["image_id"] = image_id
    return Job.model_validate((yield Call.create("/v1/jobs", idempotency_key, json=body)))


def get(job: JobRef) -> Op[Job]:
    return Job.model_validate((yield Call("GET", f"/v1/jobs/{job_id(job)}")))


def advance(op: Op[T], answer: Any, error: SvdqError | None) -> Call:
    """The op's next call, given the last call's answer, or with its error raised inside the op (which may
    handle it); StopIteration carries the op's result."""
    return op.throw(error) if error is not None else op.send(answer)


def cancel(job: JobRef) -> Op[Job]:
    try:
        return Job.model_validate((yield Call("POST", f"/v1/jobs/{job_id(job)}/cancel")))
    except SvdqError as exc:
        # a cancel retried after a dropped answer finds the job canceled by its first try: that is success
        if exc.code != "job_finished":
            raise
        now = Job.model_validate((yield Call("GET", f"/v1/jobs/{job_id(job)}")))
        if now.status != "canceled":
            raise
        return now


def rerun(job: JobRef, idempotency_key: str | None) -> Op[Job]:
    return Job.model_validate((yield Call.create(f"/v1/jobs/{job_id(job)}/rerun", idempotency_key)))


def jobs_page(status: str | None, sweep_id: str | None, limit: int, cursor: str | None) -> Op[Page[Job]]:
    query = {"status": status, "sweep_id": sweep_id, "limit": limit, "cursor": cursor}
    page = yield Call("GET", "/v1/jobs", params={k: v for k, v in query.items() if v is not None})
    return Page[Job].model_validate(page)


def finished(job: JobRef) -> Op[Job]:
    """The job, succeeded with a result; read fresh unless the caller already holds that."""
    if not (isinstance(job, Job) and job.result is not None):
        job = yield from get(job)
    if job.result_expired_at is not None:  # as GET /v1/jobs/{id}/video would answer
        raise SvdqError(410, "result_expired", f"The result of job {job.id} was deleted on "
                        f"{job.result_expired_at:%Y-%m-%d %H:%M} UTC, when its retention ran out; rerun the job "
                        "to render it again.")
    if job.status != "succeeded" or job.result is None:
        raise SvdqError(409, "job_not_finished", f"Job {job.id} is {job.status}; only a succeeded job has a video.")
    return job


def sweep(spec: dict[str, Any], idempotency_key: str | None) -> Op[Sweep]:
    return Sweep.model_validate((yield Call.create("/v1/sweeps", idempotency_key, json=spec)))


def get_sweep(sweep_id: str) -> Op[Sweep]:
    return Sweep.model_validate((yield Call("GET", f"/v1/sweeps/{sweep_id}")))


def cancel_sweep(sweep_id: str) -> Op[Sweep]:
    return Sweep.model_validate((yield Call("POST", f"/v1/sweeps/{sweep_id}/cancel")))


def preview(job: JobRef) -> Op[bytes | None]:
    """The job's latest live preview (a JPEG of a few frames from its latents), or None while it has none."""
    try:
        answer = yield Call("GET", f"/v1/jobs/{job_id(job)}/preview")
    except SvdqError as exc:
        if exc.code != "no_preview":
            raise
        return None
    return bytes(answer.content)


def models() -> Op[list[Model]]:
    return [Model.model_validate(m) for m in (yield Call("GET", "/v1/models"))]

