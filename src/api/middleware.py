"""Pure ASGI middleware: an access log line per request, and an upload size cap while streaming.

Pure ASGI (not BaseHTTPMiddleware) keeps per-request overhead low and lets the size cap stop
reading the body the moment it passes the limit.
"""

from __future__ import annotations

import json
import time
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AccessLog:
    """`POST /api/v1/asr/submit - task=... file=... size=... status=queued` into asr_api.log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            detail = scope.get("state", {}).get("log")
            ms = (time.perf_counter() - started) * 1000
            extra = f" {detail}" if detail else ""
            path = log_safe(scope["path"])
            logger.info(f"{scope['method']} {path} -{extra} http={status['code']} ms={ms:.1f}")


def log_safe(text: str, limit: int = 200) -> str:
    """A client-chosen string as one bounded log token: `%0A` in a URL path arrives decoded, and
    must not start a forged line of its own."""
    cut = text[:limit]
    safe = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in cut)
    return safe + ("..." if len(text) > limit else "")


class BodySizeLimit:
    """Answer 413 once a request body passes `max_bytes`, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int, reported_max: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The cap the client knows (MAX_UPLOAD_BYTES); max_bytes adds the multipart envelope.
        self.reported_max = reported_max or max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": "File too large", "max_bytes": self.reported_max}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = {"bytes": 0, "started": False, "over": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    seen["over"] = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if seen["over"]:
                # FastAPI turns any error raised while it reads a form into its own 400 "error
                # parsing the body"; once the cap is passed, answer 413 in place of what it sends.
                if message["type"] == "http.response.start" and not seen["started"]:
                    seen["started"] = True
                    await self._reject(send)
                return
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not seen["started"]:
                await self._reject(send)


class _TooLarge(Exception):
    """Raised from `receive` to abandon a body that passed the cap."""


def body_limit_for(max_upload_bytes: int) -> int:
    """The multipart envelope adds a little to the file itself."""
    return max_upload_bytes + 64 * 1024


__all__: list[Any] = ["AccessLog", "BodySizeLimit", "body_limit_for", "log_safe"]
