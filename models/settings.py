"""One settings class for every process role, read from SVDQ_* variables and a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.registry import REGISTRY

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "dev-key", "password", "test", "postgres", "svdq",
                       "minioadmin", "admin", "root", "redis"}


class Settings(BaseSettings):
    # errors never echo the input: it holds secrets
    model_config = SettingsConfigDict(env_prefix="SVDQ_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    env: Literal["dev", "prod"] = "dev"  # prod refuses placeholder secrets
    # repr=False: these may hold passwords, and settings objects end up in logs and tracebacks
    database_url: str = Field(default="sqlite:///var/svdq.db", repr=False)
    redis_url: str | None = Field(default=None, repr=False)
    storage_url: str = "file://var/results"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    presign_expiry_s: int = 3600
    bootstrap_api_key: str | None = Field(default=None, repr=False)
    # read only to refuse a placeholder outside dev; boto3 reads the credentials itself
    aws_secret_access_key: str | None = Field(default=None, validation_alias="AWS_SECRET_ACCESS_KEY", repr=False)
    # user:password[,user2:password2]; required outside dev
    flower_basic_auth: str | None = Field(default=None, repr=False)

    # weights sources: a hub id or a local directory (SVDQ_MODEL_<NAME>)
    model_svd: str = "stabilityai/stable-video-diffusion-img2vid"
    model_svd_xt: str = "stabilityai/stable-video-diffusion-img2vid-xt"
    model_svd_xt_1_1: str = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    model_tiny: str | None = None  # None: built once into cache_dir
    # what a job or sweep that names no model renders with (GET /v1/models marks it); the clients never pick one
    default_model: str = "tiny"
    # the longest one job event stream stays open (s; 0: until the job ends); the client then reconnects with
    # Last-Event-ID and misses nothing. Below a proxy's idle or stream limit, it ends cleanly instead of cut
    sse_max_s: float = 300.0
    # a running job's live preview at most this often (s; worker/preview.py); 0: no previews from this worker
    preview_every_s: float = 0.5
    # a hub id's revision (branch, tag or commit; SVDQ_MODEL_<NAME>_REVISION): what `svdq models pull` fetches and
    # workers load, recorded with every job; unset: main (models/weights.py)
    model_svd_revision: str | None = None
    model_svd_xt_revision: str | None = None
    model_svd_xt_1_1_revision: str | None = None
    cache_dir: Path = Path("var/models")
    # learned post-processing, local weights files; unset: the method "learned" is not offered (see GET /v1/models)
    interpolate_weights: Path | None = None  # a RIFE v4.6 IFNet state dict (flownet.pkl)
    upscale_weights: Path | None = None  # a Real-ESRGAN-family model spandrel loads (.pth / .safetensors)

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # GPU memory (worker/memory.py): auto picks full, low (forward chunking) or offload from free memory
    memory_mode: Literal["auto", "full", "low", "offload"] = "auto"
    gpu_memory_budget_gb: float = 24.0  # GiB the plan may use even on a larger card (0: all free memory)
    channels_last: bool = True  # the UNet's and VAE's 2-D conv weights channels-last on CUDA
    compile: bool = False  # torch.compile the UNet; compiled by a warm-up render at worker start
    compile_mode: str = "default"  # torch.compile mode (inductor only)
    compile_backend: str = "inductor"  # "eager": Dynamo without code generation (tests, debugging)
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # longer than any render may take: Celery redelivers unacked messages after it
    visibility_timeout_s: int = 6 * 3600
    progress_interval_s: float = 0.5
    max_sweep_cells: int = 500
    # requests using the database at once per API process; below the pool's 30 connections (see api.request_limits)
    max_concurrent_requests: int = 24
    rate_limit_per_s: int = 50  # requests per second per key, across API replicas (0: off)
    # an API process may answer from its memory of a key this long; a revocation (or a change of the key's limits) is
    # broadcast over Redis and applies at once in every process that hears it, within this bound in one that does not
    key_cache_s: float = 5.0
    api_workers: int = 1  # `svdq api` processes sharing its port (--workers)
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
    # retention (worker/retention.py, run by the maintenance pass); 0: keep forever. An Idempotency-Key dedups
    # retries this long after its first request; a job's video and poster (and a sweep's grids) are deleted this
    # long after the job (the sweep, and every job that reused the result) ended, and the job says so
    idempotency_retention_s: float = Field(default=24 * 3600, ge=0)
    result_retention_s: float = Field(default=7 * 24 * 3600, ge=0)
    db_retry_s: float = 300.0  # a finished render retries its status write this long through a DB outage
    shutdown_grace_s: float = 60.0  # on SIGTERM, the running render gets this long before it is handed back
    worker_metrics_port: int = 9101  # the worker's Prometheus exporter (`svdq worker --metrics-port`); 0: off
    # the address it binds; unset: loopback in dev (nothing else on the network reads it), every interface in prod
    worker_metrics_host: str | None = None

    def metrics_bind_host(self) -> str:
        if self.worker_metrics_host:
            return self.worker_metrics_host
        return "127.0.0.1" if self.env == "dev" else "0.0.0.0"

    @model_validator(mode="after")
    def _no_placeholder_secrets_outside_dev(self) -> Settings:
        if self.env != "dev" and self.bootstrap_api_key is not None:
            if is_weak(self.bootstrap_api_key, 16):
                raise ValueError(
                    "SVDQ_BOOTSTRAP_API_KEY is a placeholder or shorter than 16 characters; "
                    "set a real secret (or SVDQ_ENV=dev for local use)"
                )
        return self

    @model_validator(mode="after")
    def _default_model_exists(self) -> Settings:
        if self.default_model not in REGISTRY:
            raise ValueError(f"SVDQ_DEFAULT_MODEL names no model: choose one of {', '.join(REGISTRY)}")
        return self

    @model_validator(mode="after")
    def _flower_credentials_are_real(self) -> Settings:
        for entry in self.flower_basic_auth.split(",") if self.flower_basic_auth else []:
            user, _, password = entry.partition(":")
            if not user or not password:
                raise ValueError("SVDQ_FLOWER_BASIC_AUTH must be user:password (several separated by commas)")
            if self.env != "dev" and is_weak(password, 12):
                raise ValueError(
                    f"SVDQ_FLOWER_BASIC_AUTH: the password of {user!r} is a placeholder or shorter than 12 "
                    "characters; set a real one (or SVDQ_ENV=dev for local use)"
                )
        return self

    @model_validator(mode="after")
    def _no_placeholder_passwords_outside_dev(self) -> Settings:
        if self.env == "dev":
            return self
        named = {"SVDQ_DATABASE_URL": url_password(self.database_url),
                 "SVDQ_REDIS_URL": url_password(self.redis_url or ""),
                 "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key}
        for name, secret in named.items():
            if secret is not None and is_weak(secret, 12):
                raise ValueError(f"{name} holds a placeholder password or one shorter than 12 characters; "
                                 "set a real secret (or SVDQ_ENV=dev for local use)")
        return self

    def model_source(self, name: str) -> str | None:
        value: str | None = getattr(self, "model_" + name.replace("-", "_"))
        return value

    def model_revision(self, name: str) -> str | None:
        value: str | None = getattr(self, "model_" + name.replace("-", "_") + "_revision", None)
        return value or None

    def learned_stages(self) -> frozenset[str]:
        """The post-processing stages that have learned weights configured (API and workers share these)."""
        return frozenset(stage for stage, path in (("interpolate", self.interpolate_weights),
                                                   ("upscale", self.upscale_weights)) if path is not None)


def is_weak(secret: str, min_length: int) -> bool:
    """A placeholder (`changeme`, `minioadmin`, ...) or shorter than min_length: refused outside dev."""
    return secret.lower() in PLACEHOLDER_SECRETS or len(secret) < min_length


def url_password(url: str) -> str | None:
    """The password in a URL like postgresql://user:password@host/db, or None when it has none."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password is not None else None
