"""/v1/images: upload once, render many; the same bytes give the same id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentKey
from api.bodies import read_upload
from api.deps import StateDep
from api.openapi import answers
from api.services.images import store_image
from models import schemas
from models.views import image_view

router = APIRouter(prefix="/v1/images", tags=["images"])

UPLOAD_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["image"],
               "properties": {"image": {"type": "string", "format": "binary",
                                        "description": "A PNG, JPEG or WebP image (a single frame)."}}}}}}}


@router.post("", name="upload_image", status_code=201, response_model=schemas.Image, openapi_extra=UPLOAD_SCHEMA,
             responses=answers(201, schemas.Image, "The stored image; the same bytes give the same id.", 413, 415,
                               422))
async def upload_image(request: Request, state: StateDep, key: CurrentKey) -> schemas.Image:
    data, _ = await read_upload(request)

    def store() -> schemas.Image:
        with state.sessions() as session:
            return image_view(store_image(state=state, session=session, key=key, data=data)[0])

    return await run_in_threadpool(store)
