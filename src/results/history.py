"""History of finished jobs: a Redis list of the newest N (fast) and a JSON Lines file (durable).

The JSONL file is the operator's record: one object per line, for `jq`. Lines from concurrent
workers never interleave: each is one `write` on an O_APPEND descriptor under an exclusive flock.

The file lives on the API host. A worker on another host (WORKER_API_URL) has no way to it: its
lines go to a Redis outbox instead, in the same round trip as the recent list, and the API
appends them (`drain_outbox`), so each finished task still has its one line in the one file.
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

from src.config import Settings
from src.records.redis_client import (
    HISTORY_DRAIN_LOCK_KEY,
    HISTORY_KEY,
    HISTORY_OUTBOX_KEY,
    decoded,
)
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


# A drainer that died holding the lock holds it no longer than this.
DRAIN_LOCK_S = 30


def jsonl_path(settings: Settings) -> Path | None:
    """The JSONL file this process appends to; None for a worker on another host, whose lines
    go through the outbox to the API host's file."""
    return None if settings.worker_api_url else settings.history_file


def append_jsonl(path: Path, entry: HistoryEntry) -> None:
    append_line(path, entry.line())


def append_line(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (text + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def record(conn: redis.Redis, path: Path | None, task: TaskRecord, keep: int) -> HistoryEntry:
    """Add one finished task to both stores; the JSONL line is written first (it is the backup).
    With no `path` (see `jsonl_path`) the line goes to the outbox for the API host to append.

    A line that cannot be written (disk full) is logged as an error and counted in /stats
    (`history_write_errors`), but does not undo the task: the transcript the client waits for
    is already in Redis, and failing the task would replace it with a misleading error.
    """
    entry = entry_for(task)
    if path is not None:
        try:
            append_jsonl(path, entry)
        except OSError as exc:
            stats.record_history_error(conn)
            logger.error(f"task={task.task_id} history line NOT written to {path}: {exc}")
    with conn.pipeline() as pipe:
        if path is None:
            pipe.rpush(HISTORY_OUTBOX_KEY, entry.line())
        pipe.lpush(HISTORY_KEY, entry.line())
        pipe.ltrim(HISTORY_KEY, 0, keep - 1)
        pipe.execute()
    return entry


def drain_outbox(conn: redis.Redis, path: Path, holder: str) -> int:
    """Append the outbox's lines to the JSONL file, oldest first; returns how many.

    A line leaves the outbox only once it is written, so a full disk keeps it for the next
    pass. One process drains at a time (a short lock); one that dies between its write and the
    pop leaves that line to be written again: a duplicate line, never a lost one."""
    if not conn.set(HISTORY_DRAIN_LOCK_KEY, holder, nx=True, ex=DRAIN_LOCK_S):
        return 0
    written = 0
    try:
        while (raw := conn.lindex(HISTORY_OUTBOX_KEY, 0)) is not None:
            try:
                append_line(path, decoded(raw))
            except OSError as exc:
                stats.record_history_error(conn)
                logger.error(f"history lines NOT written to {path} (kept in Redis): {exc}")
                break
            conn.lpop(HISTORY_OUTBOX_KEY)
            written += 1
    finally:
        if decoded(conn.get(HISTORY_DRAIN_LOCK_KEY) or b"") == holder:
            conn.delete(HISTORY_DRAIN_LOCK_KEY)
    return written


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
