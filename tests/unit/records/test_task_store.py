"""src/records/task_store.py against a real Redis: the record's round trip, its expiry, updates
that keep a concurrent write and never bring a deleted task back, and the day's task ids."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pydantic
import pytest
import redis
import redis.asyncio

from src.records import task_store
from src.records.redis_client import seq_key, task_key
from src.records.task_store import TaskRecord
from src.vocabulary import Sentence, Stage, TaskStatus

TASK_ID = "2026-11-29_001_" + "ab" * 12


def queued(task_id: str = TASK_ID) -> TaskRecord:
    return TaskRecord(
        task_id=task_id, filename="a.wav", file=f"{task_id}.wav", created_at=datetime.now(UTC)
    )


def test_a_saved_record_loads_back_field_for_field(conn: redis.Redis):
    record = TaskRecord(
        task_id=TASK_ID,
        status=TaskStatus.DONE,
        progress=100,
        stage=Stage.DONE,
        filename="语音 1.ogg",
        file=f"{TASK_ID}.ogg",
        size=1234,
        format="ogg",
        hotwords=["今天", "天气"],
        audio_duration=6.6,
        created_at=datetime(2026, 11, 29, 8, 0, 0, 123456, tzinfo=UTC),
        finished_at=datetime(2026, 11, 29, 8, 0, 9, tzinfo=UTC),
        text="今天天气好。",
        sentences=[Sentence(text="今天天气好。", start=120, end=2400)],
        rtf=0.05,
        worker_id="worker-2",
        attempts=2,
        abandons=1,
    )
    task_store.save(conn, record)
    assert task_store.load(conn, TASK_ID) == record
    assert conn.ttl(task_key(TASK_ID)) == -1  # no expiry while it waits or runs


def test_an_unknown_task_loads_as_none(conn: redis.Redis):
    assert task_store.load(conn, TASK_ID) is None


def test_save_with_a_ttl_expires_the_record(conn: redis.Redis):
    task_store.save(conn, queued(), ttl=300)
    assert 290 < conn.ttl(task_key(TASK_ID)) <= 300


def test_update_changes_the_given_fields_and_keeps_the_rest_and_the_ttl(conn: redis.Redis):
    original = queued()
    task_store.save(conn, original, ttl=500)
    conn.expire(task_key(TASK_ID), 400)  # the TTL left, whatever save set
    updated = task_store.update(conn, TASK_ID, status=TaskStatus.PROCESSING, progress=40)
    assert updated is not None
    assert (updated.status, updated.progress) == (TaskStatus.PROCESSING, 40)
    assert task_store.load(conn, TASK_ID) == updated
    changed = {"status", "progress"}
    assert updated.model_dump(exclude=changed) == original.model_dump(exclude=changed)
    assert 390 < conn.ttl(task_key(TASK_ID)) <= 400  # kept, not reset to save's 500


def test_update_with_a_ttl_sets_the_expiry_on_a_record_that_had_none(conn: redis.Redis):
    task_store.save(conn, queued())
    assert conn.ttl(task_key(TASK_ID)) == -1
    task_store.update(conn, TASK_ID, ttl=120, status=TaskStatus.DONE)
    assert 110 < conn.ttl(task_key(TASK_ID)) <= 120
    done = task_store.load(conn, TASK_ID)
    assert done is not None and done.status == TaskStatus.DONE


def test_update_validates_what_it_writes(conn: redis.Redis):
    task_store.save(conn, queued())
    updated = task_store.update(conn, TASK_ID, status="failed", stage="requeued")
    assert updated is not None
    assert updated.status is TaskStatus.FAILED and updated.stage is Stage.REQUEUED
    with pytest.raises(pydantic.ValidationError):
        task_store.update(conn, TASK_ID, progress="half")
    stored = task_store.load(conn, TASK_ID)
    assert stored is not None and stored.progress == 0  # the bad update wrote nothing


def test_update_of_a_deleted_task_does_not_bring_it_back(conn: redis.Redis):
    task_store.save(conn, queued())
    assert task_store.delete(conn, TASK_ID) is True
    assert task_store.update(conn, TASK_ID, status=TaskStatus.DONE, text="late") is None
    assert not conn.exists(task_key(TASK_ID))
    assert task_store.delete(conn, TASK_ID) is False


def test_a_write_between_read_and_update_is_kept(
    conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    """Another process (the API's delete, a worker's progress) writes the record while update
    holds its copy: the update is retried on the new record instead of overwriting it."""
    task_store.save(conn, queued())
    parse = TaskRecord.model_validate_json
    raced: list[str] = []

    def parse_then_race(raw: bytes, *args: object, **kwargs: object) -> TaskRecord:
        record = parse(raw, *args, **kwargs)
        if not raced:
            raced.append("once")
            other = record.model_copy(update={"worker_id": "worker-9"})
            conn.set(task_key(TASK_ID), other.model_dump_json())
        return record

    monkeypatch.setattr(TaskRecord, "model_validate_json", parse_then_race)
    updated = task_store.update(conn, TASK_ID, progress=50)
    assert raced == ["once"]
    assert updated is not None and (updated.worker_id, updated.progress) == ("worker-9", 50)
    monkeypatch.undo()
    assert task_store.load(conn, TASK_ID) == updated


def test_task_ids_count_each_days_uploads_and_are_unguessable(conn: redis.Redis):
    day = datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
    first, second = task_store.new_task_id(conn, day), task_store.new_task_id(conn, day)
    next_day = task_store.new_task_id(conn, datetime(2026, 11, 30, tzinfo=UTC))
    assert first.startswith("2026-11-29_001_") and second.startswith("2026-11-29_002_")
    assert next_day.startswith("2026-11-30_001_")
    assert first.rsplit("_", 1)[1] != second.rsplit("_", 1)[1]
    assert all(task_store.is_valid_task_id(i) for i in (first, second, next_day))
    assert 3 * 86400 - 10 < conn.ttl(seq_key("2026-11-29")) <= 3 * 86400


@pytest.mark.parametrize(
    ("task_id", "valid"),
    [
        (TASK_ID, True),
        ("2026-11-29_123456_" + "0" * 24, True),  # up to 999999 uploads a day
        ("2026-11-29_1234567_" + "0" * 24, False),
        ("2026-11-29_01_" + "0" * 24, False),
        ("2026-11-29_001_" + "A" * 24, False),  # lower-case hex only
        ("2026-11-29_001_" + "0" * 23, False),
        (TASK_ID + "\n", False),
    ],
)
def test_task_id_shape(task_id: str, valid: bool):
    assert task_store.is_valid_task_id(task_id) is valid


def test_the_async_load_reads_the_same_record(conn: redis.Redis):
    """The OpenAI-style endpoint waits on a task with the async client."""
    record = queued()
    task_store.save(conn, record)
    kwargs = conn.connection_pool.connection_kwargs
    aconn = redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"])

    async def both() -> tuple[TaskRecord | None, TaskRecord | None]:
        try:
            return (
                await task_store.load_async(aconn, TASK_ID),
                await task_store.load_async(aconn, "2026-11-29_002_" + "cd" * 12),
            )
        finally:
            await aconn.aclose()

    assert asyncio.run(both()) == (record, None)
