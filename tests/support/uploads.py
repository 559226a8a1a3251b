"""Uploads as the API's tests send them, and the check that a refused one left nothing behind."""

from __future__ import annotations

import redis

from src.config import Settings
from src.queue.job_queue import get_lanes
from src.records.redis_client import AUDIO_INDEX_KEY

SUBMIT = "/api/v1/asr/submit"
UNKNOWN_ID = "2025-12-01_001_" + "0" * 24

BOUNDARY = "b0undary7MA4YWxk"


def multipart(filename: bytes, data: bytes, field_name: bytes = b"audio") -> bytes:
    """One file part, byte for byte as given: the file name goes out unescaped."""
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="'
        + field_name
        + b'"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def multipart_head() -> bytes:
    """An upload's opening: the file part's headers, no data, no end."""
    return multipart(b"big.wav", b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]


def assert_nothing_stored(
    conn: redis.Redis, settings: Settings, allowed: tuple[str, ...] = ("asr:seq:",)
) -> None:
    """No recording or partial upload on disk; no task, job, index entry or counter in Redis.

    The day's sequence counter (`asr:seq:<day>`, 3-day TTL) is the only key a rejected upload
    may leave: the id is allocated before the upload is read.
    """
    recordings = settings.recordings_dir
    assert not recordings.exists() or sorted(p.name for p in recordings.iterdir()) == []
    assert list(conn.scan_iter("asr:task:*")) == []
    assert [q.count for q in get_lanes(conn, settings).ordered()] == [0, 0, 0]
    assert list(conn.scan_iter("rq:job:*")) == []
    assert conn.zcard(AUDIO_INDEX_KEY) == 0
    # A lane's wake tokens (a 60 s signal to idle workers) may outlive the job they announced.
    left = {k.decode() for k in conn.scan_iter("*") if not k.endswith(b":wake")}
    assert {k for k in left if not k.startswith(allowed)} == set(), left
