"""Where a model's hub weights come from and how they reach the disk: the one allow-list of files the worker loads
(the fp16 safetensors variant and the configs, never the original checkpoints or the full-precision copies), the
revision pin (SVDQ_MODEL_<NAME>_REVISION), and the one download, into the Hugging Face cache, under a file lock so
workers starting together never race for it. `svdq models pull` and the worker's first load both come here.
huggingface_hub (and its filelock) are imported when called: the client installs without them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.settings import Settings

# fnmatch patterns, as huggingface_hub's snapshot_download(allow_patterns=...) applies them; `*` spans `/` too
ALLOW_PATTERNS: tuple[str, ...] = (
    "model_index.json",  # the pipeline's components
    "*/*.json",  # each component's config: config.json, scheduler_config.json, preprocessor_config.json, ...
    "*/*.txt",  # a tokenizer's vocabulary (merges.txt), where a pipeline has one
    "*/*.fp16.safetensors",  # the weights: the fp16 safetensors variant only
    "*/*.fp16-*-of-*.safetensors",  # ... and its shards, where a component is sharded
    "LICENSE*",  # the weights' licence, beside them: the one the pulled revision is under
)
VARIANT = "fp16"  # what the allow-list keeps, so what the worker asks from_pretrained for
DEFAULT_REVISION = "main"
INSTALL_HINT = "pip install 'svdq[worker]'"
_COMMIT = re.compile(r"[0-9a-f]{40}")


class WeightsError(RuntimeError):
    """Why the weights cannot be had, in one sentence for a person (never a traceback). `code`: no_hub_library,
    offline, weights_missing, no_such_dir, hub_refused, hub_unreachable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def allow_patterns() -> list[str]:
    return list(ALLOW_PATTERNS)


def source_variable(name: str) -> str:
    """The variable that names a model's weights: svd-xt -> SVDQ_MODEL_SVD_XT."""
    return f"SVDQ_MODEL_{name.upper().replace('-', '_')}"


def revision_variable(name: str) -> str:
    """The variable that pins a model's revision: svd-xt -> SVDQ_MODEL_SVD_XT_REVISION."""
    return source_variable(name) + "_REVISION"


def pull_command(name: str) -> str:
    return f"svdq models pull {name}"


def is_local(source: str) -> bool:
    """A directory path rather than a hub id (`org/name`): existing, or written as a path."""
    return (Path(source).expanduser().exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1
            or "\\" in source)


@dataclass(frozen=True)
class ModelWeights:
    """A registry model's weights as the settings place them: a hub id at a revision, or a local directory."""

    name: str
    source: str
    revision: str | None  # the pin; None: the hub's main

    @property
    def local(self) -> bool:
        return is_local(self.source)

    @property
    def ref(self) -> str:
        return self.revision or DEFAULT_REVISION

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> ModelWeights | None:
        """None for a model svdq builds itself (tiny, unless SVDQ_MODEL_TINY names weights)."""
        source = settings.model_source(name)
        return None if source is None else cls(name, source, settings.model_revision(name))


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors  # the package loads its submodules lazily: name them
    except ImportError:
        raise WeightsError("no_hub_library", f"huggingface_hub is not installed: {INSTALL_HINT}") from None
    return huggingface_hub


def hub_cache(cache_dir: Path | None = None) -> Path:
    """The Hugging Face hub cache the weights go to: cache_dir, else HF_HUB_CACHE / HF_HOME's hub/ (its default
    ~/.cache/huggingface/hub)."""
    return Path(cache_dir) if cache_dir is not None else Path(_hub().constants.HF_HUB_CACHE)


def offline() -> bool:
    return bool(_hub().constants.HF_HUB_OFFLINE)


def lock_path(repo_id: str, cache_dir: Path | None = None) -> Path:
    """One lock file per repository, next to huggingface_hub's own per-file locks (scan_cache_dir skips .locks)."""
    return hub_cache(cache_dir) / ".locks" / f"models--{repo_id.replace('/', '--')}.svdq.lock"


@contextmanager
def download_lock(repo_id: str, cache_dir: Path | None = None,
                  on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Held by whoever downloads a repository into this cache; another process (or thread) waits for it and then
    finds the files there."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:
        raise WeightsError("no_hub_library", f"filelock is not installed: {INSTALL_HINT}") from None
    path = lock_path(repo_id, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(f"waiting for another process downloading {repo_id} into {hub_cache(cache_dir)} (lock {path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def cached(weights: ModelWeights, cache_dir: Path | None = None) -> Path | None:
    """The complete snapshot of these weights at their revision in the cache, or None. No network."""
    hub = _hub()
    try:
        path = Path(hub.snapshot_download(weights.source, revision=weights.ref, allow_patterns=allow_patterns(),
                                          cache_dir=cache_dir, local_files_only=True))
    except hub.errors.LocalEntryNotFoundError:  # IncompleteSnapshotError too: a download that was cut short
        return None
    except (hub.errors.HFValidationError, OSError):
        return None
    return path if (path / "model_index.json").is_file() else None


def download(weights: ModelWeights, cache_dir: Path | None = None) -> Path:
    """snapshot_download of the allow-listed files at the pinned revision (the hub's progress bars on stderr);
    one sentence (WeightsError) for what a person must fix."""
    hub = _hub()
    errors = hub.errors
    where = f"{weights.source}@{weights.ref}"
    try:
        return Path(hub.snapshot_download(weights.source, revision=weights.ref, allow_patterns=allow_patterns(),
                                          cache_dir=cache_dir))
    except errors.GatedRepoError:
        raise WeightsError("hub_refused", f"{weights.source} is gated: accept its licence on the hub and set HF_TOKEN "
                                          "to a token of that account") from None
    except errors.RevisionNotFoundError:
        raise WeightsError("hub_refused", f"{weights.source} has no revision {weights.ref!r} (set by "
                                          f"{revision_variable(weights.name)})") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError("hub_refused", f"the hub has no repository {weights.source} (or HF_TOKEN may not read "
                                          f"it); set {source_variable(weights.name)}") from None
    except errors.LocalEntryNotFoundError as exc:  # offline, or the hub unreachable, with nothing cached
        if offline():
            raise _missing(weights, cache_dir) from None
        cause = exc.__cause__ or exc
        raise WeightsError("hub_unreachable", f"could not download {where} from {hub.constants.ENDPOINT} "
                                              f"({type(cause).__name__}) and it is not in {hub_cache(cache_dir)}; "
                                              "try again later") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        code = "hub_refused" if 400 <= status < 500 else "hub_unreachable"
        raise WeightsError(code, f"the hub answered {status} for {where}; "
                                 + ("check HF_TOKEN" if code == "hub_refused" else "try again later")) from None


def _missing(weights: ModelWeights, cache_dir: Path | None) -> WeightsError:
    return WeightsError("weights_missing",
                        f"the {weights.name} weights ({weights.source}@{weights.ref}) are not in the Hugging Face "
                        f"cache {hub_cache(cache_dir)} and HF_HUB_OFFLINE=1 forbids downloading them: run "
                        f"`{pull_command(weights.name)}` where the hub is reachable, into this cache")


def pull(weights: ModelWeights, cache_dir: Path | None = None, *,
         on_wait: Callable[[str], None] | None = None) -> Path:
    """`svdq models pull`: resolve the revision on the hub and download what of the allow-list the cache lacks,
    holding the repository's lock."""
    if offline():
        raise WeightsError("offline", f"HF_HUB_OFFLINE=1 is set: unset it to download {weights.source}")
    with download_lock(weights.source, cache_dir, on_wait):
        return download(weights, cache_dir)


def ensure(weights: ModelWeights, cache_dir: Path | None = None, *,
           on_wait: Callable[[str], None] | None = None) -> Path:
    """The worker's first load: the directory to load from. A local directory as it is; hub weights from the cache
    when complete there (no network: a pull is what moves a worker to new weights), downloaded under the lock
    otherwise (a worker that waited finds the first one's files and downloads nothing). Offline and not cached: one
    sentence naming the pull to run."""
    if weights.local:
        path = Path(weights.source).expanduser()
        if not (path / "model_index.json").is_file():
            raise WeightsError("no_such_dir", f"{path} ({source_variable(weights.name)}) is not a diffusers pipeline "
                                              "directory (no model_index.json)")
        return path
    found = cached(weights, cache_dir)
    if found is not None:
        return found
    if offline():
        raise _missing(weights, cache_dir)
    with download_lock(weights.source, cache_dir, on_wait):
        return cached(weights, cache_dir) or download(weights, cache_dir)


def snapshot_commit(path: Path) -> str | None:
    """The commit a hub cache snapshot directory holds (…/snapshots/<commit>), else None."""
    return path.name if path.parent.name == "snapshots" and _COMMIT.fullmatch(path.name) else None


