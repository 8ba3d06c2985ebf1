"""`svdq models`: the models the server serves (GET /v1/models); `svdq models list`: each registry model on this
machine, its weights (hub id or directory), the revision pinned by SVDQ_MODEL_<NAME>_REVISION and whether the
cache holds it; `svdq models pull NAME [--revision R]`: download what the worker loads (models/weights.py: the
fp16 safetensors and the configs) into the Hugging Face cache, with the hub's progress bars on stderr. Errors are
one line, `error: <code>: <message>`, with the exit codes of EXIT_CODES_HELP."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.commands import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, guarded

# models/weights.py's WeightsError codes (and this module's own) by exit code
EXIT_BY_CODE = {"unknown_model": EXIT_USAGE, "no_hub_library": EXIT_USAGE, "offline": EXIT_USAGE,
                "no_such_dir": EXIT_USAGE, "hub_refused": EXIT_REFUSED, "hub_unreachable": EXIT_UNREACHABLE,
                "weights_missing": EXIT_UNREACHABLE}


def weights_guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A WeightsError as `error: <code>: <message>` and its exit code, the way `guarded` turns an API's error."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from models.weights import WeightsError

        try:
            return fn(args)
        except WeightsError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_BY_CODE.get(exc.code, EXIT_USAGE)

    return run


@guarded
def cmd_models_remote(args: argparse.Namespace) -> int:
    from client import commands

    with commands._client() as c:  # the user commands' one client (SVDQ_API_URL, SVDQ_API_KEY)
        models = c.models()
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
        return EXIT_OK
    for m in models:
        print(f"{m.name:<12} {m.workers_ready} ready  {m.source}  {m.description}")
    return EXIT_OK


def _unknown(name: str) -> Any:
    from models.registry import REGISTRY
    from models.weights import WeightsError

    return WeightsError("unknown_model", f"no model {name!r}; svdq serves {', '.join(REGISTRY)}")


def local_rows(settings: Any, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """What `svdq models list` shows, one row per registry model (hub weights looked up in the cache, no network)."""
    from models.registry import REGISTRY
    from models.tiny import TINY_VERSION
    from models.weights import ModelWeights, cached, hub_cache, revision_variable, snapshot_commit

    rows = []
    for name in REGISTRY:
        weights = ModelWeights.from_settings(settings, name)
        row: dict[str, Any] = {"name": name, "source": None, "revision": None, "revision_variable": None,
                               "cached": False, "commit": None, "path": None}
        if weights is None:  # built by svdq itself into SVDQ_CACHE_DIR
            path = Path(settings.cache_dir) / TINY_VERSION
            row.update(source="built-in (random weights)", cached=(path / "model_index.json").is_file(),
                       path=str(path))
        elif weights.local:
            path = Path(weights.source).expanduser()
            row.update(source=weights.source, cached=(path / "model_index.json").is_file(), path=str(path))
        else:
            found = cached(weights, cache_dir)
            row.update(source=weights.source, revision=weights.ref, revision_variable=revision_variable(name),
                       cached=found is not None, path=str(found or hub_cache(cache_dir)),
                       commit=snapshot_commit(found) if found else None)
        rows.append(row)
    return rows


def _cache_text(row: dict[str, Any]) -> str:
    if row["commit"]:
        return f"cached ({row['commit'][:12]})"
    if row["revision_variable"] is not None:  # a hub id
        return f"not in cache: svdq models pull {row['name']}"
    if row["source"].startswith("built-in"):
        return f"built ({row['path']})" if row["cached"] else "not built yet (the first worker builds it)"
    return "local directory" if row["cached"] else "missing directory (no model_index.json)"


@weights_guarded
def cmd_models_list(args: argparse.Namespace) -> int:
    from models.settings import Settings
    from models.weights import hub_cache

    rows = local_rows(Settings())
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["source"]) for r in rows)
    print(f"{'NAME':<12} {'SOURCE':<{width}} {'REVISION':<10} CACHE")
    for r in rows:
        print(f"{r['name']:<12} {r['source']:<{width}} {r['revision'] or '-':<10} {_cache_text(r)}")
    print(f"hub cache: {hub_cache()} (HF_HOME / HF_HUB_CACHE); pin a revision with SVDQ_MODEL_<NAME>_REVISION")
    return EXIT_OK


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)  # stat follows the cache's symlinks to the blobs


@weights_guarded
def cmd_models_pull(args: argparse.Namespace) -> int:
    from models.registry import REGISTRY
    from models.settings import Settings
    from models.weights import ModelWeights, WeightsError, pull, revision_variable, snapshot_commit, source_variable

    if args.name not in REGISTRY:
        raise _unknown(args.name)
    settings = Settings()
    weights = ModelWeights.from_settings(settings, args.name)
    if weights is None:  # tiny: built, not downloaded
        try:
            from models.tiny import ensure_tiny

            path = ensure_tiny(settings.cache_dir)
        except ImportError:
            raise WeightsError("no_hub_library", "building the tiny model needs torch and diffusers: "
                                                 "pip install 'svdq[worker]'") from None
        print(f"{args.name}: built in {path}")
        return EXIT_OK
    if weights.local:
        path = Path(weights.source).expanduser()
        if not (path / "model_index.json").is_file():
            raise WeightsError("no_such_dir", f"{path} ({source_variable(args.name)}) is not a diffusers pipeline "
                                              "directory (no model_index.json)")
        print(f"{args.name}: loads from the directory {path} ({source_variable(args.name)}); nothing to pull")
        return EXIT_OK
    if args.revision and args.revision != weights.ref:
        print(f"note: workers load {revision_variable(args.name)}={weights.ref}; set it to {args.revision} for them "
              "to use this pull", file=sys.stderr)
        weights = ModelWeights(weights.name, weights.source, args.revision)
    path = pull(weights, on_wait=lambda text: print(text, file=sys.stderr, flush=True))
    count, size = _size(path)
    print(f"{args.name}: {weights.source}@{snapshot_commit(path) or weights.ref} in {path} "
          f"({count} files, {size / 1024**3:.2f} GiB)")
    return EXIT_OK


def add_model_commands(sub: Any) -> None:
    from models.registry import REGISTRY

    m = sub.add_parser("models", help="the server's models; `list` and `pull` the weights on this machine",
                       description="svdq models: what GET /v1/models says. svdq models list: each model's weights on "
                                   "this machine. svdq models pull NAME [--revision R]: download them.")
    m.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
    m.set_defaults(fn=cmd_models_remote)
    msub = m.add_subparsers(dest="models_command")
    ls = msub.add_parser("list", help="each model, its weights, pinned revision and whether the cache has them")
    ls.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")
    ls.set_defaults(fn=cmd_models_list)
    pl = msub.add_parser("pull", help="download a model's weights (fp16 safetensors and configs) into the cache")
    pl.add_argument("name", help="a model name: " + ", ".join(REGISTRY))
    pl.add_argument("--revision", default=None,
                    help="a branch, tag or commit (default SVDQ_MODEL_<NAME>_REVISION, else main)")
    pl.set_defaults(fn=cmd_models_pull)
