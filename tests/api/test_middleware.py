"""The API's middleware seen over HTTP (src/api/middleware.py): one bounded access-log line per
request, and the body guard: a 413 while an over-cap body still streams in (on a real uvicorn
server, fed a chunked body that never ends) and `Connection: close` on an answer given before the
body was read. The guard's timeouts against slow clients: tests/system/test_slow_clients.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from src.config import Settings
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import ApiProcess, RedisServer, api_env
from tests.support.uploads import (
    BOUNDARY,
    SUBMIT,
    UNKNOWN_ID,
    assert_nothing_stored,
    multipart_head,
)

# --- access log -----------------------------------------------------------------------------


def test_hostile_paths_stay_one_bounded_access_log_line(client: TestClient, settings: Settings):
    from loguru import logger

    forged = "[2025-12-01 00:00:00] INFO POST /api/v1/asr/submit - forged http=200"
    client.get("/api/v1/asr/result/x%0A" + forged.replace(" ", "%20"))
    client.get("/api/v1/asr/result/" + "A" * 10_240)
    logger.complete()
    lines = (settings.logs_dir / "asr_api.log").read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith("[2025-12-01")], "a forged log line"
    access = [line for line in lines if "INFO GET /api/v1/asr/result/" in line]
    assert len(access) == 2, lines
    assert "x\\n[2025-12-01" in access[0]  # escaped, on the one line
    assert max(len(line) for line in access) < 400


# --- the size cap on a real server ---------------------------------------------------------

CAP = 100_000


@pytest.fixture
def api_server(redis_server: RedisServer, conn: redis.Redis, tmp_path: Path) -> Iterator[dict]:
    """`uvicorn src.api.main:app` in its own process, configured by the environment alone."""
    storage = tmp_path / "storage"
    env = api_env(redis_server.port, storage, MAX_UPLOAD_BYTES=str(CAP))
    api = ApiProcess(env, tmp_path / "uvicorn.out").start()
    try:
        settings = make_settings(redis_server.port, storage)
        yield {"port": api.port, "storage": storage, "settings": settings}
    finally:
        api.stop()


def test_upload_over_the_cap_is_413_while_streaming(api_server: dict, conn: redis.Redis):
    """httpx streams 16 MiB from a generator with no Content-Length against a 100 KB cap: the 413
    comes back after a fraction of it, and nothing is kept."""
    chunk, total = 64 * 1024, 256
    sent = {"chunks": 0}

    def body() -> Iterator[bytes]:
        yield multipart_head()
        for _ in range(total):
            sent["chunks"] += 1
            yield b"\0" * chunk
            time.sleep(0.002)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    resp = httpx.post(
        f"http://127.0.0.1:{api_server['port']}{SUBMIT}",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"] == "File too large"
    assert resp.headers["connection"] == "close"
    assert sent["chunks"] < total, "the server read the whole body before answering"
    assert_nothing_stored(conn, api_server["settings"])


def test_the_413_arrives_before_the_body_ends(api_server: dict, conn: redis.Redis):
    """A raw chunked request that never sends its last chunk: a server that waited for the whole
    body would never answer."""
    with socket.create_connection(("127.0.0.1", api_server["port"]), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {SUBMIT} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
            ).encode()
        )
        head = multipart_head()
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        piece = b"\0" * 16 * 1024
        for _ in range(3 * CAP // len(piece)):
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and hung up; the answer is in the receive buffer
        reply = b""
        while b'"File too large"' not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"File too large"' in reply, reply
    assert_nothing_stored(conn, api_server["settings"])


# --- an answer before the body was read ---------------------------------------------------


def test_an_answer_before_the_body_is_read_closes_the_connection(client: TestClient):
    """A route that never reads the body it was sent: the rest of that body must not keep the
    connection (and a trickler's hold on it) alive, so the answer says `Connection: close`."""
    with_body = client.post(f"/api/v1/asr/retry/{UNKNOWN_ID}", content=b"x" * 1000)
    assert with_body.status_code == 404
    assert with_body.headers["connection"] == "close"
    without = client.post(f"/api/v1/asr/retry/{UNKNOWN_ID}")
    assert without.status_code == 404 and "connection" not in without.headers
    read = client.post(SUBMIT, files={"audio": ("a.wav", SPEECH_WAV.read_bytes())})
    assert read.status_code == 200 and "connection" not in read.headers
