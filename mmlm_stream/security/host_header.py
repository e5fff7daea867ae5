"""The API answers only requests whose ``Host`` header names it (``api.allowed_hosts_header``).

A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding) makes the
browser send ``Host: evil.example`` to the loopback service, with the page's own origin: the
browser's same-origin rules then let that page read the answers. Refusing foreign Host headers
with 400 ends that. Starlette's ``TrustedHostMiddleware`` is not used: it cuts ``[::1]:8000``
at the first colon, and answers plain text where the API's errors are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(header: str) -> str | None:
    """The host of a Host header (port, IPv6 brackets and a trailing dot dropped, lower
    case), or None when it is malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = value.partition(":")
        if colon and not port.isdigit():
            return None
    name = name.rstrip(".")
    return name or None


def host_allowed(name: str, patterns: Sequence[str]) -> bool:
    """``*`` allows any host, ``*.example.com`` its subdomains (not itself), else equality."""
    for pattern in patterns:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class HostHeaderCheck:
    """ASGI middleware: 400 ``{"detail": ...}`` for HTTP requests with another Host (a
    WebSocket is closed with 1008, policy violation)."""

    def __init__(self, app: ASGIApp, patterns: Sequence[str]) -> None:
        self.app = app
        self.patterns = tuple(patterns)
        self.any = "*" in self.patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(raw)
        if name is not None and host_allowed(name, self.patterns):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = raw[:80] if raw else "(none)"
        body = json.dumps(
            {"detail": f"Host header {shown!r} is not allowed (api.allowed_hosts_header)"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
