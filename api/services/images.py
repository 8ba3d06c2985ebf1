"""Images: an upload (or an image_url fetched safely) cleaned, stored once per key and bytes, and looked up."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from api.errors import ApiError
from api.state import AppState
from models.fetch import FetchError, fetch_image_url
from models.images import ImageRejected, clean_image
from models.storage import StorageError, image_key
from models.tables import ApiKey, Image, utcnow


def store_image(*, state: AppState, session: Session, key: ApiKey, data: bytes) -> tuple[Image, bool]:
    """Clean and store an upload; the same bytes from the same key give the same image (created=False)."""
    try:
        clean = clean_image(data, max_pixels=state.settings.max_image_pixels)
    except ImageRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    image_id = "img_" + hashlib.sha256(f"{key.id}:{clean.source_sha256}".encode()).hexdigest()[:24]
    existing = session.get(Image, image_id)
    if existing is not None:
        return existing, False
    skey = image_key(image_id)
    try:
        state.store.put(skey, clean.png, "image/png")
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", "Storage is not answering; try again shortly.") from exc
    img = Image(id=image_id, owner_id=key.id, sha256=clean.source_sha256, width=clean.width,
                height=clean.height, content_type="image/png", bytes=len(clean.png), storage_key=skey,
                created_at=utcnow())
    session.add(img)
    session.commit()
    return img, True


def fetch_url(state: AppState, url: str, *, field: str = "image_url") -> bytes:
    """The bytes behind an image_url, fetched SSRF-safely (see models.fetch)."""
    try:
        return fetch_image_url(url, max_bytes=state.settings.max_upload_bytes,
                               allow_private=state.settings.allow_private_urls)
    except FetchError as exc:
        raise ApiError(exc.status, exc.code, exc.message, [{"field": field, "message": exc.message}]) from exc


def get_image(*, state: AppState, session: Session, key: ApiKey, image_id: str) -> Image:
    img = state.images.get(image_id)
    if img is None:
        img = session.get(Image, image_id)
        if img is not None:
            session.expunge(img)  # kept beyond this session (an image row never changes)
            state.images.put(image_id, img)
    if img is None or (img.owner_id != key.id and not key.is_admin):
        raise ApiError(404, "not_found", f"No image {image_id!r}; upload it with POST /v1/images.")
    return img
