"""`svdq keys create|list|revoke|set-limits`: the operator's key commands, writing the database directly through
models/keys.py (they run where the database is reachable, like `svdq db upgrade`). A key's own limits override
the service-wide settings; `default` puts a limit back to the setting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LIMITS = {  # flag -> (ApiKey column, help)
    "rate_limit": ("rate_limit_per_s", "requests per second for this key (0: unlimited)"),
    "max_open_jobs": ("max_open_jobs", "jobs queued or running at once for this key"),
    "max_sweep_cells": ("max_sweep_cells", "cells per sweep for this key"),
}


def limit_value(text: str) -> int | None:
    if text == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'default'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more, or 'default'")
    return value


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    for flag, (_, text) in LIMITS.items():
        parser.add_argument("--" + flag.replace("_", "-"), dest=flag, type=limit_value, default=argparse.SUPPRESS,
                            metavar="N|default", help=text)


def limits_from_args(args: argparse.Namespace) -> dict[str, int | None]:
    return {column: getattr(args, flag) for flag, (column, _) in LIMITS.items() if hasattr(args, flag)}


def describe(key: Any) -> str:
    own = [f"{column}={getattr(key, column)}" for column, _ in LIMITS.values() if getattr(key, column) is not None]
    return " ".join(own) if own else "service-wide limits"


@contextmanager
def _session() -> Iterator[Any]:
    from models.db import create_db_engine, create_session_factory
    from models.settings import Settings

    engine = create_db_engine(Settings().database_url)
    try:
        with create_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _announce(key_id: str) -> str:
    """Tell the API processes (over Redis) to forget this key now; how soon the change applies."""
    from models.keys import announce_key_change
    from models.settings import Settings

    settings = Settings()
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            if announce_key_change(client, key_id):
                return "now"
        finally:
            client.close()
    return f"within {settings.key_cache_s:g} s (the API processes could not be told over Redis)"


def cmd_keys_create(args: argparse.Namespace) -> int:
    from models.keys import new_key_string, store_key

    key = new_key_string()
    with _session() as session:
        row = store_key(session, key, name=args.name, is_admin=args.admin, limits=limits_from_args(args))
    print(key)
    print(f"(key {row.id} '{args.name}' created; it is shown only once)", file=sys.stderr)
    print(f"webhook signing secret: {row.webhook_secret}", file=sys.stderr)
    return 0


def cmd_keys_list(_: argparse.Namespace) -> int:
    from models.keys import list_keys

    with _session() as session:
        for k in list_keys(session):
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            print(f"{k.id}  {k.prefix}…  {k.name}  {'admin ' if k.is_admin else ''}{state}  {describe(k)}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from models.keys import revoke_key

    with _session() as session:
        revoked = revoke_key(session, args.key_id)
    if not revoked:
        print(f"svdq keys revoke: no active key {args.key_id}", file=sys.stderr)
        return 2
    print(f"revoked {args.key_id}; requests with it get 401 {_announce(args.key_id)}")
    return 0


def cmd_keys_set_limits(args: argparse.Namespace) -> int:
    from models.keys import set_key_limits

    values = limits_from_args(args)
    if not values:
        print("svdq keys set-limits: give at least one of --rate-limit, --max-open-jobs, --max-sweep-cells",
              file=sys.stderr)
        return 2
    with _session() as session:
        found = set_key_limits(session, args.key_id, values)
    if not found:
        print(f"svdq keys set-limits: no key {args.key_id}", file=sys.stderr)
        return 2
    print(f"{args.key_id}: " + ", ".join(f"{k}={'default' if v is None else v}" for k, v in values.items())
          + f"; in force {_announce(args.key_id)}")
    return 0


def add_key_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = keys.add_parser("create", help="print a new API key (shown once)")
    kc.add_argument("--name", required=True)
    kc.add_argument("--admin", action="store_true")
    add_limit_args(kc)
    kc.set_defaults(fn=cmd_keys_create)
    sl = keys.add_parser("set-limits", help="set one key's own limits ('default': the service-wide setting)")
    sl.add_argument("key_id")
    add_limit_args(sl)
    sl.set_defaults(fn=cmd_keys_set_limits)
    keys.add_parser("list", help="list keys (never their secrets)").set_defaults(fn=cmd_keys_list)
    kr = keys.add_parser("revoke", help="revoke a key at once")
    kr.add_argument("key_id")
    kr.set_defaults(fn=cmd_keys_revoke)
