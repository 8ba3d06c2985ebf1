"""`AsyncClient`: the SDK's surface on httpx.AsyncClient, for asyncio programs. It drives the same
operations, retry policy and watch as the sync `Client` (client._http); only the I/O is awaited."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from client import _http as ops
from client._errors import JobFailed
from client._events import Resume
from client._http import Call, ImageArg, JobRef, Op, ProgressCallback, RetryPolicy, SvdqError, Watch
from client.types import Image, Job, Model, Page, Sweep

T = TypeVar("T")


class AsyncClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 5, retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url, headers = ops.connection(base_url, api_key)
        self.retry = retry or RetryPolicy(retries=retries)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout,
                                      transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, call: Call) -> Any:
        for attempt in itertools.count():
            try:
                response = await self.http.request(**call.kwargs())
            except httpx.TransportError as exc:
                delay = self.retry.after_error(attempt, exc)
            else:
                if (asked := self.retry.after_response(attempt, response)) is None:
                    return ops.decode(response)
                delay = asked
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _run(self, op: Op[T]) -> T:
        answer: Any = None
        error: SvdqError | None = None
        try:
            while True:
                call = ops.advance(op, answer, error)
                try:
                    answer, error = await self.send(call), None
                except SvdqError as exc:
                    answer, error = None, exc
        except StopIteration as end:
            result: T = end.value
            return result

    async def upload_image(self, image: ImageArg) -> Image:
        return await self._run(ops.upload_image(image))

    async def submit(self, image: ImageArg | None = None, *, image_id: str | None = None, model: str | None = None,
                     output: dict[str, Any] | None = None, priority: int | None = None,
                     postprocess: dict[str, Any] | None = None, webhook_url: str | None = None,
                     reuse: bool = True, idempotency_key: str | None = None,
                     webhook_events_filter: list[str] | None = None, preview: bool | None = None,
                     **params: Any) -> Job:
        spec = {"model": model, "params": params, "output": output, "priority": priority,
                "postprocess": postprocess, "webhook_url": webhook_url, "reuse": reuse,
                "webhook_events_filter": webhook_events_filter, "preview": preview}
        return await self._run(ops.submit(image, image_id, idempotency_key, spec))

    async def run(self, image: ImageArg | None = None, *, model: str | None = None,
            output_path: str | Path | None = None, on_progress: ProgressCallback | None = None,
            timeout: float | None = None, **kwargs: Any) -> Job:
        """One call, as replicate.run: submits (every `submit` argument and render parameter is taken), waits
        for the end and answers the succeeded job, its video saved to `output_path` (and checked) when given.
        A job that ended failed or canceled raises JobFailed, which carries the job. `model=None` is the
        server's default model (GET /v1/models names it)."""
        job = await self.wait(await self.submit(image, model=model, **kwargs), on_progress=on_progress, timeout=timeout)
        if job.status != "succeeded":
            raise JobFailed(job)
        if output_path is not None:
            await self.download(job, output_path)
        return job

    async def get(self, job: JobRef) -> Job:
        return await self._run(ops.get(job))

    async def cancel(self, job: JobRef) -> Job:
        return await self._run(ops.cancel(job))

    async def rerun(self, job: JobRef, *, idempotency_key: str | None = None) -> Job:
        return await self._run(ops.rerun(job, idempotency_key))

    async def jobs_page(self, *, status: str | None = None, sweep_id: str | None = None, limit: int = 50,
                        cursor: str | None = None) -> Page[Job]:
        return await self._run(ops.jobs_page(status, sweep_id, limit, cursor))

    async def list_jobs(self, *, status: str | None = None, sweep_id: str | None = None,
                        page_size: int = 50) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.jobs_page(status=status, sweep_id=sweep_id, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if not (cursor := page.next_cursor):
                return

    async def wait(self, job: JobRef, *, on_progress: ProgressCallback | None = None,
                   timeout: float | None = None, poll_s: float = 0.5) -> Job:
        watch, resume = Watch(ops.job_id(job), on_progress, timeout), Resume()
        while True:
            try:
                async with aconnect_sse(self.http, "GET", watch.events_path, headers=resume.headers(),
                                        timeout=resume.timeout(watch.deadline)) as es:
                    if es.response.status_code != 200:  # 204: it ended with the last event seen; else: poll
                        break
                    async for event in es.aiter_sse():
                        resume.heard(event)
                        if event.data and (done := watch.event(event.data)) is not None:
                            return done
            except (httpx.TransportError, SSEError):
                watch.check_deadline()
            if not resume.broke():
                break
            await asyncio.sleep(resume.retry_s)
        while (done := watch.see(await self.get(watch.job_id))) is None:
            await asyncio.sleep(poll_s)
        return done

    async def download(self, job: JobRef, path: str | Path) -> Path:
        sink = ops.Sink(await self._run(ops.finished(job)), path, self.base_url)
        client = self.http if sink.own else httpx.AsyncClient(timeout=120)
        try:
            with sink:
                async with client.stream("GET", sink.url, follow_redirects=True) as r:
                    sink.start(r)
                    async for chunk in r.aiter_bytes():
                        sink.write(chunk)
        finally:
            if client is not self.http:
                await client.aclose()
        return sink.verified()

    async def preview(self, job: JobRef) -> bytes | None:
        return await self._run(ops.preview(job))

    async def models(self) -> list[Model]:
        return await self._run(ops.models())

    async def sweep(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> Sweep:
        return await self._run(ops.sweep(spec, idempotency_key))

    async def get_sweep(self, sweep_id: str) -> Sweep:
        return await self._run(ops.get_sweep(sweep_id))

    async def cancel_sweep(self, sweep_id: str) -> Sweep:
        return await self._run(ops.cancel_sweep(sweep_id))

    async def wait_sweep(self, sweep_id: str, *, on_update: Callable[[Sweep], None] | None = None,
                         poll_s: float = 1.0) -> Sweep:
        while True:
            sweep = await self.get_sweep(sweep_id)
            if on_update:
                on_update(sweep)
            if sweep.done:
                return sweep
            await asyncio.sleep(poll_s)
