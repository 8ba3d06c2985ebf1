"""The Python SDK: `Client(base_url, api_key)` over httpx. Creates carry an Idempotency-Key that is kept
across retries, so a retried submit never makes two jobs; 429/503 and dropped connections are retried,
honouring Retry-After."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}
ImageArg = str | Path | bytes


class SvdqError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or []


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 5, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or os.environ.get("SVDQ_API_URL") or "http://127.0.0.1:8000").rstrip("/")
        key = api_key or os.environ.get("SVDQ_API_KEY")
        if not key:
            raise SvdqError(0, "no_api_key", "Give an API key (api_key=... or SVDQ_API_KEY).")
        self.retries = retries
        self.http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport ---------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, create: bool = False, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}) or {})
        if create:
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)  # the same key on every retry
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, headers=headers, **kw)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            if r.status_code in (429, 503) and attempt < self.retries:
                wait = float(r.headers.get("retry-after") or delay)
                time.sleep(min(wait, 30))
                delay = min(delay * 2, 10)
                continue
            if r.status_code >= 400:
                try:
                    err = r.json()["error"]
                except (ValueError, KeyError, TypeError):
                    err = {"code": f"http_{r.status_code}", "message": r.text[:200]}
                raise SvdqError(r.status_code, err.get("code", "error"), err.get("message", ""), err.get("details"))
            return r.json() if r.headers.get("content-type", "").startswith("application/json") else r
        raise AssertionError("unreachable")

    # images and jobs ---------------------------------------------------------------------------------

    def upload_image(self, image: ImageArg) -> dict[str, Any]:
        data, name = _read(image)
        result: dict[str, Any] = self.request("POST", "/v1/images", files={"image": (name, data)})
        return result

    def submit(self, image: ImageArg | None = None, *, image_id: str | None = None, model: str = "tiny",
               output: dict[str, Any] | None = None, priority: int | None = None,
               postprocess: dict[str, Any] | None = None, reuse: bool = True, **params: Any) -> dict[str, Any]:
        if image_id is None:
            if image is None:
                raise SvdqError(0, "no_image", "Give an image (a path or bytes) or image_id.")
            image_id = self.upload_image(image)["id"]
        body: dict[str, Any] = {"model": model, "image_id": image_id, "params": params, "reuse": reuse}
        if output:
            body["output"] = output
        if priority is not None:
            body["priority"] = priority
        if postprocess:
            body["postprocess"] = postprocess
        job: dict[str, Any] = self.request("POST", "/v1/jobs", json=body, create=True)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}")
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return job

    def rerun(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.request("POST", f"/v1/jobs/{job_id}/rerun", create=True)
        return job

    def list_jobs(self, *, status: str | None = None, sweep_id: str | None = None,
                  page_size: int = 50) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            params = {k: v for k, v in {"status": status, "sweep_id": sweep_id, "limit": page_size,
                                        "cursor": cursor}.items() if v is not None}
            page = self.request("GET", "/v1/jobs", params=params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def wait(self, job_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Follows the job's event stream to its end; falls back to polling if the stream breaks."""
        deadline = time.monotonic() + timeout if timeout else None

        def ended(job: dict[str, Any]) -> bool:
            if on_progress:
                on_progress(job)
            if job["status"] in TERMINAL:
                return True
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish in time")
            return False

        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30, read=60)) as r:
                if r.status_code == 200:
                    for line in r.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        job: dict[str, Any] = json.loads(line[6:])
                        if ended(job):
                            return job
        except httpx.TransportError:
            pass
        while not ended(job := self.get(job_id)):
            time.sleep(0.5)
        return job

    def download(self, job: dict[str, Any] | str, path: str | Path) -> Path:
        job = self.get(job) if isinstance(job, str) else job
        if job["status"] != "succeeded":
            raise SvdqError(409, "job_not_finished", f"Job {job['id']} is {job['status']}.")
        return self.fetch_to(job["result"]["video_url"], Path(path))

    def fetch_to(self, url: str, path: Path) -> Path:
        """A result URL: the API's own (sent with the key) or a presigned one (sent without it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        client = self.http if url.startswith(self.base_url) else httpx.Client(timeout=120)
        try:
            with client.stream("GET", url, follow_redirects=True) as r:
                r.raise_for_status()
                with path.open("wb") as fh:
                    for chunk in r.iter_bytes():
                        fh.write(chunk)
        finally:
            if client is not self.http:
                client.close()
        return path

    # sweeps ------------------------------------------------------------------------------------------

    def sweep(self, spec: dict[str, Any]) -> dict[str, Any]:
        sweep: dict[str, Any] = self.request("POST", "/v1/sweeps", json=spec, create=True)
        return sweep

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        sweep: dict[str, Any] = self.request("GET", f"/v1/sweeps/{sweep_id}")
        return sweep

    def wait_sweep(self, sweep_id: str, *, on_update: Callable[[dict[str, Any]], None] | None = None,
                   poll_s: float = 1.0) -> dict[str, Any]:
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_update:
                on_update(sweep)
            grids_done = all(g["status"] in ("done", "failed") for g in sweep["grids"])
            if sweep["status"] in TERMINAL and grids_done:
                return sweep
            time.sleep(poll_s)


def _read(image: ImageArg) -> tuple[bytes, str]:
    if isinstance(image, bytes):
        return image, "image"
    p = Path(image)
    return p.read_bytes(), p.name
