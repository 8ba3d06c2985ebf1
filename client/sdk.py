"""The Python SDK: `Client(base_url, api_key)` over httpx, answering with the typed models of
`client.types`. Creates carry an Idempotency-Key kept across retries, so a retried submit never makes two
jobs; 429/502/503/504 and dropped connections are retried, honouring Retry-After. `AsyncClient`
(client.async_sdk) has the same surface; both drive the operations written once in client._http."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse

from client import _http as ops
from client._errors import JobFailed
from client._events import Resume
from client._http import Call, ImageArg, JobRef, Op, ProgressCallback, RetryPolicy, SvdqError, Watch
from client.types import Image, Job, Model, Page, Sweep

__all__ = ["Client", "Image", "Job", "JobFailed", "Model", "Page", "RetryPolicy", "SvdqError", "Sweep"]
T = TypeVar("T")


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 5, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url, headers = ops.connection(base_url, api_key)
        self.retry = retry or RetryPolicy(retries=retries)
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call) -> Any:
        """One call, tried until it has an answer that is not worth retrying; that answer decoded."""
        for attempt in itertools.count():
            try:
                response = self.http.request(**call.kwargs())
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, exc)
            else:
                if (asked := self.retry.after_response(attempt, response)) is None:
                    return ops.decode(response)
                delay = asked
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _run(self, op: Op[T]) -> T:
        answer: Any = None
        error: SvdqError | None = None
        try:
            while True:
                call = ops.advance(op, answer, error)
                try:
                    answer, error = self.send(call), None
                except SvdqError as exc:
                    answer, error = None, exc
        except StopIteration as end:
            result: T = end.value
            return result

    # images and jobs ---------------------------------------------------------------------------------

    def upload_image(self, image: ImageArg) -> Image:
        return self._run(ops.upload_image(image))

    def submit(self, image: ImageArg | None = None, *, image_id: str | None = None, model: str | None = None,
               output: dict[str, Any] | None = None, priority: int | None = None,
               postprocess: dict[str, Any] | None = None, webhook_url: str | None = None, reuse: bool = True,
               idempotency_key: str | None = None, webhook_events_filter: list[str] | None = None,
               preview: bool | None = None, **params: Any) -> Job:
        """A new job; every other keyword is a render parameter (`seed=42`). `preview=False`: no live previews."""
        spec = {"model": model, "params": params, "output": output, "priority": priority,
                "postprocess": postprocess, "webhook_url": webhook_url, "reuse": reuse,
                "webhook_events_filter": webhook_events_filter, "preview": preview}
        return self._run(ops.submit(image, image_id, idempotency_key, spec))

    def run(self, image: ImageArg | None = None, *, model: str | None = None,
            output_path: str | Path | None = None, on_progress: ProgressCallback | None = None,
            timeout: float | None = None, **kwargs: Any) -> Job:
        """One call, as replicate.run: submits (every `submit` argument and render parameter is taken), waits
        for the end and answers the succeeded job, its video saved to `output_path` (and checked) when given.
        A job that ended failed or canceled raises JobFailed, which carries the job. `model=None` is the
        server's default model (GET /v1/models names it)."""
        job = self.wait(self.submit(image, model=model, **kwargs), on_progress=on_progress, timeout=timeout)
        if job.status != "succeeded":
            raise JobFailed(job)
        if output_path is not None:
            self.download(job, output_path)
        return job

    def get(self, job: JobRef) -> Job:
        return self._run(ops.get(job))

    def cancel(self, job: JobRef) -> Job:
        return self._run(ops.cancel(job))

    def rerun(self, job: JobRef, *, idempotency_key: str | None = None) -> Job:
        return self._run(ops.rerun(job, idempotency_key))

    def jobs_page(self, *, status: str | None = None, sweep_id: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> Page[Job]:
        return self._run(ops.jobs_page(status, sweep_id, limit, cursor))

    def list_jobs(self, *, status: str | None = None, sweep_id: str | None = None,
                  page_size: int = 50) -> Iterator[Job]:
        """Every matching job, newest first, fetching the next page only when this one is used up."""
        cursor = None
        while True:
            page = self.jobs_page(status=status, sweep_id=sweep_id, limit=page_size, cursor=cursor)
            yield from page.items
            if not (cursor := page.next_cursor):
                return

    def wait(self, job: JobRef, *, on_progress: ProgressCallback | None = None, timeout: float | None = None,
             poll_s: float = 0.5) -> Job:
        """Follows the job's event stream to its end, calling `on_progress` on each change; polls when
        the stream cannot be had or breaks off."""
        watch, resume = Watch(ops.job_id(job), on_progress, timeout), Resume()
        while True:
            try:
                with connect_sse(self.http, "GET", watch.events_path, headers=resume.headers(),
                                 timeout=resume.timeout(watch.deadline)) as es:
                    if es.response.status_code != 200:  # 204: it ended with the last event seen; else: poll
                        break
                    for event in es.iter_sse():
                        resume.heard(event)
                        if event.data and (done := watch.event(event.data)) is not None:
                            return done
            except (httpx.TransportError, SSEError):
                watch.check_deadline()
            if not resume.broke():
                break
            time.sleep(resume.retry_s)
        while (done := watch.see(self.get(watch.job_id))) is None:
            time.sleep(poll_s)
        return done

    def download(self, job: JobRef, path: str | Path) -> Path:
        """Saves the job's video to `path` and checks it against the job's sha256."""
        sink = ops.Sink(self._run(ops.finished(job)), path, self.base_url)
        client = self.http if sink.own else httpx.Client(timeout=120)
        try:
            with sink, client.stream("GET", sink.url, follow_redirects=True) as r:
                sink.start(r)
                for chunk in r.iter_bytes():
                    sink.write(chunk)
        finally:
            if client is not self.http:
                client.close()
        return sink.verified()

    def preview(self, job: JobRef) -> bytes | None:
        """The running job's latest live preview, a JPEG (None before its first, or with preview=False)."""
        return self._run(ops.preview(job))

    def models(self) -> list[Model]:
        return self._run(ops.models())

    # sweeps ------------------------------------------------------------------------------------------

    def sweep(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> Sweep:
        return self._run(ops.sweep(spec, idempotency_key))

    def get_sweep(self, sweep_id: str) -> Sweep:
        return self._run(ops.get_sweep(sweep_id))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return self._run(ops.cancel_sweep(sweep_id))

    def wait_sweep(self, sweep_id: str, *, on_update: Callable[[Sweep], None] | None = None,
                   poll_s: float = 1.0) -> Sweep:
        """Polls until every cell has ended and every comparison grid is composed."""
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_update:
                on_update(sweep)
            if sweep.done:
                return sweep
            time.sleep(poll_s)


from client.async_sdk import AsyncClient  # noqa: E402 - one import for both clients

__all__ += ["AsyncClient"]
