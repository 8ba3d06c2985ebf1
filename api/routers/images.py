from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from api.deps import CurrentKey, SessionDep, StateDep
from api.docs import answers
from api.errors import ApiError
from api.services import image_view, store_image
from models import schemas

router = APIRouter(prefix="/v1/images", tags=["images"])

UPLOAD_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["image"],
               "properties": {"image": {"type": "string", "format": "binary"}}}}}}}


async def read_upload(request: Request, *, field: str = "image") -> tuple[bytes, Any]:
    """The named file part and the whole form, with a clear error for every way it can be missing."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       "Send the image as multipart/form-data with a file part named 'image'.")
    form = await request.form(max_files=4, max_fields=16)
    part = form.get(field)
    if not isinstance(part, UploadFile):
        raise ApiError(422, "invalid_request", f"No file part named '{field}'; attach the image as "
                       f"'{field}=@photo.png'.", [{"field": field, "message": "required"}])
    data = await part.read()
    return data, form


@router.post("", status_code=201, openapi_extra=UPLOAD_SCHEMA,
             responses=answers(201, schemas.Image, "The stored image; the same bytes give the same id.", 413, 415, 422))
async def upload_image(request: Request, state: StateDep, session: SessionDep, key: CurrentKey) -> JSONResponse:
    data, _ = await read_upload(request)
    img, _created = store_image(state=state, session=session, key=key, data=data)
    return JSONResponse(image_view(img), status_code=201)
