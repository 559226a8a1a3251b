"""src/service/transcripts.py on a real Redis: the export of a done task's transcript."""

from __future__ import annotations

import pytest
import redis

from src.records import task_store
from src.records.task_store import TaskRecord, utcnow
from src.service import transcripts
from src.service.errors import TaskNotDone, TaskNotFound
from src.vocabulary import TaskStatus
from tests.support.records import DONE
from tests.support.subtitles import parse_srt, parse_vtt

TASK_ID = "2025-12-01_001_0a1b2c3d4e5f60718293a4b5"


def queued(conn: redis.Redis) -> TaskRecord:
    record = TaskRecord(task_id=TASK_ID, filename="a.wav", file="a.wav", created_at=utcnow())
    task_store.save(conn, record)
    return record


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
