"""The bearer key on every /v1 route: checked against the stored keys (models/keys.py), then the key's request
rate. Declared to OpenAPI as an HTTP bearer scheme, so generated clients send it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.quotas import check_rate
from models.keys import find_key, limits_for
from models.tables import ApiKey

# auto_error off: a missing or malformed header gets our error envelope and sentence, not FastAPI's
bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An svdq API key: `svdq keys create --name NAME` prints one.")


def get_api_key(request: Request, state: StateDep, session: SessionDep,
                _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiKey:
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
    check_rate(state.redis, key, limits_for(key, state.settings).rate_limit_per_s)
    return key


CurrentKey = Annotated[ApiKey, Depends(get_api_key)]
