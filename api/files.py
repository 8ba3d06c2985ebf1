"""Stored results served over HTTP: a redirect to a presigned URL (S3), or the file itself (local storage)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import FileResponse, RedirectResponse, Response

from api.errors import ApiError
from models.storage import LocalStore, S3Store

# what a route that serves a stored file declares, besides its errors
FILE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file (local storage).", "content": {"application/octet-stream": {}}},
    307: {"description": "A redirect to the file in object storage (a presigned URL)."},
}


def serve_stored(store: LocalStore | S3Store, storage_key: str, content_type: str) -> Response:
    url = store.presigned_url(storage_key, content_type)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    path = store.local_path(storage_key)
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", "The stored file is missing.")
    return FileResponse(path, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})
