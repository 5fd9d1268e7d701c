"""Request limits, checked as the request arrives (an ASGI middleware, before any route reads
it): a body larger than its limit is refused with 413 without being read whole, and a NUL
character in the path, the query or a JSON body (raw or as the escape ``\\u0000``) with 422
naming where (PostgreSQL text cannot hold it, and no id or label needs it)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_NUL_MARKS = (b"\x00", b"\\u0000")
_OVERLAP = max(len(m) for m in _NUL_MARKS) - 1


class BodyError(HTTPException):
    """A body refused while it streams in: 413 (too large) or 422 (a NUL)."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(status, message)
        self.field = field


def _error(status: int, message: str, field: str) -> tuple[int, bytes]:
    body = {"error": message, "details": [{"field": field, "message": message}]}
    return status, json.dumps(body).encode()


class RequestLimits:
    """``max_body`` bytes per request body; ``files``: paths that take files (pattern ->
    bytes), whose bodies may hold NUL bytes; NUL characters refused everywhere else;
    ``small``: paths open to anyone (sign-in), with a limit of their own."""

    def __init__(
        self,
        app: App,
        max_body: int,
        files: dict[str, int] | None = None,
        small: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.files = files or {}
        self.small = small or {}  # text routes with a lower limit (those open to anyone)

    def limit_of(self, path: str) -> tuple[int, bool]:
        """The path's body limit, and whether its body is text (JSON)."""
        for pattern, limit in self.files.items():
            if _matches(pattern, path):
                return limit, False
        for pattern, limit in self.small.items():
            if _matches(pattern, path):
                return limit, True
        return self.max_body, True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode()
        query: bytes = scope.get("query_string", b"")
        for where, text in (("path", raw_path), ("query", query)):
            if b"%00" in text or b"\x00" in text:
                if scope["type"] == "http":
                    await _respond(send, *_error(422, f"the {where} holds a NUL character", where))
                else:  # a WebSocket is refused before it is accepted
                    await send({"type": "websocket.close", "code": 1008})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, is_text = self.limit_of(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _respond(
                send, *_error(413, f"the body of {int(declared)} bytes is over {limit}", "body")
            )
            return
        # every body but a file's is text, whatever its content type claims (a type that
        # only looks like JSON is read as JSON all the same)
        json_body = is_text
        seen = 0
        tail = b""

        async def checked() -> Message:
            nonlocal seen, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    raise BodyError(413, f"the body is over {limit} bytes", "body")
                if json_body:
                    window = tail + chunk
                    if any(m in window for m in _NUL_MARKS):
                        raise BodyError(422, "the body holds a NUL character (\\u0000)", "body")
                    tail = window[-_OVERLAP:]
            return message

        await self.app(scope, checked, send)


def _matches(pattern: str, path: str) -> bool:
    """``/api/live/datasets/*/import`` style: ``*`` is one path segment."""
    a, b = pattern.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x in ("*", y) for x, y in zip(a, b, strict=True))


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


_WEB_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}

# the dashboard is served from the gateway itself: its scripts, styles and sockets too
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# the interactive API pages load their scripts from a CDN (FastAPI's default)
CSP_API_PAGES = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Headers on every HTTP answer: a Content-Security-Policy, no framing, no MIME sniffing,
    no referrer; and Strict-Transport-Security when the gateway speaks HTTPS."""

    def __init__(self, app: App, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        extra = [
            (b"content-security-policy",
             (CSP_API_PAGES if path in ("/docs", "/redoc") else CSP).encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]  # fmt: skip
        if self.https:
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


class OriginPolicy:
    """Cross-origin requests: a browser page of another origin may not change anything (POST,
    PUT, PATCH, DELETE) nor open a WebSocket, unless its origin is in ``allowed``; requests
    without an ``Origin`` (scripts, curl, the edge) and from the gateway's own pages pass."""

    UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: App, allowed: list[str]) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed}

    def permits(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        if origin is None:
            return True
        text = origin.decode("latin-1").rstrip("/").lower()
        if text in self.allowed or "*" in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        scheme = _WEB_SCHEME.get(str(scope.get("scheme", "http")), "http")
        return bool(text == f"{scheme}://{host}")  # the gateway's own page: scheme and host alike

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.permits(scope):
            await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
            return
        if scope["type"] == "http" and scope["method"] in self.UNSAFE and not self.permits(scope):
            status, body = _error(
                403, "requests from this origin are not allowed (VERTAC_GATEWAY_CORS_ORIGINS)",
                "Origin",
            )  # fmt: skip
            await _respond(send, status, body)
            return
        await self.app(scope, receive, send)
