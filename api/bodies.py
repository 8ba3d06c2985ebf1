"""Request bodies in: JSON, or multipart/form-data with image file parts and a JSON `spec` part, parsed into
the typed requests of models/requests.py before anything is stored. Each way a body can be wrong gets its
documented 4xx with a sentence that says what to fix."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ApiError, invalid_params
from models.params import FieldError
from models.requests import JobCreate, JobSpec, SweepSpec, parse_request

SpecT = TypeVar("SpecT", bound=BaseModel)


def parse_spec(model: type[SpecT], raw: Any, what: str) -> SpecT:
    """A decoded body into its spec; every wrong or unknown field becomes a 422 invalid_params detail."""
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_request", f"The {what} spec must be a JSON object.")
    spec, errors = parse_request(model, raw)
    if spec is None:
        raise invalid_params(errors)
    return spec


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_request", "The body is not valid JSON.") from exc


def spec_part(form: FormData) -> Any:
    """The multipart `spec` part, decoded: {} when it is absent or empty."""
    raw = form.get("spec")
    if isinstance(raw, UploadFile):
        raise ApiError(422, "invalid_request", "The 'spec' part must be a form field holding JSON, not a file.",
                       [{"field": "spec", "message": "send it without a filename"}])
    try:
        return json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"The 'spec' part is not valid JSON: {exc.msg}.") from exc


async def read_form(request: Request, *, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=16)
    except StarletteHTTPException as exc:  # Starlette's 400 for a body that is not the multipart it claims to be
        detail = str(exc.detail).rstrip(".")
        raise ApiError(422, "invalid_request", f"The multipart body could not be read ({detail}); send "
                       f"multipart/form-data with its boundary, at most {max_files} files and 16 fields.") from exc


async def read_upload(request: Request, *, field: str = "image") -> tuple[bytes, FormData]:
    """The named file part and the whole form, with a clear error for every way it can be missing."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       "Send the image as multipart/form-data with a file part named 'image'.")
    form = await read_form(request, max_files=4)
    part = form.get(field)
    if not isinstance(part, UploadFile):
        raise ApiError(422, "invalid_request", f"No file part named '{field}'; attach the image as "
                       f"'{field}=@photo.png'.", [{"field": field, "message": "required"}])
    data = await part.read()
    return data, form


async def read_job_submission(request: Request) -> tuple[JobSpec, bytes | None]:
    """The spec and, for multipart, the image bytes: parsed and checked before anything is stored."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        data, form = await read_upload(request)
        raw = spec_part(form)
        if isinstance(raw, dict):
            if raw.get("image_id") or raw.get("image_url"):
                raise invalid_params([FieldError(field="image_id", message="not allowed with a file part")],
                                     "Send either an image file or image_id, not both.")
            raw = {k: v for k, v in raw.items() if k not in ("image_id", "image_url")}  # null: nothing named
        return parse_spec(JobSpec, raw, "job"), data
    if ctype.startswith("application/json"):
        spec = parse_spec(JobCreate, await json_body(request), "job")
        if spec.image_url is not None and spec.image_id:
            raise invalid_params([FieldError(field="image_url", message="not allowed with image_id")],
                                 "Give either image_id or image_url, not both.")
        if not spec.image_id and spec.image_url is None:
            raise ApiError(422, "invalid_request", "Name the image: give image_id (from POST /v1/images) or "
                           "image_url, or send multipart/form-data with an 'image' file part.",
                           [FieldError(field="image_id", message="required").model_dump()])
        return spec, None
    raise ApiError(415, "unsupported_media_type",
                   "Send application/json (with image_id) or multipart/form-data (with an 'image' part).")


async def read_sweep_submission(request: Request) -> tuple[SweepSpec, list[bytes]]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await read_form(request, max_files=64)
        uploads = [await part.read() for part in form.getlist("image") if isinstance(part, UploadFile)]
        return parse_spec(SweepSpec, spec_part(form), "sweep"), uploads
    if ctype.startswith("application/json"):
        return parse_spec(SweepSpec, await json_body(request), "sweep"), []
    raise ApiError(415, "unsupported_media_type", "Send application/json, or multipart/form-data with 'image' "
                   "parts and a 'spec' part.")
