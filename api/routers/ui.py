"""Web pages: static shells whose JavaScript calls the API with a key kept in the browser tab."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from api.errors import ApiError

STATIC = Path(__file__).resolve().parent.parent / "static"
SAFE_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ASSETS = {"sweep.js": "text/javascript", "svdq.css": "text/css"}

router = APIRouter(prefix="/ui", tags=["pages"], include_in_schema=False)
CSP = "default-src 'self'; media-src 'self' blob: https: http:; img-src 'self' data: blob: https: http:"
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Content-Security-Policy": CSP}


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: str) -> HTMLResponse:
    if not SAFE_ID.match(sweep_id):
        raise ApiError(404, "not_found", "No such sweep.")
    page = (STATIC / "sweep.html").read_text().replace("__SWEEP_ID__", html.escape(sweep_id))
    return HTMLResponse(page, headers=SECURITY)


@router.get("/static/{name}")
def static_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, "not_found", "No such file.")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})
