"""Task records as the API leaves them, made directly in Redis for tests below the API."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue

from src.config import Settings
from src.queue import job_queue
from src.records import task_store
from src.records.task_store import TaskRecord
from src.vocabulary import Sentence, TaskStatus


def new_task(conn: redis.Redis, settings: Settings, queue: Queue, n: int = 1) -> str:
    """A queued task (record and RQ job) with the n-th id of a fixed day."""
    task_id = f"2026-11-29_{n:03d}_{n:024x}"
    record = TaskRecord(
        task_id=task_id, filename="a.wav", file=f"{task_id}.wav", created_at=datetime.now(UTC)
    )
    task_store.save(conn, record)
    job_queue.enqueue_task(queue, task_id, settings)
    return task_id


# What a worker writes into a task's record when it is done: two sentences, 6.6 s of audio.
DONE_SENTENCES = [
    Sentence(text="今天天气很好。", start=380, end=3100),
    Sentence(text="明天下雨。", start=3500, end=6020),
]
DONE: dict[str, object] = {
    "status": TaskStatus.DONE,
    "text": "今天天气很好。明天下雨。",
    "duration": 6.6,
    "sentences": DONE_SENTENCES,
}


CREATED = datetime(2026, 11, 29, 8, 0, 0, tzinfo=UTC)


def finished(n: int, status: TaskStatus = TaskStatus.DONE, **fields: object) -> TaskRecord:
    """The n-th finished task of a fixed day, as a worker leaves it (not saved anywhere)."""
    task_id = f"2026-11-29_{n:03d}_{n:024x}"
    values: dict[str, object] = {
        "task_id": task_id,
        "status": status,
        "filename": f"note {n}.ogg",
        "file": f"{task_id}.ogg",
        "created_at": CREATED,
        "finished_at": datetime(2026, 11, 29, 8, 0, n, tzinfo=UTC),
        "text": f"第{n}条",
        "duration": 6.5,
        "worker_id": "worker-1",
        "attempts": 1,
    }
    values.update(fields)
    return TaskRecord.model_validate(values)
