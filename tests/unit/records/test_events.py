"""Every write of a task record is announced on `asr:events` (src/records/events.py), on the
tests' real Redis: what the API's push endpoints wake on."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from src.records import task_store
from src.records.events import EVENTS_CHANNEL, TaskEvent, parse
from src.records.task_store import TaskRecord
from src.vocabulary import Stage, TaskStatus

TASK_ID = "2026-12-02_001_" + "cd" * 12


def queued() -> TaskRecord:
    return TaskRecord(
        task_id=TASK_ID, filename="a.wav", file=f"{TASK_ID}.wav", created_at=datetime.now(UTC)
    )


def heard(pubsub: redis.client.PubSub) -> list[TaskEvent]:
    """The events published so far (they arrive within milliseconds on loopback)."""
    found: list[TaskEvent] = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            event = parse(message["data"])
            assert event is not None, message
            found.append(event)
    return found


def listening(conn: redis.Redis) -> redis.client.PubSub:
    pubsub = conn.pubsub()
    pubsub.subscribe(EVENTS_CHANNEL)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def test_save_update_and_delete_each_announce_the_change(conn: redis.Redis):
    pubsub = listening(conn)
    task_store.save(conn, queued())
    task_store.update(conn, TASK_ID, status=TaskStatus.PROCESSING, stage=Stage.DECODE, progress=1)
    task_store.update(conn, TASK_ID, progress=40, stage=Stage.RECOGNITION)
    task_store.update(conn, TASK_ID, status=TaskStatus.DONE, progress=100, stage=Stage.DONE)
    task_store.delete(conn, TASK_ID)
    events = heard(pubsub)
    assert [(e.task_id, e.change, e.status, e.stage, e.progress) for e in events] == [
        (TASK_ID, "status", TaskStatus.QUEUED, None, 0),
        (TASK_ID, "status", TaskStatus.PROCESSING, Stage.DECODE, 1),
        (TASK_ID, "progress", TaskStatus.PROCESSING, Stage.RECOGNITION, 40),
        (TASK_ID, "status", TaskStatus.DONE, Stage.DONE, 100),
        (TASK_ID, "deleted", None, None, 0),
    ]


def test_a_save_in_a_pipeline_is_announced_with_the_write_and_not_before(conn: redis.Redis):
    pubsub = listening(conn)
    with conn.pipeline() as pipe:
        task_store.save(pipe, queued(), ttl=60)
        assert heard(pubsub) == []  # queued in the pipeline, not sent
        pipe.execute()
    assert [e.change for e in heard(pubsub)] == ["status"]
    assert 0 < conn.ttl(f"asr:task:{TASK_ID}") <= 60


def test_an_update_of_a_deleted_task_announces_nothing(conn: redis.Redis):
    pubsub = listening(conn)
    assert task_store.update(conn, TASK_ID, progress=5) is None
    assert heard(pubsub) == []


def test_an_unknown_message_is_ignored_not_fatal():
    assert parse(b"not json") is None
    assert parse(b'{"task_id": "x", "change": "exploded"}') is None
    record = TaskRecord.model_validate(queued().model_dump())
    assert parse(TaskEvent(task_id=record.task_id, change="status").model_dump_json()) is not None
