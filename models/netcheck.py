"""Outbound URLs from strangers (webhooks; later image_url): http/https to public addresses only, checked
after DNS resolution, so a name cannot smuggle a request to loopback, a private network or the metadata
service."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], list[str]]


class UrlRejected(ValueError):
    pass


def system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver,
              public: Callable[[str], bool] = is_public) -> list[str]:
    """The addresses the URL may be fetched from; raises UrlRejected with a sentence saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRejected("use an http:// or https:// URL with a host name")
    if parts.username or parts.password:
        raise UrlRejected("credentials in the URL are not accepted")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRejected("the port is not a number between 1 and 65535") from exc
    try:
        addresses = resolve(parts.hostname, port)
    except OSError as exc:
        raise UrlRejected(f"the host {parts.hostname!r} does not resolve") from exc
    if not addresses:
        raise UrlRejected(f"the host {parts.hostname!r} does not resolve")
    if not allow_private:
        for addr in addresses:
            if not public(addr):
                raise UrlRejected(f"{parts.hostname!r} resolves to {addr}, which is not a public address")
    return addresses


def pinned(url: str, address: str) -> tuple[str, str, dict[str, Any]]:
    """How to reach `url` at the very address that was checked, with no second DNS lookup to rebind: the URL with
    its host replaced by the address, the Host header to send, and httpx's extensions (TLS still verifies and
    sends the name: `sni_hostname`)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    host_header = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return target, host_header, {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
