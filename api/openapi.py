"""What the OpenAPI document says: every route's answers (the typed shapes of models/schemas.py and the error
envelope for every status it can give), the create requests' bodies (models/requests.py, published as
components), the bearer scheme. The schemathesis test holds the server to all of it, and a client generated
from it (openapi-python-client) is imported and used in the suite.

POST /v1/jobs and POST /v1/sweeps take JSON or multipart/form-data. Generators handle one request content type
per operation (openapi-python-client builds a broken client from two), so the document gives each its own
operation: the JSON body on the path itself, the multipart form on `.../upload`, which is the same handler. Both
content types keep working on the path itself, as API.md says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from models.requests import JobCreate, JobSpec, SweepSpec
from models.schemas import ErrorEnvelope

ERRORS = {
    401: "The API key is missing, malformed or revoked.",
    404: "No such object for this key.",
    409: "The object is in a state that does not allow this.",
    410: "The stored result was deleted when its retention ran out (result_expired; SVDQ_RESULT_RETENTION_S).",
    413: "The body or upload is over the size limit.",
    415: "The body is not of a content type this route takes, or the upload is not a PNG, JPEG or WebP image.",
    422: "A field is invalid; `details` names each one.",
    429: "Over this key's rate or open-jobs limit; see Retry-After.",
    503: "A queue is full or a service (database, Redis, storage) is not answering; see Retry-After.",
}
REQUEST_MODELS = (JobCreate, JobSpec, SweepSpec)
# what str.isprintable() accepts of the Latin-1 a header value is decoded as
PRINTABLE_HEADER = r"^[\x20-\x7e\xa1-\xac\xae-\xff]+$"


def answers(status: int, model: Any, description: str, *errors: int, also: dict[int, tuple[Any, str]] | None = None,
            links: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a /v1 route: its success shape (and `also`, other successes), each with `links`, plus the
    error envelope for 401, 429 and 503, which every authenticated route can answer, and `errors`."""
    out: dict[int | str, dict[str, Any]] = {status: {"model": model, "description": description}}
    for code, (other, text) in (also or {}).items():
        out[code] = {"model": other, "description": text}
    for success in out.values():
        success.update({"links": links} if links else {})
    return {**out, **failures(*errors)}


def failures(*errors: int) -> dict[int | str, dict[str, Any]]:
    """The error envelope for 401, 429 and 503 (every authenticated route can answer them) and `errors`."""
    return {code: {"model": ErrorEnvelope, "description": ERRORS[code]} for code in sorted({401, 429, 503, *errors})}


def links(params: dict[str, str], *operations: str) -> dict[str, Any]:
    """OpenAPI links from an answer to the operations (by id) its object's fields feed, so tools (schemathesis's
    stateful phase among them) can follow a created object to its reads and actions."""
    return {op: {"operationId": op, "parameters": params} for op in operations}


def sse_answer(component: str, description: str) -> dict[str, Any]:
    """A text/event-stream answer whose every event's `data` is a JSON object of this component."""
    event = {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"}, "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref(component)}}}
    return {"description": description, "content": {"text/event-stream": {"schema": event}}}


def ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component}"}


def json_request(component: str) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads a JSON body of this component itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(component)}}}}


def multipart_request(spec_component: str, *, many: bool, description: str) -> dict[str, Any]:
    """`openapi_extra=` for a multipart form of image file part(s) and a JSON `spec` part."""
    binary = {"type": "string", "format": "binary"}
    image = {"type": "array", "items": binary, "description": description} if many else {**binary,
                                                                                        "description": description}
    schema = {"type": "object", "required": [] if many else ["image"],
              "properties": {"image": image, "spec": ref(spec_component)}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"spec": {"contentType": "application/json"}}}}}}


def add_create_routes(router: APIRouter, endpoint: Callable[..., Any], *, name: str, answer: Any,
                      responses: dict[int | str, dict[str, Any]], body: str, form_spec: str, many_images: bool,
                      image_help: str, what: str) -> None:
    """One create handler, published twice (see the module's docstring): the JSON body on the path itself, the
    multipart form on `<path>/upload`."""
    common: dict[str, Any] = {"methods": ["POST"], "status_code": 202, "response_model": answer,
                              "responses": responses}
    router.add_api_route("", endpoint, name=name, openapi_extra=json_request(body), **common,
                         summary=f"Create {what} (a JSON body; with the image files in the request: {name}_upload)")
    router.add_api_route("/upload", endpoint, name=f"{name}_upload", **common,
                         openapi_extra=multipart_request(form_spec, many=many_images, description=image_help),
                         summary=f"Create {what} with the image files in the request (multipart/form-data, which "
                                 f"{router.prefix} itself takes too)")


def install_openapi(app: FastAPI) -> None:
    """The document FastAPI builds from the routes, plus the request components the routes refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in REQUEST_MODELS],
                                         ref_template="#/components/schemas/{model}")
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
