"""/healthz (the process is up) and /readyz (the database, Redis and storage answer); both open, no key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep
from api.errors import error_response
from models.schemas import ErrorEnvelope, ServiceStatus

router = APIRouter(tags=["service"])


@router.get("/healthz", name="healthz", response_model=ServiceStatus)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", name="readyz", response_model=ServiceStatus, responses={
    503: {"model": ErrorEnvelope, "description": "A service the API depends on is not answering; `details` "
                                                 "names each (component, message)."}})
def readyz(state: StateDep) -> Any:
    problems = []
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        problems.append({"component": "database", "message": str(exc).splitlines()[0][:200]})
    try:
        state.redis.ping()
    except Exception as exc:  # noqa: BLE001
        problems.append({"component": "redis", "message": str(exc)[:200]})
    try:
        state.store.check()
    except Exception as exc:  # noqa: BLE001
        problems.append({"component": "storage", "message": str(exc)[:200]})
    if problems:
        return error_response(503, "not_ready", "A service the API depends on is not answering; see details.",
                              problems)
    return JSONResponse({"status": "ready"})
