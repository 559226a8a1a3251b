"""src/api/middleware.py as pure ASGI: each middleware wraps a tiny app and is driven with
hand-made receive/send channels, so sizes and timings are exact and no server runs.

The same middleware over HTTP, in the whole app and on a real uvicorn: tests/api/test_middleware.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.middleware import AccessLog, RequestBodyGuard, log_safe

CAP = 100


def http_scope(*headers: tuple[bytes, bytes], method: str = "POST", path: str = "/up") -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": list(headers), "state": {}}


def declared(length: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(length).encode())


CHUNKED = (b"transfer-encoding", b"chunked")


def body(*chunks: bytes, every: float = 0.0) -> list[tuple[float, bytes]]:
    """Request body chunks, each arriving `every` seconds after the one before."""
    return [(every, chunk) for chunk in chunks]


def run(
    app: ASGIApp, scope: Scope, chunks: list[tuple[float, bytes]] | None = None
) -> list[Message]:
    """Serve one request: the client sends `chunks` (pause, bytes) in order, then waits for the
    disconnect; returns what the server sent."""
    pending = list(chunks or [])
    sent: list[Message] = []

    async def receive() -> Message:
        if not pending:
            await anyio.sleep(30)
            return {"type": "http.disconnect"}
        pause, data = pending.pop(0)
        await anyio.sleep(pause)
        return {"type": "http.request", "body": data, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        await app(scope, receive, send)

    anyio.run(main)
    return sent


def response(sent: list[Message]) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers and body of the one response in `sent`."""
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], dict(starts[0].get("headers", [])), data


# --- tiny apps ---------------------------------------------------------------------------------


async def reads_the_body(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers 200 with its size."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def answers_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers without reading the body (a 404 route, an auth check)."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"no such task"})


async def like_fastapi(scope: Scope, receive: Receive, send: Send) -> None:
    """Turns any error while it reads the body into its own 400, as FastAPI does with a form."""
    try:
        while (await receive()).get("more_body", False):
            pass
    except Exception:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"There was an error parsing the body"})


class Spy:
    """Wraps an app; remembers whether it ran and with which receive."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.receives: list[Receive] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receives.append(receive)
        await self.app(scope, receive, send)


def refusal(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    status, headers, data = response(sent)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(data)
    return status, json.loads(data)


# --- the body guard: size ----------------------------------------------------------------------


def test_a_request_without_a_body_is_not_guarded():
    spy = Spy(answers_at_once)
    for scope in (http_scope(method="GET"), http_scope(declared(0), method="GET")):
        sent = run(RequestBodyGuard(spy, max_bytes=CAP), scope)
        assert response(sent) == (404, {}, b"no such task")  # no Connection: close added
    assert len(spy.receives) == 2
    assert all(r.__name__ == "receive" for r in spy.receives)  # the server's own receive


def test_a_declared_length_over_the_cap_is_refused_before_the_app_runs():
    spy = Spy(reads_the_body)
    guard = RequestBodyGuard(spy, max_bytes=CAP, reported_max=80)
    sent = run(guard, http_scope(declared(CAP + 1)), body(b"x" * (CAP + 1)))
    assert refusal(sent) == (413, {"error": "File too large", "max_bytes": 80})
    assert spy.receives == []


def test_exactly_the_cap_goes_through():
    sent = run(
        RequestBodyGuard(reads_the_body, max_bytes=CAP), http_scope(CHUNKED), body(*[b"x" * 50] * 2)
    )
    assert response(sent) == (200, {}, b"100")


@pytest.mark.parametrize("app", [reads_the_body, like_fastapi], ids=["raises", "answers_400"])
def test_a_streamed_body_over_the_cap_gets_413_whatever_the_app_does(app: ASGIApp):
    """No Content-Length: the guard counts what arrives, and its 413 replaces the app's own
    answer to the error it raised in `receive`."""
    spy = Spy(app)
    sent = run(RequestBodyGuard(spy, max_bytes=CAP), http_scope(CHUNKED), body(*[b"x" * 60] * 3))
    assert refusal(sent) == (413, {"error": "File too large", "max_bytes": CAP})
    assert len(spy.receives) == 1


def test_a_declared_length_under_the_cap_is_still_counted():
    """A client that declares less than it sends is cut off once the cap is passed."""
    sent = run(
        RequestBodyGuard(reads_the_body, max_bytes=CAP),
        http_scope(declared(10)),
        body(*[b"x" * 60] * 2),
    )
    assert refusal(sent)[0] == 413


def test_an_answer_before_the_body_is_read_closes_the_connection():
    guard = RequestBodyGuard(answers_at_once, max_bytes=CAP)
    status, headers, _ = response(run(guard, http_scope(declared(20)), body(b"x" * 20)))
    assert (status, headers) == (404, {b"connection": b"close"})
    guard = RequestBodyGuard(reads_the_body, max_bytes=CAP)
    assert response(run(guard, http_scope(declared(20)), body(b"x" * 20))) == (200, {}, b"20")


# --- the body guard: time ----------------------------------------------------------------------


def timed(guard: ASGIApp, chunks: list[tuple[float, bytes]]) -> tuple[list[Message], float]:
    started = time.monotonic()
    sent = run(guard, http_scope(CHUNKED), chunks)
    return sent, time.monotonic() - started


TOO_SLOW = "Request timeout: the body arrived too slowly"


def test_a_body_that_pauses_longer_than_the_timeout_is_cut_with_408():
    guard = RequestBodyGuard(reads_the_body, max_bytes=CAP, timeout_s=0.2)
    sent, took = timed(guard, [(0.0, b"x"), (30.0, b"y")])
    assert refusal(sent) == (
        408,
        {"error": TOO_SLOW, "timeout_seconds": 0.2, "min_bytes_per_second": 0},
    )
    assert took < 5  # cut at the deadline, not after the 30 s pause


def test_a_trickle_under_the_minimum_rate_is_cut_though_no_pause_is_long():
    """10 bytes every 50 ms is 200 B/s: under a 1000 B/s minimum it is cut once the timeout
    plus the time its bytes were worth has passed; with no minimum it goes through."""
    trickle = body(*[b"x" * 10] * 20, every=0.05)  # 1 s in all, 200 bytes
    strict = RequestBodyGuard(reads_the_body, max_bytes=10_000, timeout_s=0.3, min_rate=1000)
    sent, took = timed(strict, trickle)
    assert refusal(sent) == (
        408,
        {"error": TOO_SLOW, "timeout_seconds": 0.3, "min_bytes_per_second": 1000},
    )
    assert took < 0.9
    lenient = RequestBodyGuard(reads_the_body, max_bytes=10_000, timeout_s=0.3)
    assert response(timed(lenient, trickle)[0]) == (200, {}, b"200")


def test_a_steady_body_longer_than_the_timeout_goes_through():
    guard = RequestBodyGuard(reads_the_body, max_bytes=100_000, timeout_s=0.3, min_rate=1000)
    sent, took = timed(guard, body(*[b"x" * 1000] * 16, every=0.05))
    assert response(sent) == (200, {}, b"16000")
    assert took > 0.3 * 2


# --- the access log ----------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


async def says_what_it_did(scope: Scope, receive: Receive, send: Send) -> None:
    scope["state"]["log"] = "task=t1 status=queued"
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def fails(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


def test_one_line_per_request_with_what_the_route_added(log_lines: list[str]):
    run(AccessLog(says_what_it_did), http_scope(path="/api/v1/asr/submit"))
    (line,) = log_lines
    assert re.fullmatch(
        r"POST /api/v1/asr/submit - task=t1 status=queued http=201 ms=\d+\.\d", line
    )


def test_a_request_whose_app_raised_is_logged_as_500(log_lines: list[str]):
    with pytest.raises(RuntimeError, match="boom"):
        run(AccessLog(fails), http_scope(method="GET", path="/x"))
    (line,) = log_lines
    assert re.fullmatch(r"GET /x - http=500 ms=\d+\.\d", line)


def test_other_scopes_pass_without_a_line(log_lines: list[str]):
    spy = Spy(answers_at_once)
    run(AccessLog(spy), {"type": "lifespan"})
    assert len(spy.receives) == 1 and log_lines == []


def test_a_hostile_path_stays_one_bounded_token():
    assert log_safe("/r/x\n[2025-12-01] INFO forged") == "/r/x\\n[2025-12-01] INFO forged"
    assert log_safe("/r/\x1b[31m\t") == "/r/\\x1b[31m\\t"
    assert log_safe("/r/语音") == "/r/语音"
    long = log_safe("/" + "A" * 500)
    assert long == "/" + "A" * 199 + "..."
    assert log_safe("/" + "A" * 199) == "/" + "A" * 199  # at the limit: not cut
