"""One task's state in Redis (`asr:task:{task_id}`, a JSON string), the source of truth for /result.

The API creates the record, the worker moves it through processing to done or failed; the record
lives `TASK_TTL_SECONDS` after it finishes and has no expiry while it waits or runs.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio
from pydantic import BaseModel, Field

from src.records import events
from src.records.events import TaskEvent
from src.records.redis_client import seq_key, task_key
from src.vocabulary import Priority, Sentence, Stage, TaskStatus

# YYYY-MM-DD_NNN_ + 96 random bits: readable, sortable by day, unguessable. ASCII classes only
# (`\d` takes any Unicode digit) and checked with fullmatch (`$` also matches before a final
# newline); the same text is the OpenAPI pattern, where `$` is the end of the id.
TASK_ID_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{3,6}_[0-9a-f]{24}$"
TASK_ID_RE = re.compile(TASK_ID_PATTERN)


# The most callback delivery attempts a record keeps (the newest).
MAX_CALLBACK_ATTEMPTS = 20


class CallbackAttempt(BaseModel):
    """One POST of the completion webhook: when, and the receiver's HTTP status or the error."""

    at: datetime
    status_code: int | None = None
    error: str | None = None
    delivered: bool = False


class TaskRecord(BaseModel):
    """Everything known about one submission."""

    task_id: str
    status: TaskStatus = TaskStatus.QUEUED
    progress: int = 0
    stage: Stage | None = None
    filename: str = Field(description="the name the client uploaded")
    file: str = Field(description="the stored recording's file name")
    size: int = 0
    format: str = ""
    language: str = "zh"
    batch_size: int = 500
    hotwords: list[str] = []
    audio_duration: float | None = None
    # The lane it was queued in (src/queue/job_queue.py); promotion may have moved its job up.
    priority: Priority = Priority.NORMAL
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    text: str | None = None
    duration: float | None = None
    sentences: list[Sentence] = []
    applied_hotwords: list[str] = []
    rtf: float | None = None
    processing_time: float | None = None
    error: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    # Worker deaths this task may have caused (see src/queue/recovery.py); failed at 3.
    abandons: int = 0
    # The result cache (src/results/cache.py): the upload's fingerprint (bytes, options, models),
    # and for a task answered from the cache, the done task whose transcript it carries.
    fingerprint: str | None = None
    cached: bool = False
    cached_from: str | None = None
    # The completion webhook (src/service/callbacks.py): where the final result is POSTed, and
    # each delivery attempt, newest last, at most MAX_CALLBACK_ATTEMPTS.
    callback_url: str | None = None
    callback_attempts: list[CallbackAttempt] = []


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_valid_task_id(task_id: str) -> bool:
    return TASK_ID_RE.fullmatch(task_id) is not None


def new_task_id(conn: redis.Redis, now: datetime | None = None) -> str:
    """Allocate `YYYY-MM-DD_NNN_<random>`; NNN counts the day's uploads (a Redis counter)."""
    day = (now or utcnow()).strftime("%Y-%m-%d")
    key = seq_key(day)
    with conn.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 3 * 86400)
        seq, _ = pipe.execute()
    return f"{day}_{int(seq):03d}_{secrets.token_hex(12)}"


def save(
    conn: redis.Redis | redis.client.Pipeline, record: TaskRecord, ttl: int | None = None
) -> None:
    """Write the whole record and announce it (see src/records/events.py)."""
    if isinstance(conn, redis.client.Pipeline):
        conn.set(task_key(record.task_id), record.model_dump_json(), ex=ttl)
        events.publish(conn, _event(record, "status"))
        return
    with conn.pipeline() as pipe:
        save(pipe, record, ttl)
        pipe.execute()


def _event(record: TaskRecord, change: events.Change) -> TaskEvent:
    return TaskEvent(
        task_id=record.task_id,
        change=change,
        status=record.status,
        stage=record.stage,
        progress=record.progress,
    )


def load(conn: redis.Redis, task_id: str) -> TaskRecord | None:
    raw = conn.get(task_key(task_id))
    return TaskRecord.model_validate_json(raw) if raw else None


async def load_async(aconn: redis.asyncio.Redis, task_id: str) -> TaskRecord | None:
    """`load` on the async client, for an endpoint that waits on a task without a thread."""
    raw = await aconn.get(task_key(task_id))
    return TaskRecord.model_validate_json(raw) if raw else None


def update(
    conn: redis.Redis, task_id: str, *, ttl: int | None = None, **fields: Any
) -> TaskRecord | None:
    """Change fields of an existing record; a deleted task stays deleted (SET XX)."""
    key = task_key(task_id)
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    pipe.unwatch()
                    return None
                record = TaskRecord.model_validate_json(raw).model_copy(update=fields)
                record = TaskRecord.model_validate(record.model_dump())
                change: events.Change = "status" if "status" in fields else "progress"
                pipe.multi()
                if ttl is None:
                    pipe.set(key, record.model_dump_json(), xx=True, keepttl=True)
                else:
                    pipe.set(key, record.model_dump_json(), xx=True, ex=ttl)
                events.publish(pipe, _event(record, change))
                pipe.execute()
                return record
            except redis.WatchError:
                continue


def delete(conn: redis.Redis, task_id: str) -> bool:
    with conn.pipeline() as pipe:
        pipe.delete(task_key(task_id))
        events.publish(pipe, TaskEvent(task_id=task_id, change="deleted"))
        deleted, _ = pipe.execute()
    return bool(deleted)


def add_callback_attempt(conn: redis.Redis, task_id: str, attempt: CallbackAttempt) -> bool:
    """Append a delivery attempt, keeping the newest MAX_CALLBACK_ATTEMPTS, without announcing
    it (a callback changes no state a client follows). False when the task is gone."""
    key = task_key(task_id)
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    pipe.unwatch()
                    return False
                record = TaskRecord.model_validate_json(raw)
                attempts = [*record.callback_attempts, attempt][-MAX_CALLBACK_ATTEMPTS:]
                record = record.model_copy(update={"callback_attempts": attempts})
                pipe.multi()
                pipe.set(key, record.model_dump_json(), xx=True, keepttl=True)
                pipe.execute()
                return True
            except redis.WatchError:
                continue
