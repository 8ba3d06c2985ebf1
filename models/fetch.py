"""Fetching an image from a stranger's URL without becoming their proxy: every hop's host is resolved and
checked (public addresses only), the connection goes to the very address that was checked (no DNS
rebinding between check and connect), redirects are followed by hand and checked again, and the body is
capped while it streams."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urljoin

import httpx

from models.netcheck import Resolver, UrlRejected, check_url, is_public, pinned, system_resolver


class FetchError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def fetch_image_url(url: str, *, max_bytes: int, allow_private: bool = False, resolve: Resolver = system_resolver,
                    public: Callable[[str], bool] = is_public, max_redirects: int = 3,
                    timeout: httpx.Timeout | None = None) -> bytes:
    timeout = timeout or httpx.Timeout(10.0, connect=5.0)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(max_redirects + 1):
            try:
                addresses = check_url(url, allow_private=allow_private, resolve=resolve, public=public)
            except UrlRejected as exc:
                raise FetchError(422, "image_url_forbidden", f"image_url is not allowed: {exc}.") from exc
            target, host, extensions = pinned(url, addresses[0])
            try:
                with client.stream("GET", target, headers={"Host": host, "Accept": "image/*"},
                                   extensions=extensions) as r:
                    if r.status_code in (301, 302, 303, 307, 308) and "location" in r.headers:
                        url = urljoin(url, r.headers["location"])
                        continue
                    if r.status_code != 200:
                        raise FetchError(422, "image_url_unreachable",
                                         f"Fetching image_url answered HTTP {r.status_code}; check the URL.")
                    declared = r.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError(413, "payload_too_large",
                                         f"The image at image_url is over the limit of {max_bytes} bytes.")
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise FetchError(413, "payload_too_large",
                                             f"The image at image_url is over the limit of {max_bytes} bytes.")
                    return bytes(body)
            except httpx.HTTPError as exc:
                raise FetchError(422, "image_url_unreachable",
                                 f"Fetching image_url failed ({exc.__class__.__name__}); check that it is "
                                 "reachable.") from exc
        raise FetchError(422, "image_url_unreachable", f"image_url redirected more than {max_redirects} times.")
