"""Dependencies as Annotated aliases, so route signatures read like prose. Those that do no I/O are `async def`:
FastAPI runs a plain `def` dependency in its threadpool, a hop per request for a field read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.svdq
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_db(state: StateDep) -> Iterator[Session]:
    session = state.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


async def get_base_url(request: Request) -> str:
    """How this request named the API: the base of the URLs its answer carries (served results, grids)."""
    return str(request.base_url).rstrip("/")


BaseUrl = Annotated[str, Depends(get_base_url)]
