"""image_url fetching against local HTTP servers: only public addresses (here 127.0.0.2 plays a public
host), checked again on every redirect, connected to the checked address, size-capped while reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from client.procs import free_port
from models.fetch import FetchError, fetch_image_url
from ops.harness.images import sample_png
from ops.harness.stack import Stack

PNG = sample_png(color=(9, 99, 199))


class Server:
    def __init__(self, host: str) -> None:
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers["Host"])
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                status, headers, body = route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.port = free_port()
        self.server = HTTPServer((host, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    public, private = Server("127.0.0.2"), Server("127.0.0.1")
    private.routes["/ok.png"] = (200, {"content-type": "image/png"}, PNG)
    public.routes.update({
        "/ok.png": (200, {"content-type": "image/png", "content-length": str(len(PNG))}, PNG),
        "/to-loopback": (302, {"location": f"http://127.0.0.1:{private.port}/ok.png", "content-length": "0"}, b""),
        "/to-ok": (302, {"location": "/ok.png", "content-length": "0"}, b""),
        "/loop": (302, {"location": "/loop", "content-length": "0"}, b""),
        "/big": (200, {"content-type": "image/png"}, b"\x89PNG" + b"\0" * 300_000),
    })
    yield public, private
    public.server.shutdown()
    private.server.shutdown()


def resolve(host: str, port: int) -> list[str]:
    return {"good.test": ["127.0.0.2"], "evil.test": ["10.0.0.1"], "rebind.test": ["127.0.0.1"],
            "127.0.0.2": ["127.0.0.2"], "127.0.0.1": ["127.0.0.1"]}.get(host, [])


def fetch(url: str, **kw: Any) -> bytes:
    return fetch_image_url(url, max_bytes=100_000, resolve=resolve, public=lambda a: a == "127.0.0.2", **kw)


def test_a_public_image_is_fetched_from_the_checked_address_with_its_host_name(servers) -> None:  # type: ignore[no-untyped-def]
    public, _ = servers
    assert fetch(f"http://good.test:{public.port}/ok.png") == PNG
    assert public.hosts[-1] == f"good.test:{public.port}"
    assert fetch(f"http://good.test:{public.port}/to-ok") == PNG  # a redirect to a public place is followed


@pytest.mark.parametrize(("path_or_url", "status", "code"), [
    ("/to-loopback", 422, "image_url_forbidden"),  # a redirect to 127.0.0.1 is checked again and refused
    ("http://evil.test:{port}/ok.png", 422, "image_url_forbidden"),  # a name that resolves to a private address
    ("http://rebind.test:{port}/ok.png", 422, "image_url_forbidden"),
    ("http://nowhere.test/ok.png", 422, "image_url_forbidden"),  # does not resolve
    ("file:///etc/passwd", 422, "image_url_forbidden"),
    ("/missing.png", 422, "image_url_unreachable"),
    ("/loop", 422, "image_url_unreachable"),
    ("/big", 413, "payload_too_large"),  # no content-length: counted while reading
])
def test_forbidden_unreachable_and_oversized_urls(servers, path_or_url: str, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    public, private = servers
    url = (f"http://good.test:{public.port}{path_or_url}" if path_or_url.startswith("/")
           else path_or_url.format(port=public.port))
    with pytest.raises(FetchError) as exc:
        fetch(url)
    assert (exc.value.status, exc.value.code) == (status, code)
    assert private.hosts == []  # nothing ever reached the private server


def test_a_closed_port_is_unreachable_quickly() -> None:
    t0 = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetch(f"http://good.test:{free_port()}/x.png")
    assert exc.value.code == "image_url_unreachable" and time.monotonic() - t0 < 5


def test_a_job_can_name_its_image_by_url(sqlite_stack: Stack, servers) -> None:  # type: ignore[no-untyped-def]
    _, private = servers  # the test stack allows private addresses (SVDQ_ALLOW_PRIVATE_URLS) for this
    s = sqlite_stack
    r = s.client.post("/v1/jobs", headers=s.headers, json={
        "model": "tiny", "image_url": f"http://127.0.0.1:{private.port}/ok.png",
        "params": {"num_inference_steps": 1, "num_frames": 2}})
    assert r.status_code == 202, r.text
    assert s.wait(r.json()["id"])["status"] == "succeeded"


def test_by_default_a_loopback_image_url_is_forbidden(tmp_path: Path, redis_url: str, servers) -> None:  # type: ignore[no-untyped-def]
    from tests.test_service import app_with

    _, private = servers
    with app_with(tmp_path, redis_url) as c:
        r = c.post("/v1/jobs", headers={"Authorization": "Bearer svdq_test_key_0123456789abcdef"},
                   json={"model": "tiny", "image_url": f"http://127.0.0.1:{private.port}/ok.png"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "image_url_forbidden"
    assert private.hosts == []
