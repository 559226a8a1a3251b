"""src/service/transcripts.py on a real Redis: the synchronous face's wait for a task, and the
export of a done task's transcript."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio

from src.records import task_store
from src.records.task_store import TaskRecord, utcnow
from src.service import transcripts
from src.service.errors import TaskNotDone, TaskNotFound, TranscriptionFailed, TranscriptionTimeout
from src.vocabulary import TaskStatus
from tests.support.processes import RedisServer, free_port
from tests.support.records import DONE
from tests.support.subtitles import parse_srt, parse_vtt

TASK_ID = "2025-12-01_001_0a1b2c3d4e5f60718293a4b5"


def queued(conn: redis.Redis) -> TaskRecord:
    record = TaskRecord(task_id=TASK_ID, filename="a.wav", file="a.wav", created_at=utcnow())
    task_store.save(conn, record)
    return record


def wait(server: RedisServer, timeout_s: float, change: dict[str, object] | None = None, after=0.3):
    """wait_finished on the async client while, `after` seconds in, the record changes (as a
    worker would change it) or is deleted (`change={}`)."""

    async def scenario() -> tuple[TaskRecord, float]:
        aconn = redis.asyncio.Redis(host="127.0.0.1", port=server.port)

        async def worker() -> float:
            await asyncio.sleep(after)
            if change == {}:
                task_store.delete(server.client(), TASK_ID)
            elif change is not None:
                task_store.update(server.client(), TASK_ID, **change)
            return time.monotonic()

        try:
            changed = asyncio.create_task(worker())
            record = await transcripts.wait_finished(aconn, TASK_ID, timeout_s)
            return record, time.monotonic() - await changed
        finally:
            await aconn.aclose()

    return asyncio.run(scenario())


def test_the_wait_ends_soon_after_the_task_is_done(conn: redis.Redis, redis_server: RedisServer):
    """Done 1.6 s in, when the back-off has reached its longest step: the answer comes at most
    that step later."""
    queued(conn)
    record, late = wait(redis_server, 5, DONE, after=1.6)
    assert record.status == TaskStatus.DONE and record.text == "今天天气很好。明天下雨。"
    assert late < transcripts.POLL_MAX_S + 0.2  # plus slack for a busy machine


def test_a_failed_task_is_a_failed_transcription(conn: redis.Redis, redis_server: RedisServer):
    queued(conn)
    failure = {"status": TaskStatus.FAILED, "error": "Invalid audio: corrupt"}
    with pytest.raises(TranscriptionFailed) as caught:
        wait(redis_server, 5, failure)
    assert caught.value.context() == {"task_id": TASK_ID, "detail": "Invalid audio: corrupt"}


def test_the_wait_gives_up_at_its_timeout_and_names_the_task(
    conn: redis.Redis, redis_server: RedisServer
):
    queued(conn)
    started = time.monotonic()
    with pytest.raises(TranscriptionTimeout) as caught:
        wait(redis_server, 0.6, {"status": TaskStatus.PROCESSING}, after=0.1)
    assert 0.6 <= time.monotonic() - started < 1.5
    assert caught.value.context() == {
        "task_id": TASK_ID,
        "status": "processing",
        "waited_seconds": 0.6,
    }
    assert TASK_ID in str(caught.value) and "processing" in str(caught.value)
    assert task_store.load(conn, TASK_ID) is not None  # the task goes on


def test_a_task_deleted_while_waited_on_is_not_found(conn: redis.Redis, redis_server: RedisServer):
    queued(conn)
    with pytest.raises(TaskNotFound):
        wait(redis_server, 5, {})


def test_redis_away_is_a_redis_connection_error():
    """So the API's table answers 503, as for every other outage."""

    async def scenario() -> None:
        aconn = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
        try:
            await transcripts.wait_finished(aconn, TASK_ID, 1)
        finally:
            await aconn.aclose()

    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(scenario())


def test_only_a_done_task_is_exported(conn: redis.Redis):
    queued(conn)
    with pytest.raises(TaskNotDone) as caught:
        transcripts.finished(conn, TASK_ID)
    assert caught.value.context() == {"task_id": TASK_ID, "status": "queued"}
    task_store.update(conn, TASK_ID, status=TaskStatus.FAILED, error="boom")
    with pytest.raises(TaskNotDone):
        transcripts.finished(conn, TASK_ID)
    with pytest.raises(TaskNotFound):
        transcripts.finished(conn, "2025-12-01_002_0a1b2c3d4e5f60718293a4b5")


def test_the_exports_carry_the_sentences(conn: redis.Redis):
    queued(conn)
    task_store.update(conn, TASK_ID, **DONE)
    record = transcripts.finished(conn, TASK_ID)
    expected = [(380, 3100, "今天天气很好。"), (3500, 6020, "明天下雨。")]
    srt = parse_srt(transcripts.export(record, "srt"))
    vtt = parse_vtt(transcripts.export(record, "vtt"))
    assert [(c.start_ms, c.end_ms, c.text) for c in srt] == expected
    assert [(c.start_ms, c.end_ms, c.text) for c in vtt] == expected
    assert transcripts.export(record, "txt") == "今天天气很好。明天下雨。\n"


class Stalling(redis.asyncio.Redis):
    """The real async client, whose first `stalls` reads time out as a stalled socket would."""

    def __init__(self, stalls: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stalls = stalls

    async def get(self, name):  # type: ignore[no-untyped-def, override]
        if self.stalls:
            self.stalls -= 1
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return await super().get(name)


def test_one_stalled_read_mid_wait_is_not_an_outage(conn: redis.Redis, redis_server: RedisServer):
    """A single read that timed out on a loaded box: the wait reads again, the task is done."""
    queued(conn)
    task_store.update(conn, TASK_ID, **DONE)

    async def scenario(stalls: int) -> TaskRecord:
        aconn = Stalling(stalls, host="127.0.0.1", port=redis_server.port)
        try:
            return await transcripts.wait_finished(aconn, TASK_ID, 5)
        finally:
            await aconn.aclose()

    assert asyncio.run(scenario(transcripts.READ_ATTEMPTS - 1)).status == TaskStatus.DONE
    with pytest.raises(redis.exceptions.ConnectionError):  # every read failing is an outage
        asyncio.run(scenario(transcripts.READ_ATTEMPTS))
