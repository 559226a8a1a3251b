"""uvicorn's HTTP protocol with a deadline for request headers, which uvicorn itself lacks.

`uvicorn src.api.main:app --http src.api.server:GuardedHttpToolsProtocol`. Without it a client
that sends its headers a byte at a time holds a connection for as long as it likes. The body has
its own deadline in `src.api.middleware.RequestBodyGuard`, where the app can still answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from src.api import errors
from src.config import get_settings

# What scripts/serve.sh and the systemd unit pass to `uvicorn --http`.
HTTP_PROTOCOL = "src.api.server:GuardedHttpToolsProtocol"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Close a connection whose request headers are not complete `API_HEADER_TIMEOUT_SECONDS`
    after it opened, after the previous response, or after the request's first byte; with a 408
    when a request had begun and nothing else is in flight on the connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = get_settings().api_header_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection now waits for the next request. That
        # timer is cancelled by any byte, even the blank lines a parser skips, so ours runs too.
        if self.timeout_keep_alive_task is not None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (a pipelined request waits): not them
            self._arm_header_timer()
            return
        idle = self.cycle is None or self.cycle.response_complete
        if self._in_headers and idle:
            rejection = errors.headers_too_slow(self.header_timeout)
            headers, body = rejection.encode()
            lines = [STATUS_LINE[rejection.status], *(b"%s: %s\r\n" % h for h in headers)]
            self.transport.write(b"".join([*lines, b"\r\n", body]))
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        logger.info(
            f"closed connection from {client}: request headers not complete within "
            f"{self.header_timeout:g}s"
        )
        self.transport.close()
