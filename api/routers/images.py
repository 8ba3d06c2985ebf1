"""/v1/images: upload once, render many; the same bytes give the same id. An image's stored content (the
cleaned PNG every render starts from) is served back to its owner, for pages that show the source beside its videos."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentKey
from api.bodies import read_upload
from api.deps import SessionDep, StateDep
from api.errors import ApiError
from api.openapi import answers, failures, links
from api.services.images import get_image, store_image
from models import schemas
from models.storage import ObjectMissing, StorageError
from models.views import image_view

router = APIRouter(prefix="/v1/images", tags=["images"])

UPLOAD_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["image"],
               "properties": {"image": {"type": "string", "format": "binary",
                                        "description": "A PNG, JPEG or WebP image (a single frame)."}}}}}}}


@router.post("", name="upload_image", status_code=201, response_model=schemas.Image, openapi_extra=UPLOAD_SCHEMA,
             responses=answers(201, schemas.Image, "The stored image; the same bytes give the same id.", 413, 415,
                               422, links=links({"image_id": "$response.body#/id"}, "image_content")))
async def upload_image(request: Request, state: StateDep, key: CurrentKey) -> schemas.Image:
    data, _ = await read_upload(request)

    def store() -> schemas.Image:
        with state.sessions() as session:
            return image_view(store_image(state=state, session=session, key=key, data=data)[0])

    return await run_in_threadpool(store)


@router.get("/{image_id}/content", name="image_content", response_class=Response, responses={
    200: {"description": "The stored image.",
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    **failures(404)})
def image_content(image_id: str, state: StateDep, session: SessionDep, key: CurrentKey) -> Response:
    """The stored image: the upload cleaned to a PNG, which is what every render of it starts from. Served through
    the API rather than redirected to storage: a page reads it with fetch, which CORS would refuse across origins
    (an image is small and bounded by SVDQ_MAX_IMAGE_PIXELS)."""
    img = get_image(state=state, session=session, key=key, image_id=image_id)
    try:
        data = state.store.get(img.storage_key)
    except ObjectMissing as exc:
        raise ApiError(404, "not_found", "The stored image is missing.") from exc
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", "Storage is not answering; try again shortly.") from exc
    # an image id names its bytes (the owner and their hash), so what it answers never changes
    return Response(data, media_type=img.content_type, headers={
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=86400, immutable"})
