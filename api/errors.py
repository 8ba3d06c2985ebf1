"""The error envelope: {"error": {"code", "message", "details"}} for every failure, 4xx and 5xx."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from models.params import FieldError, field_message

log = logging.getLogger("svdq.api")

STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
                503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers


def invalid_params(details: list[FieldError],
                   message: str = "Some parameters are invalid; see details.") -> ApiError:
    """422 invalid_params: one detail per field, each naming it and saying what to fix."""
    return ApiError(422, "invalid_params", message, [d.model_dump() for d in details])


def error_response(status: int, code: str, message: str, details: list[Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the first route that matched
    the path, so a path with a GET route and a POST route would say `Allow: GET`."""
    path = scope.get("path", "")
    methods: set[str] = set()
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # the query and header parameters FastAPI checks (request bodies are parsed by api/bodies.py)
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": field_message(e)} for e in exc.errors()]
        return error_response(422, "invalid_request", "The request is malformed; see details for each field.",
                              details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404:
            message = "No such route; see /docs for the API."
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            message = f"{request.method} is not allowed here; use {', '.join(allowed)}."
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    str(exc).splitlines()[0][:200])
        return error_response(503, "database_unavailable", "The database is not answering; try again shortly.",
                              headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "The server failed unexpectedly; this is a bug, please report it.")
