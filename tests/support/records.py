"""Task records as the API leaves them, made directly in Redis for tests below the API."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue

from src.config import Settings
from src.queue import job_queue
from src.records import task_store
from src.records.task_store import TaskRecord


def new_task(conn: redis.Redis, settings: Settings, queue: Queue, n: int = 1) -> str:
    """A queued task (record and RQ job) with the n-th id of a fixed day."""
    task_id = f"2026-11-29_{n:03d}_{n:024x}"
    record = TaskRecord(
        task_id=task_id, filename="a.wav", file=f"{task_id}.wav", created_at=datetime.now(UTC)
    )
    task_store.save(conn, record)
    job_queue.enqueue_task(queue, task_id, settings)
    return task_id
