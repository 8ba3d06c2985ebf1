"""What the OpenAPI document says each route answers: the typed shapes in models/schemas.py (the ones the SDK
reads) and the error envelope. Routes return plain dicts; these declarations document them, and the schemathesis
test holds the answers to them."""

from __future__ import annotations

from typing import Any

from models.schemas import ErrorEnvelope

ERRORS = {
    401: "The API key is missing, malformed or revoked.",
    404: "No such object for this key.",
    409: "The object is in a state that does not allow this.",
    413: "The body or upload is over the size limit.",
    415: "The upload is not a PNG, JPEG or WebP image.",
    422: "A field is invalid; `details` names each one.",
    429: "Over this key's rate or open-jobs limit; see Retry-After.",
    503: "A queue is full or a service (database, Redis) is not answering; see Retry-After.",
}


def answers(status: int, model: Any, description: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its success shape, plus the error envelope for 401, 429, 503 and `errors`."""
    out: dict[int | str, dict[str, Any]] = {status: {"model": model, "description": description}}
    for code in sorted({401, 429, 503, *errors}):
        out[code] = {"model": ErrorEnvelope, "description": ERRORS[code]}
    return out
