"""A real HTTP receiver for the completion webhook: a stdlib server on a free loopback port, in
a thread, that records every POST and answers with the statuses it is given, in turn."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Records POSTs; answers `statuses` in order, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.requests: list[Received] = []
        self.statuses = list(statuses)
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with outer.arrived:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.requests.append(Received(self.path, headers, body))
                    outer.arrived.notify_all()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads `requests`, not stderr."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/asr-done"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float) -> list[Received]:
        """The first `count` requests, once they have arrived (AssertionError after `timeout`)."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
        assert ok, f"receiver got {len(self.requests)} of {count} POSTs in {timeout}s"
        return self.requests[:count]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connection refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
