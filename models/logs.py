"""Process logging: one JSON object per line (timestamp, level, logger, message, job_id when a job is
concerned), or the plain human format with SVDQ_LOG_FORMAT=text. Every process role calls setup_logging."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

# the job the current task is about (worker); threads a task starts copy it explicitly
current_job_id: ContextVar[str | None] = ContextVar("svdq_job_id", default=None)
# the API request in progress, as its ASGI scope: routing fills in its path parameters (job_id among them)
# only after the middleware that sets this ran, so the job id is looked up when a line is logged
current_request: ContextVar[MutableMapping[str, Any] | None] = ContextVar("svdq_request", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Defence in depth: code never logs these on purpose, but an exception text may quote a URL or header.
_REDACTIONS = (
    # a presigned URL's query carries the signature and credential: keep the object's address only
    (re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*X-Amz-[^\s'\"]*", re.IGNORECASE), r"\1?[redacted]"),
    (re.compile(r"(bearer\s+)[^\s'\",]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\bsvdq_[A-Za-z0-9_-]{20,}"), "svdq_[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{16,}"), "whsec_[redacted]"),
)


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def log_format() -> str:
    """'json' (the default for every process) or 'text' (SVDQ_LOG_FORMAT=text, what `svdq dev` uses)."""
    return "text" if os.environ.get("SVDQ_LOG_FORMAT", "json").strip().lower() == "text" else "json"


def job_id_in_context() -> str | None:
    job_id = current_job_id.get()
    if job_id is None and (scope := current_request.get()) is not None:
        value = (scope.get("path_params") or {}).get("job_id")
        job_id = str(value) if value else None
    return job_id


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


JOB_ID = re.compile(r"\bjob_[0-9a-f]{24}\b")


class JobIdFilter(logging.Filter):
    """Stamps each record with its job: the caller's extra={'job_id': ...}, else the job in context, else the one
    job id the message names (a library's line about a job, e.g. Celery's "Task svdq.render[job_...] received")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_in_context() or named_job(record)
        return True


def named_job(record: logging.LogRecord) -> str | None:
    try:
        named = set(JOB_ID.findall(record.getMessage()))
    except Exception:  # noqa: BLE001 - a record whose arguments do not format is not ours to fail
        return None
    return named.pop() if len(named) == 1 else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        job_id = getattr(record, "job_id", None) or job_id_in_context()
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Replace the root logger's handlers with one stderr handler in the chosen format; route warnings
    and uncaught exceptions through it, so a log shipper sees nothing but well-formed lines."""
    fmt = fmt or log_format()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else RedactingFormatter(TEXT_FORMAT))
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request's full URL at INFO: webhook URLs and image_url links may carry tokens or signatures
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.captureWarnings(True)

    def log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logging.getLogger("svdq").critical("uncaught exception", exc_info=(kind, exc, tb))

    def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            logging.getLogger("svdq").critical("uncaught exception in thread %s",
                                               getattr(args.thread, "name", "?"),
                                               exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = log_uncaught
    threading.excepthook = log_uncaught_in_thread


def adopt_library_logs() -> None:
    """transformers and diffusers log through handlers of their own (their format, propagation off) and
    draw progress bars on stderr; in a worker, send their lines through the root handler and drop the bars.
    Imports them, and so torch: for the worker only, after CUDA_VISIBLE_DEVICES is set."""
    import importlib

    for name in ("transformers.utils.logging", "diffusers.utils.logging"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.disable_default_handler()
        module.enable_propagation()
        module.disable_progress_bar()
