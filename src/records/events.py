"""Task state changes, announced on one Redis pub/sub channel for the API's push endpoints.

Every change to a task record goes through `task_store` (the worker's progress and result, its
failure callback, dead-worker recovery, retry, delete), and `task_store` publishes here in the
same pipeline as the write. An event only says "task X changed, to this status": the record stays
the one source of truth, and a reader that missed events (it connected late, or its subscription
dropped) reads the record and has missed nothing.

Why pub/sub and not a stream: nothing needs the past events. A stream would keep every progress
tick in Redis and need trimming, and each API process would track its own read position; with
pub/sub an API process holds one subscription and Redis keeps nothing.
"""

from __future__ import annotations

from typing import Literal

import redis
from pydantic import BaseModel

from src.records.redis_client import KEY_PREFIX
from src.vocabulary import Stage, TaskStatus

EVENTS_CHANNEL = f"{KEY_PREFIX}:events"

# "status": the task's status (or its place in line) may have changed; "progress": the same
# status, a further stage or percentage. Waiters on other tasks' positions skip progress ticks.
Change = Literal["status", "progress", "deleted"]


class TaskEvent(BaseModel):
    task_id: str
    change: Change
    status: TaskStatus | None = None
    stage: Stage | None = None
    progress: int = 0


def publish(conn: redis.Redis | redis.client.Pipeline, event: TaskEvent) -> None:
    """Queue the event on `conn`: in a pipeline it goes out with the write it announces."""
    conn.publish(EVENTS_CHANNEL, event.model_dump_json(exclude_none=True))


def parse(data: bytes | str) -> TaskEvent | None:
    """The event in a channel message, or None for a message this version does not know."""
    try:
        return TaskEvent.model_validate_json(data)
    except ValueError:
        return None
