"""Pure ASGI middleware: an access log line per request, and a guard on request bodies (size
cap and read timeout) while they stream in.

Pure ASGI (not BaseHTTPMiddleware) keeps per-request overhead low and lets the guard stop
reading the body the moment it passes a limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api import errors


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


class RequestBodyGuard:
    """Guard a request body as it streams in: 413 once it passes `max_bytes` (declared or
    streamed), 408 when it arrives too slowly, and `Connection: close` on any answer given before
    the body was read to its end, so an unread body cannot hold the connection open.

    Too slow: the app waited `timeout_s` in `receive` for the next chunk, or, `timeout_s` after
    it first asked for the body, less than `min_rate` bytes/s have come on average (Apache's
    mod_reqtimeout rule), so a trickle of a byte now and then is cut while a large upload on a slow
    but steady link goes through. uvicorn reads from the socket only while the app waits for
    more, so time the app spends elsewhere never counts as a pause.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        reported_max: int | None = None,
        timeout_s: float | None = None,
        min_rate: int = 0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The cap the client knows (MAX_UPLOAD_BYTES); max_bytes adds the multipart envelope.
        self.reported_max = reported_max or max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        declared = headers.get(b"content-length")
        if declared in (None, b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_rejection(send, errors.upload_too_large(self.reported_max))
            return
        body = _BodyState(started=time.monotonic())

        async def guarded_receive() -> Message:
            if body.complete:
                return await receive()  # e.g. a response listening for the disconnect
            try:
                with anyio.fail_after(self._wait_limit(body)):
                    message = await receive()
            except TimeoutError:
                body.rejection = errors.body_too_slow(self.timeout_s or 0, self.min_rate)
                raise _Rejected from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body.complete = True
            body.received += len(message.get("body", b""))
            if body.received > self.max_bytes:
                body.rejection = errors.upload_too_large(self.reported_max)
                raise _Rejected
            return message

        async def guarded_send(message: Message) -> None:
            if body.rejection is not None:
                # FastAPI turns any error raised while it reads a form into its own 400 "error
                # parsing the body"; once the body is refused, answer with the refusal instead.
                if message["type"] == "http.response.start" and not body.responded:
                    body.responded = True
                    await _send_rejection(send, body.rejection)
                return
            if message["type"] == "http.response.start":
                body.responded = True
                if not body.complete:
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _Rejected:
            if not body.responded and body.rejection is not None:
                await _send_rejection(send, body.rejection)

    def _wait_limit(self, body: _BodyState) -> float | None:
        """Seconds the next chunk may take: the pause limit, or less when the average rate
        would fall short by then."""
        if self.timeout_s is None:
            return None
        if not self.min_rate:
            return self.timeout_s
        deadline = body.started + self.timeout_s + body.received / self.min_rate
        return max(0.0, min(self.timeout_s, deadline - time.monotonic()))


@dataclass
class _BodyState:
    started: float
    received: int = 0
    complete: bool = False
    responded: bool = False
    rejection: errors.Rejection | None = None


_CLOSE = (b"connection", b"close")


async def _send_rejection(send: Send, rejection: errors.Rejection) -> None:
    headers, body = rejection.encode()
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Rejected(Exception):
    """Raised from `receive` to abandon a body that is too large or too slow."""


def body_limit_for(max_upload_bytes: int) -> int:
    """The multipart envelope adds a little to the file itself."""
    return max_upload_bytes + 64 * 1024


__all__: list[Any] = ["AccessLog", "RequestBodyGuard", "body_limit_for", "log_safe"]
