"""The bearer key on every /v1 route: looked up in this process's key cache or the stored keys (models/keys.py),
then held to its request rate, on the event loop. Declared to OpenAPI as an HTTP bearer scheme.

A key found is kept in api/key_cache.py's cache: see there how long a revoked key can still read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.errors import ApiError
from api.state import AppState
from models.keys import find_key, hash_key, limits_for
from models.tables import ApiKey

log = logging.getLogger("svdq.api")

# auto_error off: a missing or malformed header gets our error envelope and sentence, not FastAPI's
bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An svdq API key: `svdq keys create --name NAME` prints one.")


def _lookup(state: AppState, token: str) -> ApiKey | None:
    with state.sessions() as session:
        return find_key(session, token)


async def authenticate(request: Request, state: AppState) -> ApiKey:
    """The request's key, or 401; then 429 when it is over its rate."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "Send your API key as 'Authorization: Bearer <key>'.",
                       headers={"WWW-Authenticate": "Bearer"})
    digest = hash_key(token)
    key = state.keys.get(digest)
    if key is None:
        key = await run_in_threadpool(_lookup, state, token)
        if key is None:
            raise ApiError(401, "unauthorized", "The API key is unknown or revoked; create one with "
                           "'svdq keys create --name NAME'.", headers={"WWW-Authenticate": "Bearer"})
        state.keys.put(digest, key)
    await state.rate.check(key, limits_for(key, state.settings).rate_limit_per_s)
    return key


Declared = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]  # the OpenAPI scheme; not read


async def get_api_key(request: Request, state: StateDep, _declared: Declared) -> ApiKey:
    return await authenticate(request, state)


CurrentKey = Annotated[ApiKey, Depends(get_api_key)]


@dataclass(frozen=True)
class Caller:
    """Who asks, and where: the process's state, the caller's key, the base of the answer's URLs. One dependency for
    the hot routes (FastAPI's resolution of each dependency costs more than the work of these three)."""

    state: AppState
    key: ApiKey
    base_url: str


async def get_caller(request: Request, _declared: Declared) -> Caller:
    state: AppState = request.app.state.svdq
    return Caller(state=state, key=await authenticate(request, state), base_url=str(request.base_url).rstrip("/"))


CallerDep = Annotated[Caller, Depends(get_caller)]
