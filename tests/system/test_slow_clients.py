"""Slow clients against a real uvicorn server (as scripts/serve.sh runs it) with one-second
header and body deadlines: trickled headers, silent connections and slow bodies are cut with a
408, and a slow but steady upload still goes through.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import ApiProcess, RedisServer, api_env
from tests.support.uploads import BOUNDARY, SUBMIT, assert_nothing_stored, multipart, multipart_head

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MIN_RATE = 2000  # bytes/s


@pytest.fixture
def guarded_server(redis_server: RedisServer, conn: redis.Redis, tmp_path: Path) -> Iterator[dict]:
    """uvicorn as scripts/serve.sh runs it, with one-second header and body deadlines."""
    storage = tmp_path / "storage"
    env = api_env(
        redis_server.port,
        storage,
        API_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        API_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        API_BODY_MIN_RATE=str(MIN_RATE),
    )
    api = ApiProcess(env, tmp_path / "uvicorn.out").start()
    try:
        yield {"api": api, "settings": make_settings(redis_server.port, storage)}
    finally:
        api.stop()


@dataclass
class Trickler:
    """Loopback sockets that each send `opening`, then `drip` every `every` seconds, until the
    server closes them or `give_up` seconds pass."""

    port: int
    opening: bytes
    drip: bytes
    every: float = 0.1
    socks: list[socket.socket] = field(default_factory=list)
    replies: dict[int, bytes] = field(default_factory=dict)
    closed_after: dict[int, float] = field(default_factory=dict)

    def run(self, count: int, give_up: float) -> None:
        import selectors

        started = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.setblocking(False)
            if self.opening:
                sock.send(self.opening)
            self.socks.append(sock)
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, selectors.EVENT_READ, i)
        next_drip = started
        while len(self.closed_after) < count and time.monotonic() - started < give_up:
            for key, _ in sel.select(timeout=0.05):
                i = key.data
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                self.replies[i] = self.replies.get(i, b"") + data
                if not data:
                    self.closed_after[i] = time.monotonic() - started
                    sel.unregister(key.fileobj)
            if self.drip and time.monotonic() >= next_drip:
                next_drip += self.every
                for i, sock in enumerate(self.socks):
                    if i in self.closed_after:
                        continue
                    with contextlib.suppress(OSError):  # closed by the server: read says so
                        sock.send(self.drip)
        sel.close()
        for sock in self.socks:
            sock.close()

    def all_cut_with_408(self, count: int, within: float) -> list[dict]:
        """Every connection closed in time after a 408 JSON answer; the answers' bodies."""
        assert len(self.closed_after) == count, f"{count - len(self.closed_after)} still open"
        assert max(self.closed_after.values()) < within, max(self.closed_after.values())
        bodies = []
        for reply in self.replies.values():
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), reply[:300]
            assert b"content-type: application/json" in head.lower()
            assert b"connection: close" in head.lower()
            bodies.append(json.loads(body))
        return bodies


def _still_serves(api: ApiProcess) -> None:
    assert httpx.get(f"{api.url}/api/v1/asr/queue/status", timeout=5).status_code == 200


@pytest.mark.slow
def test_trickled_headers_are_cut_at_the_deadline(guarded_server: dict):
    """200 connections send a request line, then a header byte every 100 ms, forever: each gets
    a 408 JSON and is closed about HEADER_TIMEOUT after it opened."""
    api = guarded_server["api"]
    slow = Trickler(
        api.port,
        opening=b"GET /api/v1/asr/queue/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
        drip=b"a",
    )
    slow.run(count=200, give_up=HEADER_TIMEOUT + 9)
    for body in slow.all_cut_with_408(200, within=HEADER_TIMEOUT + 3):
        assert body["error"] == "Request timeout: the headers arrived too slowly"
    _still_serves(api)


@pytest.mark.slow
def test_silent_and_blank_line_connections_are_cut(guarded_server: dict):
    """A connection that never sends a byte, and a kept-alive one that only sends the blank lines
    a parser skips (each cancels uvicorn's keep-alive timer): both closed, without an answer."""
    api = guarded_server["api"]
    silent = Trickler(api.port, opening=b"", drip=b"")
    silent.run(count=20, give_up=HEADER_TIMEOUT + 9)
    assert len(silent.closed_after) == 20
    assert max(silent.closed_after.values()) < HEADER_TIMEOUT + 3
    assert set(silent.replies.values()) == {b""}

    first = b"GET /api/v1/asr/queue/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
    blank = Trickler(api.port, opening=first, drip=b"\r\n", every=0.2)
    blank.run(count=5, give_up=HEADER_TIMEOUT + 9)
    assert len(blank.closed_after) == 5
    assert max(blank.closed_after.values()) < HEADER_TIMEOUT + 3
    for reply in blank.replies.values():
        assert reply.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" not in reply
    _still_serves(api)


def _upload_head(length: int) -> bytes:
    return (
        f"POST {SUBMIT} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode() + multipart_head()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["trickle", "pause"])
def test_slow_bodies_get_408_and_nothing_is_kept(guarded_server: dict, conn: redis.Redis, how: str):
    """100 uploads that declare 200 KB, then either drip 10 bytes per 100 ms (100 B/s, under
    MIN_RATE) or send 8 KB and stop: each gets a 408 JSON and a closed connection."""
    api = guarded_server["api"]
    slow = Trickler(
        api.port,
        opening=_upload_head(200_000) + (b"\0" * 8192 if how == "pause" else b""),
        drip=b"\0" * 10 if how == "trickle" else b"",
    )
    slow.run(count=100, give_up=BODY_TIMEOUT + HEADER_TIMEOUT + 9)
    # trickle: 100 B/s is under MIN_RATE from the first second; pause: no byte for BODY_TIMEOUT
    for body in slow.all_cut_with_408(100, within=BODY_TIMEOUT + 3):
        assert body["error"] == "Request timeout: the body arrived too slowly"
        assert body["min_bytes_per_second"] == MIN_RATE
    assert_nothing_stored(conn, guarded_server["settings"])
    _still_serves(api)


@pytest.mark.slow
def test_a_steady_upload_longer_than_the_timeout_goes_through(guarded_server: dict):
    """A voice note sent at ~20 KB/s (10x MIN_RATE) over ~3 s, three times BODY_TIMEOUT."""
    api = guarded_server["api"]
    wav = SPEECH_WAV.read_bytes()
    step = 2048

    def body() -> Iterator[bytes]:
        payload = multipart(b"a.wav", wav)
        for i in range(0, len(payload), step):
            yield payload[i : i + step]
            time.sleep(step / 20_000)

    started = time.monotonic()
    resp = httpx.post(
        f"{api.url}{SUBMIT}",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    assert took > 2 * BODY_TIMEOUT, took
