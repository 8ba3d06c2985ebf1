"""Dependencies as Annotated aliases, so route signatures read like prose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.limits_redis import check_rate
from api.state import AppState
from models.keys import find_key, limits_for
from models.tables import ApiKey


def get_state(request: Request) -> AppState:
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


def get_api_key(request: Request, session: SessionDep) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "Send your API key as 'Authorization: Bearer <key>'.",
                       headers={"WWW-Authenticate": "Bearer"})
    key = find_key(session, token.strip())
    if key is None:
        raise ApiError(401, "unauthorized", "The API key is unknown or revoked; create one with "
                       "'svdq keys create --name NAME'.", headers={"WWW-Authenticate": "Bearer"})
    session.commit()  # hand the connection back to the pool while the request waits for its next step
    state: AppState = request.app.state.svdq
    check_rate(state.redis, key, limits_for(key, state.settings).rate_limit_per_s)
    return key


CurrentKey = Annotated[ApiKey, Depends(get_api_key)]
