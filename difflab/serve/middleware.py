"""ASGI guards in front of every route: HTTP basic auth, and a cap on the size of request bodies."""

from __future__ import annotations

import base64
import binascii
import secrets

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BasicAuth:
    """Every HTTP request (API, page, docs) must carry `Authorization: Basic` with the one user and password."""

    def __init__(self, app: ASGIApp, user: str, password: str):
        self.app = app
        self.expected = f"{user}:{password}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(dict(scope["headers"]).get(b"authorization", b"")):
            response = JSONResponse({"detail": "authentication required: HTTP basic auth with the --api-auth user"},
                                    status_code=401, headers={"WWW-Authenticate": 'Basic realm="difflab"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, encoded = header.partition(b" ")
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == b"basic" and secrets.compare_digest(given, self.expected)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length or, when absent, by counting."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more:  # buffer the body (bounded) so a chunked upload cannot exceed the cap either
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body too large: at most {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)
