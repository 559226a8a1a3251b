"""A task's transcript: exported as a file once done, or waited for by the synchronous face.

The OpenAI-compatible endpoint submits like any client and then waits here for the task record
(the one source of truth for every way a task ends: the worker's result, its failure callback,
the recovery sweep, a deletion). It polls the record on the API's async Redis client with a
back-off, 50 ms doubling to 0.5 s: a voice note on a GPU finishes in well under a second, so the
first polls catch it with little delay, and a long wait costs two GETs a second. Redis pub/sub
or keyspace events would save those reads, at the price of a publish in every path that ends a
task (or a server setting) and of a connection held per waiting request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import redis
import redis.asyncio

from src.records import task_store
from src.records.redis_client import REDIS_ERRORS
from src.records.task_store import TaskRecord
from src.results import subtitles
from src.service.errors import TaskNotDone, TaskNotFound, TranscriptionFailed, TranscriptionTimeout
from src.vocabulary import TaskStatus

TextFormat = Literal["txt", "srt", "vtt"]

POLL_FIRST_S = 0.05
POLL_MAX_S = 0.5
# Reads in a row that may fail before the wait calls it an outage (503): one slow or dropped
# read on a loaded box is not one (seen once in CI: a single read timed out mid-wait).
READ_ATTEMPTS = 3
READ_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError, OSError)


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


async def wait_finished(aconn: redis.asyncio.Redis, task_id: str, timeout_s: float) -> TaskRecord:
    """The task's record once it is done. Raises `TranscriptionFailed` when it failed,
    `TranscriptionTimeout` when `timeout_s` ran out first (the task goes on), and
    `TaskNotFound` when it was deleted meanwhile."""
    deadline = time.monotonic() + timeout_s
    delay = POLL_FIRST_S
    failures = 0
    while True:
        try:
            record = await task_store.load_async(aconn, task_id)
        except READ_ERRORS as exc:  # socket errors of the async client
            failures += 1
            if failures >= READ_ATTEMPTS or time.monotonic() >= deadline:
                raise redis.exceptions.ConnectionError("Redis unreachable") from exc
            await asyncio.sleep(POLL_FIRST_S)
            continue
        failures = 0
        if record is None:
            raise TaskNotFound(task_id=task_id)
        if record.status == TaskStatus.DONE:
            return record
        if record.status == TaskStatus.FAILED:
            raise TranscriptionFailed(task_id=task_id, detail=record.error or "unknown error")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TranscriptionTimeout(
                task_id=task_id, status=record.status.value, waited_seconds=timeout_s
            )
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX_S)
