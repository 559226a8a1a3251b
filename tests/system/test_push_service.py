"""Push through the live service: a real uvicorn, the session's two worker processes on the tiny
FunASR models, their Redis, and a real WebSocket client (the `websockets` library).

A bot that opens the socket right after submitting must see every state in order and the
transcript at the end, without polling; the long poll must hand it the transcript in one round
trip. The push latency (a state written through `task_store`, as a worker writes it, to the
client's socket) is measured here and reported in the closing note, not asserted tightly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from src.records import task_store
from src.records.task_store import TaskRecord, utcnow
from src.vocabulary import Stage, TaskStatus
from tests.support import reliability
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Service
from tests.support.processes import ApiProcess, service_env
from tests.support.tiny_models import ModelDirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ORDER = {"queued": 0, "processing": 1, "done": 2, "failed": 2}


@pytest.fixture(scope="module")
def live(service: Service, model_dirs: ModelDirs) -> Iterator[str]:
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}
    env = service_env(service.redis_server.port, service.storage, models, LOG_LEVEL="INFO")
    api = ApiProcess(env, service.storage / "uvicorn-push.out").start("/api/v1/health")
    try:
        yield api.url
    finally:
        api.stop()


def submit(live: str) -> str:
    files = {"audio": ("voice.wav", SPEECH_WAV.read_bytes(), "audio/wav")}
    resp = httpx.post(f"{live}/api/v1/asr/submit", files=files, timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["task_id"])


async def follow(live: str, task_id: str) -> tuple[list[dict], int | None]:
    """Every message the socket sends, and its close code."""
    url = live.replace("http://", "ws://") + f"/api/v1/asr/ws/{task_id}"
    received: list[dict] = []
    async with websockets.connect(url) as ws:
        try:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
        except ConnectionClosed:
            pass
        return received, ws.close_code


def test_a_bot_follows_its_voice_note_over_a_websocket_to_the_transcript(live: str):
    task_id = submit(live)
    messages, code = asyncio.run(follow(live, task_id))
    statuses = [m["status"] for m in messages]
    assert code == 1000, (code, statuses)
    assert statuses[-1] == "done", statuses
    assert all(ORDER[a] <= ORDER[b] for a, b in itertools.pairwise(statuses))
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress), progress
    final = httpx.get(f"{live}/api/v1/asr/result/{task_id}", timeout=10).json()
    assert messages[-1]["text"] == final["text"] and final["text"]
    assert messages[-1]["sentences"] == final["sentences"]
    # Only changes are sent: no two messages in a row are the same.
    assert all(a != b for a, b in itertools.pairwise(messages))


def test_the_long_poll_hands_over_the_transcript_in_one_round_trip(live: str):
    task_id = submit(live)
    started = time.monotonic()
    resp = httpx.get(f"{live}/api/v1/asr/result/{task_id}", params={"wait": 60}, timeout=90)
    took = time.monotonic() - started
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "done" and body["text"], body
    reliability.record("long_poll_voice_note", seconds_to_transcript=round(took, 3))


async def measure_push(live: str, service: Service, task_id: str, changes: int) -> list[float]:
    """Seconds from each progress write (the worker's own call) to the client's socket."""
    conn = service.redis_server.client()
    url = live.replace("http://", "ws://") + f"/api/v1/asr/ws/{task_id}"
    delays: list[float] = []
    async with websockets.connect(url) as ws:
        first = json.loads(await ws.recv())
        assert first["status"] == "processing"
        for pct in range(2, 2 + changes):
            written = time.perf_counter()
            await asyncio.to_thread(
                task_store.update, conn, task_id, progress=pct, stage=Stage.RECOGNITION
            )
            seen = json.loads(await asyncio.wait_for(ws.recv(), 10))
            delays.append(time.perf_counter() - written)
            assert seen["progress"] == pct
        await asyncio.to_thread(
            task_store.update, conn, task_id, status=TaskStatus.DONE, progress=100, text="好"
        )
        assert json.loads(await ws.recv())["status"] == "done"
    return delays


def test_push_latency_from_a_state_write_to_the_socket(live: str, service: Service):
    # A task a worker holds (no RQ job, so the service's own workers leave it alone): the test
    # writes its progress exactly as a worker's progress callback does.
    record = TaskRecord(
        task_id=f"2026-12-02_900_{'ab' * 12}",
        status=TaskStatus.PROCESSING,
        progress=1,
        filename="push.ogg",
        file="push.ogg",
        created_at=utcnow(),
    )
    task_store.save(service.redis_server.client(), record)
    delays = asyncio.run(measure_push(live, service, record.task_id, changes=60))
    ms = sorted(d * 1000 for d in delays)
    median, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
    reliability.record(
        "push_latency", changes=len(ms), median_ms=round(median, 2), p95_ms=round(p95, 2)
    )
    assert median < 1000, ms  # pushed, not found by a poll seconds later
