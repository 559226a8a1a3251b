"""A task's transcript, exported as a file once the task is done."""

from __future__ import annotations

from typing import Literal

import redis

from src.records import task_store
from src.records.task_store import TaskRecord
from src.results import subtitles
from src.service.errors import TaskNotDone, TaskNotFound
from src.vocabulary import TaskStatus

TextFormat = Literal["txt", "srt", "vtt"]


def finished(conn: redis.Redis, task_id: str) -> TaskRecord:
    """A done task's record; anything else has no transcript to export."""
    record = task_store.load(conn, task_id)
    if record is None:
        raise TaskNotFound(task_id=task_id)
    if record.status != TaskStatus.DONE:
        raise TaskNotDone(task_id=task_id, status=record.status.value)
    return record


def export(record: TaskRecord, fmt: TextFormat) -> str:
    """A done task's transcript as a text, SubRip or WebVTT file."""
    if fmt == "txt":
        return subtitles.plain(record.text or "")
    found = subtitles.cues(record.sentences, record.text or "", record.duration)
    return subtitles.srt(found) if fmt == "srt" else subtitles.vtt(found)
