"""History of finished jobs: a Redis list of the newest N (fast) and a JSON Lines file (durable).

The JSONL file is the operator's record: one object per line, for `jq`. Lines from concurrent
workers never interleave: each is one `write` on an O_APPEND descriptor under an exclusive flock.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path

import redis
from loguru import logger
from pydantic import BaseModel

from src.records.redis_client import HISTORY_KEY, decoded
from src.records.task_store import TaskRecord
from src.results import stats
from src.vocabulary import HistoryStatus


class HistoryEntry(BaseModel):
    """One finished task, as a JSONL line and as an item of the Redis list (same fields, same
    order: the design's `jq` examples read them). Status is "success" or "failed"."""

    task_id: str
    file: str | None = None
    filename: str | None = None
    text: str = ""
    created_at: str
    finished_at: str | None = None
    duration: float | None = None
    status: HistoryStatus
    worker_id: str | None = None
    error: str | None = None
    rtf: float | None = None
    language: str | None = None
    attempts: int = 0
    # Answered from the result cache, with the transcript of task `cached_from`.
    cached: bool = False
    cached_from: str | None = None

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def entry_for(record: TaskRecord) -> HistoryEntry:
    """The history line for a finished task."""
    return HistoryEntry(
        task_id=record.task_id,
        file=record.file,
        filename=record.filename,
        text=record.text or "",
        created_at=_utc(record.created_at),
        finished_at=_utc(record.finished_at) if record.finished_at else None,
        duration=record.duration if record.duration is not None else record.audio_duration,
        status=HistoryStatus.of(record.status),
        worker_id=record.worker_id,
        error=record.error,
        rtf=record.rtf,
        language=record.language,
        attempts=record.attempts,
        cached=record.cached,
        cached_from=record.cached_from,
    )


def append_jsonl(path: Path, entry: HistoryEntry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (entry.line() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def record(conn: redis.Redis, path: Path, task: TaskRecord, keep: int) -> HistoryEntry:
    """Add one finished task to both stores; the JSONL line is written first (it is the backup).

    A line that cannot be written (disk full) is logged as an error and counted in /stats
    (`history_write_errors`), but does not undo the task: the transcript the client waits for
    is already in Redis, and failing the task would replace it with a misleading error.
    """
    entry = entry_for(task)
    try:
        append_jsonl(path, entry)
    except OSError as exc:
        stats.record_history_error(conn)
        logger.error(f"task={task.task_id} history line NOT written to {path}: {exc}")
    with conn.pipeline() as pipe:
        pipe.lpush(HISTORY_KEY, entry.line())
        pipe.ltrim(HISTORY_KEY, 0, keep - 1)
        pipe.execute()
    return entry


def latest(conn: redis.Redis, limit: int) -> list[HistoryEntry]:
    """The newest `limit` entries, newest first."""
    return [HistoryEntry.model_validate_json(raw) for raw in conn.lrange(HISTORY_KEY, 0, limit - 1)]


def count(conn: redis.Redis) -> int:
    return int(conn.llen(HISTORY_KEY))


def remove(conn: redis.Redis, task_id: str) -> int:
    """Drop a deleted task from the Redis list (the JSONL file stays an append-only record)."""
    removed = 0
    for line in map(decoded, conn.lrange(HISTORY_KEY, 0, -1)):
        if json.loads(line).get("task_id") == task_id:
            removed += conn.lrem(HISTORY_KEY, 0, line)
    return removed
