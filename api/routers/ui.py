"""Web pages: server-rendered shells (one layout: header, sign-in) whose JavaScript modules call the API
with a key kept in the browser tab. No inline script anywhere, so the CSP can stay `script-src 'self'`."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from api.errors import ApiError

STATIC = Path(__file__).resolve().parent.parent / "static"
SAFE_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ASSETS = {"common.js": "text/javascript", "index.js": "text/javascript", "job.js": "text/javascript",
          "memory.js": "text/javascript", "sweep.js": "text/javascript", "measurements.js": "text/javascript",
          "charts.js": "text/javascript", "preview.js": "text/javascript", "svdq.css": "text/css"}

router = APIRouter(prefix="/ui", tags=["pages"], include_in_schema=False)
# media and posters may come from presigned storage URLs on another origin; scripts and API calls never do
CSP = ("default-src 'self'; media-src 'self' blob: https: http:; img-src 'self' data: blob: https: http:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Content-Security-Policy": CSP}


def render_page(page: str, *, title: str, heading: str, data: dict[str, str] | None = None) -> HTMLResponse:
    """The shared layout around one page's fragment; every interpolated value is escaped."""
    attrs = "".join(f' data-{name}="{html.escape(value)}"' for name, value in (data or {}).items())
    body = (STATIC / "layout.html").read_text()
    for marker, value in (("__TITLE__", html.escape(title)), ("__HEADING__", html.escape(heading)),
                          ("__BODY_ATTRS__", attrs), ("__SCRIPT__", f"{page}.js"),
                          ("__MAIN__", (STATIC / f"{page}.html").read_text())):
        body = body.replace(marker, value)
    return HTMLResponse(body, headers=SECURITY)


def _checked_id(value: str, what: str) -> str:
    if not SAFE_ID.match(value):
        raise ApiError(404, "not_found", f"No such {what}; ids are letters, digits and underscores.")
    return value


@router.get("", response_class=HTMLResponse)
def index_page() -> HTMLResponse:
    return render_page("index", title="svdq", heading="jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str) -> HTMLResponse:
    job_id = _checked_id(job_id, "job")
    return render_page("job", title=f"svdq job {job_id}", heading=f"job {job_id}", data={"job-id": job_id})


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: str) -> HTMLResponse:
    sweep_id = _checked_id(sweep_id, "sweep")
    return render_page("sweep", title=f"svdq sweep {sweep_id}", heading=f"sweep {sweep_id}",
                       data={"sweep-id": sweep_id})


@router.get("/static/{name}")
def static_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, "not_found", "No such file.")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})
