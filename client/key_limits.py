"""`svdq keys create --rate-limit/--max-open-jobs/--max-sweep-cells` and `svdq keys set-limits`: one key's own
limits, overriding the service-wide settings (`default` puts a limit back to the setting)."""

from __future__ import annotations

import argparse
import sys
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


def cmd_keys_set_limits(args: argparse.Namespace) -> int:
    from sqlalchemy import update

    from models.db import create_db_engine, create_session_factory
    from models.settings import Settings
    from models.tables import ApiKey

    values = limits_from_args(args)
    if not values:
        print("svdq keys set-limits: give at least one of --rate-limit, --max-open-jobs, --max-sweep-cells",
              file=sys.stderr)
        return 2
    engine = create_db_engine(Settings().database_url)
    with create_session_factory(engine)() as session:
        res = session.execute(update(ApiKey).where(ApiKey.id == args.key_id).values(**values))
        session.commit()
    if not res.rowcount:  # type: ignore[attr-defined]
        print(f"svdq keys set-limits: no key {args.key_id}", file=sys.stderr)
        return 2
    print(f"{args.key_id}: " + ", ".join(f"{k}={'default' if v is None else v}" for k, v in values.items()))
    return 0


def add_set_limits_command(keys: Any) -> None:
    sl = keys.add_parser("set-limits", help="set one key's own limits ('default': the service-wide setting)")
    sl.add_argument("key_id")
    add_limit_args(sl)
    sl.set_defaults(fn=cmd_keys_set_limits)
