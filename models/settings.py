"""One settings class for every process role, read from SVDQ_* variables and a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "dev-key", "password", "test"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SVDQ_", env_file=".env", extra="ignore")

    env: Literal["dev", "prod"] = "dev"  # prod refuses placeholder secrets
    database_url: str = "sqlite:///var/svdq.db"
    redis_url: str | None = None
    storage_url: str = "file://var/results"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    presign_expiry_s: int = 3600
    bootstrap_api_key: str | None = None

    # weights sources: a hub id or a local directory (SVDQ_MODEL_<NAME>)
    model_svd: str = "stabilityai/stable-video-diffusion-img2vid"
    model_svd_xt: str = "stabilityai/stable-video-diffusion-img2vid-xt"
    model_svd_xt_1_1: str = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    model_tiny: str | None = None  # None: built once into cache_dir
    cache_dir: Path = Path("var/models")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # longer than any render may take: Celery redelivers unacked messages after it
    visibility_timeout_s: int = 6 * 3600
    progress_interval_s: float = 0.5
    max_sweep_cells: int = 500
    # requests using the database at once per API process; below the pool's 30 connections (see api.limits)
    max_concurrent_requests: int = 24
    rate_limit_per_s: int = 50  # requests per second per key, across API replicas (0: off)
    max_open_jobs_per_key: int = 5000  # queued + running per key
    max_queue_depth: int = 100_000  # queued jobs per model before 503 queue_full
    public_url: str = "http://127.0.0.1:8000"  # how webhooks name API-served result URLs
    allow_private_urls: bool = False  # webhooks to loopback/private addresses (local testing only)
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 5.0  # first retry delay; doubles each try, with jitter
    time_limit_s: float | None = None  # per-render limit; None: the model's own
    max_attempts: int = 3  # transient failures and lost workers: a job runs at most this many times
    lease_s: float = 60.0  # a running job's hold; renewed every lease_s/4 while its worker lives
    maintenance_interval_s: float = 10.0  # reaper + reconciler pass
    reconcile_after_s: float = 10.0  # a queued job this old that Redis lacks is enqueued again
    db_retry_s: float = 300.0  # a finished render retries its status write this long through a DB outage
    shutdown_grace_s: float = 60.0  # on SIGTERM, the running render gets this long before it is handed back

    @model_validator(mode="after")
    def _no_placeholder_secrets_outside_dev(self) -> Settings:
        if self.env != "dev" and self.bootstrap_api_key is not None:
            if self.bootstrap_api_key.lower() in PLACEHOLDER_SECRETS or len(self.bootstrap_api_key) < 16:
                raise ValueError(
                    "SVDQ_BOOTSTRAP_API_KEY is a placeholder or shorter than 16 characters; "
                    "set a real secret (or SVDQ_ENV=dev for local use)"
                )
        return self

    def model_source(self, name: str) -> str | None:
        value: str | None = getattr(self, "model_" + name.replace("-", "_"))
        return value
