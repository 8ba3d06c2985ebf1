"""Following a job to its end and saving its video, for both clients: `Watch` turns job snapshots (from SSE
or polling) into progress callbacks and an end; `Sink` writes a download and checks it against the job's
sha256. Free of I/O but the file written."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from client._errors import SvdqError
from client.types import Job

ProgressCallback = Callable[[Job], None]


@dataclass
class Watch:
    """Follows one job through snapshots from any source. The callback sees each change once, never a
    step backwards (a polled row can lag the live stream), and the watch ends at a terminal status."""

    job_id: str
    on_progress: ProgressCallback | None = None
    timeout: float | None = None
    deadline: float | None = field(init=False, default=None)
    last: tuple[Any, ...] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    @property
    def events_path(self) -> str:
        return f"/v1/jobs/{self.job_id}/events"

    def see(self, job: Job) -> Job | None:
        """The job if it has ended; None to keep watching."""
        key = (job.status, job.progress.stage, job.progress.step, job.queue_position)
        backwards = self.last is not None and key[0] == self.last[0] and key[2] < self.last[2]
        if key != self.last and not backwards:
            self.last = key
            if self.on_progress is not None:
                self.on_progress(job)
        if job.done:
            return job
        self.check_deadline()
        return None

    def event(self, data: str) -> Job | None:
        """One event of the stream: its data is a job object."""
        return self.see(Job.model_validate_json(data))

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            seen = f"{self.last[0]}, step {self.last[2]}" if self.last else "nothing heard"
            raise TimeoutError(f"job {self.job_id} did not finish within {self.timeout:g} s ({seen})")


class Sink:
    """Writes a job's video to `path`, then checks its size and sha256 against the job's result."""

    def __init__(self, job: Job, path: str | Path, base_url: str) -> None:
        assert job.result is not None
        self.result, self.path = job.result, Path(path)
        self.url = self.result.video_url
        # the API's own URL needs the key; a presigned storage URL must not be sent it
        self.own = self.url.startswith(base_url)
        self.hash, self.size = hashlib.sha256(), 0
        self.fh: IO[bytes] | None = None

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()

    def start(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise SvdqError(response.status_code, "download_failed",
                            f"Fetching the video answered {response.status_code}; the link may have expired, "
                            "so fetch the job again and retry.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        assert self.fh is not None
        self.fh.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    def verified(self) -> Path:
        if self.size != self.result.bytes or self.hash.hexdigest() != self.result.sha256:
            raise SvdqError(0, "download_corrupt", f"The video at {self.path} does not match the job's sha256 "
                            f"({self.size} of {self.result.bytes} bytes); download it again.")
        return self.path
